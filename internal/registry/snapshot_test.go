package registry

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

var (
	snapTCP0 = Key{Proto: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}
	snapUDP0 = Key{Proto: "udp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}
)

// snapCheckFDs fails t if, once t and its other cleanups are done, the
// process holds more fds than now. Call it first so that its cleanup runs
// last.
func snapCheckFDs(t *testing.T) {
	t.Helper()
	base := testnet.OpenFDs(t)
	t.Cleanup(func() {
		got := base
		if !snapPoll(5*time.Second, func() bool { got = testnet.OpenFDs(t); return got <= base }) {
			t.Errorf("open fds after the test: got %d, want %d (the count before it)", got, base)
		}
	})
}

// snapPoll reports whether cond became true within timeout.
func snapPoll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// snapReq is a request for k with binder's default options, creating the
// socket with binder.Create.
func snapReq(h *Holder, k Key, share Share, name string) *Request {
	r := testRequest(h, k, binder.Defaults(k.Proto))
	r.Share, r.Name = share, name
	return r
}

// snapShareReq is snapReq for a socket that must be cached already: it
// fails t if the registry creates one.
func snapShareReq(t *testing.T, h *Holder, k Key, share Share, name string) *Request {
	r := snapReq(h, k, share, name)
	r.Create = func() (*os.File, netip.AddrPort, error) {
		t.Errorf("Acquire %s created a socket; want the cached one shared", k)
		return nil, netip.AddrPort{}, errors.New("no socket may be created here")
	}
	return r
}

// snapAcquire acquires r and closes the grant's file when t ends.
func snapAcquire(t *testing.T, g *Registry, r *Request) *Grant {
	t.Helper()
	gr, err := g.Acquire(r)
	if err != nil {
		t.Fatalf("Acquire %s (share %s %q, pending %v): %v", r.Key, r.Share, r.Name, r.Pending, err)
	}
	if gr.File != nil {
		t.Cleanup(func() { gr.File.Close() })
	}
	return gr
}

// snapCopy is a deep copy of st.
func snapCopy(st *State) *State {
	cp := *st
	cp.Holders = slices.Clone(st.Holders)
	cp.Sockets = slices.Clone(st.Sockets)
	for i := range cp.Sockets {
		cp.Sockets[i].Refs = slices.Clone(st.Sockets[i].Refs)
	}
	return &cp
}

// snapDup is a close-on-exec duplicate of fd.
func snapDup(t *testing.T, fd int) int {
	t.Helper()
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("F_DUPFD_CLOEXEC of fd %d: %v", fd, err)
	}
	return nfd
}

// snapHandover does with a Snapshot what a live upgrade does: it returns a
// copy of st whose FD values index fds, each a duplicate of the
// descriptor st names, for the next registry's Restore.
func snapHandover(t *testing.T, st *State) (*State, []int) {
	t.Helper()
	cp := snapCopy(st)
	fds := make([]int, 0, len(cp.Sockets))
	for i := range cp.Sockets {
		fds = append(fds, snapDup(t, cp.Sockets[i].FD))
		cp.Sockets[i].FD = len(fds) - 1
	}
	return cp, fds
}

// snapFDOpen reports whether fd is an open descriptor.
func snapFDOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err != unix.EBADF
}

type snapInode struct{ dev, ino uint64 }

// snapInodeOf is the file fd refers to.
func snapInodeOf(t *testing.T, fd int) snapInode {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat fd %d: %v", fd, err)
	}
	return snapInode{uint64(st.Dev), st.Ino}
}

// snapFileInode is the file f refers to (without f.Fd, which would make
// the socket blocking for every copy of it).
func snapFileInode(t *testing.T, f *os.File) snapInode {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var ino snapInode
	rc.Control(func(fd uintptr) { ino = snapInodeOf(t, int(fd)) })
	return ino
}

// snapFD is the registry's own descriptor for k, or -1 if k is not cached.
func snapFD(g *Registry, k Key) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.lookup(k); s != nil {
		return int(s.fd)
	}
	return -1
}

// snapRefOrder lists the tokens of k's references in the registry's
// order (newest first), failing t if the list's back links are broken.
func snapRefOrder(t *testing.T, g *Registry, k Key) []string {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.lookup(k)
	if s == nil {
		return nil
	}
	if s.refs != nil && s.refs.prev != nil {
		t.Errorf("%s: the first reference has a previous one", k)
	}
	var toks []string
	for r := s.refs; r != nil; r = r.next {
		if r.next != nil && r.next.prev != r {
			t.Errorf("%s: reference %s: the next one's back link is wrong", k, r.token)
		}
		toks = append(toks, r.token.String())
	}
	return toks
}

// snapSecret is the reclaim secret g derives for token.
func snapSecret(t *testing.T, g *Registry, token string) string {
	t.Helper()
	tok, ok := parseToken(token)
	if !ok {
		t.Fatalf("token %q does not parse", token)
	}
	return g.secret(tok).String()
}

// snapTimeless is a copy of st without its times.
func snapTimeless(st []SocketInfo) []SocketInfo {
	out := make([]SocketInfo, len(st))
	for i, s := range st {
		s.Created, s.IdleSince = time.Time{}, time.Time{}
		s.Refs = slices.Clone(s.Refs)
		for j := range s.Refs {
			s.Refs[j].Expires = time.Time{}
		}
		out[i] = s
	}
	return out
}

// snapNear reports whether two times, both zero or both set, are within a
// second of each other.
func snapNear(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	d := a.Sub(b)
	return -time.Second < d && d < time.Second
}

type snapSummary struct{ sockets, held, pending int }

func snapSum(g *Registry) snapSummary {
	s, h, p := g.Summary()
	return snapSummary{s, h, p}
}

