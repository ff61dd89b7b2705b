package policy_test

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/policy"
)

// Names at the DNS length limits, built once.
var (
	label63 = strings.Repeat("a", 63)
	label64 = strings.Repeat("a", 64)
	// name253 is 63+1+63+1+63+1+61 = 253 bytes, the longest name allowed.
	name253 = label63 + "." + label63 + "." + label63 + "." + strings.Repeat("b", 61)
	name254 = name253 + "c"
)

func TestParseDest(t *testing.T) {
	tests := []struct {
		in        string
		want      string // String() of the parsed Dest
		wantPorts policy.PortRange
	}{
		// IPv4 addresses and CIDRs.
		{"192.0.2.10:443", "192.0.2.10:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"192.0.2.10/32:443", "192.0.2.10:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"10.0.0.0/8:8000-8099", "10.0.0.0/8:8000-8099", policy.PortRange{Lo: 8000, Hi: 8099}},
		{"0.0.0.0/0:*", "0.0.0.0/0:*", policy.AllPorts},
		{"10.0.0.0/8:0-65535", "10.0.0.0/8:*", policy.AllPorts},
		{"10.0.0.1:0", "10.0.0.1:0", policy.PortRange{}},
		{"10.0.0.1:65535", "10.0.0.1:65535", policy.PortRange{Lo: 65535, Hi: 65535}},
		{"10.0.0.1:0-0", "10.0.0.1:0", policy.PortRange{}},
		{"10.0.0.1:80-80", "10.0.0.1:80", policy.PortRange{Lo: 80, Hi: 80}},
		{"10.0.0.1:65534-65535", "10.0.0.1:65534-65535", policy.PortRange{Lo: 65534, Hi: 65535}},
		{"255.255.255.255:1", "255.255.255.255:1", policy.PortRange{Lo: 1, Hi: 1}},

		// IPv6, always bracketed; printed canonically.
		{"[2001:db8::/32]:*", "[2001:db8::/32]:*", policy.AllPorts},
		{"[2001:db8::1]:443", "[2001:db8::1]:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"[2001:db8::1/128]:443", "[2001:db8::1]:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"[2001:DB8:0:0::1]:443", "[2001:db8::1]:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"[::/0]:1-2", "[::/0]:1-2", policy.PortRange{Lo: 1, Hi: 2}},
		{"[::1]:53", "[::1]:53", policy.PortRange{Lo: 53, Hi: 53}},

		// IPv4-mapped IPv6 patterns are stored as IPv4.
		{"[::ffff:192.0.2.1]:443", "192.0.2.1:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"[::ffff:c000:201]:443", "192.0.2.1:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"[::ffff:192.0.2.1/128]:443", "192.0.2.1:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"[::ffff:10.0.0.0/104]:*", "10.0.0.0/8:*", policy.AllPorts},
		{"[::ffff:0:0/96]:80", "0.0.0.0/0:80", policy.PortRange{Lo: 80, Hi: 80}},
		// IPv4-compatible (deprecated ::a.b.c.d) is not mapped: it stays IPv6.
		{"[::192.0.2.1]:443", "[::c000:201]:443", policy.PortRange{Lo: 443, Hi: 443}},

		// Exact DNS names: lower-cased, trailing dot dropped.
		{"sas.example.net:443", "sas.example.net:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"SAS.Example.NET:443", "sas.example.net:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"sas.example.net.:443", "sas.example.net:443", policy.PortRange{Lo: 443, Hi: 443}},
		{"localhost:*", "localhost:*", policy.AllPorts},
		{"_srv._tcp.example.net:1", "_srv._tcp.example.net:1", policy.PortRange{Lo: 1, Hi: 1}},
		{"a-b.example:53", "a-b.example:53", policy.PortRange{Lo: 53, Hi: 53}},
		{"1a.example:80", "1a.example:80", policy.PortRange{Lo: 80, Hi: 80}},
		{"10.0.0.1a:80", "10.0.0.1a:80", policy.PortRange{Lo: 80, Hi: 80}},
		{"x.0xg:80", "x.0xg:80", policy.PortRange{Lo: 80, Hi: 80}},
		{label63 + ".example:1", label63 + ".example:1", policy.PortRange{Lo: 1, Hi: 1}},
		{name253 + ":1", name253 + ":1", policy.PortRange{Lo: 1, Hi: 1}},
		{name253 + ".:1", name253 + ":1", policy.PortRange{Lo: 1, Hi: 1}},

		// Wildcards.
		{"*.example.net:*", "*.example.net:*", policy.AllPorts},
		{"*.Example.NET.:1-2", "*.example.net:1-2", policy.PortRange{Lo: 1, Hi: 2}},
		{"*.com:443", "*.com:443", policy.PortRange{Lo: 443, Hi: 443}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			d, err := policy.ParseDest(tt.in)
			if err != nil {
				t.Fatalf("ParseDest(%q) error = %v, want %q", tt.in, err, tt.want)
			}
			if got := d.String(); got != tt.want {
				t.Errorf("ParseDest(%q).String() = %q, want %q", tt.in, got, tt.want)
			}
			if d.Ports != tt.wantPorts {
				t.Errorf("ParseDest(%q).Ports = %+v, want %+v", tt.in, d.Ports, tt.wantPorts)
			}
			// The printed form parses back to the same pattern.
			again, err := policy.ParseDest(d.String())
			if err != nil || again != d {
				t.Errorf("ParseDest(%q) = %v, %v; want %v, nil", d.String(), again, err, d)
			}
		})
	}
}

// Spellings of one pattern parse to equal Dests, so that a reload that only
// changes case or spelling changes nothing.
func TestParseDestEquivalent(t *testing.T) {
	tests := [][]string{
		{"192.0.2.1:443", "192.0.2.1/32:443", "[::ffff:192.0.2.1]:443", "[::FFFF:C000:0201]:443", "[::ffff:192.0.2.1/128]:443"},
		{"10.0.0.0/8:*", "[::ffff:10.0.0.0/104]:*", "10.0.0.0/8:0-65535"},
		{"[2001:db8::1]:1", "[2001:0db8:0000::1]:1", "[2001:DB8::1/128]:1"},
		{"example.net:80", "EXAMPLE.net:80", "example.NET.:80", "example.net:80-80"},
		{"*.example.net:80", "*.EXAMPLE.net.:80"},
	}
	for _, group := range tests {
		t.Run(group[0], func(t *testing.T) {
			want, err := policy.ParseDest(group[0])
			if err != nil {
				t.Fatalf("ParseDest(%q) error = %v", group[0], err)
			}
			for _, s := range group[1:] {
				got, err := policy.ParseDest(s)
				if err != nil || got != want {
					t.Errorf("ParseDest(%q) = %v, %v; want %v, nil", s, got, err, want)
				}
			}
		})
	}
}

func TestParseDestErrors(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		// Ports.
		{"empty", ""},
		{"IPv4 without port", "192.0.2.10"},
		{"name without port", "example.net"},
		{"empty port", "example.net:"},
		{"named port", "example.net:http"},
		{"plus sign", "example.net:+80"},
		{"minus sign", "example.net:-80"},
		{"leading zero", "example.net:080"},
		{"double zero", "example.net:00"},
		{"leading zero in range end", "example.net:80-090"},
		{"leading zero in range start", "example.net:08-90"},
		{"port too big", "example.net:65536"},
		{"port far too big", "example.net:99999999999999999999"},
		{"space before port", "example.net: 80"},
		{"space after port", "example.net:80 "},
		{"range without end", "example.net:80-"},
		{"range without start", "example.net:-80"},
		{"range lo > hi", "example.net:80-79"},
		{"range lo > hi at the edges", "example.net:65535-0"},
		{"range end too big", "example.net:1-65536"},
		{"three-part range", "example.net:1-2-3"},
		{"star in range", "example.net:*-80"},
		{"double star", "example.net:**"},
		{"hex port", "example.net:0x50"},
		{"empty host", ":80"},

		// Addresses and CIDRs.
		{"CIDR with host bits", "10.0.0.1/8:80"},
		{"CIDR /33", "10.0.0.0/33:80"},
		{"CIDR without bits", "10.0.0.0/:80"},
		{"CIDR with leading zero bits", "10.0.0.0/08:80"},
		{"IPv6 CIDR with host bits", "[2001:db8::1/32]:80"},
		{"IPv6 CIDR /129", "[2001:db8::/129]:80"},
		{"mapped CIDR with host bits", "[::ffff:10.0.0.1/104]:80"},
		{"mapped CIDR shorter than /96", "[::ffff:0:0/95]:80"},
		{"unbracketed IPv6", "2001:db8::1:80"},
		{"unbracketed loopback", "::1:443"},
		{"unbracketed IPv6 CIDR", "2001:db8::/32:*"},
		{"brackets without port", "[::1]"},
		{"unclosed bracket", "[::1:443"},
		{"unopened bracket", "::1]:443"},
		{"empty brackets", "[]:443"},
		{"IPv4 in brackets", "[192.0.2.1]:80"},
		{"IPv4 CIDR in brackets", "[10.0.0.0/8]:80"},
		{"name in brackets", "[example.net]:80"},
		{"zone", "[fe80::1%eth0]:80"},
		{"zone in CIDR", "[fe80::/10%eth0]:80"},
		{"unbracketed zone", "fe80::1%eth0:80"},
		{"short IPv4", "127.1:80"},
		{"IPv4 with trailing dot", "10.0.0.1.:80"},
		{"IPv4 with five parts", "1.2.3.4.5:80"},
		{"IPv4 octet too big", "1.2.3.256:80"},
		{"IPv4 leading zero", "010.0.0.1:80"},
		{"decimal IPv4", "2130706433:80"},
		{"hex IPv4", "0x7f000001:80"},
		{"upper-case hex IPv4", "0X7F000001:80"},
		{"hex last label", "a.0x10:80"},
		{"numeric last label", "example.123:80"},

		// Names.
		{"label starts with hyphen", "-a.example:80"},
		{"label ends with hyphen", "a-.example:80"},
		{"empty label", "a..example:80"},
		{"leading dot", ".example:80"},
		{"two trailing dots", "example..:80"},
		{"only a dot", ".:80"},
		{"space", "exa mple:80"},
		{"dollar", "exa$mple:80"},
		{"slash in name", "example.net/24:80"},
		{"NUL", "ex\x00ample:80"},
		{"non-ASCII", "bücher.example:80"},
		{"Kelvin sign", "\u212Aexample.net:80"},
		{"label of 64 bytes", label64 + ".example:80"},
		{"name of 254 bytes", name254 + ":80"},
		{"name of 254 bytes with trailing dot", name254 + ".:80"},

		// Wildcards.
		{"bare star", "*:80"},
		{"star and dot", "*.:80"},
		{"star and two dots", "*..:80"},
		{"two stars", "*.*.example:80"},
		{"inner star", "a.*.example:80"},
		{"star without dot", "*example.net:80"},
		{"double star", "**.example:80"},
		{"trailing star", "example.*:80"},
		{"wildcard over numeric", "*.127.1:80"},
		{"wildcard over CIDR", "*.10.0.0.0/8:80"},
		{"wildcard over hex", "*.0x7f:80"},
		{"wildcard with bad label", "*.-a.example:80"},
		{"wildcard with long label", "*." + label64 + ":80"},
		{"wildcard with long name", "*." + name254 + ":80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := policy.ParseDest(tt.in)
			if err == nil {
				t.Fatalf("ParseDest(%q) = %v, nil; want an error", tt.in, d)
			}
			if d != (policy.Dest{}) {
				t.Errorf("ParseDest(%q) = %v with error; want the zero Dest", tt.in, d)
			}
			if msg := err.Error(); !strings.Contains(msg, strconv.Quote(tt.in)) {
				t.Errorf("ParseDest(%q) error = %q; want it to quote the pattern", tt.in, msg)
			}
		})
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in      string
		want    policy.PortRange
		wantStr string // want.String(); "" for errors
	}{
		{"*", policy.AllPorts, "*"},
		{"0", policy.PortRange{}, "0"},
		{"1", policy.PortRange{Lo: 1, Hi: 1}, "1"},
		{"65535", policy.PortRange{Lo: 65535, Hi: 65535}, "65535"},
		{"0-65535", policy.AllPorts, "*"},
		{"0-65534", policy.PortRange{Lo: 0, Hi: 65534}, "0-65534"},
		{"10-20", policy.PortRange{Lo: 10, Hi: 20}, "10-20"},
		{"20-20", policy.PortRange{Lo: 20, Hi: 20}, "20"},
		{"", policy.PortRange{}, ""},
		{"-", policy.PortRange{}, ""},
		{"21-20", policy.PortRange{}, ""},
		{"01", policy.PortRange{}, ""},
		{"65536", policy.PortRange{}, ""},
		{"1-", policy.PortRange{}, ""},
		{"-1", policy.PortRange{}, ""},
		{" 1", policy.PortRange{}, ""},
		{"1 ", policy.PortRange{}, ""},
		{"1.0", policy.PortRange{}, ""},
		{"*-*", policy.PortRange{}, ""},
		{"\u0661", policy.PortRange{}, ""}, // ARABIC-INDIC DIGIT ONE
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := policy.ParsePortRange(tt.in)
			if tt.wantStr == "" {
				if err == nil {
					t.Fatalf("ParsePortRange(%q) = %+v, nil; want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParsePortRange(%q) = %+v, %v; want %+v, nil", tt.in, got, err, tt.want)
			}
			if s := got.String(); s != tt.wantStr {
				t.Errorf("%+v.String() = %q, want %q", got, s, tt.wantStr)
			}
		})
	}
}

