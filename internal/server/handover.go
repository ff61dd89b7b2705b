package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// This file is the server's part of a live upgrade: Pause brings every
// session to rest between requests, Export writes the sessions and the
// cache out with the descriptors they use, Commit lets go of them for
// good, and, in the next daemon, Import takes them back and Start serves
// them. Listeners are the caller's: it passes them to Serve in either
// process.

// State is the server's state in a live upgrade, written out as JSON;
// descriptors travel beside it, named by index.
type State struct {
	// Registry is the bound-socket cache; its SocketState.FD values
	// index the descriptors.
	Registry *registry.State `json:"registry"`
	// OptionSets are the distinct socket options of the cached sockets,
	// and Options the index into them of each of Registry.Sockets, in
	// order: most sockets share a few sets.
	OptionSets []binder.Options `json:"option_sets"`
	Options    []int            `json:"options"`
	// Sessions are the client connections.
	Sessions []SessionState `json:"sessions"`
}

// SessionState is one client connection.
type SessionState struct {
	// FD indexes the descriptors: the connection itself.
	FD int `json:"fd"`
	// Caller is the identity the kernel reported when the connection was
	// accepted.
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups"`
	PID    int32    `json:"pid"`
	// App is the name declared with hello.
	App string `json:"app,omitempty"`
	// Holder indexes Registry.Holders.
	Holder int `json:"holder"`
	// UpgradeReply is the ID of the upgrade request this connection
	// waits on an answer to, if any: the next daemon answers it.
	UpgradeReply *uint64 `json:"upgrade_reply,omitempty"`
}

// pauseGate is a pause in progress: resume is closed to resume serving,
// commit to end every parked session for good (the next daemon serves
// them).
type pauseGate struct {
	resume, commit chan struct{}
}

// pausing reports whether sessions should park. It is read by every
// session on every request, without s.mu.
func (s *Server) pausing() bool { return s.gate.Load() != nil }

// park waits, with no request in flight, until the pause ends. It returns
// true to go on serving, false when the session is over (the next daemon
// serves it, or the server is closing).
func (ss *session) park() bool {
	g := ss.s.gate.Load()
	if g == nil {
		return true
	}
	// Requests in flight on other goroutines finish and send their
	// replies first: what the client sent is answered here or not read.
	ss.wg.Wait()
	s := ss.s
	s.mu.Lock()
	ss.parked = true
	s.cond.Broadcast()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		ss.parked = false
		s.mu.Unlock()
	}()
	select {
	case <-g.resume:
		return true
	case <-g.commit:
		ss.handedOver = true
		return false
	case <-ss.ctx.Done():
		return false
	}
}

// parkedLoop is an accept loop waiting out a pause; it returns whether to
// go on accepting.
func (s *Server) parkedLoop(l *net.UnixListener) bool {
	g := s.gate.Load()
	if g == nil {
		return true
	}
	s.mu.Lock()
	s.parkedLoops++
	s.cond.Broadcast()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.parkedLoops--
		s.mu.Unlock()
	}()
	select {
	case <-g.resume:
		return true
	case <-g.commit:
		l.SetUnlinkOnClose(false) // the next daemon serves on it
		return false
	case <-s.ctx.Done():
		return false
	}
}

// ErrPaused is returned by Pause when a pause is already in progress.
var ErrPaused = errors.New("the server is already paused")

