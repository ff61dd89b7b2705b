// Package clearwater is the Clearwater-compatible front door: it speaks the
// Project Clearwater socket factory's wire protocol byte for byte, so that
// existing C/C++ clients work unchanged, and hands every request to the same
// broker, policy and connector as the native protocol.
//
// The protocol, per connection: the client sends "host:port" (at most 1023
// bytes, one send, no terminator; a NUL ends it); on success the daemon sends
// exactly one byte, a space, with exactly one SCM_RIGHTS fd (a connected
// stream socket in blocking mode with SO_SNDTIMEO set) and closes; on any
// failure it closes without sending anything. See docs/clearwater.md.
//
// Unlike the original, every connection is served on its own goroutine, a
// request never makes the daemon exit, and callers are logged by their
// kernel-reported uid and pid.
package clearwater

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/broker"
	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/peer"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/rawsys"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// MaxRequest is the longest request the original accepted (it read into a
// 1024-byte buffer, keeping room for a NUL).
const MaxRequest = 1023

// reply is the success byte.
var reply = []byte{' '}

// Options configure a Listener. Zero values mean the documented defaults.
type Options struct {
	// Name identifies the listener in logs and policy; usually its socket
	// path.
	Name string
	// Allowed is where the allowed hosts come from.
	Allowed AllowList
	// IPv6 lets requests reach IPv6 destinations; by default only IPv4 is
	// used, as in the original, so legacy clients always get AF_INET.
	IPv6 bool
	// ConnectTimeout bounds resolution and connect, and is set as the
	// delivered socket's SO_SNDTIMEO; zero means 30 s (the original's).
	ConnectTimeout time.Duration
	// ReadTimeout drops a client that sends no request in this time; zero
	// means 10 s.
	ReadTimeout time.Duration
	// UIDs and GIDs, when either is non-empty, are the only callers served
	// (matched as in policy rules). Empty means any caller that can open the
	// socket, as in the original.
	UIDs, GIDs []uint32
	// Deny lists destinations never connected to, whatever the allow-list
	// says or a name resolves to (the daemon's [connect] deny).
	Deny []policy.Dest
	// MaxConns and MaxConnsPerUID bound the connections served at once,
	// in all and per caller uid; zero means no limit. A connection over a
	// limit is closed without a reply, as every failure is.
	MaxConns, MaxConnsPerUID int
	// Logger receives audit and operational logs; nil discards them.
	Logger *slog.Logger
	// Connector resolves and connects; nil means a zero Connector.
	Connector *connector.Connector
	// Netns names the network namespace the listener's connections are
	// made from, and its names resolved in (a name under /run/netns);
	// "" means the daemon's own. Namespaces finds it; it must be set
	// when Netns is.
	Netns      string
	Namespaces *broker.Namespaces
	// Observe, when set, is called once per connection served, after its
	// reply or close, with the outcome's code ("" for success) and the
	// time from accept to the outcome: the metrics hook. It must be cheap
	// and must not block.
	Observe func(code wire.Code, took time.Duration)
}

// Listener serves the Clearwater protocol. Create it with New.
type Listener struct {
	opts   Options
	log    *slog.Logger
	policy atomic.Pointer[policy.Policy]
	ctx    context.Context
	cancel context.CancelFunc

	reloadMu sync.Mutex
	stamp    string // the allow-list sources when last read; guarded by reloadMu

	// paused is closed to end a pause of the accept loops (Pause); nil
	// when not paused. handed is set once the listeners are the next
	// daemon's (Handoff).
	paused atomic.Pointer[chan struct{}]
	handed atomic.Bool
	nconns atomic.Int64 // active, for Conns without the lock

	mu     sync.Mutex
	closed bool
	lns    map[*net.UnixListener]*os.File // each with the copy accepted on (see Serve)
	conns  map[*os.File]struct{}          // connections waiting in the poller
	active int                            // connections being served
	perUID map[uint32]int
	wg     sync.WaitGroup
}

