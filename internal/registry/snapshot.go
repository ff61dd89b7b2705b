package registry

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// State is the whole cache written out: every socket with its references
// and pending tokens, and the holders they belong to. It is what a live
// upgrade hands to the next daemon (Snapshot, Restore) and what the crash
// record describes. Times are durations relative to when the State was
// taken, so that it means the same in another process.
type State struct {
	// Holders are the holders the references name, by index. The ones
	// Snapshot was given come first, in its order.
	Holders []HolderState `json:"holders"`
	// Sockets are the cached sockets, lingering ones included.
	Sockets []SocketState `json:"sockets"`
	// ReclaimKey derives the references' reclaim secrets (32 bytes, hex).
	ReclaimKey string `json:"reclaim_key"`
	// OrphanGrace is what is left of the orphans' grace period.
	OrphanGrace time.Duration `json:"orphan_grace,omitempty"`
}

// HolderState is one Holder.
type HolderState struct {
	UID uint32 `json:"uid"`
	PID int32  `json:"pid"`
	App string `json:"app,omitempty"`
	// Orphan is set for a holder whose connection was lost in a crash
	// and whose references wait to be reclaimed (see Registry.Orphan).
	Orphan bool `json:"orphan,omitempty"`
}

// SocketState is one cached socket.
type SocketState struct {
	// FD is the socket's descriptor: in a Snapshot the registry's own,
	// valid only while nothing else runs on the registry; to Restore, an
	// index into the descriptors it is given.
	FD    int            `json:"fd"`
	Proto string         `json:"proto"`
	Addr  netip.AddrPort `json:"addr"`
	// Netns is Key.Netns: the namespace's identity, "" for the daemon's;
	// NetnsName the Request.NetnsName it was made with.
	Netns     string `json:"netns,omitempty"`
	NetnsName string `json:"netns_name,omitempty"`
	// Options is the socket's Request.Options; the caller turns it into
	// something it can write out and back (the registry does not know
	// its type).
	Options any `json:"-"`
	// Age is how long ago the socket was created.
	Age time.Duration `json:"age"`
	// Linger is the socket's linger time; Idle, for a socket without
	// references, how long it has lingered.
	Linger time.Duration `json:"linger,omitempty"`
	Idle   time.Duration `json:"idle,omitempty"`
	Refs   []RefState    `json:"refs,omitempty"`
}

// RefState is one reference or pending token.
type RefState struct {
	Token string `json:"token"`
	Share Share  `json:"share"`
	Name  string `json:"name,omitempty"`
	// Holder indexes State.Holders; -1 for a pending token without an
	// owner.
	Holder  int  `json:"holder"`
	Pending bool `json:"pending,omitempty"`
	// TTL is how long a pending token may still be picked up.
	TTL time.Duration `json:"ttl,omitempty"`
}

// Snapshot writes the cache out. known are holders to list first (the
// live connections, in the caller's order), whether or not they hold
// anything. The descriptors in the result are the registry's own: the
// caller must send or duplicate them before the registry runs anything
// else, and must not close them. It fails while descriptors are lent
// (a reply being sent): the caller must pause every session first.
func (g *Registry) Snapshot(known []*Holder) (*State, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.snapshotLocked(known, false)
}

// Record is Snapshot for a record that keeps no descriptor (SocketState.FD
// is -1 throughout): it works while descriptors are lent.
func (g *Registry) Record() (*State, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, err := g.snapshotLocked(nil, true)
	if err == nil {
		for i := range st.Sockets {
			st.Sockets[i].FD = -1
		}
	}
	return st, err
}

