// Package registry is the bound-socket cache: one socket per (protocol,
// address, port), shared between holders when their share modes allow,
// with references counted by token and dropped on release or when the
// holder's connection closes.
//
// All state sits behind one mutex. The registry owns its copy of every
// socket and closes it when the last reference goes (after the socket's
// linger time, if any). It makes no policy decisions: callers check the
// policy before they ask.
package registry

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"net/netip"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Share is a share mode.
type Share uint8

// Share modes, as in BIND 10's socket creator.
const (
	// ShareNone: nobody else may hold the socket.
	ShareNone Share = iota
	// ShareSameName: holders whose share name is the same may share it.
	ShareSameName
	// ShareAny: anyone whose own mode allows may share it.
	ShareAny
)

// ParseShare parses none, same-name or any; empty means none.
func ParseShare(s string) (Share, error) {
	switch s {
	case "", "none":
		return ShareNone, nil
	case "same-name":
		return ShareSameName, nil
	case "any":
		return ShareAny, nil
	}
	return 0, fmt.Errorf("unknown share mode %q: want none, same-name or any", s)
}

func (s Share) String() string {
	switch s {
	case ShareSameName:
		return "same-name"
	case ShareAny:
		return "any"
	}
	return "none"
}

// Compatible is the share rule: two references may share a socket unless
// either is none, or either is same-name and their names differ.
func Compatible(a Share, aName string, b Share, bName string) bool {
	if a == ShareNone || b == ShareNone {
		return false
	}
	if (a == ShareSameName || b == ShareSameName) && aName != bName {
		return false
	}
	return true
}

// Key identifies a cached socket.
type Key struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Addr is the bound address and port.
	Addr netip.AddrPort
	// Netns identifies the network namespace the socket was made in
	// (netns.ID's "dev:ino" form); "" is the daemon's own. The same
	// address and port in two namespaces are two sockets.
	Netns string
}

func (k Key) String() string {
	if k.Netns != "" {
		return k.Proto + " " + k.Addr.String() + " netns " + k.Netns
	}
	return k.Proto + " " + k.Addr.String()
}

// Holder is one client connection that can hold references. The registry
// compares holders by pointer. Change App only through SetApp.
type Holder struct {
	UID uint32
	PID int32
	App string
}

// Ref is one reference to a socket. It is kept small: a cache full of
// held sockets holds one Ref per socket.
type Ref struct {
	token token
	name  string
	// who holds the reference; for a pending token, who asked for it
	// (shown in status; may be nil).
	who  *Holder
	sock *socket
	// next and prev link the socket's references.
	next, prev *Ref
	// hnext and hprev link who's held references, or (for a pending
	// token) the pending tokens who asked for: see holding.
	hnext, hprev *Ref
	share        Share
	// pending is true until the token is picked up; its expiry and
	// timer are in Registry.pending.
	pending bool
}

// socket is one cached socket. The registry keeps the bare descriptor,
// not an *os.File (whose runtime state and cleanup cost more than the
// rest of the entry), and duplicates it into an *os.File only to hand it
// out. Times are nanoseconds since the registry's epoch (see
// Registry.now), so that they keep the monotonic clock in 8 bytes.
type socket struct {
	addr  netip.AddrPort
	fd    int32 // -1 once closed
	proto uint8 // index into Registry.protos: protocol and namespace
	// mixed is set when the references may differ in share mode or
	// name. While it is clear they are all alike, and a request is
	// checked against the first one only: a socket shared by thousands
	// costs the same as by one. It is cleared again when a full check
	// finds them alike.
	mixed bool
	// nref counts refs, up to math.MaxUint16; Registry.extraRefs holds
	// the rest (see countRef). It fits in the padding before opts.
	nref    uint16
	opts    *optsEntry
	refs    *Ref // the first reference; nil while lingering
	created int64
	linger  time.Duration
	idle    int64 // when the last reference went; 0 while held
}

// pendingRef is what only a pending token needs.
type pendingRef struct {
	expires int64 // like socket.created
	timer   *time.Timer
}

// optsEntry is one distinct value of Request.Options, shared by every
// socket created with an equal value, so that each socket does not keep
// its own boxed copy.
type optsEntry struct {
	v    any
	refs int  // sockets using it
	kept bool // whether it is in Registry.opts
}

