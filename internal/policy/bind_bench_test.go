package policy_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sockfactory/sockfactory/internal/policy"
)

// bindBenchPolicy has n rules; the benchmark caller matches only the last,
// whose grant is its last pattern: the slowest allow.
func bindBenchPolicy(b *testing.B, n int) *policy.Policy {
	b.Helper()
	grants := func(patterns ...string) []policy.BindGrant {
		var out []policy.BindGrant
		for _, s := range patterns {
			g, err := policy.ParseBindGrant(s)
			if err != nil {
				b.Fatalf("ParseBindGrant(%q): %v", s, err)
			}
			out = append(out, g)
		}
		return out
	}
	p := &policy.Policy{}
	for i := range n - 1 {
		p.Rules = append(p.Rules, policy.Rule{
			Name: fmt.Sprintf("r%d", i),
			UIDs: []uint32{uint32(10000 + i)},
			Bind: grants(fmt.Sprintf("tcp:10.%d.0.0/16:*", i)),
		})
	}
	p.Rules = append(p.Rules, policy.Rule{
		Name: "last",
		GIDs: []uint32{5000},
		Bind: grants("udp:0.0.0.0:53", "tcp:[::1]:8000-8999", "*:127.0.0.0/8:*"),
	})
	return p
}

var bindCaller = &policy.Caller{UID: 1000, GID: 1000, Groups: []uint32{4, 24, 27, 30, 46, 5000}}

// BenchmarkBind is the decision of every bind request, handoffs included.
func BenchmarkBind(b *testing.B) {
	p := bindBenchPolicy(b, 32)
	for _, bc := range []struct {
		name string
		q    policy.BindQuery
		want bool
	}{
		{"allow", policy.BindQuery{Proto: "tcp", Addr: netip.MustParseAddr("127.0.0.1"), Port: 40000, Share: "any"}, true},
		{"deny", policy.BindQuery{Proto: "tcp", Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Share: "any"}, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d, _ := p.Bind(bindCaller, &bc.q); d.Allowed != bc.want {
					b.Fatalf("Bind(%+v) allowed = %v, want %v", bc.q, d.Allowed, bc.want)
				}
			}
		})
	}
}

// BenchmarkBindAddr is the check of every pickup.
func BenchmarkBindAddr(b *testing.B) {
	p := bindBenchPolicy(b, 32)
	addr := netip.MustParseAddr("127.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		if !p.BindAddr(bindCaller, "tcp", addr, 40000).Allowed {
			b.Fatal("BindAddr denied 127.0.0.1:40000")
		}
	}
}
