package sockfactory

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/paths"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// Client is a connection to a sockfactory daemon, shared by any number of
// concurrent requests. It connects on first use and connects again after the
// connection broke (for example because the daemon restarted).
//
// The zero value is ready to use and talks to DefaultSocketPath(). A Client
// must not be copied after first use. Close it when done; requests after
// Close fail with net.ErrClosed.
type Client struct {
	// Socket is the path of the daemon's native socket. Empty means
	// DefaultSocketPath().
	Socket string
	// App names this program to the daemon (1 to 64 printable ASCII
	// characters): the default share name of its bound sockets, shown in
	// status and logs. Empty declares nothing. It is sent again on every
	// new connection.
	App string

	nextID    atomic.Uint64
	slotsOnce sync.Once
	slots     chan struct{}              // one token per request in flight
	live      atomic.Pointer[clientConn] // the connection requests use; nil before first use and after Close
	wg        sync.WaitGroup             // the connections' drain goroutines

	mu       sync.Mutex
	closed   bool
	dialing  chan struct{} // non-nil while a caller connects; closed when it is done
	newConn  *clientConn   // the connection being set up (hello), for Close
	closeErr error         // what requests fail with after Close

	// References held, for reclaiming after a daemon crash (reclaim.go):
	// token to reclaim secret. quit is closed by Close.
	keepMu   sync.Mutex
	held     map[string]string
	quitOnce sync.Once
	quit     chan struct{}
}

// maxInFlight is how many requests a Client has in flight at once: the
// daemon's default limit per connection. More wait for a reply. A daemon
// configured lower refuses some with limit_exceeded; those are sent again
// once it has answered another, or after a short pause.
const maxInFlight = 64

// DefaultSocketPath returns the socket a Client uses when told none:
// $SOCKFACTORY_SOCKET if set; else the system daemon's socket
// /run/sockfactory/sockfactory.sock if it exists; else, for a non-root user,
// the per-user daemon's socket if that exists; else the system path.
func DefaultSocketPath() string { return paths.ClientSocket() }

// errClosed is what requests on a closed Client fail with.
var errClosed = fmt.Errorf("sockfactory: %w", net.ErrClosed)

// roundTrip sends req and waits for its reply. The caller owns the returned
// descriptors and must close them. If the connection turns out to be broken
// when the request is sent, it reconnects once and resends: the daemon has
// not seen the request then.
func (c *Client) roundTrip(ctx context.Context, req *wire.Request) (*wire.Reply, fdSet, error) {
	if err := ctx.Err(); err != nil {
		return nil, fdSet{}, err // as net.Dialer: nothing sent, no ErrUnavailable
	}
	slots := c.inFlight()
	select {
	case slots <- struct{}{}:
	default:
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fdSet{}, ctx.Err()
		}
	}
	defer func() { <-slots }()
	req.V = wire.Version
	req.ID = c.nextID.Add(1)
	b, err := wire.Encode(req)
	if err != nil {
		return nil, fdSet{}, fmt.Errorf("sockfactory: encoding request: %w", err)
	}
	pause := time.Millisecond // before resending a refused request
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx)
		if err != nil {
			return nil, fdSet{}, err
		}
		r, sent, err := cc.do(ctx, req.ID, b)
		if !sent {
			if attempt == 0 && ctx.Err() == nil {
				continue // the connection was stale: resend on a new one
			}
			return nil, fdSet{}, err
		}
		if err != nil {
			return nil, fdSet{}, err // ctx ended; the request is abandoned
		}
		if r.err == nil && refused(r.rep) {
			// Refused unseen: the connection had as many requests in
			// flight as the daemon allows. Resend once it has answered
			// another, or after a pause: it frees a slot just after
			// replying, and may have no other to answer.
			r.fds.close()
			t := time.NewTimer(pause)
			pause = min(2*pause, time.Second)
			select {
			case <-r.next:
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, fdSet{}, ctx.Err()
			}
			t.Stop()
			continue
		}
		return r.rep, r.fds, r.err
	}
}