// token is a reference's token: 128 random bits, shown as 32 lowercase
// hex digits.
type token [16]byte

func (t token) String() string { return hex.EncodeToString(t[:]) }

// hash is t's hash in Registry.tokens: its first 64 bits, which are
// random.
func (t token) hash() uint64 { return binary.LittleEndian.Uint64(t[:8]) }

// parseToken accepts exactly what token.String returns.
func parseToken(s string) (token, bool) {
	var t token
	if len(s) != 2*len(t) {
		return t, false
	}
	for i := range t {
		hi, ok1 := unhex(s[2*i])
		lo, ok2 := unhex(s[2*i+1])
		if !ok1 || !ok2 {
			return t, false
		}
		t[i] = hi<<4 | lo
	}
	return t, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// Errors. They wrap nothing: callers map them to protocol codes.
var (
	// ErrShareConflict: an existing reference's share mode forbids sharing.
	ErrShareConflict = errors.New("share conflict")
	// ErrOptionsDiffer: the socket exists with other options.
	ErrOptionsDiffer = errors.New("socket exists with different options")
	// ErrNoToken: the token is unknown, expired, already picked up, or
	// not the caller's.
	ErrNoToken = errors.New("no such token")
	// ErrClosed: the registry is closed.
	ErrClosed = errors.New("registry closed")
	// ErrLimit: a limit on references or pending tokens was reached.
	ErrLimit = errors.New("limit reached")
)

// Limits bound the references the cache holds, in total and per uid, so
// that one user cannot exhaust the daemon's descriptors. Zero means no
// limit.
type Limits struct {
	// Refs and RefsPerUID bound held references.
	Refs, RefsPerUID int
	// Pending and PendingPerUID bound tokens not yet picked up.
	Pending, PendingPerUID int
}

// counts tracks references by state and uid.
type counts struct {
	held, pending           int
	heldByUID, pendingByUID map[uint32]int
}

func (c *counts) add(uid uint32, pending bool, n int) {
	if pending {
		c.pending += n
		c.pendingByUID[uid] += n
		if c.pendingByUID[uid] == 0 {
			delete(c.pendingByUID, uid)
		}
		return
	}
	c.held += n
	c.heldByUID[uid] += n
	if c.heldByUID[uid] == 0 {
		delete(c.heldByUID, uid)
	}
}

// check reports ErrLimit when one more reference of the kind would pass l.
// Each refusal is counted in hits (see LimitHits).
func (c *counts) check(l Limits, uid uint32, pending bool, hits *[4]atomic.Uint64) error {
	if pending {
		if l.Pending > 0 && c.pending >= l.Pending {
			hits[hitPending].Add(1)
			return fmt.Errorf("%w: %d pending tokens in all", ErrLimit, c.pending)
		}
		if l.PendingPerUID > 0 && c.pendingByUID[uid] >= l.PendingPerUID {
			hits[hitPendingPerUID].Add(1)
			return fmt.Errorf("%w: uid %d has %d pending tokens", ErrLimit, uid, c.pendingByUID[uid])
		}
		return nil
	}
	if l.Refs > 0 && c.held >= l.Refs {
		hits[hitRefs].Add(1)
		return fmt.Errorf("%w: %d socket references held in all", ErrLimit, c.held)
	}
	if l.RefsPerUID > 0 && c.heldByUID[uid] >= l.RefsPerUID {
		hits[hitRefsPerUID].Add(1)
		return fmt.Errorf("%w: uid %d holds %d socket references", ErrLimit, uid, c.heldByUID[uid])
	}
	return nil
}

// Registry is the socket cache. Create it with New.
type Registry struct {
	// TokenTTL is how long a pending token may be picked up.
	ttl time.Duration
	// epoch is what socket and token times count from.
	epoch time.Time

	mu     sync.Mutex
	closed bool
	limits Limits
	n      counts
	// live mirrors n and the sockets' count by protocol, for Gauges.
	live live
	// protos are the (protocol, namespace) pairs of the cached sockets,
	// indexed by socket.proto; a pair no socket uses any more is reused.
	protos []kind
	// sockets and tokens index the cached sockets by key and the
	// references by token.
	seed    maphash.Seed
	sockets table[*socket]
	tokens  table[*Ref]
	// held and uids index what each holder has (see holding).
	held map[*Holder]*holding
	uids map[uint32]*holding
	// extraRefs counts the references of a socket beyond what
	// socket.nref holds.
	extraRefs map[*socket]int
	// pending and lingering hold what only some references and sockets
	// need: a pending token's expiry, a lingering socket's timer.
	pending map[*Ref]pendingRef
	// pendingOn counts each socket's pending tokens, so that Acquire
	// looks for expired ones only when the socket has some.
	pendingOn map[*socket]int
	lingering map[*socket]*time.Timer
	opts      map[any]*optsEntry
	// lent counts the descriptors of each socket lent and not yet
	// returned (Grant.FD); it outlives Close.
	lent map[*socket]*lending
	// visits counts the entries Status looked at (table slots and
	// references), for tests of what a listing costs; statusPause, if
	// set, runs between the chunks of an admin's listing, unlocked.
	visits      uint64
	statusPause func()
	// reclaimKey derives every reference's reclaim secret (see secret),
	// with mac, an HMAC keyed with it.
	reclaimKey [32]byte
	mac        hash.Hash
	// orphans are holders restored from a crash record whose references
	// wait to be reclaimed until orphanTimer releases them (see Orphan).
	orphans      map[*Holder]struct{}
	orphanTimer  *time.Timer
	orphansUntil int64 // like socket.created
	onOrphans    func(n int)
	// store, if set, is told of every socket cached and closed, and of
	// every change (see Store).
	store Store
}

// Store is told, with the registry locked (so it must not block or call
// back), of every socket the registry caches and closes, and of every
// change to what it holds: systemd's fd store keeps the sockets of a
// daemon that crashes, and a record of who held them.
type Store interface {
	// Add: a socket for key is cached; fd is the registry's own
	// descriptor (duplicate it to keep it).
	Add(key Key, fd int)
	// Remove: the socket for key is closed.
	Remove(key Key)
	// Changed: references or sockets changed.
	Changed()
}

// SetStore sets (or, with nil, unsets) the registry's Store. With nil,
// sockets closed from now on (by Close, say) are not reported: a daemon
// stopping with the fd store on leaves them in it.
func (g *Registry) SetStore(s Store) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.store = s
}

