package sockfactory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"sockfactory/internal/paths"
	"sockfactory/internal/wire"
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

	nextID atomic.Uint64
	mu     sync.Mutex
	cc     *clientConn // current connection; nil before first use or after it broke
	closed bool
	slots  chan struct{} // one token per request in flight; made on first use
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

// roundTrip sends req and waits for its reply. The caller owns the returned
// files and must close them. If the connection turns out to be broken when
// the request is sent, it reconnects once and resends: the daemon has not
// seen the request then.
func (c *Client) roundTrip(ctx context.Context, req *wire.Request) (*wire.Reply, []*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err // as net.Dialer: nothing sent, no ErrUnavailable
	}
	slots := c.inFlight()
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	req.V = wire.Version
	req.ID = c.nextID.Add(1)
	b, err := wire.Encode(req)
	if err != nil {
		return nil, nil, fmt.Errorf("sockfactory: encoding request: %w", err)
	}
	pause := time.Millisecond // before resending a refused request
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx)
		if err != nil {
			return nil, nil, err
		}
		ch, err := cc.send(req.ID, b)
		if err != nil {
			if attempt == 0 && ctx.Err() == nil {
				continue // the connection was stale: resend on a new one
			}
			return nil, nil, err
		}
		select {
		case r := <-ch:
			if r.err == nil && r.rep.Error != nil && r.rep.Error.Code == wire.CodeLimitExceeded && r.rep.Error.Unseen {
				// Refused unseen: the connection had as many requests
				// in flight as the daemon allows. Resend once it has
				// answered another, or after a pause: it frees a slot
				// just after replying, and may have no other to answer.
				t := time.NewTimer(pause)
				pause = min(2*pause, time.Second)
				select {
				case <-r.next:
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil, nil, ctx.Err()
				}
				t.Stop()
				continue
			}
			return r.rep, r.files, r.err
		case <-ctx.Done():
			cc.abandon(req.ID, ch)
			return nil, nil, ctx.Err()
		}
	}
}

// inFlight returns the Client's in-flight tokens.
func (c *Client) inFlight() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots == nil {
		c.slots = make(chan struct{}, maxInFlight)
	}
	return c.slots
}

// conn returns a live connection, dialing one if needed.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("sockfactory: %w", net.ErrClosed)
	}
	if c.cc != nil && !c.cc.broken() {
		return c.cc, nil
	}
	path := c.Socket
	if path == "" {
		path = DefaultSocketPath()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("%w: connecting to %s: %w (is sockfactoryd running? set SOCKFACTORY_SOCKET or Client.Socket to its socket)", ErrUnavailable, path, err)
	}
	cc := newClientConn(conn.(*net.UnixConn))
	if c.App != "" {
		if err := c.hello(ctx, cc); err != nil {
			cc.close(err)
			return nil, err
		}
	}
	c.cc = cc
	return c.cc, nil
}

// hello declares c.App on a new connection, before any other request.
func (c *Client) hello(ctx context.Context, cc *clientConn) error {
	req := &wire.Request{V: wire.Version, ID: c.nextID.Add(1), Op: wire.OpHello, Hello: &wire.HelloRequest{App: c.App}}
	b, err := wire.Encode(req)
	if err != nil {
		return err
	}
	ch, err := cc.send(req.ID, b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	select {
	case r := <-ch:
		closeFiles(r.files)
		if r.err != nil {
			return r.err
		}
		if r.rep.Error != nil {
			return fromWire("hello", r.rep.Error)
		}
		return nil
	case <-ctx.Done():
		cc.abandon(req.ID, ch)
		return ctx.Err()
	}
}

// Close closes the connection to the daemon. Requests in flight fail with
// net.ErrClosed; sockets already returned stay open. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.cc != nil {
		c.cc.close(fmt.Errorf("sockfactory: %w", net.ErrClosed))
		c.cc = nil
	}
	return nil
}

type result struct {
	rep   *wire.Reply
	files []*os.File
	err   error
	next  <-chan struct{} // closed when the daemon answers again, or the connection breaks
}

// clientConn is one daemon connection with its reply reader.
type clientConn struct {
	uc      *net.UnixConn
	mu      sync.Mutex
	pending map[uint64]chan result
	err     error         // set once the connection is broken
	replied chan struct{} // closed at the next reply or when broken
}

func newClientConn(uc *net.UnixConn) *clientConn {
	cc := &clientConn{uc: uc, pending: make(map[uint64]chan result), replied: make(chan struct{})}
	go cc.readLoop()
	return cc
}

func (cc *clientConn) broken() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err != nil
}

// send registers id and writes the request packet.
func (cc *clientConn) send(id uint64, b []byte) (chan result, error) {
	ch := make(chan result, 1)
	cc.mu.Lock()
	if cc.err != nil {
		err := cc.err
		cc.mu.Unlock()
		return nil, err
	}
	cc.pending[id] = ch
	cc.mu.Unlock()
	if _, _, err := cc.uc.WriteMsgUnix(b, nil, nil); err != nil {
		err = fmt.Errorf("%w: sending request: %w", ErrUnavailable, err)
		cc.close(err)
		return nil, err
	}
	return ch, nil
}