// TestSnapshotRoundTrip: a cache written out, its descriptors duplicated
// as a handover does, and restored into a new registry is the same cache:
// the same status (but for times, which are close), the same sockets, the
// same order of references, the same reclaim key; and it goes on behaving
// as the old one would have: sharing rules, pickup of a pending token, its
// expiry and a lingering socket's close after what was left of their
// time, a restored holder's release.
func TestSnapshotRoundTrip(t *testing.T) {
	snapCheckFDs(t)
	const short = 300 * time.Millisecond
	a := New(time.Minute)
	t.Cleanup(a.Close)
	hA := &Holder{UID: 1000, PID: 11}
	hB := &Holder{UID: 1001, PID: 22}
	hIdle := &Holder{UID: 1002, PID: 33}
	a.SetApp(hA, "resolver")
	a.SetApp(hB, "auth")
	a.SetApp(hIdle, "idle")

	// Socket 1 (tcp): three references, of different share modes, and hA's
	// pending token.
	r1a := snapAcquire(t, a, snapReq(hA, snapTCP0, ShareAny, "n"))
	k1 := r1a.Key
	r1b := snapAcquire(t, a, snapReq(hB, k1, ShareSameName, "n"))
	r1c := snapAcquire(t, a, snapReq(hB, k1, ShareAny, "n"))
	pr := snapReq(hA, k1, ShareAny, "n")
	pr.Pending = true
	p1 := snapAcquire(t, a, pr)
	// Socket 2 (udp): hB's alone.
	r2 := snapAcquire(t, a, snapReq(hB, snapUDP0, ShareNone, ""))
	k2 := r2.Key
	// Socket 3 (tcp): a pending token asked for by no holder, its only
	// reference, due to expire soon.
	pr3 := snapReq(nil, snapTCP0, ShareNone, "")
	pr3.Pending = true
	p3 := snapAcquire(t, a, pr3)
	k3 := p3.Key
	a.mu.Lock()
	ref3 := a.ref(p3.Token)
	pend3 := a.pending[ref3]
	pend3.expires = a.now() + int64(short)
	a.pending[ref3] = pend3
	p3Expires := a.time(pend3.expires)
	a.mu.Unlock()
	// Socket 4 (tcp): lingering, its last reference released.
	lr := snapReq(hA, snapTCP0, ShareAny, "")
	lr.Linger = short
	r4 := snapAcquire(t, a, lr)
	k4 := r4.Key
	idleFrom := time.Now()
	if _, err := a.Release(r4.Token, hA, false); err != nil {
		t.Fatal(err)
	}

	want := a.Status(nil, true)
	wantSum := snapSum(a)
	if len(want) != 4 || wantSum != (snapSummary{4, 4, 2}) {
		t.Fatalf("the old registry: %d sockets listed, summary %+v; want 4, {4 4 2}", len(want), wantSum)
	}
	wantOrder := map[Key][]string{}
	inodes := map[Key]snapInode{}
	for _, s := range want {
		wantOrder[s.Key] = snapRefOrder(t, a, s.Key)
		inodes[s.Key] = snapInodeOf(t, snapFD(a, s.Key))
	}
	if got := inodes[k1]; got != snapFileInode(t, r1a.File) {
		t.Fatalf("socket 1: the registry's fd and the grant's file differ")
	}

	st, err := a.Snapshot([]*Holder{hA, hB, hIdle})
	if err != nil {
		t.Fatal(err)
	}
	hand, fds := snapHandover(t, st)

	// What Snapshot wrote.
	wantHolders := []HolderState{{UID: 1000, PID: 11, App: "resolver"}, {UID: 1001, PID: 22, App: "auth"}, {UID: 1002, PID: 33, App: "idle"}}
	if !reflect.DeepEqual(st.Holders, wantHolders) {
		t.Errorf("State.Holders: got %+v, want %+v (the known holders, in order, the idle one included)", st.Holders, wantHolders)
	}
	if len(st.ReclaimKey) != 64 || st.OrphanGrace != 0 {
		t.Errorf("State: reclaim key %q, orphan grace %v; want 64 hex digits, 0", st.ReclaimKey, st.OrphanGrace)
	}
	for _, ss := range st.Sockets {
		k := Key{Proto: ss.Proto, Addr: ss.Addr, Netns: ss.Netns}
		if own := snapFD(a, k); ss.FD != own {
			t.Errorf("State socket %s: fd %d, want the registry's own, %d", k, ss.FD, own)
		}
		if ss.Options != binder.Defaults(ss.Proto) {
			t.Errorf("State socket %s: options %+v, want the socket's", k, ss.Options)
		}
		if k == k4 && (ss.Linger != short || ss.Idle <= 0 || ss.Idle > short || len(ss.Refs) != 0) {
			t.Errorf("State lingering socket: linger %v, idle %v, %d refs; want %v, in (0, %v], none", ss.Linger, ss.Idle, len(ss.Refs), short, short)
		}
		if k == k3 && (len(ss.Refs) != 1 || ss.Refs[0].Holder != -1 || !ss.Refs[0].Pending || ss.Refs[0].TTL <= 0 || ss.Refs[0].TTL > short) {
			t.Errorf("State socket 3: refs %+v; want one pending token of no holder, TTL in (0, %v]", ss.Refs, short)
		}
	}

	// The state as written to the next daemon: everything but the
	// options (the caller's to encode) survives JSON.
	js, err := json.Marshal(hand)
	if err != nil {
		t.Fatal(err)
	}
	var dec State
	if err := json.Unmarshal(js, &dec); err != nil {
		t.Fatal(err)
	}
	for i := range dec.Sockets {
		dec.Sockets[i].Options = hand.Sockets[i].Options
	}
	if !reflect.DeepEqual(&dec, hand) {
		t.Errorf("State through JSON:\n got  %+v\nwant %+v", &dec, hand)
	}

	extra := snapDup(t, fds[0]) // handed over but named by no socket
	fds = append(fds, extra)
	before := testnet.OpenFDs(t)
	b := New(time.Minute)
	t.Cleanup(b.Close)
	holders, err := b.Restore(&dec, fds)
	if err != nil {
		t.Fatal(err)
	}
	got := b.Status(nil, true)
	// What B has, taken at once: the pending token and the lingering
	// socket go after their time.
	gotOrder := map[Key][]string{}
	gotInodes := map[Key]snapInode{}
	for k := range inodes {
		gotOrder[k] = snapRefOrder(t, b, k)
		if fd := snapFD(b, k); fd >= 0 {
			gotInodes[k] = snapInodeOf(t, fd)
		}
	}
	if snapFDOpen(extra) {
		t.Errorf("a descriptor no socket names is left open by Restore")
		unix.Close(extra)
	}
	if n := testnet.OpenFDs(t); n != before-1 {
		t.Errorf("open fds after Restore: got %d, want %d (the unnamed one closed, the rest kept)", n, before-1)
	}

	t.Run("status", func(t *testing.T) {
		if !reflect.DeepEqual(snapTimeless(got), snapTimeless(want)) {
			t.Errorf("Status after Restore (times aside):\n got  %+v\nwant %+v", got, want)
		}
		if len(got) != len(want) {
			return
		}
		for i := range want {
			w, g := want[i], got[i]
			if !snapNear(g.Created, w.Created) || !snapNear(g.IdleSince, w.IdleSince) {
				t.Errorf("%s: created %v, idle since %v; want near %v, %v", w.Key, g.Created, g.IdleSince, w.Created, w.IdleSince)
			}
			for j := range min(len(w.Refs), len(g.Refs)) {
				if !snapNear(g.Refs[j].Expires, w.Refs[j].Expires) {
					t.Errorf("%s ref %s: expires %v, want near %v", w.Key, w.Refs[j].Token, g.Refs[j].Expires, w.Refs[j].Expires)
				}
			}
		}
		if s := snapSum(b); s != wantSum {
			t.Errorf("Summary after Restore: got %+v, want %+v", s, wantSum)
		}
	})

	t.Run("holders", func(t *testing.T) {
		if len(holders) != len(st.Holders) {
			t.Fatalf("Restore returned %d holders, want %d", len(holders), len(st.Holders))
		}
		for i, h := range holders {
			hs := st.Holders[i]
			if h == nil || h.UID != hs.UID || h.PID != hs.PID || h.App != hs.App {
				t.Errorf("holder %d: got %+v, want %+v", i, h, hs)
			}
			if h == hA || h == hB || h == hIdle {
				t.Errorf("holder %d is the old registry's", i)
			}
		}
		for i, n := range []int{1, 3, 0} {
			if got := b.Holds(holders[i]); got != n {
				t.Errorf("Holds(holder %d): got %d, want %d", i, got, n)
			}
		}
	})

	t.Run("same sockets", func(t *testing.T) {
		for k, ino := range inodes {
			got, ok := gotInodes[k]
			if !ok {
				t.Errorf("%s is not cached after Restore", k)
			} else if got != ino {
				t.Errorf("%s: the restored fd is another socket (%v, want %v)", k, got, ino)
			}
		}
	})

	t.Run("reference order", func(t *testing.T) {
		for k, order := range wantOrder {
			if got := gotOrder[k]; !slices.Equal(got, order) {
				t.Errorf("%s references: got %v, want %v", k, got, order)
			}
		}
	})

	t.Run("sharing rules", func(t *testing.T) {
		hLive := &Holder{UID: 1003, PID: 44, App: "live"}
		for _, tc := range []struct {
			name     string
			key      Key
			share    Share
			sname    string
			conflict bool
		}{
			{"none", k1, ShareNone, "", true},
			{"same-name, another name", k1, ShareSameName, "m", true},
			{"any, unnamed, against a same-name reference", k1, ShareAny, "", true},
			{"same-name, the same name", k1, ShareSameName, "n", false},
			{"any, the same name", k1, ShareAny, "n", false},
			{"any on a share-none socket", k2, ShareAny, "", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				gr, err := b.Acquire(snapShareReq(t, hLive, tc.key, tc.share, tc.sname))
				if tc.conflict {
					if !errors.Is(err, ErrShareConflict) {
						t.Errorf("Acquire %s %s %q: got %v, want ErrShareConflict", tc.key, tc.share, tc.sname, err)
					}
					if gr != nil && gr.File != nil {
						gr.File.Close()
					}
					return
				}
				if err != nil {
					t.Fatalf("Acquire %s %s %q: %v; want it shared", tc.key, tc.share, tc.sname, err)
				}
				defer gr.File.Close()
				if !gr.Shared || gr.Key != tc.key {
					t.Errorf("grant: shared %v, key %s; want true, %s", gr.Shared, gr.Key, tc.key)
				}
				if ino := snapFileInode(t, gr.File); ino != inodes[tc.key] {
					t.Errorf("the shared grant's file is another socket")
				}
				if _, err := b.Release(gr.Token, hLive, false); err != nil {
					t.Fatal(err)
				}
			})
		}
		for _, k := range []Key{k1, k2} {
			if got := snapRefOrder(t, b, k); !slices.Equal(got, wantOrder[k]) {
				t.Errorf("%s references after the shares were released: got %v, want %v", k, got, wantOrder[k])
			}
		}
	})

	t.Run("pickup", func(t *testing.T) {
		hNew := &Holder{UID: 1004, PID: 55}
		gr, err := b.Pickup(p1.Token, hNew, func(Key) bool { return true })
		if err != nil {
			t.Fatalf("Pickup of a restored pending token: %v", err)
		}
		defer gr.File.Close()
		if gr.Key != k1 || !gr.Shared || gr.Token != p1.Token {
			t.Errorf("pickup grant: %+v; want key %s, shared, token %s", gr, k1, p1.Token)
		}
		if snapFileInode(t, gr.File) != inodes[k1] {
			t.Errorf("the picked-up file is another socket")
		}
		if want := snapSecret(t, a, p1.Token); gr.Reclaim != want {
			t.Errorf("pickup's reclaim secret %q, want %q (derived under the old registry's key)", gr.Reclaim, want)
		}
		if n := b.Holds(hNew); n != 1 {
			t.Errorf("Holds(picker): got %d, want 1", n)
		}
		if _, err := b.Pickup(p1.Token, hNew, func(Key) bool { return true }); err != ErrNoToken {
			t.Errorf("second Pickup: got %v, want ErrNoToken", err)
		}
	})

	t.Run("reclaim with the old secret", func(t *testing.T) {
		b.Orphan(holders[:1], time.Hour)
		hA2 := &Holder{UID: 1000, PID: 66, App: "resolver"}
		gr, err := b.Reclaim(r1a.Token, r1a.Reclaim, hA2)
		if err != nil {
			t.Fatalf("Reclaim with the secret the old registry gave: %v", err)
		}
		if gr.Reclaim != r1a.Reclaim || gr.Key != k1 {
			t.Errorf("reclaim grant: %+v; want key %s, secret %s", gr, k1, r1a.Reclaim)
		}
		if b.Holds(hA2) != 1 || b.Holds(holders[0]) != 0 {
			t.Errorf("after Reclaim: new holder holds %d, old %d; want 1, 0", b.Holds(hA2), b.Holds(holders[0]))
		}
		if got := snapRefOrder(t, b, k1); !slices.Equal(got, wantOrder[k1]) {
			t.Errorf("%s references after Reclaim: got %v, want %v", k1, got, wantOrder[k1])
		}
	})

	t.Run("release a restored holder", func(t *testing.T) {
		fd2 := snapFD(b, k2)
		if n := b.ReleaseHolder(holders[1]); n != 3 {
			t.Errorf("ReleaseHolder(restored hB): got %d, want 3", n)
		}
		if b.Holds(holders[1]) != 0 {
			t.Errorf("restored hB still holds %d", b.Holds(holders[1]))
		}
		if snapFD(b, k2) >= 0 || snapFDOpen(fd2) {
			t.Errorf("%s, whose last reference the holder had, is still cached or open", k2)
		}
		var left []string
		for _, tok := range wantOrder[k1] {
			if tok != r1b.Token && tok != r1c.Token {
				left = append(left, tok)
			}
		}
		if got := snapRefOrder(t, b, k1); !slices.Equal(got, left) {
			t.Errorf("%s references: got %v, want %v", k1, got, left)
		}
	})

	t.Run("pending token expires", func(t *testing.T) {
		if !snapPoll(5*time.Second, func() bool { return snapFD(b, k3) < 0 }) {
			t.Fatalf("%s, held only by a pending token, is still cached 5s after the token's TTL", k3)
		}
		if now := time.Now(); now.Before(p3Expires) {
			t.Errorf("the restored token expired %v early", p3Expires.Sub(now))
		}
		if _, err := b.Pickup(p3.Token, hA, func(Key) bool { return true }); err != ErrNoToken {
			t.Errorf("Pickup of the expired token: got %v, want ErrNoToken", err)
		}
	})

	t.Run("lingering socket closes", func(t *testing.T) {
		if !snapPoll(5*time.Second, func() bool { return snapFD(b, k4) < 0 }) {
			t.Fatalf("the lingering %s is still cached 5s after its linger time", k4)
		}
		if early := idleFrom.Add(short).Sub(time.Now()); early > 0 {
			t.Errorf("the restored lingering socket closed %v early", early)
		}
	})
}