// changed tells the store the registry changed.
func (g *Registry) changed() {
	if g.store != nil {
		g.store.Changed()
	}
}

// lending is a socket whose descriptor is lent out n times. A socket
// closed meanwhile is only marked closing, and its descriptor closed when
// the last is returned: until then the number cannot name another file.
type lending struct {
	n       int
	fd      int32
	closing bool
}

// New returns an empty registry whose pending tokens live ttl.
func New(ttl time.Duration) *Registry {
	g := &Registry{ttl: ttl, epoch: time.Now(), seed: maphash.MakeSeed(), lent: make(map[*socket]*lending)}
	var key [32]byte
	rand.Read(key[:])
	g.setKey(key)
	g.reset()
	return g
}

// reset empties every index.
func (g *Registry) reset() {
	g.sockets = newTable(func(s *socket) uint64 { return g.keyHash(s.addr, s.proto) })
	g.tokens = newTable(func(r *Ref) uint64 { return r.token.hash() })
	g.held = make(map[*Holder]*holding)
	g.uids = make(map[uint32]*holding)
	g.extraRefs = make(map[*socket]int)
	g.pending = make(map[*Ref]pendingRef)
	g.pendingOn = make(map[*socket]int)
	g.lingering = make(map[*socket]*time.Timer)
	g.opts = make(map[any]*optsEntry)
	g.n = counts{heldByUID: map[uint32]int{}, pendingByUID: map[uint32]int{}}
	g.live.zero()
}

// now is the time since g.epoch, at least 1 so that 0 can mean never.
func (g *Registry) now() int64 { return int64(time.Since(g.epoch)) + 1 }

// time is the time.Time of a g.now value.
func (g *Registry) time(t int64) time.Time { return g.epoch.Add(time.Duration(t - 1)) }

// SetLimits sets the limits for references taken from now on.
func (g *Registry) SetLimits(l Limits) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.limits = l
}