func TestPortRangeContains(t *testing.T) {
	tests := []struct {
		r    policy.PortRange
		port uint16
		want bool
	}{
		{policy.AllPorts, 0, true},
		{policy.AllPorts, 65535, true},
		{policy.PortRange{}, 0, true},
		{policy.PortRange{}, 1, false},
		{policy.PortRange{Lo: 65535, Hi: 65535}, 65535, true},
		{policy.PortRange{Lo: 65535, Hi: 65535}, 65534, false},
		{policy.PortRange{Lo: 10, Hi: 20}, 9, false},
		{policy.PortRange{Lo: 10, Hi: 20}, 10, true},
		{policy.PortRange{Lo: 10, Hi: 20}, 20, true},
		{policy.PortRange{Lo: 10, Hi: 20}, 21, false},
	}
	for _, tt := range tests {
		if got := tt.r.Contains(tt.port); got != tt.want {
			t.Errorf("%+v.Contains(%d) = %v, want %v", tt.r, tt.port, got, tt.want)
		}
	}
}

func TestCheckHostname(t *testing.T) {
	valid := []string{
		"localhost",
		"localhost.",
		"example.net",
		"EXAMPLE.net",
		"a",
		"a.b.c.d.e.f",
		"_dmarc.example.net",
		"xn--bcher-kva.example",
		"a-b-c.example",
		"1a",
		"a1",
		"1.2.3.a",
		"10.0.0.1a",
		"0xg",
		"a.0x1g",
		"1e5x",
		label63,
		name253,
		name253 + ".",
	}
	for _, s := range valid {
		t.Run("valid/"+s, func(t *testing.T) {
			if err := policy.CheckHostname(s); err != nil {
				t.Errorf("CheckHostname(%q) = %v, want nil", s, err)
			}
		})
	}
	invalid := []string{
		"",
		".",
		"..",
		".example",
		"example..",
		"a..b",
		"-a",
		"a-",
		"a.-b.c",
		"a b",
		"a\tb",
		"a/b",
		"a:b",
		"[::1]",
		"::1",
		"a%b",
		"a*b",
		"*.example",
		"bücher.example",
		"\u212Aexample",
		"exa\x00mple",
		"example\xff",
		label64,
		label64 + ".example",
		name254,
		name254 + ".",
		// Numeric forms that inet_aton or a resolver would read as an
		// address: only canonical addresses may name addresses.
		"127.0.0.1",
		"127.1",
		"127.0.1",
		"2130706433",
		"0",
		"0x7f000001",
		"0X7F000001",
		"0x7F.1",
		"0177.0.0.1",
		"10.0.0.1.",
		"1.2.3.4.5",
		"example.123",
		"example.0x10",
		"a.b.0xff",
	}
	for _, s := range invalid {
		t.Run("invalid/"+s, func(t *testing.T) {
			if err := policy.CheckHostname(s); err == nil {
				t.Errorf("CheckHostname(%q) = nil, want an error", s)
			}
		})
	}
}

