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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"sync"
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
}

func (k Key) String() string { return k.Proto + " " + k.Addr.String() }

// Holder is one client connection that can hold references. The registry
// compares holders by pointer. Change App only through SetApp.
type Holder struct {
	UID uint32
	PID int32
	App string
}

// Ref is one reference to a socket.
type Ref struct {
	token   string
	share   Share
	name    string
	holder  *Holder // nil while pending
	owner   *Holder // who asked for it: for status
	sock    *socket
	expires time.Time // pending only
	timer   *time.Timer
}

type socket struct {
	key       Key
	file      *os.File
	opts      any // compared with == to decide whether options match
	refs      map[string]*Ref
	created   time.Time
	linger    time.Duration
	idleSince time.Time   // when the last reference went; zero while held
	timer     *time.Timer // linger timer
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
func (c *counts) check(l Limits, uid uint32, pending bool) error {
	if pending {
		if l.Pending > 0 && c.pending >= l.Pending {
			return fmt.Errorf("%w: %d pending tokens in all", ErrLimit, c.pending)
		}
		if l.PendingPerUID > 0 && c.pendingByUID[uid] >= l.PendingPerUID {
			return fmt.Errorf("%w: uid %d has %d pending tokens", ErrLimit, uid, c.pendingByUID[uid])
		}
		return nil
	}
	if l.Refs > 0 && c.held >= l.Refs {
		return fmt.Errorf("%w: %d socket references held in all", ErrLimit, c.held)
	}
	if l.RefsPerUID > 0 && c.heldByUID[uid] >= l.RefsPerUID {
		return fmt.Errorf("%w: uid %d holds %d socket references", ErrLimit, uid, c.heldByUID[uid])
	}
	return nil
}

// Registry is the socket cache. Create it with New.
type Registry struct {
	// TokenTTL is how long a pending token may be picked up.
	ttl time.Duration

	mu      sync.Mutex
	closed  bool
	limits  Limits
	n       counts
	sockets map[Key]*socket
	tokens  map[string]*Ref
	held    map[*Holder]map[string]*Ref
}

// New returns an empty registry whose pending tokens live ttl.
func New(ttl time.Duration) *Registry {
	return &Registry{
		ttl:     ttl,
		sockets: make(map[Key]*socket),
		tokens:  make(map[string]*Ref),
		held:    make(map[*Holder]map[string]*Ref),
		n:       counts{heldByUID: map[uint32]int{}, pendingByUID: map[uint32]int{}},
	}
}

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
	// Create makes the socket when none is cached. It is called with the
	// registry locked, so it must not block.
	Create func() (*os.File, netip.AddrPort, error)
}

// Grant is the result of an acquisition or pickup.
type Grant struct {
	// Token is the new reference's token.
	Token string
	// Key is the socket's real key (the real port if 0 was asked).
	Key Key
	// File is a duplicate of the socket for sending, owned by the caller
	// (nil for a pending token).
	File *os.File
	// Shared is true when the socket was already cached.
	Shared bool
	// Expires is the pending token's expiry.
	Expires time.Time
}