// Request is an acquisition.
type Request struct {
	// Key is the socket wanted. A port of 0 always makes a new socket.
	Key Key
	// Share and Name are the new reference's share mode and name.
	Share Share
	Name  string
	// Options are compared with an existing socket's; they must be
	// comparable values.
	Options any
	// Linger applies to the socket from now on.
	Linger time.Duration
	// Holder holds the new reference; with Pending it is only the owner
	// shown in status, and the reference is a pending token instead.
	Holder  *Holder
	Pending bool
	// Lend asks for the socket's own descriptor in Grant.FD instead of a
	// duplicate in Grant.File (see Grant.FD); ignored with Pending.
	Lend bool
	// NetnsName is the name the policy knows the key's namespace by
	// ("caller", a name; "" for the daemon's own), kept for pickups and
	// status.
	NetnsName string
	// Create makes the socket when none is cached. It is called with the
	// registry locked, so it must not block. The registry takes the file:
	// it keeps a duplicate of its descriptor and closes the file at once.
	Create func() (*os.File, netip.AddrPort, error)
}

// Grant is the result of an acquisition or pickup.
type Grant struct {
	// Token is the new reference's token.
	Token string
	// Key is the socket's real key (the real port if 0 was asked).
	Key Key
	// File is a duplicate of the socket for sending, owned by the caller
	// (nil for a pending token, or when the descriptor was lent).
	File *os.File
	// FD, when the request asked to Lend, is the cached socket's own
	// descriptor, or -1. It stays open, even if the socket is released
	// and closed meanwhile, until the caller gives it back with Return,
	// which it must do exactly once, after sending it; it must not close
	// it. Lending spares a dup, an fcntl and a close per hand-out.
	FD   int
	lent *socket
	// Shared is true when the socket was already cached.
	Shared bool
	// Expires is the pending token's expiry.
	Expires time.Time
	// Reclaim is a held reference's reclaim secret (32 hex digits),
	// for its holder only; empty for a pending token.
	Reclaim string
}

// conflict returns a reference of s that a request for share mode sh and
// name may not share with, or nil. While s's references are all alike
// (s.mixed clear) it looks at the first only.
func conflict(s *socket, sh Share, name string) *Ref {
	if !s.mixed {
		if ref := s.refs; ref != nil && !Compatible(ref.share, ref.name, sh, name) {
			return ref
		}
		return nil
	}
	alike := true
	for ref := s.refs; ref != nil; ref = ref.next {
		if !Compatible(ref.share, ref.name, sh, name) {
			return ref
		}
		alike = alike && ref.share == s.refs.share && ref.name == s.refs.name
	}
	s.mixed = !alike
	return nil
}

// Acquire gets a reference to the socket for r.Key, creating the socket if
// none is cached. A conflict changes nothing.
func (g *Registry) Acquire(r *Request) (*Grant, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	s := g.lookup(r.Key)
	if s != nil && g.pendingOn[s] > 0 {
		// A token past its expiry whose timer has not run yet holds
		// nothing: drop it now, so that it cannot block sharing. The
		// pending tokens are looked through, not the socket's references,
		// which may be many more; and only when the socket has some.
		now := g.now()
		for ref, p := range g.pending {
			if ref.sock == s && now > p.expires {
				g.drop(ref)
			}
		}
		s = g.lookup(r.Key) // dropping the last reference may have closed it
	}
	if err := g.n.check(g.limits, r.uid(), r.Pending, &g.live.hits); err != nil {
		return nil, err
	}
	shared := s != nil && r.Key.Addr.Port() != 0
	if shared {
		if ref := conflict(s, r.Share, r.Name); ref != nil {
			return nil, fmt.Errorf("%w: %s is held with share mode %s%s; this request asks for %s%s",
				ErrShareConflict, r.Key, ref.share, nameSuffix(ref.share, ref.name), r.Share, nameSuffix(r.Share, r.Name))
		}
		if s.opts.v != r.Options {
			return nil, fmt.Errorf("%w: %s", ErrOptionsDiffer, r.Key)
		}
	} else {
		var err error
		if s, err = g.create(r); err != nil {
			return nil, err
		}
	}
	var dup *os.File
	fd := -1
	if r.Lend && !r.Pending {
		fd = g.lend(s)
	} else if !r.Pending {
		var err error
		if dup, err = g.dupFile(s); err != nil {
			if s.refs == nil && !shared {
				g.closeSocket(s)
			}
			return nil, err
		}
	}
	s.linger = r.Linger
	if s.idle != 0 {
		if t := g.lingering[s]; t != nil {
			t.Stop()
			delete(g.lingering, s)
		}
		s.idle = 0
	}
	ref := &Ref{token: g.newToken(), share: r.Share, name: r.Name, who: r.Holder, sock: s, pending: r.Pending, next: s.refs}
	if s.refs != nil {
		if s.refs.share != r.Share || s.refs.name != r.Name {
			s.mixed = true
		}
		s.refs.prev = ref
	}
	s.refs = ref
	g.countRef(s, 1)
	g.tokens.insert(ref)
	grant := &Grant{Token: ref.token.String(), Key: g.key(s), File: dup, Shared: shared, FD: fd}
	if !r.Pending {
		grant.Reclaim = g.secret(ref.token).String()
	}
	if fd >= 0 {
		grant.lent = s
	}
	if r.Pending {
		g.count(ref, r.uid(), true, 1)
		p := pendingRef{expires: g.now() + int64(g.ttl)}
		grant.Expires = g.time(p.expires)
		p.timer = time.AfterFunc(g.ttl, func() { g.expire(ref) })
		g.pending[ref] = p
		g.pendingOn[s]++
		g.link(ref)
	} else {
		g.hold(ref, r.Holder)
	}
	g.changed()
	return grant, nil
}

