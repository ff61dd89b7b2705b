package policy_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sockfactory/sockfactory/internal/policy"
)

func mustDests(tb testing.TB, patterns ...string) []policy.Dest {
	tb.Helper()
	ds := make([]policy.Dest, len(patterns))
	for i, s := range patterns {
		d, err := policy.ParseDest(s)
		if err != nil {
			tb.Fatalf("ParseDest(%q): %v", s, err)
		}
		ds[i] = d
	}
	return ds
}

// testPolicy is the policy most decision tests run against. Each rule has a
// purpose noted beside it; callers below are named after the rule they hit.
func testPolicy(tb testing.TB) *policy.Policy {
	tb.Helper()
	return &policy.Policy{Rules: []policy.Rule{
		{Name: "web", UIDs: []uint32{1000}, Connect: mustDests(tb,
			"192.0.2.10:443",
			"10.0.0.0/8:8000-8099",
			"[2001:db8::/32]:*",
			"web.example.net:443",
			"*.example.org:*",
		)},
		{Name: "dns", GIDs: []uint32{53}, Connect: mustDests(tb,
			"[::ffff:198.51.100.0/120]:53", // a mapped pattern, stored as 198.51.100.0/24
			"[2001:db8:53::1]:53",
		)},
		{Name: "edges", UIDs: []uint32{3000}, Connect: mustDests(tb,
			"203.0.113.0/25:0",
			"203.0.113.128/25:65535",
			"[::/0]:7",          // every IPv6 address, but no IPv4 one
			"[::ffff:0:0/96]:9", // every IPv4 address
			"0.0.0.0/0:10",      // every IPv4 address
			"[2001:db8:1::/48]:1-1023",
		)},
		{Name: "names", UIDs: []uint32{2000}, Connect: mustDests(tb,
			"*.example.net:*",
			"db.example.com:5432",
			"kdc.example.com:88",
			"LocalHost.:*",
		)},
		{Name: "first", GIDs: []uint32{100}, Connect: mustDests(tb,
			"192.0.2.0/24:80",
			"*.order.test:80",
		)},
		{Name: "second", UIDs: []uint32{1001}, Connect: mustDests(tb,
			"192.0.2.0/24:*",
			"*.order.test:*",
		)},
		// A rule without principals applies to nobody.
		{Name: "nobody", Connect: mustDests(tb,
			"0.0.0.0/0:*",
			"[::/0]:*",
			"*.com:*",
		)},
	}}
}

var (
	webUser   = &policy.Caller{UID: 1000, GID: 1000, PID: 1}
	dnsByGID  = &policy.Caller{UID: 99, GID: 53}
	dnsByGrp  = &policy.Caller{UID: 1234, GID: 1234, Groups: []uint32{4, 53, 4000}}
	edgesUser = &policy.Caller{UID: 3000, GID: 3000}
	namesUser = &policy.Caller{UID: 2000, GID: 2000}
	bob       = &policy.Caller{UID: 1001, GID: 100}                         // "first" by GID, "second" by UID
	carol     = &policy.Caller{UID: 1002, GID: 1002, Groups: []uint32{100}} // "first" only
	stranger  = &policy.Caller{UID: 4242, GID: 4242, Groups: []uint32{4243}}
	root      = &policy.Caller{}
	// uidAsGID has the UID of a GIDs entry and the GID of a UIDs entry:
	// neither counts.
	uidAsGID = &policy.Caller{UID: 53, GID: 1000, Groups: []uint32{2000, 3000}}
)

func allow(rule string) policy.Decision { return policy.Decision{Allowed: true, Rule: rule} }

var deny = policy.Decision{}

