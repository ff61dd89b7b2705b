package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/metrics"
	"github.com/sockfactory/sockfactory/internal/peer"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/rawsys"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// session serves one client connection.
type session struct {
	s      *Server
	c      *net.UnixConn
	raw    syscall.RawConn
	caller policy.Caller
	log    *slog.Logger

	ctx    context.Context // cancelled when the client leaves or the server closes
	cancel context.CancelFunc
	slots  chan struct{} // one token per request in flight
	wg     sync.WaitGroup

	holder *registry.Holder // this connection's references in the cache

	// ended is closed by a goroutine that took the reading over from
	// run (see readLoop) when it has seen the connection end.
	ended chan struct{}

	mu  sync.Mutex
	app string // declared with OpHello; the default share name

	// imported is set for a connection handed over by the previous
	// daemon in a live upgrade: its caller and holder come with it
	// (see Server.Import), and upgradeReply, when set, is the ID of that
	// daemon's upgrade request still to be answered, which this daemon
	// answers first.
	imported     bool
	upgradeReply *uint64
	// parked is true while the session waits in park; guarded by s.mu.
	parked bool
	// handedOver is set when the session ended because the next daemon
	// serves its connection now.
	handedOver bool
}

func newSession(s *Server, c *net.UnixConn) *session {
	ss := &session{s: s, c: c, slots: make(chan struct{}, s.maxInFlight), holder: &registry.Holder{}, ended: make(chan struct{})}
	ss.ctx, ss.cancel = context.WithCancel(s.ctx)
	return ss
}

// stop makes the session's run return soon: it cancels the session's
// requests and wakes its blocked read.
func (ss *session) stop() {
	ss.cancel()
	ss.c.SetDeadline(time.Now())
}

// bufPool holds request buffers, so that an idle connection holds none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, wire.MaxMessageSize); return &b }}

func (ss *session) run() {
	// "client disconnected" is logged only once the connection is closed
	// and its references are released, so that the line means the daemon
	// is done with it.
	connected := false
	defer func() {
		ss.cancel()
		ss.wg.Wait()
		if ss.handedOver {
			// The next daemon serves the connection and holds its
			// references: close this process's copy only.
			ss.c.Close()
			return
		}
		// The connection is the crash signal: whatever it held goes.
		if n := ss.s.registry.ReleaseHolder(ss.holder); n > 0 && ss.log != nil {
			ss.log.Info("released references of a closed connection", "refs", n)
		}
		ss.c.Close()
		if connected {
			ss.log.Debug("client disconnected")
		}
	}()
	raw, err := ss.c.SyscallConn()
	if err != nil {
		ss.s.log.Error("session setup failed", "err", err)
		return
	}
	ss.raw = raw
	if ss.imported {
		// Identified when the previous daemon accepted it, and counted
		// against no limit: what was admitted stays admitted.
		ss.log = ss.s.log.With("uid", ss.caller.UID, "gid", ss.caller.GID, "pid", ss.caller.PID)
		ss.s.count(ss)
		defer ss.s.leave(ss)
		connected = true
		if id := ss.upgradeReply; id != nil {
			ss.reply(&wire.Reply{V: wire.Version, ID: *id, Upgrade: ss.s.upgraded}, handout{})
		}
		if !ss.readLoop() {
			<-ss.ended
		}
		return
	}
	caller, err := peer.Credentials(ss.c)
	if err != nil {
		ss.s.log.Error("cannot identify caller; closing connection", "err", err)
		return
	}
	ss.caller = caller
	ss.holder = &registry.Holder{UID: caller.UID, PID: caller.PID}
	ss.log = ss.s.log.With("uid", caller.UID, "gid", caller.GID, "pid", caller.PID)
	if err := ss.s.admit(ss); err != nil {
		ss.log.Warn("connection refused", "code", wire.CodeLimitExceeded, "err", toWire(err).Message)
		ss.reply(&wire.Reply{V: wire.Version, Error: toWire(err)}, handout{})
		return
	}
	defer ss.s.leave(ss)
	ss.log.Debug("client connected")
	connected = true

	if !ss.readLoop() {
		<-ss.ended // another goroutine reads now, until the end
	}
}