// Acquire gets a reference to the socket for r.Key, creating the socket if
// none is cached. A conflict changes nothing.
func (g *Registry) Acquire(r *Request) (*Grant, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, ErrClosed
	}
	s := g.sockets[r.Key]
	if s != nil {
		// A token past its expiry whose timer has not run yet holds
		// nothing: drop it now, so that it cannot block sharing.
		now := time.Now()
		for _, ref := range s.refs {
			if ref.holder == nil && now.After(ref.expires) {
				g.drop(ref)
			}
		}
		s = g.sockets[r.Key] // dropping the last reference may have closed it
	}
	if err := g.n.check(g.limits, r.uid(), r.Pending); err != nil {
		return nil, err
	}
	shared := s != nil && r.Key.Addr.Port() != 0
	if shared {
		for _, ref := range s.refs {
			if !Compatible(ref.share, ref.name, r.Share, r.Name) {
				return nil, fmt.Errorf("%w: %s is held with share mode %s%s; this request asks for %s%s",
					ErrShareConflict, r.Key, ref.share, nameSuffix(ref.share, ref.name), r.Share, nameSuffix(r.Share, r.Name))
			}
		}
		if s.opts != r.Options {
			return nil, fmt.Errorf("%w: %s", ErrOptionsDiffer, r.Key)
		}
	} else {
		f, local, err := r.Create()
		if err != nil {
			return nil, err
		}
		s = &socket{key: Key{r.Key.Proto, local}, file: f, opts: r.Options, refs: make(map[string]*Ref), created: time.Now()}
		if old := g.sockets[s.key]; old != nil {
			// The kernel let a port-0 bind land on a cached port (only
			// possible with reuse options): keep the cache consistent
			// by refusing it.
			f.Close()
			return nil, fmt.Errorf("%w: the system picked port %d, already cached", ErrShareConflict, local.Port())
		}
		g.sockets[s.key] = s
	}
	dup, err := g.dupFile(s, r.Pending)
	if err != nil {
		if len(s.refs) == 0 && !shared {
			g.closeSocket(s)
		}
		return nil, err
	}
	s.linger = r.Linger
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.idleSince = time.Time{}
	ref := &Ref{token: newToken(), share: r.Share, name: r.Name, owner: r.Holder, sock: s}
	for g.tokens[ref.token] != nil {
		ref.token = newToken()
	}
	s.refs[ref.token] = ref
	g.tokens[ref.token] = ref
	grant := &Grant{Token: ref.token, Key: s.key, File: dup, Shared: shared}
	if r.Pending {
		g.n.add(r.uid(), true, 1)
		ref.expires = time.Now().Add(g.ttl)
		grant.Expires = ref.expires
		tok := ref.token
		ref.timer = time.AfterFunc(g.ttl, func() { g.expire(tok) })
	} else {
		g.hold(ref, r.Holder)
	}
	return grant, nil
}

func (r *Request) uid() uint32 {
	if r.Holder == nil {
		return 0
	}
	return r.Holder.UID
}

func nameSuffix(s Share, name string) string {
	if s == ShareSameName && name != "" {
		return fmt.Sprintf(" (name %q)", name)
	}
	return ""
}

// dupFile duplicates s's fd for sending, unless pending.
func (g *Registry) dupFile(s *socket, pending bool) (*os.File, error) {
	if pending {
		return nil, nil
	}
	rc, err := s.file.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	return os.NewFile(uintptr(nfd), s.file.Name()), nil
}

func (g *Registry) hold(ref *Ref, h *Holder) {
	g.n.add(h.UID, false, 1)
	ref.holder = h
	ref.owner = h
	m := g.held[h]
	if m == nil {
		m = make(map[string]*Ref)
		g.held[h] = m
	}
	m[ref.token] = ref
}

// Pickup turns a pending token into a reference held by h. allowed is asked
// (with the registry locked, so it must be a pure check) whether h's caller
// may obtain the socket.
func (g *Registry) Pickup(token string, h *Holder, allowed func(Key) bool) (*Grant, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ref := g.tokens[token]
	if ref == nil || ref.holder != nil || time.Now().After(ref.expires) {
		return nil, ErrNoToken
	}
	if err := g.n.check(g.limits, h.UID, false); err != nil {
		return nil, err
	}
	if !allowed(ref.sock.key) {
		return nil, fmt.Errorf("%w: policy does not let this caller obtain %s", ErrNoToken, ref.sock.key)
	}
	dup, err := g.dupFile(ref.sock, false)
	if err != nil {
		return nil, err
	}
	ref.timer.Stop()
	ref.expires = time.Time{}
	uid := uint32(0)
	if ref.owner != nil {
		uid = ref.owner.UID
	}
	g.n.add(uid, true, -1)
	g.hold(ref, h)
	return &Grant{Token: token, Key: ref.sock.key, File: dup, Shared: len(ref.sock.refs) > 1}, nil
}

// Release drops the reference token stands for. Only its holder may, or
// anyone when admin is true; a pending token may be released by the
// caller that asked for it.
func (g *Registry) Release(token string, h *Holder, admin bool) (Key, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ref := g.tokens[token]
	if ref == nil || !(admin || ref.holder == h || (ref.holder == nil && ref.owner == h)) {
		return Key{}, ErrNoToken
	}
	key := ref.sock.key
	g.drop(ref)
	return key, nil
}

// ReleaseHolder drops every reference h holds (its connection closed) and
// returns how many.
func (g *Registry) ReleaseHolder(h *Holder) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	refs := g.held[h]
	n := len(refs) // drop deletes from refs as it goes
	for _, ref := range refs {
		g.drop(ref)
	}
	delete(g.held, h)
	return n
}