// New returns a Listener with its allow-list loaded. Problems reading the
// allow-list are logged; the entries that parsed are used.
func New(o Options) *Listener {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 10 * time.Second
	}
	if o.Connector == nil {
		o.Connector = &connector.Connector{}
	}
	l := &Listener{
		opts:   o,
		log:    o.Logger,
		lns:    make(map[*net.UnixListener]*os.File),
		conns:  make(map[*os.File]struct{}),
		perUID: make(map[uint32]int),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.log = l.log.With("listener", "clearwater", "socket", o.Name)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.Reload()
	return l
}

// Update replaces the allow-list sources (Reload reads them), the callers
// served and the connection limits, for a configuration reload.
func (l *Listener) Update(a AllowList, uids, gids []uint32, deny []policy.Dest, maxConns, maxPerUID int) {
	l.reloadMu.Lock()
	l.opts.Allowed, l.opts.UIDs, l.opts.GIDs, l.opts.Deny = a, uids, gids, deny
	l.reloadMu.Unlock()
	l.mu.Lock()
	l.opts.MaxConns, l.opts.MaxConnsPerUID = maxConns, maxPerUID
	l.mu.Unlock()
}

// Reload re-reads the allow-list sources and swaps in the result. It
// returns the number of allowed entries.
func (l *Listener) Reload() int {
	l.reloadMu.Lock()
	defer l.reloadMu.Unlock()
	return l.reloadLocked()
}

// reloadIfChanged re-reads the allow-list after a denial, but only when a
// source changed since the last read (by the stamps of its directories and
// files): a caller sending denied requests in a loop costs a few stats, not
// a re-read and a log line per bad entry each time.
func (l *Listener) reloadIfChanged() {
	l.reloadMu.Lock()
	defer l.reloadMu.Unlock()
	if l.opts.Allowed.stamp() != l.stamp {
		l.reloadLocked()
	}
}

func (l *Listener) reloadLocked() int {
	l.stamp = l.opts.Allowed.stamp()
	dests, probs := l.opts.Allowed.Load()
	for _, p := range probs {
		l.log.Warn("allowed hosts: entry skipped", "err", p)
	}
	var ns []string
	if l.opts.Netns != "" {
		// "daemon" too: a name the admin gave may be the daemon's own namespace.
		ns = []string{l.opts.Netns, "daemon"}
	}
	l.policy.Store(&policy.Policy{Rules: []policy.Rule{{
		Netns:   ns,
		Name:    "clearwater:" + l.opts.Name,
		Anyone:  len(l.opts.UIDs) == 0 && len(l.opts.GIDs) == 0,
		UIDs:    l.opts.UIDs,
		GIDs:    l.opts.GIDs,
		Connect: dests,
	}}, Deny: l.opts.Deny})
	return len(dests)
}

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("clearwater listener closed")

// Serve accepts connections on ln (a "unix" stream listener) until Close.
// It closes ln when it returns.
//
// A connection is served by the goroutine that accepted it, for as long as
// nothing makes it wait: the request is normally in the socket by the time
// it is accepted (a client sends it right after connect), and a connect to
// an address on this host is complete when connect(2) returns. Such a
// request then costs no goroutine, no poller registration and no thread
// wake-up; only the system calls of the work itself: accept4, SO_PEERCRED,
// read, the connect, sendmsg and the closes. When something would wait (a
// request not there yet, a DNS lookup, a handshake with a remote peer, an
// oversize request to drain), another goroutine takes the accepting over
// first, so that one slow or silent client never holds up the others; the
// waiting goes through Go's poller with the read timeout.
func (l *Listener) Serve(ln *net.UnixListener) error {
	// A listener's raw connection cannot wait in the poller (its Read is
	// refused), so the accepting goes through a duplicate of its
	// descriptor opened as a file, which can. The duplicate shares the
	// listening socket; Pause, Resume and Close set both.
	f, err := pollableCopy(ln)
	if err != nil {
		ln.Close()
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		ln.Close()
		return err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		f.Close()
		ln.Close()
		return ErrClosed
	}
	l.lns[ln] = f
	l.wg.Add(2) // Serve, and the first accepting goroutine
	l.mu.Unlock()
	defer l.wg.Done()
	defer ln.Close()
	defer f.Close()
	a := &acceptor{l: l, ln: f, rc: rc, done: make(chan error, 1)}
	a.loops.Store(1)
	go a.loop()
	return <-a.done
}