func (g *Registry) snapshotLocked(known []*Holder, lentOK bool) (*State, error) {
	if g.closed {
		return nil, ErrClosed
	}
	if len(g.lent) > 0 && !lentOK {
		return nil, fmt.Errorf("%d sockets are being sent to clients: pause every session before taking a snapshot", len(g.lent))
	}
	st := &State{Holders: make([]HolderState, 0, len(known)), Sockets: make([]SocketState, 0, g.sockets.n), ReclaimKey: hex.EncodeToString(g.reclaimKey[:])}
	index := make(map[*Holder]int, len(known))
	holder := func(h *Holder) int {
		if h == nil {
			return -1
		}
		if i, ok := index[h]; ok {
			return i
		}
		index[h] = len(st.Holders)
		_, orphan := g.orphans[h]
		st.Holders = append(st.Holders, HolderState{UID: h.UID, PID: h.PID, App: h.App, Orphan: orphan})
		return index[h]
	}
	for _, h := range known {
		holder(h)
	}
	now := g.now()
	if len(g.orphans) > 0 {
		st.OrphanGrace = max(time.Duration(g.orphansUntil-now), 0)
	}
	for _, s := range g.sockets.all() {
		ss := SocketState{
			FD: int(s.fd), Proto: g.protos[s.proto].proto, Netns: g.protos[s.proto].netns, NetnsName: g.protos[s.proto].name, Addr: s.addr, Options: s.opts.v,
			Age: time.Duration(now - s.created), Linger: s.linger,
		}
		if s.idle != 0 {
			ss.Idle = time.Duration(now - s.idle)
		}
		// References oldest first, so that Restore, which puts each new
		// one first, rebuilds the same order.
		var refs []*Ref
		for r := s.refs; r != nil; r = r.next {
			refs = append(refs, r)
		}
		for i := len(refs) - 1; i >= 0; i-- {
			r := refs[i]
			rs := RefState{Token: r.token.String(), Share: r.share, Name: r.name, Holder: holder(r.who), Pending: r.pending}
			if r.pending {
				rs.TTL = max(time.Duration(g.pending[r].expires-now), 0)
			}
			ss.Refs = append(ss.Refs, rs)
		}
		st.Sockets = append(st.Sockets, ss)
	}
	// A stable order: tests compare snapshots, and a reader of the
	// record finds a socket by its key.
	sort.Slice(st.Sockets, func(i, j int) bool {
		a, b := st.Sockets[i], st.Sockets[j]
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		return a.Addr.Compare(b.Addr) < 0
	})
	return st, nil
}

// SnapshotLent is Snapshot with every socket's descriptor lent, as
// Request.Lend lends one: none is closed (a linger time or a token
// running out meanwhile) until done is called, so that the caller may
// send them later. Call done exactly once, after sending.
func (g *Registry) SnapshotLent(known []*Holder) (st *State, done func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st, err = g.snapshotLocked(known, false); err != nil {
		return nil, nil, err
	}
	var lent []*socket
	for _, s := range g.sockets.all() {
		g.lend(s)
		lent = append(lent, s)
	}
	return st, func() {
		for _, s := range lent {
			g.Return(&Grant{lent: s, FD: int(s.fd)})
		}
	}, nil
}

// ErrBadState is wrapped by Restore's errors: a state that does not
// describe a cache this registry can hold.
var ErrBadState = errors.New("invalid registry state")