// expire drops a pending token whose time ran out.
func (g *Registry) expire(token string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ref := g.tokens[token]; ref != nil && ref.holder == nil {
		g.drop(ref)
	}
}

// drop removes a reference; the last one closes the socket, or starts its
// linger time.
func (g *Registry) drop(ref *Ref) {
	s := ref.sock
	delete(s.refs, ref.token)
	delete(g.tokens, ref.token)
	if ref.timer != nil {
		ref.timer.Stop()
	}
	if ref.holder != nil {
		g.n.add(ref.holder.UID, false, -1)
	} else if ref.owner != nil {
		g.n.add(ref.owner.UID, true, -1)
	} else {
		g.n.add(0, true, -1)
	}
	if ref.holder != nil {
		if m := g.held[ref.holder]; m != nil {
			delete(m, ref.token)
			if len(m) == 0 {
				delete(g.held, ref.holder)
			}
		}
	}
	if len(s.refs) > 0 {
		return
	}
	if s.linger <= 0 || g.closed {
		g.closeSocket(s)
		return
	}
	s.idleSince = time.Now()
	// A timer that fired while Acquire held the lock cannot be stopped:
	// only the socket's current timer may close it.
	var t *time.Timer
	t = time.AfterFunc(s.linger, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if s.timer == t && len(s.refs) == 0 && g.sockets[s.key] == s && !s.idleSince.IsZero() {
			g.closeSocket(s)
		}
	})
	s.timer = t
}

func (g *Registry) closeSocket(s *socket) {
	if s.timer != nil {
		s.timer.Stop()
	}
	if g.sockets[s.key] == s {
		delete(g.sockets, s.key)
	}
	s.file.Close()
}

// Close drops every reference and closes every socket.
func (g *Registry) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for _, ref := range g.tokens {
		if ref.timer != nil {
			ref.timer.Stop()
		}
	}
	for _, s := range g.sockets {
		g.closeSocket(s)
	}
	g.tokens = map[string]*Ref{}
	g.held = map[*Holder]map[string]*Ref{}
	g.n = counts{heldByUID: map[uint32]int{}, pendingByUID: map[uint32]int{}}
}

// Holds reports how many references h holds.
func (g *Registry) Holds(h *Holder) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held[h])
}

// SetApp sets h's application name, shown in status.
func (g *Registry) SetApp(h *Holder, app string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h.App = app
}

// Counts reports the number of cached sockets and of references (pending
// tokens included).
func (g *Registry) Counts() (sockets, refs int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sockets), len(g.tokens)
}

// SocketInfo describes a cached socket for status.
type SocketInfo struct {
	Key       Key
	Created   time.Time
	Linger    time.Duration
	IdleSince time.Time
	Refs      []RefInfo
}

// RefInfo describes one reference.
type RefInfo struct {
	Token   string
	Share   Share
	Name    string
	Holder  Holder // a copy; for a pending token, the owner
	Pending bool
	Expires time.Time
	// Own is true when the reference belongs to the asking holder.
	Own bool
}

// Status lists cached sockets. With all false, only sockets in which a
// holder with h's uid has a reference (held or pending) are listed, and
// only h's own tokens are shown; with all true, everything.
func (g *Registry) Status(h *Holder, all bool) []SocketInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []SocketInfo
	for _, s := range g.sockets {
		info := SocketInfo{Key: s.key, Created: s.created, Linger: s.linger, IdleSince: s.idleSince}
		mine := false
		for _, ref := range s.refs {
			ri := RefInfo{Share: ref.share, Name: ref.name, Pending: ref.holder == nil, Expires: ref.expires, Own: ref.owner == h}
			if ref.owner != nil {
				ri.Holder = *ref.owner
			}
			if ri.Own || all {
				ri.Token = ref.token
			}
			mine = mine || ri.Own || (h != nil && ref.owner != nil && ref.owner.UID == h.UID)
			info.Refs = append(info.Refs, ri)
		}
		if all || mine {
			sort.Slice(info.Refs, func(i, j int) bool { return info.Refs[i].Token < info.Refs[j].Token })
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key.Proto != out[j].Key.Proto {
			return out[i].Key.Proto < out[j].Key.Proto
		}
		return out[i].Key.Addr.Compare(out[j].Key.Addr) < 0
	})
	return out
}

// newToken returns 128 random bits, hex-encoded.
func newToken() string {
	var b [16]byte
	rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
