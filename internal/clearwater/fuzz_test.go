package clearwater

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/broker"
	"github.com/sockfactory/sockfactory/internal/policy"
)

// FuzzParseAllowed checks that ParseAllowed never panics, and that an entry
// it accepts is a valid destination pattern that, written back in the
// allow-list's own form, parses to the same pattern.
func FuzzParseAllowed(f *testing.F) {
	for _, s := range []string{
		"sas.example.net",
		"SAS.Example.NET.",
		"sas.example.net:9999",
		"10.0.0.1",
		"10.0.0.1:443",
		"2001:db8::1",
		"[2001:db8::1]",
		"[2001:db8::1]:80",
		"::ffff:10.0.0.1",
		"[::ffff:10.0.0.1]:5060",
		"fe80::1%eth0",
		"10.0.0.0/8",
		"[2001:db8::/32]",
		"*.example.net:80-90",
		"host:",
		"host:*",
		"host:0",
		"127.1",
		"bad host",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, entry string) {
		d, err := ParseAllowed(entry)
		if err != nil {
			if d != (policy.Dest{}) {
				t.Fatalf("ParseAllowed(%q) = %v, %v; want the zero Dest with an error", entry, d, err)
			}
			return
		}
		printed := d.String()
		if again, err := policy.ParseDest(printed); err != nil || again != d {
			t.Fatalf("ParseAllowed(%q) = %v, but ParseDest(%q) = %v, %v", entry, d, printed, again, err)
		}
		// An any-port pattern is written as the bare host.
		line := printed
		if d.Ports == policy.AllPorts {
			line = strings.TrimSuffix(printed, ":*")
		}
		if again, err := ParseAllowed(line); err != nil || again != d {
			t.Fatalf("ParseAllowed(%q) = %v, but ParseAllowed(%q) = %v, %v", entry, d, line, again, err)
		}
		if a, err := netip.ParseAddr(entry); err == nil && a.Is6() && !a.Is4In6() {
			if again, err := ParseAllowed("[" + entry + "]"); err != nil || again != d {
				t.Fatalf("bare IPv6 ParseAllowed(%q) = %v, but bracketed = %v, %v", entry, d, again, err)
			}
		}
	})
}

// FuzzRequest feeds arbitrary bytes, as one read returned them, through the
// Clearwater request path up to the broker: the length rule, the cut at NUL,
// the empty check, then broker.ParseTarget.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"sas.example.net:9999",
		"sas.example.net:9999\x00",
		"sas.example.net:9999\x00garbage after the terminator",
		"10.0.0.1:80",
		"[::1]:443",
		"[::ffff:10.0.0.1]:22",
		"\x00sas.example.net:9999",
		"\x00",
		"sas.example.net",
		"sas.example.net:9999\n",
		"sas.example.net:99999",
		"\xff\xfe:80",
		strings.Repeat("a", MaxRequest),
		strings.Repeat("a", MaxRequest+1),
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := parseRequest(b)
		want := b
		if i := bytes.IndexByte(want, 0); i >= 0 {
			want = want[:i]
		}
		switch {
		case len(b) > MaxRequest:
			if err == nil {
				t.Fatalf("parseRequest(%d bytes) = %q, nil; want an oversize error", len(b), req)
			}
			return
		case len(want) == 0:
			if err == nil {
				t.Fatalf("parseRequest(%q) = %q, nil; want an empty-request error", b, req)
			}
			return
		case err != nil || req != string(want):
			t.Fatalf("parseRequest(%q) = %q, %v; want %q", b, req, err, want)
		}

		tg, err := broker.ParseTarget(req)
		if err != nil {
			return
		}
		if tg.Port == 0 || strings.IndexByte(tg.Host, 0) >= 0 {
			t.Fatalf("request %q gave target %+v", req, tg)
		}
		if !tg.IP.IsValid() {
			if err := policy.CheckHostname(tg.Host); err != nil {
				t.Fatalf("request %q gave name %q, but CheckHostname = %v", req, tg.Host, err)
			}
		}
		// A client terminating the same request with a NUL, as C
		// clients may, asks for the same target.
		if len(req) < MaxRequest {
			again, err := parseRequest(append([]byte(req), 0))
			if err != nil || again != req {
				t.Fatalf("parseRequest(%q + NUL) = %q, %v; want %q", req, again, err, req)
			}
		}
	})
}

// socketpair returns the two ends of a connected unix stream socket pair:
// the client's as a *net.UnixConn, the server's as a non-blocking
// descriptor, as the listener accepts them. The test's cleanup closes the
// client's; readRequest's caller owns the server's.
func socketpair(t *testing.T) (client *net.UnixConn, server int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	f := os.NewFile(uintptr(fds[0]), "socketpair")
	c, err := net.FileConn(f) // dups fd
	f.Close()
	if err != nil {
		t.Fatalf("FileConn: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := unix.SetNonblock(fds[1], true); err != nil {
		t.Fatal(err)
	}
	return c.(*net.UnixConn), fds[1]
}

// TestReadRequest checks readRequest over a real stream socket: it hands
// one read to parseRequest, a request that comes late is waited for (after
// the listener was told it would wait), and a client that sends nothing is
// refused.
func TestReadRequest(t *testing.T) {
	cases := []struct {
		name     string
		send     []byte
		late     bool // sent after readRequest began
		close    bool // the client closes after sending
		want     string
		fails    bool
		mustWait bool
	}{
		{name: "plain", send: []byte("sas.example.net:9999"), want: "sas.example.net:9999"},
		{name: "late", send: []byte("10.0.0.1:80"), late: true, want: "10.0.0.1:80", mustWait: true},
		{name: "nul terminated", send: []byte("10.0.0.1:80\x00junk"), want: "10.0.0.1:80"},
		{name: "longest", send: bytes.Repeat([]byte("a"), MaxRequest), want: strings.Repeat("a", MaxRequest)},
		{name: "oversize", send: bytes.Repeat([]byte("a"), MaxRequest+1), fails: true, mustWait: true},
		{name: "only nul", send: []byte{0}, fails: true},
		{name: "nothing then close", close: true, fails: true},
		{name: "silent", fails: true, mustWait: true},
	}
	l := New(Options{ReadTimeout: 200 * time.Millisecond})
	defer l.Close()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := socketpair(t)
			if len(tc.send) > 0 && !tc.late {
				if _, err := client.Write(tc.send); err != nil {
					t.Fatalf("write: %v", err)
				}
			}
			if tc.late {
				time.AfterFunc(50*time.Millisecond, func() { client.Write(tc.send) })
			}
			if tc.close {
				client.Close()
			}
			waited := 0
			c := &conn{fd: server}
			defer c.close(l)
			var buf [MaxRequest + 1]byte
			got, err := l.readRequest(c, buf[:], func() { waited++ })
			if tc.mustWait && waited == 0 {
				t.Errorf("readRequest(%q) waited without saying so first", tc.send)
			}
			if !tc.mustWait && waited != 0 {
				t.Errorf("readRequest(%q) said it would wait, for a request already there", tc.send)
			}
			if tc.fails {
				if err == nil {
					t.Fatalf("readRequest(%q) = %q, nil; want an error", tc.send, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("readRequest(%q) = %q, %v; want %q", tc.send, got, err, tc.want)
			}
		})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) != 0 {
		t.Errorf("%d connections left registered with the listener", len(l.conns))
	}
}
