package registry

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/binder"
)

// TestNetnsKeys: the same address and port in two namespaces are two
// sockets, each shared only within its namespace; DropNetns closes a
// dropped namespace's idle sockets at once and its held ones at their last
// release, without lingering; the (protocol, namespace) slot is reused
// once no socket has it.
func TestNetnsKeys(t *testing.T) {
	g := New(time.Minute)
	defer g.Close()
	h := &Holder{UID: 1}
	opts := binder.Defaults("tcp")
	opts.ReusePort = true // both sockets are really in this test's namespace
	acquire := func(k Key, name string) *Grant {
		t.Helper()
		r := testRequest(h, k, opts)
		r.NetnsName, r.Linger = name, time.Hour
		gr, err := g.Acquire(r)
		if err != nil {
			t.Fatalf("Acquire(%v): %v", k, err)
		}
		gr.File.Close()
		return gr
	}
	own := acquire(testKey, "")
	addr := own.Key.Addr
	inB := acquire(Key{Proto: "tcp", Addr: addr, Netns: "4:100"}, "b")
	if inB.Shared || inB.Key.Netns != "4:100" || inB.Key.Addr != addr {
		t.Fatalf("first bind in another namespace: %+v; want a new socket keyed %v in 4:100", inB, addr)
	}
	again := acquire(Key{Proto: "tcp", Addr: addr, Netns: "4:100"}, "b")
	if !again.Shared {
		t.Errorf("second bind in the same namespace did not share its socket")
	}
	infos := g.Status(h, true)
	names := map[string]string{}
	for _, in := range infos {
		names[in.Key.Netns] = in.NetnsName
	}
	if len(infos) != 2 || names["4:100"] != "b" || names[""] != "" {
		t.Errorf("status: %+v; want one socket in the daemon's namespace and one in 4:100 named b", infos)
	}
	if n := g.DropNetns("4:100"); n != 0 {
		t.Errorf("DropNetns closed %d held sockets, want 0", n)
	}
	g.Release(inB.Token, h, false)
	g.Release(again.Token, h, false)
	g.Release(own.Token, h, false)
	g.mu.Lock()
	ownLingers, bGone := g.lookup(own.Key) != nil, g.lookup(inB.Key) == nil
	g.mu.Unlock()
	if !ownLingers || !bGone {
		t.Errorf("after release: own socket lingering %v, dropped namespace's closed %v; want true, true", ownLingers, bGone)
	}
	// An idle socket in a dropped namespace closes at once.
	c := acquire(Key{Proto: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:0"), Netns: "4:200"}, "c")
	g.Release(c.Token, h, false)
	if n := g.DropNetns("4:200"); n != 1 {
		t.Errorf("DropNetns of an idle socket's namespace closed %d, want 1", n)
	}
	g.mu.Lock()
	var used []kind
	for _, k := range g.protos {
		if k.n > 0 {
			used = append(used, k)
		}
	}
	g.mu.Unlock()
	if len(used) != 1 || used[0].netns != "" {
		t.Errorf("slots in use: %+v; want only the daemon's own tcp", used)
	}
	// A new namespace takes a free slot instead of growing the table.
	before := len(g.protos)
	d := acquire(Key{Proto: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:0"), Netns: "4:300"}, "d")
	if len(g.protos) != before {
		t.Errorf("slots grew from %d to %d with free ones", before, len(g.protos))
	}
	g.Release(d.Token, h, false)
}