// snapValidState is a registry's snapshot with a shared socket (two held
// references and a pending token), a udp socket, a socket only a pending
// token of no holder has, and a lingering one; the udp one is last.
func snapValidState(t *testing.T) (*State, map[string]Key) {
	t.Helper()
	a := New(time.Minute)
	t.Cleanup(a.Close)
	h0, h1, h2 := &Holder{UID: 1, PID: 1}, &Holder{UID: 2, PID: 2}, &Holder{UID: 3, PID: 3}
	shared := snapAcquire(t, a, snapReq(h0, snapTCP0, ShareAny, "x"))
	snapAcquire(t, a, snapReq(h1, shared.Key, ShareAny, "x"))
	p := snapReq(h0, shared.Key, ShareAny, "x")
	p.Pending = true
	snapAcquire(t, a, p)
	udp := snapAcquire(t, a, snapReq(h1, snapUDP0, ShareNone, ""))
	p = snapReq(nil, snapTCP0, ShareNone, "")
	p.Pending = true
	pending := snapAcquire(t, a, p)
	l := snapReq(h0, snapTCP0, ShareNone, "")
	l.Linger = time.Hour
	linger := snapAcquire(t, a, l)
	if _, err := a.Release(linger.Token, h0, false); err != nil {
		t.Fatal(err)
	}
	st, err := a.Snapshot([]*Holder{h0, h1, h2})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(st.Sockets); n != 4 || st.Sockets[n-1].Proto != "udp" {
		t.Fatalf("valid state: %d sockets, the last %s; want 4, udp", n, st.Sockets[n-1].Proto)
	}
	return st, map[string]Key{"shared": shared.Key, "udp": udp.Key, "pending": pending.Key, "linger": linger.Key}
}