func TestConnectIP(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		name   string
		caller *policy.Caller
		addr   string
		port   uint16
		want   policy.Decision
	}{
		// One address, one port.
		{"exact", webUser, "192.0.2.10", 443, allow("web")},
		{"port below", webUser, "192.0.2.10", 442, deny},
		{"port above", webUser, "192.0.2.10", 444, deny},
		{"next address", webUser, "192.0.2.11", 443, deny},
		{"previous address", webUser, "192.0.2.9", 443, deny},
		{"mapped request, IPv4 pattern", webUser, "::ffff:192.0.2.10", 443, allow("web")},
		{"compatible request is not mapped", webUser, "::192.0.2.10", 443, deny},

		// CIDR and port range edges.
		{"CIDR first address, range start", webUser, "10.0.0.0", 8000, allow("web")},
		{"CIDR last address, range end", webUser, "10.255.255.255", 8099, allow("web")},
		{"below CIDR", webUser, "9.255.255.255", 8000, deny},
		{"above CIDR", webUser, "11.0.0.0", 8000, deny},
		{"below range", webUser, "10.1.2.3", 7999, deny},
		{"above range", webUser, "10.1.2.3", 8100, deny},
		{"mapped request in CIDR", webUser, "::ffff:10.1.2.3", 8050, allow("web")},
		{"IPv6 CIDR first", webUser, "2001:db8::", 0, allow("web")},
		{"IPv6 CIDR last", webUser, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 65535, allow("web")},
		{"below IPv6 CIDR", webUser, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", 443, deny},
		{"above IPv6 CIDR", webUser, "2001:db9::", 443, deny},
		{"zero address", webUser, "", 443, deny},

		// A name pattern never grants an address, on any port.
		{"name pattern port, other address", webUser, "198.51.100.7", 443, deny},
		{"only name patterns", namesUser, "127.0.0.1", 5432, deny},
		{"only name patterns, loopback v6", namesUser, "::1", 443, deny},
		{"only name patterns, port 0", namesUser, "0.0.0.0", 0, deny},

		// A mapped pattern is an IPv4 pattern.
		{"IPv4 request, mapped pattern, first", dnsByGID, "198.51.100.0", 53, allow("dns")},
		{"IPv4 request, mapped pattern, last", dnsByGID, "198.51.100.255", 53, allow("dns")},
		{"mapped request, mapped pattern", dnsByGID, "::ffff:198.51.100.7", 53, allow("dns")},
		{"IPv4 request, mapped pattern, outside", dnsByGID, "198.51.101.0", 53, deny},
		{"IPv4 request, mapped pattern, wrong port", dnsByGID, "198.51.100.7", 54, deny},
		{"IPv6 single address", dnsByGID, "2001:db8:53::1", 53, allow("dns")},
		{"IPv6 next address", dnsByGID, "2001:db8:53::2", 53, deny},
		{"supplementary group", dnsByGrp, "198.51.100.7", 53, allow("dns")},

		// Port 0 and 65535, and the halves of a /24.
		{"port 0 low half first", edgesUser, "203.0.113.0", 0, allow("edges")},
		{"port 0 low half last", edgesUser, "203.0.113.127", 0, allow("edges")},
		{"port 1 low half", edgesUser, "203.0.113.127", 1, deny},
		{"port 0 high half", edgesUser, "203.0.113.128", 0, deny},
		{"port 65535 high half first", edgesUser, "203.0.113.128", 65535, allow("edges")},
		{"port 65535 high half last", edgesUser, "203.0.113.255", 65535, allow("edges")},
		{"port 65534 high half", edgesUser, "203.0.113.255", 65534, deny},
		{"port 65535 low half", edgesUser, "203.0.113.0", 65535, deny},

		// IPv6 patterns never grant IPv4, mapped or not, and vice versa.
		{"::/0 grants IPv6", edgesUser, "::1", 7, allow("edges")},
		{"::/0 does not grant IPv4", edgesUser, "192.0.2.1", 7, deny},
		{"::/0 does not grant mapped IPv4", edgesUser, "::ffff:192.0.2.1", 7, deny},
		{"mapped ::/96 grants IPv4", edgesUser, "192.0.2.1", 9, allow("edges")},
		{"mapped ::/96 grants mapped IPv4", edgesUser, "::ffff:192.0.2.1", 9, allow("edges")},
		{"mapped ::/96 does not grant IPv6", edgesUser, "::1", 9, deny},
		{"mapped ::/96 does not grant its own IPv6 neighbour", edgesUser, "::fffe:c000:201", 9, deny},
		{"0.0.0.0/0 grants broadcast", edgesUser, "255.255.255.255", 10, allow("edges")},
		{"0.0.0.0/0 grants mapped zero", edgesUser, "::ffff:0.0.0.0", 10, allow("edges")},
		{"0.0.0.0/0 does not grant IPv6", edgesUser, "::", 10, deny},
		{"IPv6 range start", edgesUser, "2001:db8:1::5", 1, allow("edges")},
		{"IPv6 range end", edgesUser, "2001:db8:1:ffff::5", 1023, allow("edges")},
		{"IPv6 above range", edgesUser, "2001:db8:1::5", 1024, deny},
		{"IPv6 below range", edgesUser, "2001:db8:1::5", 0, deny},
		{"zero address everywhere", edgesUser, "", 10, deny},

		// Rule order decides which rule is reported.
		{"first matching rule wins", bob, "192.0.2.1", 80, allow("first")},
		{"later rule when first has not the port", bob, "192.0.2.1", 81, allow("second")},
		{"supplementary group reaches first", carol, "192.0.2.1", 80, allow("first")},
		{"second not reachable by group", carol, "192.0.2.1", 81, deny},

		// Callers no rule names.
		{"stranger", stranger, "192.0.2.10", 443, deny},
		{"stranger, open rule", stranger, "0.0.0.0", 0, deny},
		{"root", root, "192.0.2.10", 443, deny},
		{"UID is not a GID", uidAsGID, "198.51.100.7", 53, deny},
		{"GID is not a UID", uidAsGID, "192.0.2.10", 443, deny},
		{"groups are not UIDs", uidAsGID, "203.0.113.0", 0, deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addr netip.Addr
			if tt.addr != "" {
				addr = netip.MustParseAddr(tt.addr)
			}
			got := p.ConnectIP(tt.caller, addr, tt.port)
			if got != tt.want {
				t.Errorf("ConnectIP(%+v, %v, %d) = %+v, want %+v", *tt.caller, addr, tt.port, got, tt.want)
			}
		})
	}
}