// No valid host name is also an IP address: a name check can never be
// confused for an address check.
func TestCheckHostnameRefusesAddresses(t *testing.T) {
	for _, s := range []string{"192.0.2.1", "::1", "::ffff:192.0.2.1", "fe80::1%eth0", "fe80::1%x.example.net", "2001:db8::"} {
		if _, err := netip.ParseAddr(s); err != nil {
			t.Fatalf("netip.ParseAddr(%q): %v", s, err)
		}
		if err := policy.CheckHostname(s); err == nil {
			t.Errorf("CheckHostname(%q) = nil, want an error", s)
		}
	}
}

// The zero Dest grants nothing: it is neither an address nor a name pattern.
func TestZeroDestGrantsNothing(t *testing.T) {
	p := policy.Policy{Rules: []policy.Rule{{Name: "zero", UIDs: []uint32{0}, Connect: []policy.Dest{{}}}}}
	root := &policy.Caller{}
	if got := p.ConnectIP(root, netip.MustParseAddr("0.0.0.0"), 0); got.Allowed {
		t.Errorf("ConnectIP(0.0.0.0, 0) = %+v, want denied", got)
	}
	if got := p.ConnectName(root, "example.net", 0); got.Allowed {
		t.Errorf("ConnectName(example.net, 0) = %+v, want denied", got)
	}
	if p.ConnectAnyIP(root, 0) {
		t.Errorf("ConnectAnyIP(0) = true, want false")
	}
}