// refused reports whether rep refuses its request unseen for exceeding
// the connection's in-flight limit: the request may be sent again.
func refused(rep *wire.Reply) bool {
	return rep.Error != nil && rep.Error.Code == wire.CodeLimitExceeded && rep.Error.Unseen
}

// inFlight returns the Client's in-flight tokens.
func (c *Client) inFlight() chan struct{} {
	c.slotsOnce.Do(func() { c.slots = make(chan struct{}, maxInFlight) })
	return c.slots
}

// conn returns a live connection, connecting if needed. One caller
// connects at a time, without holding c.mu; others wait for it as long as
// their ctx lets them, then use its connection or, if it failed, try
// themselves.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	if cc := c.live.Load(); cc != nil && !cc.broken.Load() {
		return cc, nil
	}
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errClosed
		}
		if cc := c.live.Load(); cc != nil && !cc.broken.Load() {
			c.mu.Unlock()
			return cc, nil
		}
		if wait := c.dialing; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.dialing = done
		c.mu.Unlock()

		cc, err := c.connect(ctx)

		c.mu.Lock()
		c.dialing = nil
		close(done)
		if err == nil {
			if c.closed {
				cc.close(errClosed)
				err = errClosed
			} else {
				c.live.Store(cc)
			}
		} else if c.closed {
			err = errClosed
		}
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return cc, nil
	}
}

// connect dials the daemon and declares c.App on the new connection. Only
// one caller at a time runs it, without c.mu held.
func (c *Client) connect(ctx context.Context) (*clientConn, error) {
	path := c.Socket
	if path == "" {
		path = DefaultSocketPath()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, unavailable(path, err)
	}
	cc, err := newClientConn(conn.(*net.UnixConn), &c.wg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: connecting to %s: %w", ErrUnavailable, path, err)
	}
	if c.App == "" && c.holding() == nil {
		return cc, nil
	}
	// Close may end the connection while hello waits for its reply.
	c.mu.Lock()
	closed := c.closed
	c.newConn = cc
	c.mu.Unlock()
	if closed {
		cc.close(errClosed)
		return nil, errClosed
	}
	if c.App != "" {
		err = c.hello(ctx, cc)
	}
	if err == nil {
		err = c.reclaimAll(ctx, cc)
	}
	c.mu.Lock()
	c.newConn = nil
	c.mu.Unlock()
	if err != nil {
		cc.close(err)
		return nil, err
	}
	return cc, nil
}

// unavailable explains a failed connect to the daemon's socket at path in
// the caller's terms: what is wrong and what to do. The result matches
// ErrUnavailable and keeps the errno reachable.
func unavailable(path string, err error) error {
	// The *net.OpError repeats the path; its syscall error says enough.
	cause := err
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		cause = oe.Err
	}
	switch {
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w: %s exists but this user (uid %d) may not open it (%w): ask an admin for the socket's group (ls -l %s shows it), or set %s (or Client.Socket) to a daemon of your own",
			ErrUnavailable, path, os.Getuid(), cause, path, paths.EnvSocket)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: no daemon socket at %s (%w): start sockfactoryd, or set %s (or Client.Socket) to its socket",
			ErrUnavailable, path, cause, paths.EnvSocket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: nothing listens on %s (%w): start sockfactoryd, or set %s (or Client.Socket) to its socket",
			ErrUnavailable, path, cause, paths.EnvSocket)
	}
	return fmt.Errorf("%w: connecting to %s: %w (set %s or Client.Socket to the daemon's socket)", ErrUnavailable, path, err, paths.EnvSocket)
}

// hello declares c.App on a new connection, before any other request.
func (c *Client) hello(ctx context.Context, cc *clientConn) error {
	rep, err := c.setup(ctx, cc, &wire.Request{Op: wire.OpHello, Hello: &wire.HelloRequest{App: c.App}})
	if err != nil {
		return err
	}
	if rep.Error != nil {
		return fromWire("hello", rep.Error)
	}
	return nil
}

