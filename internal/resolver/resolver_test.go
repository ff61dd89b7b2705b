package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func TestLookupRotate(t *testing.T) {
	z := zone{"www.example.test. A": {records: []dnsmessage.Resource{A("www.example.test.", "192.0.2.1")}}}
	for _, tt := range []struct {
		conf string
		want []string // the server each of two lookups asks
	}{
		{twoNS, []string{"udp " + server1, "udp " + server1}},
		{twoNS + "options rotate\n", []string{"udp " + server1, "udp " + server2}},
	} {
		t.Run(strings.ReplaceAll(tt.conf, "\n", ";"), func(t *testing.T) {
			e := newEnv(t, map[string]string{"resolv.conf": tt.conf}, newFake(t, z, nxdomain), newFake(t, z, nxdomain))
			for range 2 {
				got, err := e.lookup(t, "ip4", "www.example.test")
				check(t, got, err, []string{"192.0.2.1"}, wantErr{})
			}
			if got := e.d.dialed(); !slices.Equal(got, tt.want) {
				t.Errorf("dialed %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLookupServersReplaceResolvConf(t *testing.T) {
	z := zone{"www.example.test. A": {records: []dnsmessage.Resource{A("www.example.test.", "192.0.2.1")}}}
	unused := newFake(t, zone{}, servfail)
	f := newFake(t, z, nxdomain)
	real := f.udp.LocalAddr().(*net.UDPAddr).AddrPort()
	e := newEnv(t, map[string]string{"resolv.conf": oneNS + "search example.test\n"}, unused)
	e.d.fakes[real.String()] = f
	e.r.Servers = []netip.AddrPort{real}
	got, err := e.lookup(t, "ip4", "www")
	check(t, got, err, []string{"192.0.2.1"}, wantErr{})
	if d := e.d.dialed(); !slices.Equal(d, []string{"udp " + real.String()}) {
		t.Errorf("dialed %q, want only %s", d, real)
	}
	if n := len(unused.queries()); n != 0 {
		t.Errorf("resolv.conf's server got %d queries, want 0", n)
	}
}

func TestLookupContext(t *testing.T) {
	tests := []struct {
		name        string
		ctx         func() (context.Context, context.CancelFunc)
		wantIs      error
		wantTimeout bool
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, context.DeadlineExceeded, true},
		{"canceled before", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, map[string]string{"resolv.conf": oneNS}, newFake(t, zone{}, drop))
			e.r.Timeout = time.Minute
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			addrs, err := e.r.LookupNetIP(ctx, "ip", "www.example.test")
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("lookup took %v after its context ended, want it to return at once", elapsed)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("got %v, error %v; want an error that is %v", addrs, err, tt.wantIs)
			}
			if de := asDNSError(t, err); de.IsTimeout != tt.wantTimeout || de.Name != "www.example.test" {
				t.Errorf("error %q: IsTimeout %v, Name %q; want %v, %q", err, de.IsTimeout, de.Name, tt.wantTimeout, "www.example.test")
			}
			if n := e.d.openConns(); n != 0 {
				t.Errorf("%d connections open after the lookup, want 0", n)
			}
		})
	}
}

func TestLookupWithoutDNS(t *testing.T) {
	hosts := "192.0.2.7 myhost Alias.Test.\n2001:db8::7 myhost\n192.0.2.8 v4host\n::1 localhost\n"
	e := newEnv(t, map[string]string{"resolv.conf": oneNS, "hosts": hosts}, newFake(t, zone{}, servfail))
	hostsPath := e.r.Dir + "/hosts"
	tests := []struct {
		network, host string
		want          []string
		err           wantErr
	}{
		{"ip", "192.0.2.1", []string{"192.0.2.1"}, wantErr{}},
		{"ip6", "fe80::1%lo", []string{"fe80::1%lo"}, wantErr{}},
		{"ip4", "2001:db8::1", nil, wantErr{kind: "notfound", contains: []string{"2001:db8::1"}}},
		{"ip", "myhost", []string{"192.0.2.7", "2001:db8::7"}, wantErr{}},
		{"ip6", "MYHOST.", []string{"2001:db8::7"}, wantErr{}},
		{"ip", "alias.test", []string{"192.0.2.7"}, wantErr{}},
		{"ip6", "v4host", nil, wantErr{kind: "notfound", server: hostsPath, contains: []string{"v4host", hostsPath}}},
		{"ip4", "localhost", nil, wantErr{kind: "notfound", server: hostsPath}},
		{"ip", "foo.localhost", []string{"127.0.0.1", "::1"}, wantErr{}},
		{"ip6", "Bar.LOCALHOST.", []string{"::1"}, wantErr{}},
		{"ip", "", nil, wantErr{kind: "notfound"}},
		{"ip", "bad..name", nil, wantErr{kind: "notfound", contains: []string{"bad..name"}}},
		{"ip", "two.dots..", nil, wantErr{kind: "notfound"}},
		{"ip", "-x.test", nil, wantErr{kind: "notfound"}},
		{"ip", "127.1", nil, wantErr{kind: "notfound"}},
		{"ip", "a b", nil, wantErr{kind: "notfound"}},
		{"ip", "hidden.onion", nil, wantErr{kind: "notfound", contains: []string{"onion"}}},
	}
	for _, tt := range tests {
		t.Run(tt.network+" "+tt.host, func(t *testing.T) {
			got, err := e.lookup(t, tt.network, tt.host)
			check(t, got, err, tt.want, tt.err)
		})
	}
	if d := e.d.dialed(); len(d) != 0 {
		t.Errorf("dialed %q, want no DNS at all", d)
	}
	t.Run("unknown network", func(t *testing.T) {
		_, err := e.r.LookupNetIP(context.Background(), "tcp", "myhost")
		var une net.UnknownNetworkError
		if !errors.As(err, &une) {
			t.Errorf("error %v (%T), want net.UnknownNetworkError", err, err)
		}
	})
}

func TestLookupConcurrent(t *testing.T) {
	z := zone{
		"www.example.test. A":    {records: []dnsmessage.Resource{A("www.example.test.", "192.0.2.1")}},
		"www.example.test. AAAA": {records: []dnsmessage.Resource{AAAA("www.example.test.", "2001:db8::1")}},
	}
	e := newEnv(t, map[string]string{"resolv.conf": twoNS + "options rotate\n", "hosts": "192.0.2.9 h\n"}, newFake(t, z, nxdomain), newFake(t, z, nxdomain))
	e.r.CheckInterval = -1
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			host, want := "www.example.test", []string{"192.0.2.1", "2001:db8::1"}
			if i%2 == 1 {
				host, want = "h", []string{"192.0.2.9"}
			}
			got, err := e.r.LookupNetIP(context.Background(), "ip", host)
			if err != nil || !slices.Equal(addrStrings(got), want) {
				t.Errorf("lookup %s: got %v, error %v; want %v", host, got, err, want)
			}
		})
	}
	wg.Wait()
	if n := e.d.openConns(); n != 0 {
		t.Errorf("%d connections open, want 0", n)
	}
}
