package policy_test

import (
	"net/netip"
	"testing"

	"github.com/sockfactory/sockfactory/internal/policy"
)

// FuzzParseBindGrant checks that ParseBindGrant never panics, that a grant
// it accepts prints as a string it parses back to the same grant, and that
// the grant allows what it says and no more.
func FuzzParseBindGrant(f *testing.F) {
	for _, s := range []string{
		"udp:0.0.0.0:53",
		"tcp:[::]:53",
		"*:*:53",
		"tcp:10.1.0.0/16:8000-8999",
		"udp:[::ffff:10.0.0.0/104]:0-1023",
		"tcp:[::ffff:0:0/80]:*",
		"tcp:[::ffff:192.0.2.1]:0",
		"tcp:[192.0.2.1]:80",
		"tcp:::1:80",
		"tcp:[fe80::1%eth0]:80",
		"tcp:10.0.0.1/8:80",
		"tcp:127.1:80",
		"tcp:*:0-65535",
		"tcp:*:080",
		"tcp:*:9-8",
		"tcp:[]:1",
		"TCP:*:1",
		"sctp:*:1",
		"tcp:*",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := policy.ParseBindGrant(s)
		if err != nil {
			if g != (policy.BindGrant{}) {
				t.Fatalf("ParseBindGrant(%q) = %v, %v; want the zero grant with an error", s, g, err)
			}
			return
		}
		printed := g.String()
		again, err := policy.ParseBindGrant(printed)
		if err != nil {
			t.Fatalf("ParseBindGrant(%q) = %v, but its String() %q does not parse: %v", s, g, printed, err)
		}
		if again != g {
			t.Fatalf("ParseBindGrant(%q) = %+v, but ParseBindGrant(%q) = %+v", s, g, printed, again)
		}
		if p2 := again.String(); p2 != printed {
			t.Fatalf("String() is not stable: %q, then %q", printed, p2)
		}

		if g.Proto != "" && g.Proto != "tcp" && g.Proto != "udp" {
			t.Fatalf("ParseBindGrant(%q).Proto = %q, want tcp, udp or empty", s, g.Proto)
		}
		if g.Ports.Lo > g.Ports.Hi {
			t.Fatalf("ParseBindGrant(%q).Ports = %+v, an empty range", s, g.Ports)
		}
		addr := netip.IPv4Unspecified()
		if g.Prefix.IsValid() {
			a := g.Prefix.Addr()
			if a.Zone() != "" || g.Prefix.Masked() != g.Prefix || a.Is4In6() && g.Prefix.Bits() >= 96 {
				t.Fatalf("ParseBindGrant(%q).Prefix = %v: want no zone, no host bits, IPv4-mapped stored as IPv4", s, g.Prefix)
			}
			addr = a
		}

		// The grant allows its own corners, and nothing just outside.
		c := &policy.Caller{}
		p := &policy.Policy{Rules: []policy.Rule{{Name: "r", UIDs: []uint32{0}, Bind: []policy.BindGrant{g}}}}
		protos := []string{"tcp", "udp"}
		if g.Proto != "" {
			protos = []string{g.Proto}
		}
		for _, proto := range protos {
			for _, port := range []uint16{g.Ports.Lo, g.Ports.Hi} {
				if d := p.BindAddr(c, proto, addr, port); !d.Allowed {
					t.Fatalf("%v: BindAddr(%s, %v, %d) = %+v, want allowed", g, proto, addr, port, d)
				}
				if addr.Is4() {
					mapped := netip.AddrFrom16(addr.As16())
					if d := p.BindAddr(c, proto, mapped, port); !d.Allowed {
						t.Fatalf("%v: BindAddr(%s, %v, %d) = %+v, want allowed", g, proto, mapped, port, d)
					}
				}
			}
			if g.Ports.Lo > 0 {
				if d := p.BindAddr(c, proto, addr, g.Ports.Lo-1); d.Allowed {
					t.Fatalf("%v: BindAddr(%s, %v, %d) allowed, below the range", g, proto, addr, g.Ports.Lo-1)
				}
			}
			if g.Ports.Hi < 65535 {
				if d := p.BindAddr(c, proto, addr, g.Ports.Hi+1); d.Allowed {
					t.Fatalf("%v: BindAddr(%s, %v, %d) allowed, above the range", g, proto, addr, g.Ports.Hi+1)
				}
			}
		}
		if g.Prefix.IsValid() {
			other := netip.IPv6Unspecified()
			if addr.Is6() {
				other = netip.IPv4Unspecified()
			}
			if d := p.BindAddr(c, protos[0], other, g.Ports.Lo); d.Allowed {
				t.Fatalf("%v: BindAddr(%s, %v, %d) allowed, an address of the other family", g, protos[0], other, g.Ports.Lo)
			}
		}
		if g.Proto != "" {
			other := map[string]string{"tcp": "udp", "udp": "tcp"}[g.Proto]
			if d := p.BindAddr(c, other, addr, g.Ports.Lo); d.Allowed {
				t.Fatalf("%v: BindAddr(%s, ...) allowed, want only %s", g, other, g.Proto)
			}
		}
	})
}