// setup sends req on a new connection not yet in use (hello, reclaim) and
// returns its reply, with any descriptors it brought closed. An error
// means the connection is no good.
func (c *Client) setup(ctx context.Context, cc *clientConn, req *wire.Request) (*wire.Reply, error) {
	req.V, req.ID = wire.Version, c.nextID.Add(1)
	b, err := wire.Encode(req)
	if err != nil {
		return nil, err
	}
	r, _, err := cc.do(ctx, req.ID, b)
	if err != nil {
		return nil, err
	}
	r.fds.close()
	if r.err != nil {
		return nil, r.err
	}
	return r.rep, nil
}

// Close closes the connection to the daemon. Requests in flight fail with
// net.ErrClosed; sockets already returned stay open. Close is idempotent.
func (c *Client) Close() error {
	quit := c.quitChan()
	c.mu.Lock()
	if !c.closed {
		close(quit)
	}
	c.closed = true
	cc := c.live.Swap(nil)
	setup := c.newConn
	c.mu.Unlock()
	if cc != nil {
		cc.close(errClosed)
	}
	if setup != nil {
		setup.close(errClosed)
	}
	// Every connection is closed now, or is being set up without a hello
	// and will be closed by its dialer before any request: no drain
	// goroutine starts again. Wait for those that run.
	c.wg.Wait()
	return nil
}

// A clientConn is one daemon connection. It has no reader goroutine of its
// own: a caller waiting for a reply takes the reader token, reads packets
// itself and hands other callers' replies to their channels until its own
// arrives, then passes the token on. A caller that finds its reply
// delivered by another reader never touches the socket.
type clientConn struct {
	uc     *net.UnixConn
	broken atomic.Bool   // set once err is
	reader chan struct{} // holds the reader token while nobody reads
	// watched is set once a goroutine watches the connection for the
	// daemon hanging up (Client.watch); watchStop, while it watches, is
	// the eventfd close writes to end the watch (-1: none). Guarded by mu.
	watched   atomic.Bool
	watchStop int
	wg        *sync.WaitGroup

	// The reader token's holder alone uses these.
	rc                syscall.RawConn
	buf, oob          []byte
	iov               unix.Iovec
	msg               unix.Msghdr
	recv              func(fd uintptr) bool // recvmsg into buf and oob, for rc.Read
	rn, roobn, rflags int                   // recv's results
	rerr              error

	// A reader whose ctx ends sets a read deadline in the past to stop;
	// dl guards it against a late setting after the read is done.
	dl struct {
		sync.Mutex
		gen uint64 // counts reads watched; a stale setter does nothing
		set bool   // a deadline is set
	}

	mu        sync.Mutex
	pending   map[uint64]chan result // requests sent, by ID, with their callers waiting
	abandoned map[uint64]struct{}    // requests sent whose callers gave up
	draining  bool                   // a drain goroutine runs or is about to
	replied   chan struct{}          // non-nil after a refusal; closed at the next reply, or when broken
	err       error                  // set once the connection is broken
	dead      chan struct{}          // closed when err is set
}

// A result is what the reply to one request brought, or why none came.
type result struct {
	rep  *wire.Reply
	fds  fdSet
	err  error
	next <-chan struct{} // for a refusal: closed when the daemon answers again, or the connection breaks
}

// resultChans recycles the channels results are handed over on. A channel
// goes back only when empty and no longer known to the connection.
var resultChans = sync.Pool{New: func() any { return make(chan result, 1) }}

func newClientConn(uc *net.UnixConn, wg *sync.WaitGroup) (*clientConn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	cc := &clientConn{
		uc:        uc,
		rc:        rc,
		wg:        wg,
		reader:    make(chan struct{}, 1),
		buf:       make([]byte, wire.MaxMessageSize),
		oob:       make([]byte, unix.CmsgSpace(wire.MaxFDs*4)),
		pending:   make(map[uint64]chan result),
		dead:      make(chan struct{}),
		watchStop: -1,
	}
	cc.reader <- struct{}{}
	cc.iov.Base = &cc.buf[0]
	cc.iov.SetLen(len(cc.buf))
	cc.msg.Iov = &cc.iov
	cc.msg.SetIovlen(1)
	cc.msg.Control = &cc.oob[0]
	cc.recv = cc.recvmsg
	return cc, nil
}

