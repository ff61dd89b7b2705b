// Package server runs the native protocol: it accepts connections on a UNIX
// SOCK_SEQPACKET listener, identifies each caller, decodes requests, asks the
// policy, has the connector create sockets, and replies with the socket's fd.
//
// One goroutine reads each connection and answers the requests that never
// wait (bind, pickup, release, hello, status) itself, as well as connects
// that finish at once. A connect that has to wait (a DNS lookup, a remote
// handshake) first hands the reading over to a new goroutine, and a reload
// gets a goroutine of its own, so a slow request never delays another. A hostile or broken client can only
// ever get error replies and its own connection closed: nothing it sends makes
// the server exit or leak a descriptor.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sockfactory/sockfactory/internal/broker"
	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/metrics"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// Options configure a Server. Zero values mean the documented defaults.
type Options struct {
	// Logger receives operational and audit logs; nil discards them.
	Logger *slog.Logger
	// Policy is the initial policy; nil denies everything.
	Policy *policy.Policy
	// Connector makes outbound connections; nil means a zero Connector.
	Connector *connector.Connector
	// Namespaces serves requests that name a network namespace; nil
	// serves the daemon's own only.
	Namespaces *broker.Namespaces
	// ConnectTimeout bounds each connect request; zero means 10 s.
	ConnectTimeout time.Duration
	// MaxInFlight is the most requests one connection may have in flight;
	// zero means 64.
	MaxInFlight int
	// Limits bound connections and references; the zero value means none.
	Limits Limits
	// Reload re-reads the configuration for an admin's reload request;
	// nil refuses such requests.
	Reload func() error
	// Upgrade replaces the daemon for an admin's upgrade request (see
	// docs/operations.md): it returns only on failure (the old daemon
	// keeps serving); on success this process hands everything over and
	// exits, and the next daemon answers the request. Nil refuses such
	// requests.
	Upgrade func(ctx context.Context) error
	// TokenTTL is how long a token-only bind may be picked up; zero
	// means 30 s.
	TokenTTL time.Duration
	// WriteTimeout bounds sending one reply to a client that does not read;
	// zero means 10 s. A client that stalls a reply this long is dropped.
	WriteTimeout time.Duration
	// Metrics counts requests, denials and limit hits, and is shown the
	// registry and the connection count; nil counts nothing (and costs
	// nothing).
	Metrics *metrics.Metrics
}

// Limits bound what clients can make the server hold. Zero means no limit.
type Limits struct {
	// MaxConns bounds client connections in all, MaxConnsPerUID those of
	// one uid. A connection over a limit gets one limit_exceeded reply and
	// is closed.
	MaxConns, MaxConnsPerUID int
	// IdleTimeout closes a connection that has had no request in flight
	// and held no socket for this long; zero means never. Connections
	// holding sockets are kept: their closing is the crash signal.
	IdleTimeout time.Duration
	// Registry bounds the bound-socket cache's references.
	Registry registry.Limits
}

// Server serves the native protocol. Create it with New.
type Server struct {
	log          *slog.Logger
	policy       atomic.Pointer[policy.Policy]
	connector    *connector.Connector
	namespaces   *broker.Namespaces
	timeout      time.Duration
	maxInFlight  int
	writeTimeout time.Duration
	registry     *registry.Registry
	limits       Limits         // guarded by mu
	idle         atomic.Int64   // limits.IdleTimeout, read on every request without mu
	perUID       map[uint32]int // sessions admitted, by uid; guarded by mu
	reload       func() error
	metrics      *metrics.Metrics // nil: off
	nsessions    atomic.Int64     // len(sessions), for metrics without mu

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu        sync.Mutex
	cond      *sync.Cond // on mu: a session or accept loop parked or ended
	closed    bool
	listeners map[*net.UnixListener]struct{}
	sessions  map[*session]struct{}
	wg        sync.WaitGroup // Serve loops and sessions

	// A live upgrade (handover.go): gate is set while paused;
	// parkedLoops counts the accept loops waiting it out; imported are
	// the sessions Import took, for Start; upgraded answers their
	// pending upgrade request; upgrade runs an admin's upgrade request.
	gate        atomic.Pointer[pauseGate]
	parkedLoops int
	imported    []*session
	upgraded    *wire.UpgradeResult
	upgrade     func(ctx context.Context) error
	upgrades    sync.WaitGroup // upgrade requests being run
	upgrading   atomic.Bool    // see BeginUpgrade
}