// pollableCopy returns a non-blocking duplicate of ln's descriptor as a
// file in Go's poller.
func pollableCopy(ln *net.UnixListener) (*os.File, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup, dupErr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { dup, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	// The duplicate shares the file status flags: non-blocking already,
	// as Go made the listener. NewFile sees that and uses the poller.
	return os.NewFile(uintptr(dup), "clearwater-listener"), nil
}

// acceptor accepts on one listener. Exactly one goroutine runs its loop at
// a time: one that has to wait while serving starts the next first.
type acceptor struct {
	l    *Listener
	ln   *os.File // the pollable copy of the listener
	rc   syscall.RawConn
	done chan error // the loop's end, for Serve

	// loops counts the goroutines accepting. One waits for connections
	// when there are none; under load (a connection was already queued
	// when asked for) another starts, up to GOMAXPROCS, so that requests
	// are served on every CPU; a loop that finds the queue empty while
	// others run ends instead of waiting beside them.
	loops atomic.Int32
}

// errIdle ends a loop that found no connection while others accept.
var errIdle = errors.New("no connection queued")

// end tells Serve the accepting has ended; the first reason wins.
func (a *acceptor) end(err error) {
	select {
	case a.done <- err:
	default:
	}
}

// loop accepts and serves until the listener closes, a connection it
// serves hands the accepting to another goroutine, or it is one loop too
// many for the load.
func (a *acceptor) loop() {
	defer a.l.wg.Done()
	l := a.l
	var buf [MaxRequest + 1]byte
	var pause time.Duration
	backlog := 0 // accepts in a row that found a connection queued
	for {
		fd, queued, err := a.accept()
		if err == errIdle {
			return
		}
		if err != nil {
			if l.ctx.Err() != nil {
				a.end(ErrClosed)
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// A pause's deadline, or one a pause left that ended
				// before this loop saw it: never fatal.
				if p := l.paused.Load(); p != nil {
					<-*p
				}
				if l.handed.Load() {
					a.end(ErrClosed)
					return
				}
				a.ln.SetDeadline(time.Time{})
				continue
			}
			if errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EINTR) {
				continue // the client left before its turn
			}
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
				// Out of descriptors and the like: back off, never spin.
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				l.log.Warn("accept failed; pausing", "err", err, "pause", pause)
				select {
				case <-time.After(pause):
				case <-l.ctx.Done():
					a.end(ErrClosed)
					return
				}
				continue
			}
			a.end(err)
			return
		}
		pause = 0
		// One queued connection can be a fast client's next request;
		// three in a row is a queue this loop is not keeping up with.
		if !queued {
			backlog = 0
		} else if backlog++; backlog >= 3 {
			backlog = 0
			a.more()
		}
		moved := false
		l.serveConn(&conn{fd: fd}, buf[:], func() {
			if !moved {
				moved = true // this loop's place goes to a new one
				l.wg.Add(1)
				go a.loop()
			}
		})
		if moved {
			return // another goroutine accepts now
		}
	}
}

// more starts another loop, when there are fewer than GOMAXPROCS.
func (a *acceptor) more() {
	for {
		n := a.loops.Load()
		if int(n) >= runtime.GOMAXPROCS(0) {
			return
		}
		if a.loops.CompareAndSwap(n, n+1) {
			a.l.wg.Add(1)
			go a.loop()
			return
		}
	}
}