// snapSocket is st's socket for k.
func snapSocket(t *testing.T, st *State, k Key) *SocketState {
	t.Helper()
	for i := range st.Sockets {
		if st.Sockets[i].Proto == k.Proto && st.Sockets[i].Addr == k.Addr {
			return &st.Sockets[i]
		}
	}
	t.Fatalf("no socket %s in the state", k)
	return nil
}

// TestRestoreRefusesBadState: a state that does not describe a cache is
// refused with ErrBadState, wherever the fault is (before any socket is
// taken in, or after some are), and leaves the registry empty and usable,
// with every descriptor it was given closed.
func TestRestoreRefusesBadState(t *testing.T) {
	snapCheckFDs(t)
	valid, keys := snapValidState(t)
	type mutation func(t *testing.T, st *State, fds []int)
	sock := func(name string, f func(ss *SocketState)) mutation {
		return func(t *testing.T, st *State, fds []int) { f(snapSocket(t, st, keys[name])) }
	}
	for _, tc := range []struct {
		name   string
		mutate mutation
	}{
		{"fd index out of range", sock("udp", func(ss *SocketState) { ss.FD = 5 })},
		{"fd index negative", sock("shared", func(ss *SocketState) { ss.FD = -1 })},
		{"fd index used twice", func(t *testing.T, st *State, fds []int) {
			snapSocket(t, st, keys["udp"]).FD = snapSocket(t, st, keys["shared"]).FD
		}},
		{"fd slot holds no descriptor", func(t *testing.T, st *State, fds []int) {
			i := snapSocket(t, st, keys["udp"]).FD
			unix.Close(fds[i])
			fds[i] = -1
		}},
		{"token used twice in a socket", sock("shared", func(ss *SocketState) { ss.Refs[2].Token = ss.Refs[0].Token })},
		{"token used twice across sockets", func(t *testing.T, st *State, fds []int) {
			snapSocket(t, st, keys["udp"]).Refs[0].Token = snapSocket(t, st, keys["shared"]).Refs[1].Token
		}},
		{"token in upper case", sock("udp", func(ss *SocketState) { ss.Refs[0].Token = strings.ToUpper(ss.Refs[0].Token) })},
		{"token too short", sock("udp", func(ss *SocketState) { ss.Refs[0].Token = ss.Refs[0].Token[:31] })},
		{"token empty", sock("shared", func(ss *SocketState) { ss.Refs[1].Token = "" })},
		{"holder index out of range", sock("udp", func(ss *SocketState) { ss.Refs[0].Holder = 3 })},
		{"holder index below -1", sock("shared", func(ss *SocketState) { ss.Refs[2].Holder = -2 })},
		{"held reference of no holder", sock("udp", func(ss *SocketState) { ss.Refs[0].Holder = -1 })},
		{"unknown share mode", sock("udp", func(ss *SocketState) { ss.Refs[0].Share = ShareAny + 1 })},
		{"no reclaim key", func(t *testing.T, st *State, fds []int) { st.ReclaimKey = "" }},
		{"reclaim key not hex", func(t *testing.T, st *State, fds []int) { st.ReclaimKey = strings.Repeat("zz", 32) }},
		{"reclaim key too short", func(t *testing.T, st *State, fds []int) { st.ReclaimKey = st.ReclaimKey[:62] }},
		{"reclaim key too long", func(t *testing.T, st *State, fds []int) { st.ReclaimKey += "00" }},
		{"socket with no reference and no linger", sock("udp", func(ss *SocketState) { ss.Refs, ss.Linger = nil, 0 })},
		{"lingering socket idle for negative time", sock("linger", func(ss *SocketState) { ss.Idle = -time.Second })},
		{"socket with no protocol", sock("udp", func(ss *SocketState) { ss.Proto = "" })},
		{"socket with no address", sock("udp", func(ss *SocketState) { ss.Addr = netip.AddrPort{} })},
		{"socket listed twice", func(t *testing.T, st *State, fds []int) {
			u := snapSocket(t, st, keys["udp"])
			u.Proto, u.Addr = "tcp", keys["shared"].Addr
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, fds := snapHandover(t, valid)
			fds = append(fds, snapDup(t, fds[0])) // one no socket names
			tc.mutate(t, st, fds)
			var passed []int
			for _, fd := range fds {
				if fd >= 0 {
					passed = append(passed, fd)
				}
			}
			before := testnet.OpenFDs(t)
			g := New(time.Minute)
			defer g.Close()
			holders, err := g.Restore(st, fds)
			if !errors.Is(err, ErrBadState) || holders != nil {
				t.Errorf("Restore: got %d holders, %v; want none, ErrBadState", len(holders), err)
			}
			for _, fd := range passed {
				if snapFDOpen(fd) {
					t.Errorf("fd %d, given to a failed Restore, is still open", fd)
					unix.Close(fd)
				}
			}
			if n := testnet.OpenFDs(t); n != before-len(passed) {
				t.Errorf("open fds after the failed Restore: got %d, want %d", n, before-len(passed))
			}
			wantEmpty(t, g)
			if s := snapSum(g); s != (snapSummary{}) {
				t.Errorf("Summary after the failed Restore: %+v, want zeros", s)
			}

			// The registry is left usable: a valid state restores.
			st, fds = snapHandover(t, valid)
			if _, err := g.Restore(st, fds); err != nil {
				t.Fatalf("Restore of a valid state after a failed one: %v", err)
			}
			if s := snapSum(g); s != (snapSummary{4, 3, 2}) {
				t.Errorf("Summary after the valid Restore: %+v, want {4 3 2}", s)
			}
		})
	}

	for _, tc := range []struct {
		name string
		fill func(t *testing.T, g *Registry)
	}{
		{"registry holds a socket", func(t *testing.T, g *Registry) {
			snapAcquire(t, g, snapReq(&Holder{UID: 9}, snapTCP0, ShareAny, ""))
		}},
		{"registry has a lingering socket", func(t *testing.T, g *Registry) {
			h := &Holder{UID: 9}
			r := snapReq(h, snapUDP0, ShareAny, "")
			r.Linger = time.Hour
			gr := snapAcquire(t, g, r)
			g.Release(gr.Token, h, false)
		}},
		{"registry has a pending token", func(t *testing.T, g *Registry) {
			r := snapReq(&Holder{UID: 9}, snapTCP0, ShareAny, "")
			r.Pending = true
			snapAcquire(t, g, r)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := New(time.Minute)
			defer g.Close()
			tc.fill(t, g)
			wantSt, wantS := snapTimeless(g.Status(nil, true)), snapSum(g)
			var ownFDs []int
			for _, s := range wantSt {
				ownFDs = append(ownFDs, snapFD(g, s.Key))
			}
			st, fds := snapHandover(t, valid)
			passed := slices.Clone(fds)
			if _, err := g.Restore(st, fds); !errors.Is(err, ErrBadState) {
				t.Errorf("Restore into a registry not empty: got %v, want ErrBadState", err)
			}
			for _, fd := range passed {
				if snapFDOpen(fd) {
					t.Errorf("fd %d, given to a failed Restore, is still open", fd)
					unix.Close(fd)
				}
			}
			if got := snapTimeless(g.Status(nil, true)); !reflect.DeepEqual(got, wantSt) || snapSum(g) != wantS {
				t.Errorf("the registry changed: status %+v, summary %+v; want %+v, %+v", got, snapSum(g), wantSt, wantS)
			}
			for _, fd := range ownFDs {
				if !snapFDOpen(fd) {
					t.Errorf("the registry's own fd %d was closed", fd)
				}
			}
		})
	}

	t.Run("registry closed", func(t *testing.T) {
		g := New(time.Minute)
		g.Close()
		st, fds := snapHandover(t, valid)
		passed := slices.Clone(fds)
		if _, err := g.Restore(st, fds); err != ErrClosed {
			t.Errorf("Restore into a closed registry: got %v, want ErrClosed", err)
		}
		for _, fd := range passed {
			if snapFDOpen(fd) {
				t.Errorf("fd %d, given to a failed Restore, is still open", fd)
				unix.Close(fd)
			}
		}
		wantEmpty(t, g)
	})
}