// Pause stops every accept loop and every session between two requests:
// each finishes what it has in flight and sends the replies, then waits.
// Nothing more is read from any client until Resume or Commit; clients'
// requests wait in their sockets meanwhile, connections in the listeners'
// backlogs. It returns once all are at rest, or fails when ctx ends first;
// the server stays paused either way (Resume, Commit or Close end it).
func (s *Server) Pause(ctx context.Context) error {
	g := &pauseGate{resume: make(chan struct{}), commit: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if !s.gate.CompareAndSwap(nil, g) {
		s.mu.Unlock()
		return ErrPaused
	}
	now := time.Now()
	for l := range s.listeners {
		l.SetDeadline(now)
	}
	for ss := range s.sessions {
		ss.c.SetReadDeadline(now)
	}
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	for !s.restingLocked() {
		if ctx.Err() != nil {
			s.mu.Unlock()
			return fmt.Errorf("pausing: %d of %d connections still busy: %w", s.busy(), s.Sessions(), ctx.Err())
		}
		s.cond.Wait()
	}
	s.mu.Unlock()
	return nil
}

// BeginUpgrade reserves the server for one upgrade: false when one is
// under way. Each true is followed by one EndUpgrade.
func (s *Server) BeginUpgrade() bool { return s.upgrading.CompareAndSwap(false, true) }

// EndUpgrade ends what BeginUpgrade reserved.
func (s *Server) EndUpgrade() { s.upgrading.Store(false) }

// restingLocked reports whether every session and accept loop is parked.
func (s *Server) restingLocked() bool {
	if s.parkedLoops < len(s.listeners) {
		return false
	}
	for ss := range s.sessions {
		if !ss.parked {
			return false
		}
	}
	return true
}

func (s *Server) busy() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ss := range s.sessions {
		if !ss.parked {
			n++
		}
	}
	return n
}

// Resume ends a pause: everything serves again as before.
func (s *Server) Resume() {
	g := s.gate.Swap(nil)
	if g == nil {
		return
	}
	s.mu.Lock()
	for l := range s.listeners {
		l.SetDeadline(time.Time{})
	}
	s.mu.Unlock()
	close(g.resume)
}

// Export writes out, while paused, every session and the cache, with the
// descriptors they stand on: State's FD values index fds. The descriptors
// are the server's own; the cached sockets' stay open until the caller
// calls done, which it must do once, after sending (duplicating) them; it
// closes none.
func (s *Server) Export() (*State, []int, func(), error) {
	if !s.pausing() {
		return nil, nil, nil, errors.New("export needs the server paused")
	}
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		// parked first: a session sets raw before it parks, and one
		// that has not parked may be setting it now.
		if ss.parked && ss.raw != nil {
			sessions = append(sessions, ss)
		}
	}
	s.mu.Unlock()
	holders := make([]*registry.Holder, len(sessions))
	for i, ss := range sessions {
		holders[i] = ss.holder
	}
	rs, done, err := s.registry.SnapshotLent(holders)
	if err != nil {
		return nil, nil, nil, err
	}
	st := &State{Registry: rs, Options: make([]int, len(rs.Sockets))}
	sets := map[binder.Options]int{}
	var fds []int
	for i := range rs.Sockets {
		sk := &rs.Sockets[i]
		o, ok := sk.Options.(binder.Options)
		if !ok && sk.Options != nil {
			done()
			return nil, nil, nil, fmt.Errorf("socket %s %s has options of type %T", sk.Proto, sk.Addr, sk.Options)
		}
		j, ok := sets[o]
		if !ok {
			j = len(st.OptionSets)
			sets[o] = j
			st.OptionSets = append(st.OptionSets, o)
		}
		st.Options[i] = j
		fds = append(fds, sk.FD)
		sk.FD = len(fds) - 1
	}
	for i, ss := range sessions {
		fd := -1
		ss.raw.Control(func(f uintptr) { fd = int(f) })
		ss.mu.Lock()
		app, up := ss.app, ss.upgradeReply
		ss.mu.Unlock()
		fds = append(fds, fd)
		st.Sessions = append(st.Sessions, SessionState{
			FD: len(fds) - 1, UID: ss.caller.UID, GID: ss.caller.GID, Groups: ss.caller.Groups, PID: ss.caller.PID,
			App: app, Holder: i, UpgradeReply: up,
		})
	}
	return st, fds, done, nil
}

// Commit ends a pause for good, after the next daemon has taken the
// state: the cache forgets its sockets without closing them for anyone,
// every session and accept loop ends without a word to its client, and
// the server is closed. The caller's descriptors (listeners) are the
// caller's to close; closing them does not remove their files.
func (s *Server) Commit() {
	g := s.gate.Load()
	if g == nil {
		return
	}
	s.registry.Abandon()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(g.commit)
	s.wg.Wait()
}