func FuzzParseDest(f *testing.F) {
	for _, s := range []string{
		"192.0.2.10:443",
		"10.0.0.0/8:8000-8099",
		"[2001:db8::/32]:*",
		"[::ffff:10.0.0.0/104]:0-65535",
		"[::ffff:0:0/96]:0",
		"[fe80::1%eth0]:80",
		"sas.example.net:443",
		"SAS.Example.NET.:443",
		"*.example.net:*",
		"*.:1",
		"127.1:80",
		"0x7f000001:80",
		"10.0.0.1.:80",
		"10.0.0.1/8:80",
		"::1:443",
		"example.net:080",
		"example.net:80-79",
		name253 + ":65535",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := policy.ParseDest(s)
		if err != nil {
			if d != (policy.Dest{}) {
				t.Fatalf("ParseDest(%q) = %v, %v; want the zero Dest with an error", s, d, err)
			}
			return
		}
		printed := d.String()
		again, err := policy.ParseDest(printed)
		if err != nil {
			t.Fatalf("ParseDest(%q) = %v, nil, but its String() %q does not parse: %v", s, d, printed, err)
		}
		if again != d {
			t.Fatalf("ParseDest(%q) = %v, but ParseDest(%q) = %v", s, d, printed, again)
		}
		if p2 := again.String(); p2 != printed {
			t.Fatalf("String() is not stable: %q, then %q", printed, p2)
		}
		if d.Ports.Lo > d.Ports.Hi {
			t.Fatalf("ParseDest(%q).Ports = %+v, an empty range", s, d.Ports)
		}

		// A pattern is either an address pattern or a name pattern, never
		// both: check that through the decisions it makes.
		c := &policy.Caller{}
		p := &policy.Policy{Rules: []policy.Rule{{Name: "r", UIDs: []uint32{0}, Connect: []policy.Dest{d}}}}
		host := printed[:strings.LastIndexByte(printed, ':')]
		isIP := p.ConnectAnyIP(c, d.Ports.Lo)
		if isIP != p.ConnectAnyIP(c, d.Ports.Hi) {
			t.Fatalf("%v: ConnectAnyIP differs between ports %d and %d", d, d.Ports.Lo, d.Ports.Hi)
		}
		if isIP {
			pfx, err := netip.ParsePrefix(strings.Trim(host, "[]"))
			if err != nil {
				a, aerr := netip.ParseAddr(strings.Trim(host, "[]"))
				if aerr != nil {
					t.Fatalf("%v: address pattern printed as %q, which is neither prefix (%v) nor address (%v)", d, host, err, aerr)
				}
				pfx = netip.PrefixFrom(a, a.BitLen())
			}
			if pfx.Addr().Is4In6() {
				t.Fatalf("%v: IPv4-mapped pattern not stored as IPv4", d)
			}
			if pfx.Masked() != pfx {
				t.Fatalf("%v: prefix has host bits set", d)
			}
			if got := p.ConnectIP(c, pfx.Addr(), d.Ports.Lo); got != allow("r") {
				t.Fatalf("%v: ConnectIP(%v, %d) = %+v, want allowed", d, pfx.Addr(), d.Ports.Lo, got)
			}
			if pfx.Addr().Is4() {
				mapped := netip.AddrFrom16(pfx.Addr().As16())
				if got := p.ConnectIP(c, mapped, d.Ports.Hi); got != allow("r") {
					t.Fatalf("%v: ConnectIP(%v, %d) = %+v, want allowed", d, mapped, d.Ports.Hi, got)
				}
			}
			for _, h := range []string{host, strings.Trim(host, "[]"), pfx.Addr().String()} {
				if got := p.ConnectName(c, h, d.Ports.Lo); got.Allowed {
					t.Fatalf("%v: address pattern allows name %q: %+v", d, h, got)
				}
			}
			return
		}
		// A name pattern never allows an address.
		for _, a := range []string{"0.0.0.0", "127.0.0.1", "::", "::1", "::ffff:127.0.0.1", "fe80::1"} {
			if got := p.ConnectIP(c, netip.MustParseAddr(a), d.Ports.Lo); got.Allowed {
				t.Fatalf("%v: name pattern allows address %s: %+v", d, a, got)
			}
		}
		if err := policy.CheckHostname(strings.TrimPrefix(host, "*.")); err != nil {
			t.Fatalf("%v: name pattern with invalid name %q: %v", d, host, err)
		}
		if host != strings.ToLower(host) {
			t.Fatalf("%v: name pattern not lower case", d)
		}
		if suffix, ok := strings.CutPrefix(host, "*."); ok {
			if got := p.ConnectName(c, suffix, d.Ports.Lo); got.Allowed {
				t.Fatalf("%v: wildcard allows its bare suffix %q", d, suffix)
			}
			if sub := "x." + strings.ToUpper(suffix); len(sub) <= 253 {
				if got := p.ConnectName(c, sub, d.Ports.Hi); got != allow("r") {
					t.Fatalf("%v: ConnectName(%q, %d) = %+v, want allowed", d, sub, d.Ports.Hi, got)
				}
			}
			return
		}
		if got := p.ConnectName(c, strings.ToUpper(host)+".", d.Ports.Hi); got != allow("r") {
			t.Fatalf("%v: ConnectName(%q., %d) = %+v, want allowed", d, strings.ToUpper(host), d.Ports.Hi, got)
		}
		if got := p.ConnectName(c, "x."+host, d.Ports.Lo); got.Allowed {
			t.Fatalf("%v: exact name allows subdomain x.%s", d, host)
		}
	})
}