// Restore fills an empty registry from st, taking ownership of fds (the
// descriptors SocketState.FD indexes) whether it succeeds or not: on
// failure every one is closed and the registry left empty. It returns the
// holders of st.Holders, in order, for the caller to give to the
// connections they stand for. Limits are not checked: what was held stays
// held. Pending tokens expire after their TTL, lingering sockets close
// after what is left of their linger time.
func (g *Registry) Restore(st *State, fds []int) ([]*Holder, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	closeAll := func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
	bad := func(format string, args ...any) ([]*Holder, error) {
		g.dropAllLocked()
		closeAll()
		return nil, fmt.Errorf("%w: %s", ErrBadState, fmt.Sprintf(format, args...))
	}
	if g.closed {
		closeAll()
		return nil, ErrClosed
	}
	if g.sockets.n > 0 || g.tokens.n > 0 {
		closeAll()
		return nil, fmt.Errorf("%w: the registry is not empty", ErrBadState)
	}
	key, err := hex.DecodeString(st.ReclaimKey)
	if err != nil || len(key) != len(g.reclaimKey) {
		closeAll()
		return nil, fmt.Errorf("%w: the reclaim key is not %d hex-encoded bytes", ErrBadState, len(g.reclaimKey))
	}
	oldKey := g.reclaimKey
	g.setKey([32]byte(key))
	bad = func(format string, args ...any) ([]*Holder, error) {
		g.dropAllLocked()
		g.setKey(oldKey)
		closeAll()
		return nil, fmt.Errorf("%w: %s", ErrBadState, fmt.Sprintf(format, args...))
	}
	holders := make([]*Holder, len(st.Holders))
	for i, h := range st.Holders {
		holders[i] = &Holder{UID: h.UID, PID: h.PID, App: h.App}
	}
	used := make([]bool, len(fds))
	now := g.now()
	for i := range st.Sockets {
		ss := &st.Sockets[i]
		if ss.FD < 0 || ss.FD >= len(fds) || used[ss.FD] || fds[ss.FD] < 0 {
			return bad("socket %s %s: descriptor index %d is out of range, used twice or names no descriptor", ss.Proto, ss.Addr, ss.FD)
		}
		if ss.Proto == "" || !ss.Addr.IsValid() {
			return bad("socket %d has no protocol or address", i)
		}
		if len(ss.Refs) == 0 && (ss.Linger <= 0 || ss.Idle < 0) {
			return bad("socket %s %s has no reference and does not linger", ss.Proto, ss.Addr)
		}
		proto := g.kindIndex(Key{Proto: ss.Proto, Netns: ss.Netns})
		if proto < 0 {
			return bad("more than 256 protocol and namespace pairs")
		}
		if ss.Addr.Port() != 0 && g.find(ss.Addr, uint8(proto)) != nil {
			return bad("socket %s %s is listed twice", ss.Proto, ss.Addr)
		}
		used[ss.FD] = true
		s := &socket{addr: ss.Addr, fd: int32(fds[ss.FD]), proto: uint8(proto), opts: g.internOpts(ss.Options),
			created: now - int64(ss.Age), linger: ss.Linger}
		fds[ss.FD] = -1 // the registry's now
		g.sockets.insert(s)
		if g.protos[proto].n == 0 {
			g.protos[proto].name = ss.NetnsName
		}
		g.protos[proto].n++
		g.live.sockets[g.protos[proto].class].Add(1)
		for _, rs := range ss.Refs {
			t, ok := parseToken(rs.Token)
			if !ok || g.findToken(t) != nil {
				return bad("socket %s %s: token %q is malformed or used twice", ss.Proto, ss.Addr, rs.Token)
			}
			if rs.Holder < -1 || rs.Holder >= len(holders) || (rs.Holder < 0 && !rs.Pending) {
				return bad("socket %s %s: holder index %d is out of range", ss.Proto, ss.Addr, rs.Holder)
			}
			if rs.Share > ShareAny {
				return bad("socket %s %s: share mode %d is unknown", ss.Proto, ss.Addr, rs.Share)
			}
			ref := &Ref{token: t, share: rs.Share, name: rs.Name, sock: s, pending: rs.Pending, next: s.refs}
			if rs.Holder >= 0 {
				ref.who = holders[rs.Holder]
			}
			if s.refs != nil {
				if s.refs.share != ref.share || s.refs.name != ref.name {
					s.mixed = true
				}
				s.refs.prev = ref
			}
			s.refs = ref
			g.countRef(s, 1)
			g.tokens.insert(ref)
			if ref.pending {
				ttl := max(rs.TTL, 0)
				g.count(ref, uidOf(ref.who), true, 1)
				p := pendingRef{expires: now + int64(ttl)}
				p.timer = time.AfterFunc(ttl, func() { g.expire(ref) })
				g.pending[ref] = p
				g.pendingOn[s]++
				g.link(ref)
			} else {
				g.hold(ref, ref.who)
			}
		}
		if s.refs == nil {
			s.idle = now - int64(ss.Idle)
			g.lingerLocked(s, max(ss.Linger-ss.Idle, 0))
		}
	}
	for i, fd := range fds {
		if fd >= 0 && !used[i] {
			unix.Close(fd) // handed but named by no socket
		}
	}
	var orphans []*Holder
	for i, h := range st.Holders {
		if h.Orphan {
			orphans = append(orphans, holders[i])
		}
	}
	if len(orphans) > 0 {
		g.orphanLocked(orphans, st.OrphanGrace)
	}
	return holders, nil
}

// dropAllLocked closes every socket and forgets everything, keeping the
// registry open.
func (g *Registry) dropAllLocked() {
	g.stopOrphans()
	for _, p := range g.pending {
		p.timer.Stop()
	}
	for _, t := range g.lingering {
		t.Stop()
	}
	for _, s := range g.sockets.all() {
		g.closeSocket(s)
	}
	g.reset()
}