// Import takes the state a previous daemon exported, with the
// descriptors it names (fds, owned by Import from now on: on failure every
// one is closed). Nothing is served until Start. upgraded is the answer to
// a connection's pending upgrade request.
func (s *Server) Import(st *State, fds []int, upgraded *wire.UpgradeResult) error {
	closeAll := func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
	if st.Registry == nil || len(st.Options) != len(st.Registry.Sockets) {
		closeAll()
		return fmt.Errorf("%w: %d sockets but %d option sets", registry.ErrBadState, lenSockets(st), len(st.Options))
	}
	// The cache takes the sockets' descriptors, renumbered from 0.
	regFDs := make([]int, 0, len(st.Registry.Sockets))
	for i := range st.Registry.Sockets {
		sk := &st.Registry.Sockets[i]
		if sk.FD < 0 || sk.FD >= len(fds) || fds[sk.FD] < 0 {
			for _, fd := range regFDs {
				unix.Close(fd)
			}
			closeAll()
			return fmt.Errorf("%w: socket %s %s names descriptor %d of %d", registry.ErrBadState, sk.Proto, sk.Addr, sk.FD, len(fds))
		}
		j := st.Options[i]
		if j < 0 || j >= len(st.OptionSets) {
			for _, fd := range regFDs {
				unix.Close(fd)
			}
			closeAll()
			return fmt.Errorf("%w: socket %s %s names option set %d of %d", registry.ErrBadState, sk.Proto, sk.Addr, j, len(st.OptionSets))
		}
		sk.Options = st.OptionSets[j]
		regFDs = append(regFDs, fds[sk.FD])
		fds[sk.FD] = -1
		sk.FD = len(regFDs) - 1
	}
	usedFD := make(map[int]bool, len(st.Sessions))
	for _, ss := range st.Sessions {
		if ss.FD < 0 || ss.FD >= len(fds) || fds[ss.FD] < 0 || usedFD[ss.FD] || ss.Holder < 0 || ss.Holder >= len(st.Registry.Holders) {
			for _, fd := range regFDs {
				unix.Close(fd)
			}
			closeAll()
			return fmt.Errorf("%w: a connection names descriptor %d or holder %d out of range, or a descriptor twice", registry.ErrBadState, ss.FD, ss.Holder)
		}
		usedFD[ss.FD] = true
	}
	holders, err := s.registry.Restore(st.Registry, regFDs)
	if err != nil {
		closeAll()
		return err
	}
	var sessions []*session
	for _, ss := range st.Sessions {
		f := os.NewFile(uintptr(fds[ss.FD]), "client")
		fds[ss.FD] = -1
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			// This client is lost; the others are not.
			s.log.Error("taking over a client connection failed; its references are released", "uid", ss.UID, "pid", ss.PID, "err", err)
			s.registry.ReleaseHolder(holders[ss.Holder])
			continue
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			s.registry.ReleaseHolder(holders[ss.Holder])
			continue
		}
		n := newSession(s, uc)
		n.imported = true
		n.caller = policy.Caller{UID: ss.UID, GID: ss.GID, Groups: ss.Groups, PID: ss.PID}
		n.holder = holders[ss.Holder]
		n.app = ss.App
		n.upgradeReply = ss.UpgradeReply
		sessions = append(sessions, n)
	}
	closeAll() // any the state did not name
	s.mu.Lock()
	s.imported = append(s.imported, sessions...)
	s.upgraded = upgraded
	s.mu.Unlock()
	return nil
}

func lenSockets(st *State) int {
	if st.Registry == nil {
		return 0
	}
	return len(st.Registry.Sockets)
}

// Start serves the connections Import took.
func (s *Server) Start() {
	s.mu.Lock()
	sessions := s.imported
	s.imported = nil
	s.mu.Unlock()
	for _, ss := range sessions {
		s.serveSession(ss)
	}
}

// count counts an imported session against the per-uid tally, without
// refusing it.
func (s *Server) count(ss *session) {
	s.mu.Lock()
	s.perUID[ss.caller.UID]++
	s.mu.Unlock()
}