func TestConnectName(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		name   string
		caller *policy.Caller
		host   string
		port   uint16
		want   policy.Decision
	}{
		// Exact names.
		{"exact", webUser, "web.example.net", 443, allow("web")},
		{"exact, upper case", webUser, "WEB.Example.NET", 443, allow("web")},
		{"exact, trailing dot", webUser, "web.example.net.", 443, allow("web")},
		{"exact, two trailing dots", webUser, "web.example.net..", 443, deny},
		{"exact, wrong port", webUser, "web.example.net", 80, deny},
		{"exact, other name", webUser, "www.example.net", 443, deny},
		{"exact does not match subdomain", namesUser, "x.db.example.com", 5432, deny},
		{"exact does not match parent", namesUser, "example.com", 5432, deny},
		{"exact, other port", namesUser, "db.example.com", 5433, deny},
		{"exact, lower-cased pattern", namesUser, "localhost", 0, allow("names")},
		{"exact, any port", namesUser, "LOCALHOST.", 65535, allow("names")},
		{"exact, prefix of name", namesUser, "db.example.co", 5432, deny},
		{"exact, name has extra prefix", namesUser, "xdb.example.com", 5432, deny},

		// Wildcards match names below the suffix, not the suffix.
		{"wildcard, one label", webUser, "a.example.org", 1, allow("web")},
		{"wildcard, two labels", webUser, "a.b.example.org", 65535, allow("web")},
		{"wildcard, port 0", webUser, "a.example.org", 0, allow("web")},
		{"wildcard, upper case", webUser, "A.EXAMPLE.ORG", 443, allow("web")},
		{"wildcard, trailing dot", webUser, "a.example.org.", 443, allow("web")},
		{"wildcard, bare suffix", webUser, "example.org", 443, deny},
		{"wildcard, bare suffix, trailing dot", webUser, "EXAMPLE.ORG.", 443, deny},
		{"wildcard, suffix without dot", webUser, "xexample.org", 443, deny},
		{"wildcard, suffix in the middle", webUser, "a.example.org.evil.test", 443, deny},
		{"wildcard, empty label", webUser, ".example.org", 443, deny},
		{"wildcard, empty labels", webUser, "..example.org", 443, deny},
		{"wildcard, invalid label", webUser, "a b.example.org", 443, deny},

		// ConnectName matches only name patterns: an address, however it is
		// spelled, is never allowed by a name pattern, and IP patterns never
		// allow names.
		{"IP pattern, IP as name", webUser, "192.0.2.10", 443, deny},
		{"IP pattern, IPv6 as name", webUser, "2001:db8::1", 443, deny},
		{"IP pattern, bracketed IPv6 as name", webUser, "[2001:db8::1]", 443, deny},
		{"every IPv4 pattern, IP as name", edgesUser, "192.0.2.1", 10, deny},
		{"every IPv6 pattern, IP as name", edgesUser, "::1", 7, deny},
		{"IPv4 address", namesUser, "127.0.0.1", 5432, deny},
		{"IPv6 address", namesUser, "::1", 443, deny},
		{"zone shaped like a wildcard name", namesUser, "fe80::1%x.example.net", 443, deny},
		{"zone shaped like an exact name", namesUser, "fe80::1%db.example.com", 5432, deny},
		{"mapped zone shaped like a name", namesUser, "::ffff:127.0.0.1%a.example.net", 443, deny},
		{"short IPv4", namesUser, "127.1", 443, deny},
		{"hex IPv4", namesUser, "0x7f000001", 443, deny},
		{"IPv4 with trailing dot", namesUser, "10.0.0.1.", 443, deny},
		{"name pattern, name is suffix of IP-ish", namesUser, "1.example.net", 443, allow("names")},

		// Case-insensitivity is ASCII only, as in DNS: Unicode folding
		// (KELVIN SIGN ~ k, LONG S ~ s) must not let another name through.
		{"Kelvin sign", namesUser, "\u212Adc.example.com", 88, deny},
		{"long s in wildcard suffix", webUser, "a.example.org\u017F", 443, deny},
		{"non-ASCII below wildcard", namesUser, "\u017F.example.net", 443, deny},

		// Rule order.
		{"first matching rule wins", bob, "a.order.test", 80, allow("first")},
		{"later rule when first has not the port", bob, "a.order.test", 81, allow("second")},
		{"supplementary group reaches first", carol, "a.order.test", 80, allow("first")},
		{"second not reachable by group", carol, "a.order.test", 81, deny},

		// Callers no rule names.
		{"stranger", stranger, "web.example.net", 443, deny},
		{"stranger, open rule", stranger, "a.com", 443, deny},
		{"root", root, "a.example.org", 443, deny},
		{"GID is not a UID", uidAsGID, "web.example.net", 443, deny},
		{"groups are not UIDs", uidAsGID, "db.example.com", 5432, deny},
		{"empty host", namesUser, "", 0, deny},
		{"dot host", namesUser, ".", 0, deny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.ConnectName(tt.caller, tt.host, tt.port)
			if got != tt.want {
				t.Errorf("ConnectName(%+v, %q, %d) = %+v, want %+v", *tt.caller, tt.host, tt.port, got, tt.want)
			}
		})
	}
}

