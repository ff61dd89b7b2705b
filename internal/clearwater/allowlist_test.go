package clearwater

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/testnet"
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

// loadLogged builds a Listener on a (the allow-list is read by New) with
// its log in a buffer, and returns the policy's destinations and the log.
func loadLogged(t *testing.T, a AllowList) (*policy.Policy, string) {
	t.Helper()
	var buf bytes.Buffer
	l := New(Options{Name: "test", Allowed: a, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	pol := l.policy.Load()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return pol, buf.String()
}

// TestAllowListSymlinkNotRead (issue 10.6): a symbolic link in an
// allow-list directory to a secret file outside it (as to /etc/shadow) is
// not read, even as an invalid entry: no byte of the secret reaches the log,
// which says the link was skipped. A FIFO does not stall the reading and a
// file over MaxFileSize is skipped, reported; the other files are used and no
// descriptor is left open. The old reader followed the link and logged the
// secret's first line whole.
func TestAllowListSymlinkNotRead(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte("root:$6$SeCrEtHaSh:19000:0:99999:7:::\nok-if-read.example.net\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "shadow")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sas"), []byte("sas.example.net\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sas", filepath.Join(dir, "sas-link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("big.example.net\n"), MaxFileSize/16+1)
	if err := os.WriteFile(filepath.Join(dir, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	before := testnet.OpenFDs(t)
	pol, log := loadLogged(t, AllowList{Dirs: []string{dir}})
	if after := testnet.OpenFDs(t); after != before {
		t.Errorf("open fds: got %d after loading, want %d as before", after, before)
	}
	for _, leak := range []string{"root", "SeCrEt", "19000", "ok-if-read"} {
		if strings.Contains(log, leak) {
			t.Errorf("log holds %q from the secret file behind the link:\n%s", leak, log)
		}
	}
	for _, want := range []string{
		filepath.Join(dir, "shadow") + " is a symbolic link: not read",
		filepath.Join(dir, "sas-link") + " is a symbolic link: not read",
		filepath.Join(dir, "big") + " is larger than 1048576 bytes: not read",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not say %q:\n%s", want, log)
		}
	}
	c := &policy.Caller{UID: 1000}
	if !pol.ConnectName(c, "sas.example.net", 1).Allowed {
		t.Errorf("sas.example.net from the regular file not allowed; want allowed")
	}
	for _, name := range []string{"ok-if-read.example.net", "big.example.net"} {
		if pol.ConnectName(c, name, 1).Allowed {
			t.Errorf("%s allowed; want its file skipped", name)
		}
	}
}

// TestAllowListRejectedLineLogged (issue 10.6): a rejected line is logged
// with its file and line number and at most its first 16 bytes, escaped;
// the rest of the line never reaches the log, and the lines after it are
// still used.
func TestAllowListRejectedLineLogged(t *testing.T) {
	dir := t.TempDir()
	long := "bad entry here!!" + strings.Repeat("TAILSECRET", 40)
	text := "ok.example.net\n" + long + "\n\x1b[31mred\x07 x\nshort bad\nafter.example.net\n"
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hosts")
	pol, log := loadLogged(t, AllowList{Dirs: []string{dir}})
	if strings.Contains(log, "TAILSECRET") || strings.ContainsAny(log, "\x1b\x07") {
		t.Errorf("log holds more of a rejected line than its escaped 16-byte prefix:\n%s", log)
	}
	for _, want := range []string{
		path + `:2: entry \"bad entry here!!\"... skipped`,
		path + `:3: entry \"\\x1b[31mred\\a x\" skipped`,
		path + `:4: entry \"short bad\" skipped: write host, host:port`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not hold %s:\n%s", want, log)
		}
	}
	c := &policy.Caller{UID: 1000}
	for _, name := range []string{"ok.example.net", "after.example.net"} {
		if !pol.ConnectName(c, name, 1).Allowed {
			t.Errorf("%s not allowed; want the lines around the bad ones used", name)
		}
	}
}