// accept takes the next connection from the listener, non-blocking and
// close-on-exec. queued reports that it was there at once (the queue was
// not empty: there is load). With none queued, the last loop waits in the
// poller and any other ends (errIdle).
func (a *acceptor) accept() (fd int, queued bool, err error) {
	fd, queued = -1, true
	var aerr error
	err = a.rc.Read(func(s uintptr) bool {
		// Straight accept4 with no address: nothing is parsed or
		// allocated, and a UNIX peer has no useful address anyway.
		// The listener is non-blocking: the call never waits (rawsys).
		r, e := rawsys.Accept4(int(s), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if e == unix.EAGAIN {
			if n := a.loops.Load(); n > 1 && a.loops.CompareAndSwap(n, n-1) {
				aerr = errIdle
				return true
			}
			queued = false
			return false
		}
		fd, aerr = r, nil
		if e != nil {
			fd, aerr = -1, os.NewSyscallError("accept4", e)
		}
		return true
	})
	if err != nil {
		return -1, false, err
	}
	return fd, queued, aerr
}

// conn is one client connection: a non-blocking descriptor, and once it
// had to wait, the *os.File that waits for it in the poller (and owns fd).
type conn struct {
	fd int
	f  *os.File
}

// poller returns c's descriptor as a file in Go's poller, registered with
// l so that Close can end its waits.
func (c *conn) poller(l *Listener) *os.File {
	if c.f == nil {
		c.f = os.NewFile(uintptr(c.fd), "clearwater-client") // non-blocking: joins the poller
		l.mu.Lock()
		l.conns[c.f] = struct{}{}
		closed := l.closed
		l.mu.Unlock()
		if closed {
			c.f.SetDeadline(time.Now())
		}
	}
	return c.f
}

func (c *conn) close(l *Listener) {
	if c.f == nil {
		rawsys.Close(c.fd)
		return
	}
	l.mu.Lock()
	delete(l.conns, c.f)
	l.mu.Unlock()
	c.f.Close()
}

// Pause stops accepting new connections, for a live upgrade; connections
// being served go on. Connections that arrive wait in the backlog.
func (l *Listener) Pause() {
	ch := make(chan struct{})
	if !l.paused.CompareAndSwap(nil, &ch) {
		return
	}
	l.mu.Lock()
	for _, f := range l.lns {
		f.SetDeadline(time.Now()) // the copy the accepting waits on
	}
	l.mu.Unlock()
}

// Resume ends a pause.
func (l *Listener) Resume() {
	if p := l.paused.Swap(nil); p != nil {
		l.mu.Lock()
		for _, f := range l.lns {
			f.SetDeadline(time.Time{})
		}
		l.mu.Unlock()
		close(*p)
	}
}

// Handoff ends a pause for good: the next daemon accepts on the
// listeners now. The accept loops end without removing the socket files;
// Handoff waits, at most until ctx ends, for the connections being served
// to finish (their requests are answered here), then closes the rest.
func (l *Listener) Handoff(ctx context.Context) {
	l.mu.Lock()
	for ln := range l.lns {
		ln.SetUnlinkOnClose(false) // the next daemon serves on it
	}
	l.mu.Unlock()
	l.handed.Store(true)
	if p := l.paused.Swap(nil); p != nil {
		close(*p)
	}
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		l.Close()
	}
}