// TestSnapshotWhileLent: while a descriptor is lent (a reply being sent),
// Snapshot refuses; once every one is returned, it works.
func TestSnapshotWhileLent(t *testing.T) {
	snapCheckFDs(t)
	for _, tc := range []struct {
		name string
		lend func(t *testing.T, g *Registry) []*Grant
	}{
		{"acquire", func(t *testing.T, g *Registry) []*Grant {
			r := snapReq(&Holder{UID: 1}, snapTCP0, ShareAny, "")
			r.Lend = true
			return []*Grant{snapAcquire(t, g, r)}
		}},
		{"pickup", func(t *testing.T, g *Registry) []*Grant {
			r := snapReq(&Holder{UID: 1}, snapTCP0, ShareAny, "")
			r.Pending = true
			p := snapAcquire(t, g, r)
			gr, err := g.PickupLent(p.Token, &Holder{UID: 2}, func(Key) bool { return true })
			if err != nil {
				t.Fatal(err)
			}
			return []*Grant{gr}
		}},
		{"twice, of two sockets", func(t *testing.T, g *Registry) []*Grant {
			var out []*Grant
			for _, k := range []Key{snapTCP0, snapUDP0} {
				r := snapReq(&Holder{UID: 1}, k, ShareAny, "")
				r.Lend = true
				out = append(out, snapAcquire(t, g, r))
			}
			return out
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := New(time.Minute)
			defer g.Close()
			grants := tc.lend(t, g)
			for i, gr := range grants {
				if gr.FD < 0 {
					t.Fatalf("grant %d lent nothing", i)
				}
				if st, err := g.Snapshot(nil); err == nil || st != nil {
					t.Errorf("Snapshot with %d descriptors lent: got %v, %v; want an error", len(grants)-i, st, err)
				}
				g.Return(gr)
			}
			st, err := g.Snapshot(nil)
			if err != nil {
				t.Fatalf("Snapshot after every Return: %v", err)
			}
			if len(st.Sockets) != len(grants) {
				t.Errorf("Snapshot: %d sockets, want %d", len(st.Sockets), len(grants))
			}
		})
	}
}