// New returns a Server that serves nothing until Serve is called.
func New(o Options) *Server {
	s := &Server{
		log:          o.Logger,
		connector:    o.Connector,
		namespaces:   o.Namespaces,
		timeout:      o.ConnectTimeout,
		maxInFlight:  o.MaxInFlight,
		writeTimeout: o.WriteTimeout,
		limits:       o.Limits,
		perUID:       make(map[uint32]int),
		reload:       o.Reload,
		listeners:    make(map[*net.UnixListener]struct{}),
		sessions:     make(map[*session]struct{}),
		upgrade:      o.Upgrade,
		metrics:      o.Metrics,
	}
	s.cond = sync.NewCond(&s.mu)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.connector == nil {
		s.connector = &connector.Connector{}
	}
	if s.timeout <= 0 {
		s.timeout = 10 * time.Second
	}
	if s.maxInFlight <= 0 {
		s.maxInFlight = 64
	}
	if s.writeTimeout <= 0 {
		s.writeTimeout = 10 * time.Second
	}
	ttl := o.TokenTTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	s.registry = registry.New(ttl)
	s.registry.SetLimits(o.Limits.Registry)
	s.idle.Store(int64(o.Limits.IdleTimeout))
	if m := s.metrics; m != nil {
		m.Watch(s.registry)
		m.SetConns(metrics.Native, func() int { return int(s.nsessions.Load()) })
	}
	p := o.Policy
	if p == nil {
		p = &policy.Policy{}
	}
	s.policy.Store(p)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// SetPolicy replaces the policy for requests decided from now on. Requests
// already granted, and sockets already handed out, are not affected.
func (s *Server) SetPolicy(p *policy.Policy) {
	if p == nil {
		p = &policy.Policy{}
	}
	s.policy.Store(p)
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("server closed")

// Serve accepts connections on l until Close is called or l fails for good,
// and serves each on its own goroutine. It closes l when it returns. A
// temporary accept failure, such as running out of file descriptors, is
// logged and retried after a growing pause, never spun on.
func (s *Server) Serve(l *net.UnixListener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()

	var pause time.Duration
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrServerClosed
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// A pause's deadline, or one left by a pause that
				// ended before this loop saw it: never fatal.
				if s.pausing() && !s.parkedLoop(l) {
					return ErrServerClosed
				}
				if !s.pausing() {
					l.SetDeadline(time.Time{})
				}
				continue
			}
			if !isTemporary(err) {
				return err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; pausing", "err", err, "pause", pause)
			select {
			case <-time.After(pause):
			case <-s.ctx.Done():
				return ErrServerClosed
			}
			continue
		}
		pause = 0
		s.startSession(c)
	}
}

// isTemporary reports accept errors worth retrying: descriptor and memory
// exhaustion, and connections aborted before accept.
func isTemporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Close stops every listener, cancels requests in flight, ends every session
// and waits for all of them. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	s.cancel()
	for l := range s.listeners {
		l.Close()
	}
	for ss := range s.sessions {
		ss.stop()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.upgrades.Wait()
	s.registry.Close()
	return nil
}

func (s *Server) startSession(c *net.UnixConn) {
	s.serveSession(newSession(s, c))
}

// serveSession serves ss: a new connection, or one Import took.
func (s *Server) serveSession(ss *session) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ss.c.Close()
		s.registry.ReleaseHolder(ss.holder)
		return
	}
	s.sessions[ss] = struct{}{}
	s.nsessions.Add(1)
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		ss.run()
		s.mu.Lock()
		delete(s.sessions, ss)
		s.nsessions.Add(-1)
		s.cond.Broadcast()
		s.mu.Unlock()
	}()
}

// admit counts a session against the connection limits once its caller is
// known.
func (s *Server) admit(ss *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	uid := ss.caller.UID
	l := s.limits
	if l.MaxConns > 0 && len(s.sessions) > l.MaxConns {
		s.limitHit(metrics.LimitConnections)
		return wire.Errorf(wire.CodeLimitExceeded, "the daemon serves at most %d connections; try again later", l.MaxConns)
	}
	if l.MaxConnsPerUID > 0 && s.perUID[uid] >= l.MaxConnsPerUID {
		s.limitHit(metrics.LimitConnectionsPerUID)
		return wire.Errorf(wire.CodeLimitExceeded, "uid %d already has %d connections, the most allowed; close some", uid, s.perUID[uid])
	}
	s.perUID[uid]++
	return nil
}

// limitHit counts a refusal by one of the server's limits.
func (s *Server) limitHit(l metrics.Limit) {
	if s.metrics != nil {
		s.metrics.LimitHit(l)
	}
}

func (s *Server) leave(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	uid := ss.caller.UID
	if s.perUID[uid]--; s.perUID[uid] <= 0 {
		delete(s.perUID, uid)
	}
}

// SetLimits replaces the limits for connections and references from now on;
// what is already held stays.
func (s *Server) SetLimits(l Limits) {
	s.mu.Lock()
	s.limits = l
	s.idle.Store(int64(l.IdleTimeout))
	s.mu.Unlock()
	s.registry.SetLimits(l.Registry)
}

// idleTimeout is the current idle timeout.
func (s *Server) idleTimeout() time.Duration {
	return time.Duration(s.idle.Load())
}

// Registry returns the bound-socket cache, for status and tests.
func (s *Server) Registry() *registry.Registry { return s.registry }

// Sessions returns the number of client connections being served.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// ServeConn serves one connection as if Serve had accepted it (the
// daemon's watchdog probes over a socketpair this way). The server owns c.
func (s *Server) ServeConn(c *net.UnixConn) { s.startSession(c) }
