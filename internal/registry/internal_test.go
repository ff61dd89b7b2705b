package registry

import (
	"net/netip"
	"os"
	"regexp"
	"testing"
	"time"
	"unsafe"

	"github.com/sockfactory/sockfactory/internal/binder"
)

// TestEntrySizes keeps the per-socket entries within their allocation
// size classes: a held socket costs one socket and one Ref, and the
// benchmark HeldSocketHeap (and the daemon's memory per held socket)
// grows by a whole size class when a socket outgrows 80 bytes or a Ref 96
// (a Ref is 88: its socket's list is doubly linked, so that dropping one
// of many references is not a walk).
func TestEntrySizes(t *testing.T) {
	if got := unsafe.Sizeof(socket{}); got > 80 {
		t.Errorf("socket: got %d bytes, want at most 80", got)
	}
	if got := unsafe.Sizeof(Ref{}); got > 96 {
		t.Errorf("Ref: got %d bytes, want at most 96", got)
	}
}

func testRequest(h *Holder, k Key, opts binder.Options) *Request {
	return &Request{Key: k, Share: ShareAny, Options: opts, Holder: h, Create: func() (*os.File, netip.AddrPort, error) {
		return binder.Create(k.Proto, k.Addr, opts)
	}}
}

var testKey = Key{Proto: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}

// wantEmpty fails unless every index of g is empty.
func wantEmpty(t *testing.T, g *Registry) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	lens := map[string]int{"sockets": g.sockets.n, "tokens": g.tokens.n, "held": len(g.held), "uids": len(g.uids), "extraRefs": len(g.extraRefs),
		"pending": len(g.pending), "pendingOn": len(g.pendingOn), "lingering": len(g.lingering), "opts": len(g.opts),
		"heldByUID": len(g.n.heldByUID), "pendingByUID": len(g.n.pendingByUID)}
	for name, n := range lens {
		if n != 0 {
			t.Errorf("%s: got %d entries, want none", name, n)
		}
	}
	if g.n.held != 0 || g.n.pending != 0 {
		t.Errorf("counts: got %d held, %d pending; want 0, 0", g.n.held, g.n.pending)
	}
}

// TestIndexesEmpty runs every way a reference or socket goes (release,
// pickup then holder release, expiry, linger) and checks that no index
// keeps an entry for it.
func TestIndexesEmpty(t *testing.T) {
	g := New(20 * time.Millisecond)
	defer g.Close()
	a, b := &Holder{UID: 1}, &Holder{UID: 2}
	opts := binder.Defaults("tcp")

	gr, err := g.Acquire(testRequest(a, testKey, opts))
	if err != nil {
		t.Fatal(err)
	}
	gr.File.Close()
	k := gr.Key
	p := testRequest(a, k, opts)
	p.Pending = true
	tok, err := g.Acquire(p)
	if err != nil {
		t.Fatal(err)
	}
	picked, err := g.Pickup(tok.Token, b, func(Key) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	picked.File.Close()
	if _, err := g.Acquire(p); err != nil { // left to expire
		t.Fatal(err)
	}
	if _, err := g.Release(gr.Token, a, false); err != nil {
		t.Fatal(err)
	}
	if n := g.ReleaseHolder(b); n != 1 {
		t.Fatalf("ReleaseHolder(b): got %d, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s, _ := g.Counts(); s != 0; s, _ = g.Counts() {
		if time.Now().After(deadline) {
			t.Fatalf("the expired token's socket is still cached")
		}
		time.Sleep(2 * time.Millisecond)
	}
	wantEmpty(t, g)

	l := testRequest(a, testKey, opts)
	l.Linger = 10 * time.Millisecond
	gr, err = g.Acquire(l)
	if err != nil {
		t.Fatal(err)
	}
	gr.File.Close()
	g.ReleaseHolder(a)
	deadline = time.Now().Add(5 * time.Second)
	for s, _ := g.Counts(); s != 0; s, _ = g.Counts() {
		if time.Now().After(deadline) {
			t.Fatalf("the lingering socket is still cached")
		}
		time.Sleep(2 * time.Millisecond)
	}
	wantEmpty(t, g)
}

// TestOptionsInterned: sockets made with equal options share one copy of
// them, which goes with the last of those sockets.
func TestOptionsInterned(t *testing.T) {
	g := New(time.Minute)
	defer g.Close()
	h := &Holder{UID: 1}
	var grants []*Grant
	for range 3 {
		gr, err := g.Acquire(testRequest(h, testKey, binder.Defaults("tcp")))
		if err != nil {
			t.Fatal(err)
		}
		gr.File.Close()
		grants = append(grants, gr)
	}
	other := binder.Defaults("tcp")
	other.RcvBuf = 1 << 16
	gr, err := g.Acquire(testRequest(h, testKey, other))
	if err != nil {
		t.Fatal(err)
	}
	gr.File.Close()
	g.mu.Lock()
	first := g.lookup(grants[0].Key).opts
	same := first == g.lookup(grants[1].Key).opts && first == g.lookup(grants[2].Key).opts
	differ := g.lookup(gr.Key).opts != first
	n := len(g.opts)
	g.mu.Unlock()
	if !same || !differ || first.refs != 3 || n != 2 {
		t.Errorf("options entries: got equal shared %v, other separate %v, %d users of the first, %d entries; want true, true, 3, 2", same, differ, first.refs, n)
	}
	g.ReleaseHolder(h)
	wantEmpty(t, g)
}

// TestTokenLowBitsCollide: a token that shares its hash with a live one
// but differs elsewhere is unknown.
func TestTokenLowBitsCollide(t *testing.T) {
	g := New(time.Minute)
	defer g.Close()
	h := &Holder{UID: 1}
	gr, err := g.Acquire(testRequest(h, testKey, binder.Defaults("tcp")))
	if err != nil {
		t.Fatal(err)
	}
	gr.File.Close()
	tok, ok := parseToken(gr.Token)
	if !ok {
		t.Fatalf("parseToken(%q) of an issued token: not ok", gr.Token)
	}
	tok[15] ^= 1
	if _, err := g.Release(tok.String(), h, true); err != ErrNoToken {
		t.Errorf("Release of a token differing in its last bit: got %v, want ErrNoToken", err)
	}
	if s, r := g.Counts(); s != 1 || r != 1 {
		t.Errorf("Counts: got %d, %d; want 1, 1", s, r)
	}
}

var tokenSyntax = regexp.MustCompile(`^[0-9a-f]{32}$`)

// FuzzParseToken checks that parseToken accepts exactly 32 lowercase hex
// digits and that an accepted token prints back as itself.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"", "00000000000000000000000000000000", "0123456789abcdef0123456789abcdef",
		"0123456789ABCDEF0123456789abcdef", "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdefa",
		"0123456789abcdef0123456789abcdeg", "0x23456789abcdef0123456789abcdef"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, ok := parseToken(s)
		if want := tokenSyntax.MatchString(s); ok != want {
			t.Fatalf("parseToken(%q): got ok %v, want %v", s, ok, want)
		}
		if ok && tok.String() != s {
			t.Fatalf("parseToken(%q).String() = %q, want the input", s, tok.String())
		}
	})
}