// TestOrphanReclaim: restored holders made orphans keep their references
// for the grace period; a reference moves to a new holder only with its
// token, its secret and the same uid; every other attempt gets the bare
// ErrNoToken; after the grace what was not reclaimed is released; and
// orphans with what is left of their grace survive another Snapshot and
// Restore.
func TestOrphanReclaim(t *testing.T) {
	snapCheckFDs(t)
	a := New(time.Minute)
	t.Cleanup(a.Close)
	hX := &Holder{UID: 2000, PID: 1, App: "x"}
	hY := &Holder{UID: 2001, PID: 2, App: "y"}
	r1 := snapAcquire(t, a, snapReq(hX, snapTCP0, ShareAny, ""))
	k1 := r1.Key
	r2 := snapAcquire(t, a, snapReq(hY, k1, ShareAny, ""))
	r3 := snapAcquire(t, a, snapReq(hY, snapUDP0, ShareNone, ""))
	k2 := r3.Key
	pr := snapReq(hX, k1, ShareAny, "")
	pr.Pending = true
	pt := snapAcquire(t, a, pr)
	st, err := a.Snapshot([]*Holder{hX, hY})
	if err != nil {
		t.Fatal(err)
	}
	restore := func(t *testing.T) (*Registry, []*Holder) {
		t.Helper()
		hand, fds := snapHandover(t, st)
		g := New(time.Minute)
		t.Cleanup(g.Close)
		hs, err := g.Restore(hand, fds)
		if err != nil {
			t.Fatal(err)
		}
		if n := g.Orphans(); n != 0 {
			t.Fatalf("Orphans after Restore of a state without: %d, want 0", n)
		}
		return g, hs
	}
	wantNoToken := func(t *testing.T, what string, gr *Grant, err error) {
		t.Helper()
		if err != ErrNoToken || !errors.Is(err, ErrNoToken) || gr != nil {
			t.Errorf("%s: got %+v, %v; want exactly ErrNoToken", what, gr, err)
		}
	}
	holderOf := func(g *Registry, token string) (Holder, bool) {
		for _, s := range g.Status(nil, true) {
			for _, r := range s.Refs {
				if r.Token == token {
					return r.Holder, true
				}
			}
		}
		return Holder{}, false
	}

	t.Run("reclaim", func(t *testing.T) {
		g, hs := restore(t)
		x, y := hs[0], hs[1]
		gr, err := g.Reclaim(r1.Token, r1.Reclaim, &Holder{UID: 2000})
		wantNoToken(t, "Reclaim before Orphan", gr, err)
		g.Orphan(hs, time.Hour)
		if n := g.Orphans(); n != 3 {
			t.Errorf("Orphans: got %d, want 3", n)
		}
		hL := &Holder{UID: 2000, PID: 3, App: "live"}
		live := snapAcquire(t, g, snapShareReq(t, hL, k1, ShareAny, ""))
		var unknown token
		rand.Read(unknown[:])
		flipped := []byte(r1.Reclaim)
		if flipped[31] == '0' {
			flipped[31] = '1'
		} else {
			flipped[31] = '0'
		}
		for _, tc := range []struct {
			name, token, secret string
			uid                 uint32
		}{
			{"wrong secret", r1.Token, string(flipped), 2000},
			{"another reference's secret", r1.Token, r2.Reclaim, 2000},
			{"the token as its secret", r1.Token, r1.Token, 2000},
			{"no secret", r1.Token, "", 2000},
			{"the secret in upper case", r1.Token, strings.ToUpper(r1.Reclaim), 2000},
			{"wrong uid", r1.Token, r1.Reclaim, 2001},
			{"unknown token", unknown.String(), g.secret(unknown).String(), 2000},
			{"malformed token", "nope", r1.Reclaim, 2000},
			{"pending token", pt.Token, snapSecret(t, g, pt.Token), 2000},
			{"reference not orphaned", live.Token, live.Reclaim, 2000},
		} {
			gr, err := g.Reclaim(tc.token, tc.secret, &Holder{UID: tc.uid, PID: 9})
			wantNoToken(t, tc.name, gr, err)
		}
		if g.Orphans() != 3 || g.Holds(x) != 1 || g.Holds(y) != 2 || g.Holds(hL) != 1 {
			t.Errorf("after refused reclaims: %d orphans, holds %d, %d, %d; want 3, 1, 2, 1", g.Orphans(), g.Holds(x), g.Holds(y), g.Holds(hL))
		}

		x2 := &Holder{UID: 2000, PID: 77, App: "x again"}
		gr, err = g.Reclaim(r1.Token, r1.Reclaim, x2)
		if err != nil {
			t.Fatalf("Reclaim with token, secret and uid: %v", err)
		}
		if gr.Token != r1.Token || gr.Key != k1 || gr.Reclaim != r1.Reclaim || !gr.Shared || gr.File != nil || gr.FD != -1 {
			t.Errorf("reclaim grant: %+v; want token %s, key %s, the same secret, shared, nothing sent", gr, r1.Token, k1)
		}
		if g.Holds(x2) != 1 || g.Holds(x) != 0 || g.Orphans() != 2 {
			t.Errorf("after Reclaim: new holder holds %d, old %d, %d orphans; want 1, 0, 2", g.Holds(x2), g.Holds(x), g.Orphans())
		}
		if h, ok := holderOf(g, r1.Token); !ok || h != *x2 {
			t.Errorf("status: the reclaimed reference's holder is %+v (listed %v), want %+v", h, ok, *x2)
		}
		if s := snapSum(g); s != (snapSummary{2, 4, 1}) {
			t.Errorf("Summary after Reclaim: %+v, want {2 4 1}", s)
		}
		for _, h := range []*Holder{x2, {UID: 2000, PID: 78}} {
			gr, err = g.Reclaim(r1.Token, r1.Reclaim, h)
			wantNoToken(t, "second Reclaim", gr, err)
		}
		if g.Holds(x2) != 1 {
			t.Errorf("after a second Reclaim the first reclaimer holds %d, want 1", g.Holds(x2))
		}
	})

	t.Run("grace already over", func(t *testing.T) {
		// Orphans whose grace is over in the state (OrphanGrace 0) are
		// released at once by Restore: a caller that means to give them
		// a new grace must not mark them orphans in the state (or must
		// set OrphanGrace), and call Orphan after.
		hand, fds := snapHandover(t, st)
		for i := range hand.Holders {
			hand.Holders[i].Orphan = true
		}
		hand.OrphanGrace = 0
		g := New(time.Minute)
		t.Cleanup(g.Close)
		if _, err := g.Restore(hand, fds); err != nil {
			t.Fatal(err)
		}
		if !snapPoll(5*time.Second, func() bool { return g.Orphans() == 0 && snapSum(g) == snapSummary{1, 0, 1} }) {
			t.Errorf("orphans without grace: %d left, summary %+v; want 0, {1 0 1}", g.Orphans(), snapSum(g))
		}
		if snapFD(g, k2) >= 0 {
			t.Errorf("%s, whose last reference an orphan had, is still cached", k2)
		}
	})

	t.Run("release orphans", func(t *testing.T) {
		g, hs := restore(t)
		g.Orphan(hs, time.Hour)
		fd2 := snapFD(g, k2)
		if n := g.ReleaseOrphans(); n != 3 {
			t.Errorf("ReleaseOrphans: got %d, want 3", n)
		}
		if n := g.Orphans(); n != 0 {
			t.Errorf("Orphans after ReleaseOrphans: %d, want 0", n)
		}
		if snapFD(g, k2) >= 0 || snapFDOpen(fd2) {
			t.Errorf("%s, whose last reference an orphan had, is still cached or open", k2)
		}
		if s := snapSum(g); s != (snapSummary{1, 0, 1}) {
			t.Errorf("Summary after ReleaseOrphans: %+v, want {1 0 1} (the pending token keeps its socket)", s)
		}
		if n := g.ReleaseOrphans(); n != 0 {
			t.Errorf("second ReleaseOrphans: got %d, want 0", n)
		}
		gr, err := g.Reclaim(r2.Token, r2.Reclaim, &Holder{UID: 2001})
		wantNoToken(t, "Reclaim after ReleaseOrphans", gr, err)
	})

	t.Run("grace", func(t *testing.T) {
		const grace = 400 * time.Millisecond
		g, hs := restore(t)
		x, y := hs[0], hs[1]
		g.Orphan(hs, time.Hour)
		x2 := &Holder{UID: 2000, PID: 77, App: "x again"}
		if _, err := g.Reclaim(r1.Token, r1.Reclaim, x2); err != nil {
			t.Fatal(err)
		}
		orphaned := time.Now()
		g.Orphan(hs, grace)

		// Written out and restored elsewhere, the orphans stay orphans
		// with what is left of their grace.
		st2, err := g.Snapshot([]*Holder{x2})
		if err != nil {
			t.Fatal(err)
		}
		if st2.OrphanGrace <= 0 || st2.OrphanGrace > grace {
			t.Errorf("State.OrphanGrace: %v, want in (0, %v]", st2.OrphanGrace, grace)
		}
		for _, h := range st2.Holders {
			if orphan := h.UID == x.UID && h.PID == x.PID || h.UID == y.UID && h.PID == y.PID; h.Orphan != orphan {
				t.Errorf("State holder %+v: orphan %v, want %v", h, h.Orphan, orphan)
			}
		}
		hand, fds := snapHandover(t, st2)
		c := New(time.Minute)
		t.Cleanup(c.Close)
		if _, err := c.Restore(hand, fds); err != nil {
			t.Fatal(err)
		}
		if n := c.Orphans(); n != 2 {
			t.Errorf("Orphans after Restore: %d, want 2", n)
		}
		y2 := &Holder{UID: 2001, PID: 88}
		if _, err := c.Reclaim(r2.Token, r2.Reclaim, y2); err != nil {
			t.Errorf("Reclaim in the second restore: %v", err)
		}

		for _, tc := range []struct {
			name string
			g    *Registry
			want snapSummary
		}{
			{"first restore", g, snapSummary{1, 1, 1}},
			{"restored again", c, snapSummary{1, 2, 1}},
		} {
			if !snapPoll(5*time.Second, func() bool { return tc.g.Orphans() == 0 }) {
				t.Fatalf("%s: %d orphaned references left 5s after the grace", tc.name, tc.g.Orphans())
			}
			if early := orphaned.Add(grace).Sub(time.Now()); early > 0 {
				t.Errorf("%s: orphans released %v before the grace ended", tc.name, early)
			}
			if s := snapSum(tc.g); s != tc.want {
				t.Errorf("%s: Summary after the grace: %+v, want %+v (reclaimed references and the pending token kept)", tc.name, s, tc.want)
			}
			if snapFD(tc.g, k2) >= 0 {
				t.Errorf("%s: %s, whose last reference an orphan had, is still cached", tc.name, k2)
			}
			if h, ok := holderOf(tc.g, r1.Token); !ok || h != *x2 {
				t.Errorf("%s: the reclaimed reference's holder is %+v (listed %v), want %+v", tc.name, h, ok, *x2)
			}
			if n := tc.g.ReleaseOrphans(); n != 0 {
				t.Errorf("%s: ReleaseOrphans after the grace: %d, want 0", tc.name, n)
			}
		}
		if g.Holds(y) != 0 || g.Holds(x2) != 1 {
			t.Errorf("after the grace: orphan holds %d, reclaimer %d; want 0, 1", g.Holds(y), g.Holds(x2))
		}
	})
}