// do sends the request packet b with ID id and waits for its reply. sent
// reports whether the packet went out; if not, err says why and the
// daemon has not seen the request. If ctx ends first, err is ctx.Err()
// and the request is abandoned: its reply's descriptors will be closed.
func (cc *clientConn) do(ctx context.Context, id uint64, b []byte) (r result, sent bool, err error) {
	ch := resultChans.Get().(chan result)
	if err := cc.send(id, b, ch); err != nil {
		resultChans.Put(ch)
		return result{}, false, err
	}
	r, err = cc.wait(ctx, id, ch)
	resultChans.Put(ch)
	return r, true, err
}

// send registers id with ch and writes the request packet.
func (cc *clientConn) send(id uint64, b []byte, ch chan result) error {
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		return err
	}
	cc.pending[id] = ch
	cc.mu.Unlock()
	if _, _, err := cc.uc.WriteMsgUnix(b, nil, nil); err != nil {
		err = fmt.Errorf("%w: sending request: %w", ErrUnavailable, err)
		cc.close(err)
		<-ch // close failed the request: the daemon cannot have answered it
		return err
	}
	return nil
}

// wait waits for the result of request id: delivered on ch by another
// reader, or read by this caller as the reader. If ctx ends first, it
// abandons the request and returns ctx.Err(). It leaves ch empty and
// unknown to cc.
func (cc *clientConn) wait(ctx context.Context, id uint64, ch chan result) (result, error) {
	select {
	case r := <-ch:
		return r, nil
	case <-cc.reader:
		r, err := cc.readFor(ctx, id, ch)
		if err != nil {
			cc.abandon(id, ch)
		}
		cc.reader <- struct{}{}
		return r, err
	case <-ctx.Done():
		cc.abandon(id, ch)
		return result{}, ctx.Err()
	}
}

// readFor reads packets, holding the reader token, until the reply to
// request id arrives, handing the others to their callers. It returns
// ctx.Err() if ctx ends first, with request id still pending.
func (cc *clientConn) readFor(ctx context.Context, id uint64, ch chan result) (result, error) {
	select {
	case r := <-ch:
		return r, nil // the previous reader delivered it
	default:
	}
	if ctx.Done() != nil {
		gen := cc.watchStart()
		stop := context.AfterFunc(ctx, func() { cc.expire(gen) })
		defer cc.watchEnd(stop)
	}
	for {
		r, rid, err := cc.readOne()
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				return result{}, ctx.Err()
			}
			cc.close(err)
			return <-ch, nil // close failed the request, or the reader before it delivered
		}
		if rid != id {
			cc.dispatch(r, rid)
			continue
		}
		cc.mu.Lock()
		_, ok := cc.pending[id]
		delete(cc.pending, id)
		cc.signal(&r)
		cc.mu.Unlock()
		if !ok {
			// The connection closed between the read and now, and failed
			// the request: report that, and close what the reply brought.
			r.fds.close()
			return <-ch, nil
		}
		return r, nil
	}
}

// watchStart begins a read that ctx may cut short. It returns the read's
// generation for expire.
func (cc *clientConn) watchStart() uint64 {
	cc.dl.Lock()
	defer cc.dl.Unlock()
	cc.dl.gen++
	return cc.dl.gen
}

// expire stops the read of generation gen, if it is still going on, by
// setting a read deadline in the past.
func (cc *clientConn) expire(gen uint64) {
	cc.dl.Lock()
	defer cc.dl.Unlock()
	if cc.dl.gen == gen {
		cc.dl.set = true
		cc.uc.SetReadDeadline(time.Unix(1, 0))
	}
}