func TestConnectAnyIP(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		name   string
		caller *policy.Caller
		port   uint16
		want   bool
	}{
		{"single port", webUser, 443, true},
		{"range start", webUser, 8000, true},
		{"IPv6 any port", webUser, 1, true},
		{"only name patterns", namesUser, 443, false},
		{"only name patterns, port 0", namesUser, 0, false},
		{"only name patterns, port 65535", namesUser, 65535, false},
		{"mapped pattern", dnsByGrp, 53, true},
		{"mapped pattern, other port", dnsByGrp, 54, false},
		{"port 0", edgesUser, 0, true},
		{"port 65535", edgesUser, 65535, true},
		{"port outside every pattern", edgesUser, 1024, false},
		{"stranger", stranger, 80, false},
		{"root", root, 443, false},
		{"UID is not a GID", uidAsGID, 53, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.ConnectAnyIP(tt.caller, tt.port); got != tt.want {
				t.Errorf("ConnectAnyIP(%+v, %d) = %v, want %v", *tt.caller, tt.port, got, tt.want)
			}
		})
	}
}

func TestKnown(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		name   string
		caller *policy.Caller
		want   bool
	}{
		{"by UID", webUser, true},
		{"by GID", dnsByGID, true},
		{"by supplementary group", dnsByGrp, true},
		{"by UID and GID", bob, true},
		{"by group only", carol, true},
		{"stranger", stranger, false},
		{"root", root, false},
		{"UID, GID and groups in the wrong lists", uidAsGID, false},
		{"nil groups", &policy.Caller{UID: 4242, GID: 100}, true},
		{"empty groups", &policy.Caller{UID: 4242, GID: 4242, Groups: []uint32{}}, false},
		{"PID means nothing", &policy.Caller{UID: 4242, GID: 4242, PID: 1000}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Known(tt.caller); got != tt.want {
				t.Errorf("Known(%+v) = %v, want %v", *tt.caller, got, tt.want)
			}
		})
	}
}