// abandon forgets a request whose caller gave up; a reply that arrives
// later has its files closed by the reader.
func (cc *clientConn) abandon(id uint64, ch chan result) {
	cc.mu.Lock()
	_, ok := cc.pending[id]
	delete(cc.pending, id)
	cc.mu.Unlock()
	if !ok {
		// The reader (or close) took the request off the list first: it
		// sends its result exactly once, now or in a moment. Take it, so
		// that a socket in it is closed rather than left to the GC.
		r := <-ch
		closeFiles(r.files)
	}
}

// close marks the connection broken with err, fails every pending request
// and closes the socket.
func (cc *clientConn) close(err error) {
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = err
		close(cc.replied)
	}
	pending := cc.pending
	cc.pending = make(map[uint64]chan result)
	cc.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: err}
	}
	cc.uc.Close()
}

// readLoop reads replies and hands each, with its fds, to its request.
func (cc *clientConn) readLoop() {
	buf := make([]byte, wire.MaxMessageSize)
	oob := make([]byte, unix.CmsgSpace(wire.MaxFDs*4))
	for {
		n, oobn, flags, _, err := cc.uc.ReadMsgUnix(buf, oob)
		if err == nil && n == 0 && oobn == 0 {
			err = errors.New("daemon closed the connection")
		}
		if err != nil {
			cc.close(fmt.Errorf("%w: %w", ErrUnavailable, err))
			return
		}
		files, ferr := parseFiles(oob[:oobn])
		rep, derr := wire.DecodeReply(buf[:n])
		if derr != nil || flags&(unix.MSG_TRUNC) != 0 {
			closeFiles(files)
			cc.close(fmt.Errorf("%w: undecodable reply: %v", ErrProtocol, derr))
			return
		}
		r := result{rep: rep, files: files}
		switch {
		case ferr != nil:
			r.err = fmt.Errorf("%w: reading passed descriptors: %w", ErrProtocol, ferr)
		case flags&unix.MSG_CTRUNC != 0:
			r.err = fmt.Errorf("%w: descriptors were truncated by the kernel", ErrProtocol)
		case rep.FDs != len(files):
			r.err = fmt.Errorf("%w: reply announced %d descriptors, %d arrived", ErrProtocol, rep.FDs, len(files))
		}
		if r.err != nil {
			closeFiles(r.files)
			r.files = nil
		}
		cc.mu.Lock()
		ch, ok := cc.pending[rep.ID]
		delete(cc.pending, rep.ID)
		if cc.err == nil {
			close(cc.replied)
			cc.replied = make(chan struct{})
		}
		r.next = cc.replied
		cc.mu.Unlock()
		if !ok {
			closeFiles(r.files) // its caller gave up
			continue
		}
		ch <- r
	}
}

func parseFiles(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	var firstErr error
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "sockfactory"))
		}
	}
	return files, firstErr
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// ConnectFile asks the daemon for a socket connected to address on network
// (tcp, tcp4, tcp6, udp, udp4, udp6) and returns it as a file in blocking
// mode, as socket(2) would create it. The caller owns the file and must
// close it. timeout, when positive, bounds the daemon's work (resolution and
// every connect attempt); ctx bounds the whole call.
func (c *Client) ConnectFile(ctx context.Context, network, address string, timeout time.Duration) (*os.File, error) {
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); timeout <= 0 || left < timeout {
			timeout = max(left, time.Millisecond)
		}
	}
	req := &wire.Request{Op: wire.OpConnect, Connect: &wire.ConnectRequest{
		Network: network, Address: address, TimeoutMS: timeout.Milliseconds(),
	}}
	rep, files, err := c.roundTrip(ctx, req)
	if err != nil {
		return nil, err
	}
	if rep.Error != nil {
		closeFiles(files)
		return nil, fromWire("connect", rep.Error)
	}
	if rep.Connect == nil || len(files) != 1 {
		closeFiles(files)
		return nil, fmt.Errorf("%w: connect reply without a socket", ErrProtocol)
	}
	return files[0], nil
}

// DialContext connects to address on network through the daemon and returns
// the connection as a *net.TCPConn or *net.UDPConn, a native socket with no
// proxy in between. Its signature fits http.Transport.DialContext and
// grpc.WithContextDialer. Errors are *net.OpError wrapping an *Error (or
// ErrUnavailable when the daemon cannot be reached).
func (c *Client) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return dial(ctx, c, network, address, 0)
}

func dial(ctx context.Context, c *Client, network, address string, timeout time.Duration) (net.Conn, error) {
	f, err := c.ConnectFile(ctx, network, address, timeout)
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