// watchEnd ends a watched read: once it returns, no deadline is set, nor
// will be, for the next reader.
func (cc *clientConn) watchEnd(stop func() bool) {
	if stop() {
		return // expire never ran and never will
	}
	cc.dl.Lock()
	defer cc.dl.Unlock()
	cc.dl.gen++
	if cc.dl.set {
		cc.dl.set = false
		cc.uc.SetReadDeadline(time.Time{})
	}
}

// readOne reads one reply packet. The descriptors it brought are in the
// result, or closed if the result carries an error. An error returned
// breaks the connection.
func (cc *clientConn) readOne() (r result, id uint64, err error) {
	if err := cc.rc.Read(cc.recv); err != nil {
		return r, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if cc.rerr != nil {
		return r, 0, fmt.Errorf("%w: %w", ErrUnavailable, cc.rerr)
	}
	n, oobn, flags := cc.rn, cc.roobn, cc.rflags
	if n == 0 && oobn == 0 {
		return r, 0, fmt.Errorf("%w: daemon closed the connection", ErrUnavailable)
	}
	extra := 0
	ferr := parseRights(cc.oob[:oobn], func(fd int) {
		if r.fds.n < len(r.fds.fd) {
			r.fds.fd[r.fds.n] = fd
			r.fds.n++
			return
		}
		unix.Close(fd) // more than any reply may carry
		extra++
	})
	rep, derr := wire.DecodeReply(cc.buf[:n])
	if derr != nil || flags&unix.MSG_TRUNC != 0 {
		r.fds.close()
		return result{}, 0, fmt.Errorf("%w: undecodable reply: %v", ErrProtocol, derr)
	}
	r.rep = rep
	switch {
	case ferr != nil:
		r.err = fmt.Errorf("%w: reading passed descriptors: %w", ErrProtocol, ferr)
	case flags&unix.MSG_CTRUNC != 0:
		r.err = fmt.Errorf("%w: descriptors were truncated by the kernel", ErrProtocol)
	case rep.FDs != r.fds.n+extra:
		r.err = fmt.Errorf("%w: reply announced %d descriptors, %d arrived", ErrProtocol, rep.FDs, r.fds.n+extra)
	}
	if r.err != nil {
		r.fds.close()
	}
	return r, rep.ID, nil
}

// recvmsg is rc.Read's function: one non-blocking recvmsg(2) into buf and
// oob, without the source address that ReadMsgUnix allocates for. It
// reports false when there is nothing to read yet.
func (cc *clientConn) recvmsg(fd uintptr) bool {
	for {
		cc.msg.SetControllen(len(cc.oob))
		cc.msg.Flags = 0
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&cc.msg)), unix.MSG_CMSG_CLOEXEC)
		switch errno {
		case 0:
			cc.rn, cc.roobn, cc.rflags, cc.rerr = int(n), int(cc.msg.Controllen), int(cc.msg.Flags), nil
			return true
		case unix.EINTR:
			continue // as internal/poll does around its own calls
		case unix.EAGAIN:
			return false
		default:
			cc.rn, cc.roobn, cc.rflags, cc.rerr = 0, 0, 0, os.NewSyscallError("recvmsg", errno)
			return true
		}
	}
}

// dispatch hands the reply to request id to its caller; a reply nobody
// waits for (its caller gave up) has its descriptors closed.
func (cc *clientConn) dispatch(r result, id uint64) {
	cc.mu.Lock()
	ch, ok := cc.pending[id]
	if ok {
		delete(cc.pending, id)
	} else {
		delete(cc.abandoned, id)
	}
	cc.signal(&r)
	cc.mu.Unlock()
	if !ok {
		r.fds.close()
		return
	}
	ch <- r
}

// signal wakes requests waiting since a refusal, a reply having come, and
// gives r, if it is a refusal, the signal of the next one. cc.mu is held.
func (cc *clientConn) signal(r *result) {
	if cc.replied != nil {
		close(cc.replied)
		cc.replied = nil
	}
	if r.err == nil && cc.err == nil && refused(r.rep) {
		cc.replied = make(chan struct{})
		r.next = cc.replied
	}
}

