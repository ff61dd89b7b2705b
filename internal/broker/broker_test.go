package broker

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/wire"
)

func TestParseTarget(t *testing.T) {
	cases := []struct {
		in       string
		host     string
		port     uint16
		ip       string // "" when a name
		wantFail bool
	}{
		{in: "127.0.0.1:80", host: "127.0.0.1", port: 80, ip: "127.0.0.1"},
		{in: "[::1]:443", host: "::1", port: 443, ip: "::1"},
		{in: "[::ffff:10.0.0.1]:22", host: "::ffff:10.0.0.1", port: 22, ip: "10.0.0.1"},
		{in: "sas.example.net:9999", host: "sas.example.net", port: 9999},
		{in: "localhost.:1", host: "localhost.", port: 1},
		{in: "nocolon", wantFail: true},
		{in: "::1:80", wantFail: true},
		{in: "[::1]", wantFail: true},
		{in: "[host]:80", wantFail: true},
		{in: "[fe80::1%eth0]:80", wantFail: true},
		{in: "host:0", wantFail: true},
		{in: "host:65536", wantFail: true},
		{in: "host:080", wantFail: true},
		{in: "host:+80", wantFail: true},
		{in: "host:http", wantFail: true},
		{in: "127.1:80", wantFail: true},
		{in: "0x7f000001:80", wantFail: true},
		{in: "a..b:80", wantFail: true},
		{in: "bad_host!:80", wantFail: true},
		{in: ":80", wantFail: true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.wantFail {
				var we *wire.Error
				if !errors.As(err, &we) || we.Code != wire.CodeInvalidRequest {
					t.Fatalf("ParseTarget(%q) = %+v, %v; want an invalid_request error", tc.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTarget(%q): %v", tc.in, err)
			}
			var ip netip.Addr
			if tc.ip != "" {
				ip = netip.MustParseAddr(tc.ip)
			}
			if got.Host != tc.host || got.Port != tc.port || got.IP != ip {
				t.Fatalf("ParseTarget(%q) = %+v; want host %q port %d ip %v", tc.in, got, tc.host, tc.port, ip)
			}
		})
	}
}

// countingConnector returns a connector whose resolver counts DNS queries
// and answers none (its server address is a closed loopback port).
func countingConnector(n *atomic.Int32) *connector.Connector {
	return &connector.Connector{Resolver: &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			n.Add(1)
			return nil, errors.New("no DNS in this test")
		},
	}}
}

func mustDest(t *testing.T, s string) policy.Dest {
	t.Helper()
	d, err := policy.ParseDest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestConnectDecisions checks the order of the steps: nothing is resolved
// or connected when the policy denies.
func TestConnectDecisions(t *testing.T) {
	pol := &policy.Policy{Rules: []policy.Rule{{
		Name:    "web",
		UIDs:    []uint32{1000},
		Connect: []policy.Dest{mustDest(t, "10.0.0.0/8:443"), mustDest(t, "*.example.net:80")},
	}}}
	tcp := connector.Network{Proto: "tcp"}
	cases := []struct {
		name    string
		caller  policy.Caller
		network connector.Network
		address string
		code    wire.Code
		lookups bool // whether DNS is consulted
	}{
		{"unknown caller", policy.Caller{UID: 2000}, tcp, "10.0.0.1:443", wire.CodeDenied, false},
		{"ip outside grants", policy.Caller{UID: 1000}, tcp, "192.0.2.1:443", wire.CodeDenied, false},
		{"ip on wrong port", policy.Caller{UID: 1000}, tcp, "10.0.0.1:80", wire.CodeDenied, false},
		{"name nothing could grant", policy.Caller{UID: 1000}, tcp, "other.org:80", wire.CodeDenied, false},
		{"name only ip patterns could grant", policy.Caller{UID: 1000}, tcp, "other.org:443", wire.CodeResolveFailed, true},
		{"granted name", policy.Caller{UID: 1000}, tcp, "www.example.net:80", wire.CodeResolveFailed, true},
		{"family mismatch", policy.Caller{UID: 1000}, connector.Network{Proto: "tcp", Family: 6}, "10.0.0.1:443", wire.CodeInvalidRequest, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var lookups atomic.Int32
			target, err := ParseTarget(tc.address)
			if err != nil {
				t.Fatal(err)
			}
			f, _, err := Connect(context.Background(), pol, &tc.caller, countingConnector(&lookups), tc.network, target, connector.Options{})
			if f.FD() >= 0 {
				f.Close()
				t.Fatalf("got a socket; want %s", tc.code)
			}
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != tc.code {
				t.Fatalf("Connect(%s) error %v; want code %s", tc.address, err, tc.code)
			}
			if got := lookups.Load() > 0; got != tc.lookups {
				t.Fatalf("Connect(%s) consulted DNS: %v; want %v", tc.address, got, tc.lookups)
			}
		})
	}
}
