package clearwater

import (
	"bytes"
	"context"
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

// socketpair returns the two ends of a connected unix stream socket pair.
// The test's cleanup closes both.
func socketpair(t *testing.T) (client, server *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // dups fd
		f.Close()
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { conns[i].Close() })
	}
	return conns[0], conns[1]
}

// TestReadRequest checks readRequest over a real stream socket: it hands
// one read to parseRequest, and a client that sends nothing is refused.
func TestReadRequest(t *testing.T) {
	cases := []struct {
		name  string
		send  []byte
		close bool // the client closes after sending
		want  string
		fails bool
	}{
		{name: "plain", send: []byte("sas.example.net:9999"), want: "sas.example.net:9999"},
		{name: "nul terminated", send: []byte("10.0.0.1:80\x00junk"), want: "10.0.0.1:80"},
		{name: "longest", send: bytes.Repeat([]byte("a"), MaxRequest), want: strings.Repeat("a", MaxRequest)},
		{name: "oversize", send: bytes.Repeat([]byte("a"), MaxRequest+1), fails: true},
		{name: "only nul", send: []byte{0}, fails: true},
		{name: "nothing then close", close: true, fails: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := socketpair(t)
			if len(tc.send) > 0 {
				if _, err := client.Write(tc.send); err != nil {
					t.Fatalf("write: %v", err)
				}
			}
			if tc.close {
				client.Close()
			}
			got, err := readRequest(context.Background(), server, 5*time.Second)
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
}