// Abandon makes the registry forget every socket without closing them:
// after a live upgrade the next daemon holds them, and this process is
// about to exit. Timers stop; nothing is closed; every call after it
// fails with ErrClosed.
func (g *Registry) Abandon() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopOrphans()
	for _, p := range g.pending {
		p.timer.Stop()
	}
	for _, t := range g.lingering {
		t.Stop()
	}
	g.closed = true
	g.reset()
}

// Orphan marks the holders hs as lost connections whose references wait
// to be reclaimed (see Reclaim): after a restart from a crash record,
// every restored holder is one. They are released after grace, unless
// reclaimed first; ReleaseOrphans releases them at once.
func (g *Registry) Orphan(hs []*Holder, grace time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.orphanLocked(hs, grace)
}

func (g *Registry) orphanLocked(hs []*Holder, grace time.Duration) {
	g.orphansUntil = g.now() + int64(grace)
	if g.orphans == nil {
		g.orphans = make(map[*Holder]struct{})
	}
	for _, h := range hs {
		g.orphans[h] = struct{}{}
	}
	if g.orphanTimer != nil {
		g.orphanTimer.Stop()
	}
	// A timer that fired while the lock was held cannot be stopped: only
	// the current one may release the orphans.
	var t *time.Timer
	t = time.AfterFunc(grace, func() {
		g.mu.Lock()
		if g.orphanTimer != t {
			g.mu.Unlock()
			return
		}
		n := g.releaseOrphansLocked()
		f := g.onOrphans
		g.mu.Unlock()
		if f != nil {
			f(n)
		}
	})
	g.orphanTimer = t
}

// ReleaseOrphans drops every reference still held by an orphaned holder
// and returns how many.
func (g *Registry) ReleaseOrphans() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.releaseOrphansLocked()
}

func (g *Registry) releaseOrphansLocked() int {
	n := 0
	for h := range g.orphans {
		if hl := g.held[h]; hl != nil {
			for ref := hl.head; ref != nil; {
				next := ref.hnext
				g.drop(ref)
				n++
				ref = next
			}
		}
		delete(g.orphans, h)
	}
	return n
}

// Orphans counts the references waiting to be reclaimed.
func (g *Registry) Orphans() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for h := range g.orphans {
		if hl := g.held[h]; hl != nil {
			n += hl.n
		}
	}
	return n
}

// Reclaim moves the reference token stands for from an orphaned holder
// to h, given its reclaim secret (Grant.Reclaim) and the same uid as the
// holder it was lost with. Every reference that cannot be reclaimed so
// (unknown, not orphaned, another uid, a wrong secret) gets the same bare
// ErrNoToken. The secret is compared in constant time.
func (g *Registry) Reclaim(token, secret string, h *Holder) (*Grant, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ref := g.ref(token)
	sec, ok := parseToken(secret)
	if ref == nil || !ok || ref.pending || ref.who == nil {
		return nil, ErrNoToken
	}
	want := g.secret(ref.token)
	_, orphan := g.orphans[ref.who]
	if subtle.ConstantTimeCompare(want[:], sec[:]) != 1 || !orphan || ref.who.UID != h.UID {
		return nil, ErrNoToken
	}
	g.unlink(ref)
	g.count(ref, ref.who.UID, false, -1)
	g.hold(ref, h)
	g.changed()
	s := ref.sock
	return &Grant{Token: token, Key: g.key(s), Shared: s.refs.next != nil, FD: -1, Reclaim: want.String()}, nil
}

// stopOrphans forgets the orphans and their timer.
func (g *Registry) stopOrphans() {
	if g.orphanTimer != nil {
		g.orphanTimer.Stop()
		g.orphanTimer = nil
	}
	g.orphans = nil
}

// OnOrphansReleased sets f to be called, without the registry locked,
// with the number of references released when an orphans' grace period
// ends.
func (g *Registry) OnOrphansReleased(f func(n int)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.onOrphans = f
}

// EachSocket calls f, with the registry locked, for every cached socket
// with its key and the registry's own descriptor (f must not keep it).
func (g *Registry) EachSocket(f func(k Key, fd int)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.sockets.all() {
		f(g.key(s), int(s.fd))
	}
}