// abandon forgets a request whose caller gave up; a reply that arrives
// later has its descriptors closed by whoever reads it, a drain goroutine
// if no caller does.
func (cc *clientConn) abandon(id uint64, ch chan result) {
	cc.mu.Lock()
	_, ok := cc.pending[id]
	if ok {
		delete(cc.pending, id)
		if cc.err == nil {
			if cc.abandoned == nil {
				cc.abandoned = make(map[uint64]struct{})
			}
			cc.abandoned[id] = struct{}{}
			if !cc.draining {
				cc.draining = true
				cc.wg.Add(1)
				go cc.drain()
			}
		}
	}
	cc.mu.Unlock()
	if !ok {
		// A reader (or close) took the request off the list first: it
		// sends its result exactly once, now or in a moment. Take it, so
		// that a socket in it is closed rather than left to the GC.
		r := <-ch
		r.fds.close()
	}
}

// drain reads, as a reader without a request of its own, until every
// abandoned request has had its reply, so that the descriptors in them
// are closed even when no other caller waits for a reply.
func (cc *clientConn) drain() {
	defer cc.wg.Done()
	select {
	case <-cc.reader:
	case <-cc.dead:
		return
	}
	defer func() { cc.reader <- struct{}{} }()
	for {
		cc.mu.Lock()
		done := len(cc.abandoned) == 0 || cc.err != nil
		if done {
			cc.draining = false
		}
		cc.mu.Unlock()
		if done {
			return
		}
		r, id, err := cc.readOne()
		if err != nil {
			cc.close(err)
			return
		}
		cc.dispatch(r, id)
	}
}

// waiting reports whether requests wait for replies on cc.
func (cc *clientConn) waiting() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err == nil && len(cc.pending)+len(cc.abandoned) > 0
}

