package e2e

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// The cost of naming a network namespace, as a client of one daemon sees
// it: the same requests in the daemon's own namespace (own) and in a named
// one (named, netns = B). Run them with
//
//	go test -run '^$' -bench Netns -benchtime 2000x ./internal/e2e/
//
// ns/op is one request's round trip through the Go client; named-extra-us
// (on named, when own ran first in the same run) is how much more a named
// namespace costs per request.

// netnsBench is one daemon and one client for both sub-benchmarks, and
// B, where the named ones run.
type netnsBench struct {
	d *daemon
	c *sockfactory.Client
	b *namedNetns
}

func startNetnsBench(b *testing.B) *netnsBench {
	b.Helper()
	testnet.RequireRoot(b)
	ns := newNamedNetns(b)
	d := startDaemon(b, strings.ReplaceAll(`
[daemon]
socket = "%SOCKET%"

[[rule]]
name = "root-loopback"
users = [0]
netns = ["{B}", "daemon"]
connect = ["127.0.0.1:*"]
bind = ["tcp:127.0.0.1:*"]
`, "{B}", ns.name))
	// Every request writes its audit line at once (the harness's
	// -log-flush 0), in both sub-benchmarks alike.
	return &netnsBench{d: d, c: d.client(), b: ns}
}

// sinkIn is a TCP server on 127.0.0.1 in ns (nil: the test's own
// namespace) that accepts every connection and closes it.
func sinkIn(b *testing.B, ns *testnet.Netns) string {
	b.Helper()
	var l net.Listener
	var err error
	if ns == nil {
		l, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		l, err = ns.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

// netnsPerOp keeps own's ns/op for named's comparison.
type netnsPerOp struct{ own time.Duration }

func (p *netnsPerOp) report(b *testing.B, name string, start time.Time) {
	per := time.Since(start) / time.Duration(b.N)
	switch {
	case name == "own":
		p.own = per
	case p.own > 0:
		b.ReportMetric(float64(per-p.own)/1e3, "named-extra-us")
	}
}

// BenchmarkNetnsConnect: a connect through the daemon to a TCP server on
// loopback, in the daemon's own namespace (own) and on B's loopback with
// netns = B (named); the connection is closed at once.
func BenchmarkNetnsConnect(b *testing.B) {
	nb := startNetnsBench(b)
	ctx := context.Background()
	var per netnsPerOp
	for _, sub := range []struct {
		name  string
		ns    *testnet.Netns
		netns string
	}{{"own", nil, ""}, {"named", nb.b.Netns, nb.b.name}} {
		addr := sinkIn(b, sub.ns)
		opts := &sockfactory.ConnectOptions{Netns: sub.netns}
		b.Run(sub.name, func(b *testing.B) {
			for i := 0; i < 10; i++ { // warm: the namespace opened, the connection made
				f, err := nb.c.ConnectFileWith(ctx, "tcp", addr, opts)
				if err != nil {
					b.Fatalf("connect to %s (netns %q): %v", addr, sub.netns, err)
				}
				f.Close()
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				f, err := nb.c.ConnectFileWith(ctx, "tcp", addr, opts)
				if err != nil {
					b.Fatalf("connect to %s (netns %q): %v", addr, sub.netns, err)
				}
				f.Close()
			}
			b.StopTimer()
			per.report(b, sub.name, start)
		})
	}
}

// BenchmarkNetnsHandoff: a bind of a TCP socket already held (share "any",
// a fixed address the benchmark holds meanwhile) handed out from the
// cache, then released, in the daemon's own namespace (own) and in B
// (named).
func BenchmarkNetnsHandoff(b *testing.B) {
	nb := startNetnsBench(b)
	ctx := context.Background()
	holder := &sockfactory.Client{Socket: nb.d.socket, App: "holder"}
	b.Cleanup(func() { holder.Close() })
	var per netnsPerOp
	for _, sub := range []struct{ name, netns string }{{"own", ""}, {"named", nb.b.name}} {
		opts := &sockfactory.ListenOptions{Share: "any", Netns: sub.netns}
		held, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", opts)
		if err != nil {
			b.Fatalf("holding a socket (netns %q): %v", sub.netns, err)
		}
		b.Cleanup(func() { held.Close() })
		addr := held.Addr().String()
		b.Run(sub.name, func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				f, bd, err := nb.c.BindFile(ctx, "tcp", addr, opts)
				if err != nil {
					b.Fatalf("bind %s (netns %q): %v", addr, sub.netns, err)
				}
				f.Close()
				if !bd.Shared {
					b.Fatalf("bind %s (netns %q): a new socket; want the held one (shared)", addr, sub.netns)
				}
				if err := nb.c.Release(ctx, bd.Token); err != nil {
					b.Fatalf("release: %v", err)
				}
			}
			b.StopTimer()
			per.report(b, sub.name, start)
		})
	}
}
