package server

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/sockfactory/sockfactory/internal/broker"
	"github.com/sockfactory/sockfactory/internal/netns"
	"github.com/sockfactory/sockfactory/internal/testnet"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// BenchmarkNetns measures a brokered connect and a hand-out of a cached
// shared socket, each in the daemon's own namespace and in a named one,
// in one run against one in-process server: what naming a namespace
// costs a request. Run as root, each case in its own process and the four
// alternating (this machine is noisy):
//
//	go test -c -o /tmp/srv.test ./internal/server
//	for i in 1 2 3 4 5; do for c in connect/own connect/named handoff/own handoff/named; do
//		/tmp/srv.test -test.run XXX -test.bench "Netns/$c\$" -test.benchtime 20000x; done; done
func BenchmarkNetns(b *testing.B) {
	testnet.RequireRoot(b)
	name := fmt.Sprintf("sfbench-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testnet.SkipOrFail(b, fmt.Sprintf("ip netns add: %v: %s", err, out))
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := testnet.OpenNetnsPath("/run/netns/" + name)
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	if err := ns.LoopbackUp(); err != nil {
		b.Fatal(err)
	}
	m, err := netns.New(netns.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	_, path := startServer(b, fmt.Sprintf("netns = [\"daemon\", %q]\nconnect = [\"127.0.0.1:*\"]\nbind = [\"tcp:127.0.0.1:*\"]", name),
		Options{Namespaces: broker.NewNamespaces(m, b.TempDir(), nil)})
	own := testnet.Sink(b)
	l, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	inNS := l.Addr().String()

	do := rawClient(b, path)
	for _, c := range []struct {
		name string
		req  *wire.Request
	}{
		{"connect/own", &wire.Request{V: wire.Version, Op: wire.OpConnect, Connect: &wire.ConnectRequest{Network: "tcp", Address: own.String()}}},
		{"connect/named", &wire.Request{V: wire.Version, Op: wire.OpConnect, Connect: &wire.ConnectRequest{Network: "tcp", Address: inNS, Netns: name}}},
		{"handoff/own", &wire.Request{V: wire.Version, Op: wire.OpBind, Bind: &wire.BindRequest{Network: "tcp", Address: freeAddr(b), Share: "any", Name: "b"}}},
		{"handoff/named", &wire.Request{V: wire.Version, Op: wire.OpBind, Bind: &wire.BindRequest{Network: "tcp", Address: freeAddr(b), Share: "any", Name: "b", Netns: name}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			do(c.req) // a bind's first request makes the socket
			b.ReportAllocs()
			for b.Loop() {
				do(c.req)
			}
		})
	}
}