// TestOrphanAgainBeforeTimerRuns: when a grace period ends while Orphan
// (here orphanLocked, with the lock held throughout) starts a new one, the
// old period's timer, already fired, must not release the orphans of the
// new one.
func TestOrphanAgainBeforeTimerRuns(t *testing.T) {
	snapCheckFDs(t)
	g := New(time.Minute)
	defer g.Close()
	h := &Holder{UID: 1}
	snapAcquire(t, g, snapReq(h, snapTCP0, ShareAny, ""))
	g.mu.Lock()
	g.orphanLocked([]*Holder{h}, 0)
	time.Sleep(20 * time.Millisecond) // its timer fires and waits for the lock
	g.orphanLocked([]*Holder{h}, time.Hour)
	g.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // nothing is expected: give it a chance
	if n := g.Orphans(); n != 1 {
		t.Errorf("Orphans within the new grace: %d, want 1", n)
	}
}

// TestAbandon: after Abandon the registry has forgotten its sockets
// without closing them (not when its timers would have, nor on Close),
// and refuses work.
func TestAbandon(t *testing.T) {
	snapCheckFDs(t)
	const short = 100 * time.Millisecond
	a := New(short)
	h := &Holder{UID: 1}
	lst := snapAcquire(t, a, snapReq(h, snapTCP0, ShareAny, ""))
	lr := snapReq(h, snapUDP0, ShareNone, "")
	lr.Linger = short
	l := snapAcquire(t, a, lr)
	pr := snapReq(h, snapTCP0, ShareNone, "")
	pr.Pending = true
	p := snapAcquire(t, a, pr)
	if _, err := a.Release(l.Token, h, false); err != nil {
		t.Fatal(err)
	}
	st, err := a.Snapshot(nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Abandon()
	if len(st.Sockets) != 3 {
		t.Fatalf("Snapshot: %d sockets, want 3", len(st.Sockets))
	}
	for _, ss := range st.Sockets {
		if !snapFDOpen(ss.FD) {
			t.Fatalf("%s %s: Abandon closed the registry's fd %d", ss.Proto, ss.Addr, ss.FD)
		}
	}
	hand, dups := snapHandover(t, st)
	var own []int
	for _, ss := range st.Sockets {
		own = append(own, ss.FD)
	}
	t.Cleanup(func() {
		for _, fd := range append(own, dups...) {
			unix.Close(fd)
		}
	})

	time.Sleep(3 * short) // past the linger time and the token's TTL: nothing may close
	a.Close()             // nor may Close
	for i, ss := range st.Sockets {
		if !snapFDOpen(ss.FD) {
			t.Errorf("%s %s: the registry's own fd %d was closed after Abandon", ss.Proto, ss.Addr, ss.FD)
			continue
		}
		if snapInodeOf(t, ss.FD) != snapInodeOf(t, dups[hand.Sockets[i].FD]) {
			t.Errorf("%s %s: fd %d is another socket now", ss.Proto, ss.Addr, ss.FD)
		}
	}

	// The held listener still works, through the copy.
	var listenerFD int = -1
	for i, ss := range st.Sockets {
		if ss.Proto == lst.Key.Proto && ss.Addr == lst.Key.Addr {
			listenerFD = dups[hand.Sockets[i].FD]
		}
	}
	if listenerFD < 0 {
		t.Fatalf("the held listener is not in the snapshot")
	}
	f := os.NewFile(uintptr(snapDup(t, listenerFD)), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", lst.Key.Addr.String())
	if err != nil {
		t.Fatalf("connecting to the abandoned listener: %v", err)
	}
	defer c.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatalf("accepting on the abandoned listener: %v", err)
	}
	sc.Close()

	if s := snapSum(a); s != (snapSummary{}) {
		t.Errorf("Summary after Abandon: %+v, want zeros", s)
	}
	if gr, err := a.Acquire(snapReq(h, snapTCP0, ShareAny, "")); err != ErrClosed {
		t.Errorf("Acquire after Abandon: got %+v, %v; want ErrClosed", gr, err)
	}
	if st, err := a.Snapshot(nil); err != ErrClosed {
		t.Errorf("Snapshot after Abandon: got %+v, %v; want ErrClosed", st, err)
	}
	st2, fds2 := snapHandover(t, st)
	passed := slices.Clone(fds2)
	if _, err := a.Restore(st2, fds2); err != ErrClosed {
		t.Errorf("Restore after Abandon: got %v, want ErrClosed", err)
	}
	for _, fd := range passed {
		if snapFDOpen(fd) {
			t.Errorf("fd %d, given to Restore after Abandon, is still open", fd)
			unix.Close(fd)
		}
	}
	// The rest fails as for an unknown token, and changes nothing.
	if _, err := a.Pickup(p.Token, h, func(Key) bool { return true }); err != ErrNoToken {
		t.Errorf("Pickup after Abandon: got %v, want ErrNoToken", err)
	}
	if _, err := a.Release(lst.Token, h, false); err != ErrNoToken {
		t.Errorf("Release after Abandon: got %v, want ErrNoToken", err)
	}
	if _, err := a.Reclaim(lst.Token, lst.Reclaim, h); err != ErrNoToken {
		t.Errorf("Reclaim after Abandon: got %v, want ErrNoToken", err)
	}
	if n := a.ReleaseHolder(h); n != 0 {
		t.Errorf("ReleaseHolder after Abandon: %d, want 0", n)
	}
	wantEmpty(t, a)
	for _, fd := range own {
		if !snapFDOpen(fd) {
			t.Errorf("fd %d was closed by a call after Abandon", fd)
		}
	}
}

// TestReclaimSecrets: every held reference has its own reclaim secret, 32
// lowercase hex digits unlike its token; a pending token has none until
// picked up; a reference's secret is the same after Snapshot and Restore;
// and it depends on the registry's key, not on the token alone.
func TestReclaimSecrets(t *testing.T) {
	snapCheckFDs(t)
	a := New(time.Minute)
	t.Cleanup(a.Close)
	h, h2 := &Holder{UID: 1, PID: 1}, &Holder{UID: 2, PID: 2}
	first := snapAcquire(t, a, snapReq(h, snapTCP0, ShareAny, ""))
	held := []*Grant{
		first,
		snapAcquire(t, a, snapReq(h, first.Key, ShareAny, "")),
		snapAcquire(t, a, snapReq(h2, first.Key, ShareAny, "")),
		snapAcquire(t, a, snapReq(h2, snapUDP0, ShareAny, "")),
	}
	pr := snapReq(h, first.Key, ShareAny, "")
	pr.Pending = true
	p := snapAcquire(t, a, pr)
	if p.Reclaim != "" {
		t.Errorf("pending token's reclaim secret: %q, want none", p.Reclaim)
	}
	picked, err := a.Pickup(p.Token, h2, func(Key) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	picked.File.Close()
	held = append(held, picked)

	seen := map[string]bool{}
	for _, gr := range held {
		if !tokenSyntax.MatchString(gr.Reclaim) {
			t.Errorf("reclaim secret %q of %s: want 32 lowercase hex digits", gr.Reclaim, gr.Token)
		}
		if gr.Reclaim == gr.Token {
			t.Errorf("reference %s: its reclaim secret is its token", gr.Token)
		}
		if seen[gr.Reclaim] {
			t.Errorf("reclaim secret %q given twice", gr.Reclaim)
		}
		seen[gr.Reclaim] = true
		other := New(time.Minute)
		if snapSecret(t, other, gr.Token) == gr.Reclaim {
			t.Errorf("reference %s: another registry derives the same secret", gr.Token)
		}
		other.Close()
	}

	st, err := a.Snapshot(nil)
	if err != nil {
		t.Fatal(err)
	}
	hand, fds := snapHandover(t, st)
	b := New(time.Minute)
	t.Cleanup(b.Close)
	hs, err := b.Restore(hand, fds)
	if err != nil {
		t.Fatal(err)
	}
	b.Orphan(hs, time.Hour)
	for _, gr := range held {
		if got := snapSecret(t, b, gr.Token); got != gr.Reclaim {
			t.Errorf("reference %s after Restore: secret %q, want %q", gr.Token, got, gr.Reclaim)
		}
		// Its holder's uid, from the status.
		var uid uint32
		for _, s := range b.Status(nil, true) {
			for _, r := range s.Refs {
				if r.Token == gr.Token {
					uid = r.Holder.UID
				}
			}
		}
		rg, err := b.Reclaim(gr.Token, gr.Reclaim, &Holder{UID: uid, PID: 99})
		if err != nil {
			t.Errorf("Reclaim of %s after Restore: %v", gr.Token, err)
			continue
		}
		if rg.Reclaim != gr.Reclaim {
			t.Errorf("Reclaim of %s: secret %q, want %q", gr.Token, rg.Reclaim, gr.Reclaim)
		}
	}
}
