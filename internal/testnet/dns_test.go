package testnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestDNSServer: Go's own resolver, asking only the test server, gets the
// table's addresses by family, "not found" for a name not in it and no
// address of a family a listed name lacks; every query is counted by name,
// whatever its case; a packet that is no query gets no answer and the
// server keeps serving.
func TestDNSServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := ServeDNS(t, pc, map[string][]netip.Addr{
		"svc.sft.test.": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		"V4.sft.test":   {netip.MustParseAddr("127.0.0.9")},
	})
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.Addr())
	}}

	// A junk packet first: no reply, and the server still answers after.
	junk, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	if _, err := junk.Write([]byte("not a DNS message")); err != nil {
		t.Fatal(err)
	}
	junk.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := junk.Read(make([]byte, 512)); err == nil {
		t.Errorf("junk packet: got a %d-byte reply; want none", n)
	}

	cases := []struct {
		network, host string
		want          []string // nil: not found
	}{
		{"ip4", "svc.sft.test", []string{"127.0.0.1"}},
		{"ip6", "svc.sft.test", []string{"::1"}},
		{"ip", "SVC.sft.test", []string{"127.0.0.1", "::1"}},
		{"ip4", "v4.sft.test", []string{"127.0.0.9"}},
		{"ip6", "v4.sft.test", nil},
		{"ip", "nx.sft.test", nil},
	}
	for _, tc := range cases {
		t.Run(tc.network+"/"+tc.host, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			addrs, err := r.LookupNetIP(ctx, tc.network, tc.host)
			var got []string
			for _, a := range addrs {
				got = append(got, a.String())
			}
			slices.Sort(got)
			if tc.want == nil {
				var de *net.DNSError
				if !errors.As(err, &de) || !de.IsNotFound {
					t.Fatalf("LookupNetIP(%s, %s): got %v, %v; want a not-found DNSError", tc.network, tc.host, got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("LookupNetIP(%s, %s): got %v, %v; want %v", tc.network, tc.host, got, err, tc.want)
			}
		})
	}
	// ip4 + ip6 + ip (two queries) for svc, two for v4, at least one for nx.
	if got := s.Queries("svc.sft.test"); got != 4 {
		t.Errorf("queries for svc.sft.test: got %d; want 4 (ip4, ip6, and ip's A and AAAA)", got)
	}
	if got := s.Queries("V4.SFT.TEST."); got != 2 {
		t.Errorf("queries for v4.sft.test: got %d; want 2", got)
	}
	if got := s.Queries("nx.sft.test"); got < 1 {
		t.Errorf("queries for nx.sft.test: got %d; want at least 1", got)
	}
	if got := s.Queries("other.sft.test"); got != 0 {
		t.Errorf("queries for a name never asked: got %d; want 0", got)
	}
}
