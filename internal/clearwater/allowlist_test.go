package clearwater

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/sockfactory/sockfactory/internal/policy"
)

func TestParseAllowed(t *testing.T) {
	cases := []struct {
		entry string
		want  string // Dest.String(), or "" for an error
	}{
		{"sas.example.net", "sas.example.net:*"},
		{"SAS.Example.NET", "sas.example.net:*"},
		{"sas.example.net:9999", "sas.example.net:9999"},
		{"10.0.0.1", "10.0.0.1:*"},
		{"10.0.0.1:443", "10.0.0.1:443"},
		{"2001:db8::1", "[2001:db8::1]:*"},
		{"[2001:db8::1]", "[2001:db8::1]:*"},
		{"[2001:db8::1]:80", "[2001:db8::1]:80"},
		{"", ""},
		{"host:", ""},
		{"host:*", ""},
		{"host:70000", ""},
		{"bad host", ""},
		{"127.1", ""},
	}
	for _, tc := range cases {
		t.Run(tc.entry, func(t *testing.T) {
			d, err := ParseAllowed(tc.entry)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("ParseAllowed(%q) = %v; want an error", tc.entry, d)
				}
				return
			}
			if err != nil || d.String() != tc.want {
				t.Fatalf("ParseAllowed(%q) = %v, %v; want %s", tc.entry, d, err, tc.want)
			}
		})
	}
}

func TestAllowListLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sas", "# the SAS server\nsas.example.net\n\n  10.1.2.3:9999  # with a port\n")
	write("broken", "ok.example.net\nnot a host\n")
	write(".hidden", "hidden.example.net\n")
	write("backup~", "backup.example.net\n")
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	a := AllowList{Hosts: []string{"cli.example.net"}, Dirs: []string{dir, filepath.Join(dir, "missing")}}
	dests, probs := a.Load()
	pol := &policy.Policy{Rules: []policy.Rule{{Anyone: true, Connect: dests}}}
	c := &policy.Caller{UID: 1000}

	for _, name := range []string{"cli.example.net", "sas.example.net", "OK.example.net"} {
		if !pol.ConnectName(c, name, 5060).Allowed {
			t.Errorf("%s not allowed; want allowed", name)
		}
	}
	for _, name := range []string{"hidden.example.net", "backup.example.net"} {
		if pol.ConnectName(c, name, 5060).Allowed {
			t.Errorf("%s allowed; want skipped", name)
		}
	}
	ip := netip.MustParseAddr("10.1.2.3")
	if !pol.ConnectIP(c, ip, 9999).Allowed || pol.ConnectIP(c, ip, 9998).Allowed {
		t.Errorf("10.1.2.3: want port 9999 only")
	}
	// One bad line and one missing directory: two problems, the rest used.
	if len(probs) != 2 {
		t.Errorf("problems: got %d (%v); want 2 (bad line, missing dir)", len(probs), probs)
	}
}