// kind is a protocol and namespace pair, and how many sockets have it.
// name is the namespace's Request.NetnsName when the pair was added, and
// gone is set by DropNetns: its sockets close with their last reference.
type kind struct {
	proto, netns, name string
	n                  int
	gone               bool
	class              uint8 // protoClass(proto)
}

// lookup returns the cached socket for k, or nil.
func (g *Registry) lookup(k Key) *socket {
	for i := range g.protos {
		if p := &g.protos[i]; p.n > 0 && p.proto == k.Proto && p.netns == k.Netns {
			return g.find(k.Addr, uint8(i))
		}
	}
	return nil
}

// kindIndex returns the index of k's protocol and namespace in g.protos,
// adding them (into a slot no socket uses, if there is one); -1 when
// there is no room. The caller counts the socket it makes with addKind.
func (g *Registry) kindIndex(k Key) int {
	free := -1
	for i := range g.protos {
		p := &g.protos[i]
		if p.proto == k.Proto && p.netns == k.Netns {
			p.gone = false // named again
			return i
		}
		if p.n == 0 && free < 0 {
			free = i
		}
	}
	if free >= 0 {
		g.protos[free] = kind{proto: k.Proto, netns: k.Netns, class: protoClass(k.Proto)}
		return free
	}
	if len(g.protos) > 255 {
		return -1
	}
	g.protos = append(g.protos, kind{proto: k.Proto, netns: k.Netns, class: protoClass(k.Proto)})
	return len(g.protos) - 1
}

func (g *Registry) find(addr netip.AddrPort, proto uint8) *socket {
	return g.sockets.find(g.keyHash(addr, proto), func(s *socket) bool { return s.addr == addr && s.proto == proto })
}

// keyHash hashes a socket's key.
func (g *Registry) keyHash(addr netip.AddrPort, proto uint8) uint64 {
	var b [19]byte
	a := addr.Addr().As16()
	copy(b[:], a[:])
	b[16], b[17], b[18] = byte(addr.Port()>>8), byte(addr.Port()), proto
	h := maphash.Bytes(g.seed, b[:])
	if z := addr.Addr().Zone(); z != "" {
		h ^= maphash.String(g.seed, z)
	}
	return h
}

// key is s's Key.
func (g *Registry) key(s *socket) Key {
	k := &g.protos[s.proto]
	return Key{Proto: k.proto, Addr: s.addr, Netns: k.netns}
}

