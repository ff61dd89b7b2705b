package policy_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/policy"
)

// TestBindOptions: a rule without bind_options allows the options that
// give no other user a way into the port, and not reuseaddr (which the
// daemon names only where it exposes the port), reuseport, freebind,
// transparent or bind_to_device; a rule that lists an option allows it.
func TestBindOptions(t *testing.T) {
	g, err := policy.ParseBindGrant("*:127.0.0.1:*")
	if err != nil {
		t.Fatal(err)
	}
	p := &policy.Policy{Rules: []policy.Rule{
		{Name: "defaults", UIDs: []uint32{1}, Bind: []policy.BindGrant{g}},
		{Name: "reuse", UIDs: []uint32{2}, Bind: []policy.BindGrant{g}, BindOptions: []string{"reuseaddr", "reuseport"}},
		{Name: "none", UIDs: []uint32{3}, Bind: []policy.BindGrant{g}, BindOptions: []string{}},
	}}
	tests := []struct {
		uid     uint32
		options []string
		allowed bool
	}{
		{1, nil, true},
		{1, []string{"v6only", "rcvbuf", "sndbuf", "pmtud_off", "fastopen", "defer_accept", "backlog", "listen"}, true},
		{1, []string{"reuseaddr"}, false},
		{1, []string{"listen", "reuseaddr"}, false},
		{1, []string{"reuseport"}, false},
		{1, []string{"freebind"}, false},
		{1, []string{"transparent"}, false},
		{1, []string{"bind_to_device"}, false},
		{2, []string{"reuseaddr"}, true},
		{2, []string{"reuseaddr", "reuseport"}, true},
		{2, []string{"listen"}, false},
		{3, nil, true},
		{3, []string{"v6only"}, false},
	}
	for _, tt := range tests {
		name := p.Rules[tt.uid-1].Name + "/" + strings.Join(tt.options, ",")
		t.Run(name, func(t *testing.T) {
			q := &policy.BindQuery{Proto: "udp", Addr: netip.MustParseAddr("127.0.0.1"), Port: 8053, Share: "none", Options: tt.options}
			dec, why := p.Bind(&policy.Caller{UID: tt.uid}, q)
			if dec.Allowed != tt.allowed {
				t.Fatalf("Bind(uid %d, options %q): got allowed=%v (%q), want %v", tt.uid, tt.options, dec.Allowed, why, tt.allowed)
			}
			if !tt.allowed && !strings.Contains(why, "does not allow socket option") {
				t.Errorf("denial reason: got %q, want it to name the socket option", why)
			}
		})
	}
}
