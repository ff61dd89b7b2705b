package registry

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeSockets makes Create funcs that hand the registry a duplicate of one
// descriptor under a made-up address: the registry never looks behind it,
// so a test can fill the cache without binding thousands of ports.
type fakeSockets struct {
	t    *testing.T
	base *os.File
}

func newFakeSockets(t *testing.T) *fakeSockets {
	t.Helper()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &fakeSockets{t: t, base: f}
}

// key is the made-up key of socket i.
func (fs *fakeSockets) key(i int) Key {
	return Key{Proto: "udp", Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, byte(i >> 16), byte(i >> 8), byte(i)}), 53)}
}

// acquire takes a reference to socket i for h, making it if needed.
func (fs *fakeSockets) acquire(g *Registry, i int, h *Holder, pending bool) *Grant {
	fs.t.Helper()
	k := fs.key(i)
	gr, err := g.Acquire(&Request{Key: k, Share: ShareAny, Holder: h, Pending: pending, Create: func() (*os.File, netip.AddrPort, error) {
		fd, err := unix.FcntlInt(fs.base.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		return os.NewFile(uintptr(fd), "fake"), k.Addr, nil
	}})
	if err != nil {
		fs.t.Fatalf("acquiring %s: %v", k, err)
	}
	if gr.File != nil {
		gr.File.Close()
	}
	return gr
}

// visits returns how many entries g's Status(h, all) looks at.
func visits(g *Registry, h *Holder, all bool) (uint64, []SocketInfo) {
	g.mu.Lock()
	before := g.visits
	g.mu.Unlock()
	st := g.Status(h, all)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.visits - before, st
}

// TestStatusCostFollowsHoldings: a caller's own listing looks at what its
// uid has, however much others hold. Here others hold 100000 references
// to 1000 sockets, one of which the caller shares; the caller also has a
// socket of its own and a pending token. (Before the holder index, Status
// looked at every socket and every reference: over 100000 entries.)
func TestStatusCostFollowsHoldings(t *testing.T) {
	fs := newFakeSockets(t)
	g := New(time.Minute)
	defer g.Close()
	others := []*Holder{{UID: 1}, {UID: 2}}
	me, myOther := &Holder{UID: 7, PID: 1}, &Holder{UID: 7, PID: 2}
	const sockets, refsEach = 1000, 100
	fill := func(from, to int) {
		for i := from; i < to; i++ {
			for j := range refsEach {
				fs.acquire(g, i, others[j%2], false)
			}
		}
	}
	fill(0, sockets/2)
	fs.acquire(g, 0, me, false)       // shared with 100 of others' references
	fs.acquire(g, sockets, me, false) // the caller's alone
	fs.acquire(g, sockets+1, myOther, true)

	small, st := visits(g, me, false)
	fill(sockets/2, sockets)
	large, st2 := visits(g, me, false)
	// 3 entries of the uid's holdings, 2 of them me's; socket 0's list up
	// to MaxListedRefs; one reference each of the others.
	if bound := uint64(3 + MaxListedRefs + 2); small != large || large > bound {
		t.Errorf("entries looked at by uid 7's listing: %d with 50000 others' references, %d with 100000; want the same, at most %d", small, large, bound)
	}
	if len(st) != 3 || len(st2) != 3 {
		t.Fatalf("uid 7's listing: got %d then %d sockets, want 3 (its two and its other connection's token)", len(st), len(st2))
	}
	for _, s := range st2 {
		switch s.Key {
		case fs.key(0):
			if s.NRefs != refsEach+1 || len(s.Refs) != MaxListedRefs { // refsEach+1 > MaxListedRefs
				t.Errorf("shared socket: got %d refs, %d listed; want %d, %d", s.NRefs, len(s.Refs), refsEach+1, MaxListedRefs)
			}
			own := 0
			for _, r := range s.Refs {
				if r.Own != (r.Token != "") {
					t.Errorf("shared socket ref %+v: a token shown to other than its own caller, or own without it", r)
				}
				if r.Own {
					own++
				}
			}
			if own != 1 {
				t.Errorf("shared socket: %d of me's references listed, want 1 (listed first)", own)
			}
		case fs.key(sockets + 1):
			if len(s.Refs) != 1 || !s.Refs[0].Pending || s.Refs[0].Token != "" {
				t.Errorf("the other connection's token: got %+v, want pending, token hidden", s.Refs)
			}
		}
	}
	if n, st := visits(g, &Holder{UID: 99}, false); n != 0 || len(st) != 0 {
		t.Errorf("a uid holding nothing: looked at %d entries, listed %d sockets; want 0, 0", n, len(st))
	}
	if _, st := visits(g, me, true); len(st) != sockets+2 {
		t.Errorf("admin listing: got %d sockets, want %d", len(st), sockets+2)
	}
}

// TestStatusAllUnlocks: an admin's listing lets go of the lock between
// chunks (a bind can take it there), and lists every socket that exists
// throughout exactly once, even when sockets come and go between chunks
// and the table grows, shrinks and moves entries.
func TestStatusAllUnlocks(t *testing.T) {
	fs := newFakeSockets(t)
	g := New(time.Minute)
	defer g.Close()
	keep, churn := &Holder{UID: 1}, &Holder{UID: 2}
	const n = 4 * statusChunk
	for i := range n {
		fs.acquire(g, i, keep, false)
	}
	var churned []*Grant
	next, pauses := n, 0
	g.statusPause = func() {
		pauses++
		if !g.mu.TryLock() {
			t.Fatal("the registry is locked between the chunks of an admin's listing")
		}
		g.mu.Unlock()
		// Sockets come (enough to grow the table) and go.
		for range 2 * statusChunk {
			churned = append(churned, fs.acquire(g, next, churn, false))
			next++
		}
		for _, gr := range churned[:len(churned)/2] {
			if _, err := g.Release(gr.Token, churn, false); err != nil {
				t.Fatal(err)
			}
		}
		churned = churned[len(churned)/2:]
	}
	st := g.Status(keep, true)
	if pauses < 3 {
		t.Errorf("an admin's listing of %d sockets let go of the lock %d times; want at least 3 (chunks of %d slots)", n, pauses, statusChunk)
	}
	seen := map[Key]int{}
	for _, s := range st {
		seen[s.Key]++
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("%s listed %d times, want once", k, c)
		}
	}
	for i := range n {
		if seen[fs.key(i)] != 1 {
			t.Errorf("%s, cached throughout, listed %d times; want once", fs.key(i), seen[fs.key(i)])
		}
	}
}