// create makes and caches the socket for r, keeping only its descriptor.
func (g *Registry) create(r *Request) (*socket, error) {
	proto := g.kindIndex(r.Key)
	if proto < 0 {
		return nil, fmt.Errorf("caching a %s socket: the registry tells at most 256 protocol and namespace pairs apart at once", r.Key)
	}
	if g.protos[proto].n == 0 {
		g.protos[proto].name = r.NetnsName
	}
	f, local, err := r.Create()
	if err != nil {
		return nil, err
	}
	fd, err := takeDescriptor(f)
	if err != nil {
		return nil, err
	}
	if g.find(local, uint8(proto)) != nil {
		// The kernel let a port-0 bind land on a cached port (only
		// possible with reuse options): keep the cache consistent
		// by refusing it.
		unix.Close(fd)
		return nil, fmt.Errorf("%w: the system picked port %d, already cached", ErrShareConflict, local.Port())
	}
	s := &socket{addr: local, fd: int32(fd), proto: uint8(proto), opts: g.internOpts(r.Options), created: g.now()}
	g.sockets.insert(s)
	g.protos[proto].n++
	g.live.sockets[g.protos[proto].class].Add(1)
	if g.store != nil {
		g.store.Add(g.key(s), fd)
	}
	return s, nil
}

// takeDescriptor is takeFD; the scale benchmark replaces it
// (export_test.go) to hold a million entries without a descriptor each,
// more than RLIMIT_NOFILE allows where it cannot be raised.
var takeDescriptor = takeFD

// takeFD returns a close-on-exec duplicate of f's descriptor and closes f.
// (f.Fd would leave f's cleanup to close the descriptor later.)
func takeFD(f *os.File) (int, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	return fd, nil
}

// internOpts returns the shared entry for v, counting one more socket.
// Values that cannot be map keys, or are not equal to themselves (a NaN
// inside), get an entry of their own.
func (g *Registry) internOpts(v any) *optsEntry {
	keep := v == nil || (reflect.ValueOf(v).Comparable() && v == v)
	if keep {
		if e := g.opts[v]; e != nil {
			e.refs++
			return e
		}
	}
	e := &optsEntry{v: v, refs: 1, kept: keep}
	if keep {
		g.opts[v] = e
	}
	return e
}

func (g *Registry) releaseOpts(e *optsEntry) {
	e.refs--
	if e.refs == 0 && e.kept && g.opts[e.v] == e {
		delete(g.opts, e.v)
	}
}

// newToken returns 128 random bits that no other token has.
func (g *Registry) newToken() token {
	for {
		var t token
		rand.Read(t[:]) // crypto/rand.Read never fails on Linux
		if g.findToken(t) == nil {
			return t
		}
	}
}

// secret is the reclaim secret of the reference t: the first 128 bits
// of HMAC-SHA256 of t under the registry's reclaim key. Deriving it
// rather than drawing it keeps a Ref within its size class and costs no
// read of random bits; the key travels with the State, so that a secret
// handed out before an upgrade or a crash still works after it.
// Called with g.mu held: the keyed HMAC is made once per key (setKey) and
// reset here, so that a bind pays one HMAC and no allocation for it.
func (g *Registry) secret(t token) token {
	g.mac.Reset()
	g.mac.Write(t[:])
	var sum [sha256.Size]byte
	var sec token
	copy(sec[:], g.mac.Sum(sum[:0]))
	return sec
}

// setKey makes key the reclaim key.
func (g *Registry) setKey(key [32]byte) {
	g.reclaimKey = key
	g.mac = hmac.New(sha256.New, key[:])
}

func (g *Registry) findToken(t token) *Ref {
	return g.tokens.find(t.hash(), func(r *Ref) bool { return r.token == t })
}

// ref returns the reference s stands for, or nil.
func (g *Registry) ref(s string) *Ref {
	t, ok := parseToken(s)
	if !ok {
		return nil
	}
	return g.findToken(t)
}

func (r *Request) uid() uint32 {
	if r.Holder == nil {
		return 0
	}
	return r.Holder.UID
}

func uidOf(h *Holder) uint32 {
	if h == nil {
		return 0
	}
	return h.UID
}

func nameSuffix(s Share, name string) string {
	if s == ShareSameName && name != "" {
		return fmt.Sprintf(" (name %q)", name)
	}
	return ""
}

// dupFile duplicates s's fd for sending; the caller owns the result.
// unpend counts one pending token of s less.
func (g *Registry) unpend(s *socket) {
	if g.pendingOn[s]--; g.pendingOn[s] <= 0 {
		delete(g.pendingOn, s)
	}
}