// Close stops accepting, cancels requests in flight, closes every client
// connection without a reply and waits. It is idempotent.
func (l *Listener) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		l.cancel()
		for ln, f := range l.lns {
			f.Close()
			ln.Close()
		}
		for c := range l.conns {
			c.SetDeadline(time.Now())
		}
	}
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// serveConn serves one request. Every failure ends in a plain close. wait
// is called before anything that may wait (see Serve).
func (l *Listener) serveConn(c *conn, buf []byte, wait func()) {
	start := time.Now()
	code := wire.CodeInvalidRequest
	defer func() {
		c.close(l)
		if l.opts.Observe != nil {
			l.opts.Observe(code, time.Since(start))
		}
	}()
	pol := l.policy.Load()
	caller, err := peer.FromFD(c.fd, len(pol.Rules[0].GIDs) > 0)
	if err != nil {
		code = wire.CodeInternal
		l.log.Error("cannot identify caller; closing", "err", err)
		return
	}
	if err := l.admit(caller.UID); err != nil {
		code = wire.CodeLimitExceeded
		l.audit(slog.LevelWarn, "fail", &caller, slog.String("code", string(code)), slog.String("err", err.Error()))
		return
	}
	defer l.leave(caller.UID)

	req, err := l.readRequest(c, buf, wait)
	if err != nil {
		l.audit(slog.LevelWarn, "fail", &caller, slog.String("code", string(code)), slog.String("err", err.Error()))
		return
	}
	t, err := broker.ParseTarget(req)
	if err != nil {
		l.audit(slog.LevelWarn, "fail", &caller, slog.String("request", req), slog.String("code", string(code)), slog.String("err", toWire(err).Message))
		return
	}
	n := connector.Network{Proto: "tcp", Family: 4}
	if l.opts.IPv6 {
		n.Family = 0
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.ConnectTimeout)
	defer cancel()
	opts := connector.Options{SendTimeout: l.opts.ConnectTimeout, Wait: wait}
	f, out, err := l.connect(ctx, pol, &caller, n, t, opts)
	if we := toWire(err); err != nil && we.Code == wire.CodeDenied {
		// The original's intent: the allowed hosts may have changed.
		// Read them again (if they did) and decide once more.
		wait() // the re-read may read files
		l.reloadIfChanged()
		f, out, err = l.connect(ctx, l.policy.Load(), &caller, n, t, opts)
	}
	took := time.Since(start).Milliseconds()
	if err != nil {
		we := toWire(err)
		code = we.Code
		level, msg := slog.LevelInfo, "fail"
		if we.Code == wire.CodeDenied {
			level, msg = slog.LevelWarn, "deny"
		}
		l.audit(level, msg, &caller, slog.String("request", req), slog.String("code", string(we.Code)), slog.String("err", we.Message), slog.Int64("ms", took))
		return
	}
	defer f.Close()
	if err := sendSocket(c.fd, f.FD()); err != nil {
		code = wire.CodeInternal
		l.audit(slog.LevelInfo, "fail", &caller, slog.String("request", req), slog.String("code", string(code)), slog.String("err", "client left before the reply: "+err.Error()), slog.Int64("ms", took))
		return
	}
	code = ""
	if l.opts.Netns != "" {
		l.audit(slog.LevelInfo, "grant", &caller, slog.String("request", req), slog.String("rule", out.Rule), slog.String("netns", l.opts.Netns), slog.String("netns_id", out.Netns.ID.String()), slog.Any("remote", out.Remote), slog.Any("local", out.Local), slog.Int64("ms", took))
		return
	}
	l.audit(slog.LevelInfo, "grant", &caller, slog.String("request", req), slog.String("rule", out.Rule), slog.Any("remote", out.Remote), slog.Any("local", out.Local), slog.Int64("ms", took))
}

// sendSocket sends the success byte with fd to the client. The connection
// is new and its send buffer empty, so the one byte never waits; a client
// that has gone gets EPIPE, without a signal.
func sendSocket(c, fd int) error {
	var oob [24]byte // CMSG_SPACE(sizeof(int)) on 64-bit Linux
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = int32(fd)
	_, err := rawsys.Sendmsg(c, reply, oob[:unix.CmsgSpace(4)], unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
	if err != nil {
		return os.NewSyscallError("sendmsg", err)
	}
	return nil
}

// audit writes the one log line a connection gets, led by its caller's
// uid, gid and pid. It builds nothing when the level is off: this runs for
// every request.
func (l *Listener) audit(level slog.Level, msg string, c *policy.Caller, attrs ...slog.Attr) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	var buf [12]slog.Attr
	a := append(buf[:0], slog.Uint64("uid", uint64(c.UID)), slog.Uint64("gid", uint64(c.GID)), slog.Int64("pid", int64(c.PID)))
	l.log.LogAttrs(ctx, level, msg, append(a, attrs...)...)
}

// Conns returns the number of connections being served, without taking
// the listener's lock (a metrics scrape reads it).
func (l *Listener) Conns() int { return int(l.nconns.Load()) }

// admit counts a connection against the limits.
func (l *Listener) admit(uid uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("the daemon is shutting down")
	}
	if l.opts.MaxConns > 0 && l.active >= l.opts.MaxConns {
		return fmt.Errorf("%d connections at once, the most allowed", l.opts.MaxConns)
	}
	if l.opts.MaxConnsPerUID > 0 && l.perUID[uid] >= l.opts.MaxConnsPerUID {
		return fmt.Errorf("uid %d has %d connections at once, the most allowed", uid, l.perUID[uid])
	}
	l.perUID[uid]++
	l.active++
	l.nconns.Add(1)
	return nil
}