// A rule without principals, however wide its grants, makes nobody known.
func TestKnownIgnoresRulesWithoutPrincipals(t *testing.T) {
	p := &policy.Policy{Rules: []policy.Rule{{Name: "nobody", Connect: mustDests(t, "0.0.0.0/0:*")}}}
	for _, c := range []*policy.Caller{root, stranger, webUser} {
		if p.Known(c) {
			t.Errorf("Known(%+v) = true, want false", *c)
		}
	}
}

func TestZeroPolicyDenies(t *testing.T) {
	var p policy.Policy
	for _, c := range []*policy.Caller{root, webUser, {UID: 65535, GID: 65535, Groups: []uint32{0}}} {
		name := fmt.Sprintf("uid%d", c.UID)
		t.Run(name, func(t *testing.T) {
			if p.Known(c) {
				t.Errorf("Known = true, want false")
			}
			for _, a := range []string{"0.0.0.0", "127.0.0.1", "::1", "::ffff:127.0.0.1"} {
				for _, port := range []uint16{0, 80, 65535} {
					if got := p.ConnectIP(c, netip.MustParseAddr(a), port); got != deny {
						t.Errorf("ConnectIP(%s, %d) = %+v, want %+v", a, port, got, deny)
					}
				}
			}
			if got := p.ConnectName(c, "localhost", 80); got != deny {
				t.Errorf("ConnectName(localhost, 80) = %+v, want %+v", got, deny)
			}
			if p.ConnectAnyIP(c, 80) {
				t.Errorf("ConnectAnyIP(80) = true, want false")
			}
		})
	}
}

// ConnectIP sits on the path of every connect: it must not allocate, whether
// it allows or denies, on either family.
func TestConnectIPDoesNotAllocate(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		name   string
		caller *policy.Caller
		addr   netip.Addr
		port   uint16
	}{
		{"allowed by first rule", webUser, netip.MustParseAddr("192.0.2.10"), 443},
		{"allowed late by group", dnsByGrp, netip.MustParseAddr("::ffff:198.51.100.7"), 53},
		{"allowed IPv6", edgesUser, netip.MustParseAddr("2001:db8:1::5"), 80},
		{"denied after every rule", carol, netip.MustParseAddr("2001:db8::1"), 81},
		{"unknown caller", stranger, netip.MustParseAddr("10.0.0.1"), 8000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d policy.Decision
			allocs := testing.AllocsPerRun(1000, func() {
				d = p.ConnectIP(tt.caller, tt.addr, tt.port)
			})
			if allocs != 0 {
				t.Errorf("ConnectIP(%v, %d) allocates %v times per call, want 0", tt.addr, tt.port, allocs)
			}
			_ = d
		})
	}
}

// benchPolicy is a policy of n rules in which the benchmark caller matches
// only the last, and its grant is the last pattern: the slowest allow.
func benchPolicy(b *testing.B, n int) *policy.Policy {
	b.Helper()
	p := &policy.Policy{}
	for i := range n - 1 {
		p.Rules = append(p.Rules, policy.Rule{
			Name:    fmt.Sprintf("r%d", i),
			UIDs:    []uint32{uint32(10000 + i)},
			GIDs:    []uint32{uint32(20000 + i)},
			Connect: mustDests(b, fmt.Sprintf("10.%d.0.0/16:*", i), fmt.Sprintf("*.r%d.example:*", i)),
		})
	}
	p.Rules = append(p.Rules, policy.Rule{
		Name: "last",
		GIDs: []uint32{5000},
		Connect: mustDests(b,
			"192.0.2.0/24:80",
			"[2001:db8::/32]:80",
			"api.example.net:80",
			"*.svc.example.net:443",
			"198.51.100.0/24:443",
		),
	})
	return p
}