// lend lends s's descriptor once more.
func (g *Registry) lend(s *socket) int {
	l := g.lent[s]
	if l == nil {
		l = &lending{fd: s.fd}
		g.lent[s] = l
	}
	l.n++
	return int(s.fd)
}

// Return gives back the descriptor lent in gr.FD; gr.FD is -1 afterwards.
// A grant with nothing lent is ignored.
func (g *Registry) Return(gr *Grant) {
	if gr == nil || gr.lent == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := gr.lent
	gr.lent, gr.FD = nil, -1
	l := g.lent[s]
	if l == nil {
		return
	}
	if l.n--; l.n > 0 {
		return
	}
	delete(g.lent, s)
	if l.closing {
		unix.Close(int(l.fd))
	}
}

func (g *Registry) dupFile(s *socket) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	return os.NewFile(uintptr(nfd), g.fileName(s)), nil
}

// fileName names s as binder.Create does: "tcp:127.0.0.1:53".
func (g *Registry) fileName(s *socket) string {
	var buf [64]byte
	b := append(buf[:0], g.protos[s.proto].proto...)
	b = append(b, ':')
	return string(s.addr.AppendTo(b))
}

// Pickup turns a pending token into a reference held by h. allowed is asked
// (with the registry locked, so it must be a pure check) whether h's caller
// may obtain the socket. A token that is unknown, expired, released, held,
// or not allowed gets ErrNoToken itself, unwrapped, so that every such
// answer is the same.
func (g *Registry) Pickup(token string, h *Holder, allowed func(Key) bool) (*Grant, error) {
	return g.pickup(token, h, func(k Key, _ string) bool { return allowed(k) }, false)
}

// PickupLent is Pickup with the socket's descriptor lent in Grant.FD, as
// Request.Lend does for Acquire.
func (g *Registry) PickupLent(token string, h *Holder, allowed func(Key) bool) (*Grant, error) {
	return g.pickup(token, h, func(k Key, _ string) bool { return allowed(k) }, true)
}

// PickupLentIn is PickupLent whose allowed also gets the socket's
// Request.NetnsName, for a policy that decides by namespace name.
func (g *Registry) PickupLentIn(token string, h *Holder, allowed func(k Key, netnsName string) bool) (*Grant, error) {
	return g.pickup(token, h, allowed, true)
}

func (g *Registry) pickup(token string, h *Holder, allowed func(Key, string) bool, lend bool) (*Grant, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ref := g.ref(token)
	if ref == nil || !ref.pending {
		return nil, ErrNoToken
	}
	p := g.pending[ref]
	s := ref.sock
	// A token this caller cannot use, for whatever reason, gets the same
	// bare ErrNoToken, before any other check: a prober learns nothing,
	// not even that the token exists or what it is for.
	if g.now() > p.expires || !allowed(g.key(s), g.protos[s.proto].name) {
		return nil, ErrNoToken
	}
	if err := g.n.check(g.limits, h.UID, false, &g.live.hits); err != nil {
		return nil, err
	}
	var dup *os.File
	fd := -1
	if lend {
		fd = g.lend(s)
	} else {
		var err error
		if dup, err = g.dupFile(s); err != nil {
			return nil, err
		}
	}
	p.timer.Stop()
	delete(g.pending, ref)
	g.unpend(s)
	g.count(ref, uidOf(ref.who), true, -1)
	g.unlink(ref)
	g.hold(ref, h)
	grant := &Grant{Token: token, Key: g.key(s), File: dup, Shared: s.refs.next != nil, FD: fd, Reclaim: g.secret(ref.token).String()}
	g.changed()
	if fd >= 0 {
		grant.lent = s
	}
	return grant, nil
}

// Release drops the reference token stands for. Only its holder may, or
// anyone when admin is true; a pending token may be released by the
// caller that asked for it.
func (g *Registry) Release(token string, h *Holder, admin bool) (Key, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ref := g.ref(token)
	if ref == nil || !(admin || ref.who == h) {
		return Key{}, ErrNoToken
	}
	key := g.key(ref.sock)
	g.drop(ref)
	return key, nil
}