// close marks the connection broken with err, fails every pending request
// and closes the socket. Only the first call does anything.
func (cc *clientConn) close(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	cc.broken.Store(true)
	close(cc.dead)
	if cc.replied != nil {
		close(cc.replied)
		cc.replied = nil
	}
	pending := cc.pending
	cc.pending = nil
	cc.abandoned = nil
	if cc.watchStop >= 0 {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(cc.watchStop, one[:]) // ends the watcher's wait
	}
	cc.mu.Unlock()
	// Closing the socket also closes the descriptors of replies not yet
	// read, and ends a read in progress.
	cc.uc.Close()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

// fdSet holds the descriptors that came with one reply. Whoever holds it
// owns them: it closes them, or takes one with file.
type fdSet struct {
	n  int
	fd [wire.MaxFDs]int
}

// close closes every descriptor in s.
func (s *fdSet) close() {
	for _, fd := range s.fd[:s.n] {
		unix.Close(fd)
	}
	s.n = 0
}

// file returns the only descriptor of s as a file the caller owns. s must
// hold exactly one.
func (s *fdSet) file() *os.File {
	return os.NewFile(uintptr(s.fd[0]), "sockfactory")
}

// cmsgLenSize is the size of the length field of a control message header.
const cmsgLenSize = unsafe.Sizeof(unix.Cmsghdr{}.Len)

// parseRights calls fn with every descriptor the SCM_RIGHTS messages in
// oob carry, even where it reports an error, so that none is left open
// unseen. It reports malformed control data and messages of other kinds.
func parseRights(oob []byte, fn func(fd int)) error {
	var err error
	hdr := unix.CmsgLen(0)           // header length, aligned
	align := unix.CmsgSpace(1) - hdr // alignment of a message
	levelAt := unsafe.Offsetof(unix.Cmsghdr{}.Level)
	typeAt := unsafe.Offsetof(unix.Cmsghdr{}.Type)
	for len(oob) > 0 {
		if len(oob) < unix.SizeofCmsghdr {
			return errors.Join(err, fmt.Errorf("control data: %d bytes left, too few for a header: %w", len(oob), unix.EINVAL))
		}
		var l uint64
		if cmsgLenSize == 8 {
			l = binary.NativeEndian.Uint64(oob)
		} else {
			l = uint64(binary.NativeEndian.Uint32(oob))
		}
		if l < uint64(hdr) || l > uint64(len(oob)) {
			return errors.Join(err, fmt.Errorf("control message of length %d in %d bytes: %w", l, len(oob), unix.EINVAL))
		}
		level := int32(binary.NativeEndian.Uint32(oob[levelAt:]))
		typ := int32(binary.NativeEndian.Uint32(oob[typeAt:]))
		if level == unix.SOL_SOCKET && typ == unix.SCM_RIGHTS {
			for data := oob[hdr:l]; len(data) >= 4; data = data[4:] {
				fn(int(int32(binary.NativeEndian.Uint32(data))))
			}
		} else if err == nil {
			err = fmt.Errorf("control message of level %d, type %d, want SCM_RIGHTS: %w", level, typ, unix.EINVAL)
		}
		next := (int(l) + align - 1) &^ (align - 1)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return err
}

// ConnectFile asks the daemon for a socket connected to address on network
// (tcp, tcp4, tcp6, udp, udp4, udp6) and returns it as a file in blocking
// mode, as socket(2) would create it. The caller owns the file and must
// close it. timeout, when positive, bounds the daemon's work (resolution and
// every connect attempt); ctx bounds the whole call.
func (c *Client) ConnectFile(ctx context.Context, network, address string, timeout time.Duration) (*os.File, error) {
	return c.ConnectFileWith(ctx, network, address, &ConnectOptions{Timeout: timeout})
}

// ConnectOptions adjust a connect request. The zero value (or nil) means
// the defaults.
type ConnectOptions struct {
	// Timeout, when positive, bounds the daemon's work (resolution and
	// every connect attempt).
	Timeout time.Duration
	// Netns names the network namespace the connection is made from and
	// a name resolved in: a name under /run/netns (with that namespace's
	// /etc/netns/NAME/resolv.conf and hosts), "caller" for this process's
	// own, or "" for the daemon's own. The daemon's policy must grant it
	// (a rule's netns).
	Netns string
}

// ConnectFileWith is ConnectFile with options; nil means the defaults.
func (c *Client) ConnectFileWith(ctx context.Context, network, address string, o *ConnectOptions) (*os.File, error) {
	var timeout time.Duration
	var ns string
	if o != nil {
		timeout, ns = o.Timeout, o.Netns
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); timeout <= 0 || left < timeout {
			timeout = max(left, time.Millisecond)
		}
	}
	req := &wire.Request{Op: wire.OpConnect, Connect: &wire.ConnectRequest{
		Network: network, Address: address, TimeoutMS: timeout.Milliseconds(), Netns: ns,
	}}
	rep, fds, err := c.roundTrip(ctx, req)
	if err != nil {
		return nil, err
	}
	if rep.Error != nil {
		fds.close()
		return nil, fromWire("connect", rep.Error)
	}
	if rep.Connect == nil || fds.n != 1 {
		fds.close()
		return nil, fmt.Errorf("%w: connect reply without a socket", ErrProtocol)
	}
	return fds.file(), nil
}

// DialContext connects to address on network through the daemon and returns
// the connection as a *net.TCPConn or *net.UDPConn, a native socket with no
// proxy in between. Its signature fits http.Transport.DialContext and
// grpc.WithContextDialer. Errors are *net.OpError wrapping an *Error (or
// ErrUnavailable when the daemon cannot be reached).
func (c *Client) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return dial(ctx, c, network, address, nil)
}

func dial(ctx context.Context, c *Client, network, address string, o *ConnectOptions) (net.Conn, error) {
	f, err := c.ConnectFileWith(ctx, network, address, o)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	return conn, nil
}

// stringAddr names the requested destination in errors.
type stringAddr struct{ net, addr string }

func (a stringAddr) Network() string { return a.net }
func (a stringAddr) String() string  { return a.addr }