type walkItem struct{ h uint64 }

// TestTableWalk: a walk spread over many calls, with random inserts and
// removes between them (few hash values, so long runs that wrap), visits
// every entry present throughout, when it begins again whenever told to.
func TestTableWalk(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		tb := newTable(func(e *walkItem) uint64 { return e.h })
		var live []*walkItem
		add := func() {
			e := &walkItem{h: r.Uint64N(16)}
			tb.insert(e)
			live = append(live, e)
		}
		for range 1 + r.IntN(40) {
			add()
		}
		throughout := map[*walkItem]bool{}
		for _, e := range live {
			throughout[e] = true
		}
		seen := map[*walkItem]bool{}
		w := tb.beginWalk()
		for steps := 0; ; steps++ {
			var batch []*walkItem
			batch, _, done := tb.next(w, 1+r.IntN(4), nil)
			for _, e := range batch {
				seen[e] = true
			}
			if done {
				break
			}
			if steps > 10000 {
				t.Fatalf("seed %d: the walk never ends", seed)
			}
			for range r.IntN(3) {
				if len(live) > 0 && r.IntN(2) == 0 {
					i := r.IntN(len(live))
					tb.remove(live[i])
					delete(throughout, live[i])
					live = append(live[:i], live[i+1:]...)
				} else {
					add()
				}
			}
			if w.moved {
				tb.restartWalk(w)
			}
		}
		tb.endWalk(w)
		for e := range throughout {
			if !seen[e] {
				t.Fatalf("seed %d: entry %p (hash %d), present throughout, not visited", seed, e, e.h)
			}
		}
		if len(tb.walks) != 0 {
			t.Fatalf("seed %d: %d walks left registered", seed, len(tb.walks))
		}
	}
}

func TestRefCountBeyondUint16(t *testing.T) {
	g := New(time.Minute)
	defer g.Close()
	s := &socket{}
	for range 70000 {
		g.countRef(s, 1)
	}
	if got := g.refCount(s); got != 70000 {
		t.Fatalf("after 70000 references: got %d", got)
	}
	for range 69999 {
		g.countRef(s, -1)
	}
	if got, extra := g.refCount(s), len(g.extraRefs); got != 1 || extra != 0 {
		t.Fatalf("after releasing all but one: got %d refs, %d extra entries; want 1, 0", got, extra)
	}
}