// ReleaseHolder drops every reference h holds (its connection closed) and
// returns how many.
func (g *Registry) ReleaseHolder(h *Holder) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	hl := g.held[h]
	if hl == nil {
		return 0
	}
	n := hl.n
	for ref := hl.head; ref != nil; {
		next := ref.hnext // drop unlinks ref
		g.drop(ref)
		ref = next
	}
	return n
}

// expire drops a pending token whose time ran out.
func (g *Registry) expire(ref *Ref) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.pending[ref]; ok {
		g.drop(ref)
	}
}

// drop removes a reference; the last one closes the socket, or starts its
// linger time.
func (g *Registry) drop(ref *Ref) {
	s := ref.sock
	if ref.prev != nil {
		ref.prev.next = ref.next
	} else if s.refs == ref {
		s.refs = ref.next
	}
	if ref.next != nil {
		ref.next.prev = ref.prev
	}
	ref.next, ref.prev = nil, nil
	g.changed()
	g.countRef(s, -1)
	g.tokens.remove(ref)
	g.unlink(ref)
	if ref.pending {
		if p, ok := g.pending[ref]; ok {
			p.timer.Stop()
			delete(g.pending, ref)
			g.unpend(s)
		}
		g.count(ref, uidOf(ref.who), true, -1)
	} else {
		g.count(ref, ref.who.UID, false, -1)
	}
	if s.refs != nil {
		return
	}
	if s.linger <= 0 || g.closed || g.protos[s.proto].gone {
		g.closeSocket(s)
		return
	}
	s.idle = g.now()
	g.lingerLocked(s, s.linger)
}

// lingerLocked closes s, which has no references, after d unless a new
// reference comes first.
func (g *Registry) lingerLocked(s *socket, d time.Duration) {
	// A timer that fired while Acquire held the lock cannot be stopped:
	// only the socket's current timer may close it.
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.lingering[s] == t && s.refs == nil && s.idle != 0 {
			g.closeSocket(s)
		}
	})
	g.lingering[s] = t
}

// closeSocket uncaches s and closes its fd, once.
func (g *Registry) closeSocket(s *socket) {
	if s.fd < 0 {
		return
	}
	if t := g.lingering[s]; t != nil {
		t.Stop()
		delete(g.lingering, s)
	}
	g.sockets.remove(s)
	if g.store != nil {
		g.store.Remove(g.key(s))
	}
	g.protos[s.proto].n--
	g.live.sockets[g.protos[s.proto].class].Add(-1)
	g.releaseOpts(s.opts)
	if l := g.lent[s]; l != nil {
		l.closing = true // closed by the last Return
	} else {
		unix.Close(int(s.fd))
	}
	s.fd = -1
}

// DropNetns forgets the namespace netns (a Key.Netns), whose name was
// removed: its sockets without references close now, and those still
// held close when their last reference goes, without lingering. Holders
// keep the sockets they have. It returns how many sockets closed.
func (g *Registry) DropNetns(netns string) int {
	if netns == "" {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	closed := 0
	for i := range g.protos {
		p := &g.protos[i]
		if p.netns != netns || p.n == 0 {
			continue
		}
		p.gone = true
		for _, s := range g.sockets.all() {
			if s.proto == uint8(i) && s.refs == nil {
				g.closeSocket(s)
				closed++
			}
		}
	}
	if closed > 0 {
		g.changed()
	}
	return closed
}

// Close drops every reference and closes every socket.
func (g *Registry) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.stopOrphans()
	for _, p := range g.pending {
		p.timer.Stop()
	}
	for _, s := range g.sockets.all() {
		g.closeSocket(s)
	}
	g.reset()
}

// Holds reports how many references h holds.
func (g *Registry) Holds(h *Holder) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if hl := g.held[h]; hl != nil {
		return hl.n
	}
	return 0
}

// SetApp sets h's application name, shown in status.
func (g *Registry) SetApp(h *Holder, app string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h.App = app
	if g.held[h] != nil {
		g.changed()
	}
}

// Counts reports the number of cached sockets and of references (pending
// tokens included).
func (g *Registry) Counts() (sockets, refs int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sockets.n, g.tokens.n
}

// Summary reports the number of cached sockets, of held references and
// of pending tokens.
func (g *Registry) Summary() (sockets, held, pending int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sockets.n, g.n.held, g.n.pending
}