var benchCaller = &policy.Caller{UID: 1000, GID: 1000, Groups: []uint32{4, 24, 27, 30, 46, 5000}}

func BenchmarkConnectIP(b *testing.B) {
	p := benchPolicy(b, 32)
	for _, bc := range []struct {
		name string
		addr netip.Addr
		port uint16
		want bool
	}{
		{"allow/v4", netip.MustParseAddr("198.51.100.7"), 443, true},
		{"allow/mapped", netip.MustParseAddr("::ffff:198.51.100.7"), 443, true},
		{"deny/v6", netip.MustParseAddr("2001:db9::1"), 443, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p.ConnectIP(benchCaller, bc.addr, bc.port).Allowed != bc.want {
					b.Fatalf("ConnectIP(%v, %d) allowed = %v, want %v", bc.addr, bc.port, !bc.want, bc.want)
				}
			}
		})
	}
}

func BenchmarkConnectName(b *testing.B) {
	p := benchPolicy(b, 32)
	for _, bc := range []struct {
		name string
		host string
		port uint16
		want bool
	}{
		{"allow/exact", "API.example.net", 80, true},
		{"allow/wildcard", "pod-1234.ns.svc.example.net", 443, true},
		{"deny", "other.example.com", 443, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p.ConnectName(benchCaller, bc.host, bc.port).Allowed != bc.want {
					b.Fatalf("ConnectName(%q, %d) allowed = %v, want %v", bc.host, bc.port, !bc.want, bc.want)
				}
			}
		})
	}
}

func TestRuleNetns(t *testing.T) {
	dest := func(s string) policy.Dest {
		d, err := policy.ParseDest(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	grant, err := policy.ParseBindGrant("tcp:*:80")
	if err != nil {
		t.Fatal(err)
	}
	p := &policy.Policy{Rules: []policy.Rule{
		{Name: "own", UIDs: []uint32{1}, Connect: []policy.Dest{dest("10.0.0.1:80")}},
		{Name: "signalling", UIDs: []uint32{2}, Netns: []string{"signalling", "caller"}, Connect: []policy.Dest{dest("10.0.0.1:80")}, Bind: []policy.BindGrant{grant}},
		{Name: "both", UIDs: []uint32{3}, Netns: []string{"daemon", "mgmt"}, Connect: []policy.Dest{dest("10.0.0.1:80")}},
	}}
	a := netip.MustParseAddr("10.0.0.1")
	for _, c := range []struct {
		uid   uint32
		netns string
		want  bool
	}{
		{1, "", true},
		{1, "signalling", false},
		{1, "caller", false},
		{2, "", false},
		{2, "signalling", true},
		{2, "caller", true},
		{2, "mgmt", false},
		{3, "", true},
		{3, "mgmt", true},
		{3, "caller", false},
	} {
		caller := &policy.Caller{UID: c.uid, Netns: c.netns}
		if got := p.ConnectIP(caller, a, 80).Allowed; got != c.want {
			t.Errorf("uid %d netns %q: ConnectIP allowed %v, want %v", c.uid, c.netns, got, c.want)
		}
		if got := p.ConnectName(caller, "a.example", 80).Allowed; got {
			t.Errorf("uid %d netns %q: a name no pattern names is allowed", c.uid, c.netns)
		}
		if !p.Known(caller) {
			t.Errorf("uid %d netns %q: Known false; every rule's principal is known whatever the namespace", c.uid, c.netns)
		}
	}
	for _, c := range []struct {
		netns string
		want  bool
	}{{"", false}, {"signalling", true}, {"caller", true}, {"mgmt", false}} {
		d, _ := p.Bind(&policy.Caller{UID: 2, Netns: c.netns}, &policy.BindQuery{Proto: "tcp", Addr: netip.IPv4Unspecified(), Port: 80, Share: "none"})
		if d.Allowed != c.want {
			t.Errorf("bind port 80 in %q: allowed %v, want %v", c.netns, d.Allowed, c.want)
		}
	}
}