// inetAtonNumeric reports whether s (without one trailing dot) is 1 to 4
// dot-separated C integer literals, as glibc's inet_aton reads them.
func inetAtonNumeric(s string) bool {
	parts := strings.Split(strings.TrimSuffix(s, "."), ".")
	if len(parts) > 4 {
		return false
	}
	for _, p := range parts {
		digits, hex := p, false
		if len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X") {
			digits, hex = p[2:], true
		}
		if digits == "" {
			return false
		}
		for i := 0; i < len(digits); i++ {
			c := digits[i]
			isDigit := c >= '0' && c <= '9'
			isHex := c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
			if !isDigit && !(hex && isHex) {
				return false
			}
		}
	}
	return true
}

func FuzzCheckHostname(f *testing.F) {
	for _, s := range []string{
		"example.net",
		"EXAMPLE.net.",
		"_srv._tcp.example",
		"127.1",
		"0x7f000001",
		"0X7F.0.0.1",
		"10.0.0.1.",
		"fe80::1%x.example.net",
		"a..b",
		"-a",
		"\u212Aexample",
		label64,
		name253,
		name254,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := policy.CheckHostname(s)
		if inetAtonNumeric(s) && err == nil {
			t.Fatalf("CheckHostname(%q) = nil, but inet_aton reads it as an address", s)
		}
		if err != nil {
			return
		}
		if _, perr := netip.ParseAddr(s); perr == nil {
			t.Fatalf("CheckHostname(%q) = nil, but it is an IP address", s)
		}
		name := strings.TrimSuffix(s, ".")
		if len(name) == 0 || len(name) > 253 {
			t.Fatalf("CheckHostname(%q) = nil for a name of %d bytes", s, len(name))
		}
		for i := 0; i < len(name); i++ {
			c := name[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				t.Fatalf("CheckHostname(%q) = nil, but it contains %q", s, c)
			}
		}
		for _, l := range strings.Split(name, ".") {
			if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
				t.Fatalf("CheckHostname(%q) = nil, but it has label %q", s, l)
			}
		}
		for _, v := range []string{strings.ToUpper(s), strings.ToLower(s), name + "."} {
			if err := policy.CheckHostname(v); err != nil {
				t.Fatalf("CheckHostname(%q) = nil but CheckHostname(%q) = %v", s, v, err)
			}
		}
		// A valid name is a valid exact pattern and wildcard suffix.
		for _, pat := range []string{s + ":1", "*." + s + ":1"} {
			if _, err := policy.ParseDest(pat); err != nil {
				t.Fatalf("CheckHostname(%q) = nil but ParseDest(%q) = %v", s, pat, err)
			}
		}
	})
}