// readLoop reads and serves requests until the connection ends, when it
// returns true, or until it has handed the reading over to a new goroutine
// to wait on a connect, when it returns false once that connect is
// answered.
//
// A connect is served by the reader itself as long as it does not wait: a
// connect to an address that finishes at once (any on this host) then
// costs no goroutine and no thread wake-up. When the connect must wait
// (a DNS lookup, a handshake with a remote peer), a new goroutine becomes
// the reader first, so that the connection's other requests are never
// held up by it.
func (ss *session) readLoop() bool {
	for {
		idle := ss.s.idleTimeout()
		deadline := time.Time{} // none: a reload may have turned idle closing off
		if idle > 0 {
			deadline = time.Now().Add(idle)
		}
		ss.c.SetReadDeadline(deadline)
		if ss.ctx.Err() != nil { // stop() may have run before the line above
			return true
		}
		if ss.s.pausing() { // Pause may have run before the line above too
			if ss.park() {
				continue
			}
			return true
		}
		bp, n, err := ss.readPacket()
		if errors.Is(err, os.ErrDeadlineExceeded) && ss.s.pausing() {
			continue // park at the top
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && ss.ctx.Err() == nil {
			if len(ss.slots) == 0 && ss.s.registry.Holds(ss.holder) == 0 {
				ss.log.Info("closing idle connection", "idle", idle)
				return true
			}
			continue // busy or holding sockets: keep it
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && ss.ctx.Err() == nil {
				ss.log.Debug("read failed; closing connection", "err", err)
			}
			return true
		}
		req, derr := wire.DecodeRequest((*bp)[:n])
		bufPool.Put(bp)
		if derr != nil {
			ss.fail(req, derr)
			continue
		}
		if req.Op == wire.OpUpgrade {
			ss.startUpgrade(req)
			continue
		}
		if !blocking(req.Op) {
			// Answered from memory and a few non-blocking syscalls:
			// serving it here spares a goroutine and a thread wake-up.
			rep, out := ss.handle(req, nil)
			ss.reply(rep, out)
			continue
		}
		select {
		case ss.slots <- struct{}{}:
		default:
			e := wire.Errorf(wire.CodeLimitExceeded, "more than %d requests in flight on this connection; wait for replies", cap(ss.slots))
			e.Unseen = true
			ss.s.limitHit(metrics.LimitInFlight)
			ss.fail(req, e)
			continue
		}
		if req.Op != wire.OpConnect {
			ss.wg.Add(1)
			go func() {
				defer func() { <-ss.slots; ss.wg.Done() }()
				rep, out := ss.handle(req, nil)
				ss.reply(rep, out)
			}()
			continue
		}
		moved := false
		rep, out := ss.handle(req, func() {
			if !moved {
				moved = true
				ss.wg.Add(1) // this goroutine now serves one request
				go ss.takeOver()
			}
		})
		ss.reply(rep, out)
		<-ss.slots
		if moved {
			ss.wg.Done()
			return false
		}
	}
}

// takeOver reads for the session after the reader went to wait on a
// connect, and tells run when the connection has ended.
func (ss *session) takeOver() {
	if ss.readLoop() {
		// The connection has ended: stop the connect run's goroutine
		// may still wait on, so that cleanup is not held up by it.
		ss.cancel()
		close(ss.ended)
	}
}

// blocking reports the ops that may wait on the network or the disk:
// connect resolves names and waits for handshakes, reload reads the
// configuration. They count against the connection's in-flight limit. A
// reload runs on a goroutine of its own; a connect starts on the reader
// and moves the reading elsewhere if it has to wait (see readLoop). Every
// other op is served by the reader, in order.
func blocking(op wire.Op) bool {
	return op == wire.OpConnect || op == wire.OpReload
}

// errPacketTooLarge and errPacketFDs are read outcomes that get an error
// reply rather than ending the connection.
var (
	errPacketTooLarge = wire.Errorf(wire.CodeInvalidRequest, "request exceeds %d bytes", wire.MaxMessageSize)
	errPacketFDs      = wire.Errorf(wire.CodeInvalidRequest, "requests must not carry file descriptors")
)

// readPacket waits for one packet and reads it into a pooled buffer, taken
// only once the packet has arrived. File descriptors a client sends are
// closed at once. Oversize packets and packets with fds are answered here
// and skipped.
func (ss *session) readPacket() (*[]byte, int, error) {
	var oob [64]byte
	for {
		var (
			bp      *[]byte
			n, oobn int
			flags   int
			recvErr error
		)
		err := ss.raw.Read(func(fd uintptr) bool {
			bp = bufPool.Get().(*[]byte)
			n, oobn, flags, recvErr = rawsys.Recvmsg(int(fd), *bp, oob[:], unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
			if recvErr == unix.EAGAIN {
				bufPool.Put(bp)
				bp = nil
				return false
			}
			return true
		})
		if err == nil {
			err = recvErr
		}
		if err != nil {
			if bp != nil { // nil when Read failed before or after an EAGAIN
				bufPool.Put(bp)
			}
			return nil, 0, err
		}
		closeRights(oob[:oobn])
		switch {
		case n == 0 && oobn == 0 && flags&unix.MSG_TRUNC == 0:
			bufPool.Put(bp)
			return nil, 0, io.EOF
		case flags&unix.MSG_TRUNC != 0:
			bufPool.Put(bp)
			ss.fail(nil, errPacketTooLarge)
			continue
		case oobn > 0 || flags&unix.MSG_CTRUNC != 0:
			bufPool.Put(bp)
			ss.fail(nil, errPacketFDs)
			continue
		}
		return bp, n, nil
	}
}

// closeRights closes every fd in SCM_RIGHTS control messages.
func closeRights(oob []byte) {
	if len(oob) == 0 {
		return
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
}

// fail replies to a request that was refused before it was handled.
func (ss *session) fail(req *wire.Request, e error) {
	var id uint64
	if req != nil {
		id = req.ID
	}
	we := toWire(e)
	if m := ss.s.metrics; m != nil {
		var op wire.Op // "" counts as invalid
		if req != nil {
			op = req.Op
		}
		m.Refused(op, we.Code)
		if we.Code == wire.CodeDenied {
			m.Denial("")
		}
	}
	ss.log.Info("request refused", "id", id, "code", we.Code, "err", we.Message)
	ss.reply(&wire.Reply{V: wire.Version, ID: id, Error: we}, handout{})
}

// handout is the descriptor a reply carries, if any: a file the server
// owns and closes once it is sent, or a cached socket's own descriptor lent
// by the registry and given back once it is sent.
type handout struct {
	file *os.File
	lent *registry.Grant
	sock connector.Sock // a connected socket, closed once sent
}

// lent is the handout of g, a grant the server always asks to lend: its
// lent descriptor, or nothing for a token-only grant.
func lent(g *registry.Grant) handout {
	if g.FD >= 0 {
		return handout{lent: g}
	}
	return handout{}
}

func (h handout) fd() int {
	switch {
	case h.file != nil:
		return int(h.file.Fd())
	case h.lent != nil:
		return h.lent.FD
	}
	return h.sock.FD()
}

// done closes or gives back the descriptor.
func (h handout) done(r *registry.Registry) {
	if h.file != nil {
		h.file.Close()
	}
	if h.lent != nil {
		r.Return(h.lent)
	}
	h.sock.Close()
}

// reply writes one reply packet, with out's descriptor as its control data
// if there is one, and then closes or gives it back: the client holds its
// own copy from here on. A client that does not take the reply within the
// write timeout is dropped.
func (ss *session) reply(rep *wire.Reply, out handout) {
	fd := out.fd()
	if fd >= 0 {
		defer out.done(ss.s.registry)
		rep.FDs = 1
	}
	b, err := wire.Encode(rep)
	if err != nil {
		// Never leave a request unanswered (a status listing too many
		// sockets is too large to send): answer with the error instead,
		// without the descriptor.
		ss.s.log.Error("encoding reply", "id", rep.ID, "err", err)
		fd = -1
		e := wire.Errorf(wire.CodeInternal, "the reply would exceed %d bytes, the protocol's limit, and was not sent", wire.MaxMessageSize)
		if b, err = wire.Encode(&wire.Reply{V: wire.Version, ID: rep.ID, Error: e}); err != nil {
			return
		}
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	ss.c.SetWriteDeadline(time.Now().Add(ss.s.writeTimeout))
	if ss.ctx.Err() != nil && ss.s.ctx.Err() != nil {
		// The server is shutting down: stop() set the deadline to now,
		// and the line above must not hold Close for the write timeout.
		ss.c.SetWriteDeadline(time.Now())
	}
	var sendErr error
	err = ss.raw.Write(func(fd uintptr) bool {
		_, sendErr = rawsys.Sendmsg(int(fd), b, oob, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return sendErr != unix.EAGAIN // full: wait until writable, or the deadline
	})
	if err == nil {
		err = sendErr
	}
	if err != nil {
		if ss.ctx.Err() == nil {
			ss.log.Info("client did not take its reply; closing connection", "id", rep.ID, "err", err)
		}
		ss.stop()
	}
}

// toWire turns any error into a typed wire error.
func toWire(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	return wire.Errorf(wire.CodeInternal, "%v", err)
}

// startUpgrade runs an admin's upgrade request on a goroutine of its own,
// so that this session parks like every other while the daemon hands
// over. On success the next daemon answers the request on this same
// connection (see Server.Import); on failure this one does.
func (ss *session) startUpgrade(req *wire.Request) {
	if !ss.s.policy.Load().Admin(&ss.caller) {
		ss.log.Warn("deny", "op", wire.OpUpgrade, "err", "not an admin")
		ss.fail(req, wire.Errorf(wire.CodeDenied, "uid %d is not an admin: upgrade needs a rule with admin = true (or send SIGUSR2)", ss.caller.UID))
		return
	}
	if ss.s.upgrade == nil {
		ss.fail(req, wire.Errorf(wire.CodeInvalidRequest, "this daemon cannot upgrade"))
		return
	}
	// Decided before the request is recorded: a request refused as busy
	// is never handed over, and the one that runs is answered once.
	if !ss.s.BeginUpgrade() {
		ss.fail(req, wire.Errorf(wire.CodeInternal, "an upgrade is already in progress; this daemon (pid %d) keeps serving with nothing lost", os.Getpid()))
		return
	}
	id := req.ID
	ss.mu.Lock()
	ss.upgradeReply = &id
	ss.mu.Unlock()
	ss.s.upgrades.Add(1)
	go func() {
		defer ss.s.upgrades.Done()
		defer ss.s.EndUpgrade()
		err := ss.s.upgrade(ss.s.ctx)
		ss.mu.Lock()
		ss.upgradeReply = nil
		ss.mu.Unlock()
		if err != nil {
			ss.log.Warn("upgrade failed; this daemon keeps serving", "id", id, "err", err)
			ss.reply(&wire.Reply{V: wire.Version, ID: id, Error: toWire(err)}, handout{})
		}
	}()
}