func (l *Listener) leave(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	l.nconns.Add(-1)
	if l.perUID[uid]--; l.perUID[uid] <= 0 {
		delete(l.perUID, uid)
	}
}

// connect hands the request to the broker, after one check of the
// original's: a name must itself be on the list. Otherwise a client in one
// namespace could make the daemon look up names of its choosing from the
// other (the broker would resolve a name to test its addresses).
func (l *Listener) connect(ctx context.Context, pol *policy.Policy, caller *policy.Caller, n connector.Network, t broker.Target, opts connector.Options) (connector.Sock, broker.Outcome, error) {
	sc := broker.Scope{Caller: *caller}
	if l.opts.Netns != "" {
		var err error
		if sc, err = l.opts.Namespaces.Scope(pol, caller, l.opts.Netns, nil); err != nil {
			return connector.Sock{}, broker.Outcome{}, err
		}
		opts = l.opts.Namespaces.ConnectOptions(&sc, opts)
	}
	c := &sc.Caller
	if !t.IP.IsValid() && pol.Known(c) && !pol.ConnectName(c, t.Host, t.Port).Allowed {
		return connector.Sock{}, broker.Outcome{}, wire.Errorf(wire.CodeDenied, "%s is not an allowed host", t)
	}
	f, out, err := broker.Connect(ctx, pol, c, l.opts.Connector, n, t, opts)
	out.Netns = sc.Target
	return f, out, err
}

// readRequest does what the original did: one read of at most 1023 bytes,
// cut at the first NUL. A request filling 1024 bytes is refused as oversize
// rather than cut. The read is tried at once; only when nothing has come
// yet is wait called and the read made through the poller, bounded by the
// read timeout.
func (l *Listener) readRequest(c *conn, buf []byte, wait func()) (string, error) {
	n, err := rawsys.Read(c.fd, buf) // non-blocking
	if err == unix.EAGAIN {
		wait()
		n, err = l.readWaiting(c, buf)
	} else if err != nil {
		err = os.NewSyscallError("read", err)
	}
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", errors.New("client sent no request: EOF")
	}
	req, err := parseRequest(buf[:n])
	if n > MaxRequest {
		// Take in what else the client sent (a little, briefly), so that
		// closing gives it a clean end of file rather than a reset.
		wait()
		f := c.poller(l)
		f.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		io.CopyN(io.Discard, f, 64<<10)
	}
	return req, err
}

// readWaiting waits in the poller for the request, at most the read
// timeout, and reads it.
func (l *Listener) readWaiting(c *conn, buf []byte) (int, error) {
	f := c.poller(l)
	f.SetReadDeadline(time.Now().Add(l.opts.ReadTimeout))
	if l.ctx.Err() != nil {
		// Close set the deadline to now before the line above: do not
		// make it wait out the read timeout.
		return 0, errors.New("the daemon is shutting down")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		n    int
		rerr error
	)
	err = rc.Read(func(s uintptr) bool {
		n, rerr = unix.Read(int(s), buf)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if l.ctx.Err() != nil {
				return 0, errors.New("the daemon is shutting down")
			}
			return 0, errors.New("no request within the read timeout")
		}
		return 0, errors.New("client sent no request: " + err.Error())
	}
	if rerr != nil {
		return 0, errors.New("client sent no request: " + os.NewSyscallError("read", rerr).Error())
	}
	return n, nil
}

// parseRequest applies the original's rules to what one read returned: more
// than 1023 bytes is oversize, a NUL ends the request, and nothing before it
// is an empty request.
func parseRequest(b []byte) (string, error) {
	if len(b) > MaxRequest {
		return "", errors.New("request longer than 1023 bytes")
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return "", errors.New("empty request")
	}
	return string(b), nil
}

func toWire(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	if err == nil {
		return &wire.Error{}
	}
	return wire.Errorf(wire.CodeInternal, "%v", err)
}
