package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDenyList(t *testing.T) {
	cases := []struct {
		name    string
		doc     string
		denied  []string // ip:port
		allowed []string
		err     string
	}{
		{"default", "", []string{"0.0.0.0:80", "0.1.2.3:1", "[::]:443"}, []string{"127.0.0.1:80", "[::1]:80"}, ""},
		{"configured replaces the default", "[connect]\ndeny = [\"169.254.0.0/16:*\"]\n", []string{"169.254.169.254:80"}, []string{"0.0.0.0:80"}, ""},
		{"empty list", "[connect]\ndeny = []\n", nil, []string{"0.0.0.0:80"}, ""},
		{"names refused", "[connect]\ndeny = [\n  \"evil.example:*\",\n]\n", nil, nil, "x.toml:3: deny"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("x.toml", []byte(tc.doc))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse: got %v; want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.denied {
				ap := netip.MustParseAddrPort(s)
				if !c.Policy.Denied(ap.Addr(), ap.Port()) {
					t.Errorf("%s not denied; want denied", s)
				}
			}
			for _, s := range tc.allowed {
				ap := netip.MustParseAddrPort(s)
				if c.Policy.Denied(ap.Addr(), ap.Port()) {
					t.Errorf("%s denied; want not on the deny list", s)
				}
			}
		})
	}
	if d := Default(); !d.Policy.Denied(netip.MustParseAddr("0.0.0.0"), 80) {
		t.Error("built-in default does not deny 0.0.0.0")
	}
}
