package sockfactory_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/server"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// guard bounds every wait of these tests on something that should happen
// at once, so that a bug fails the test instead of hanging it.
const guard = 10 * time.Second

// fakeDaemon is a scripted daemon: the test reads each request and
// decides when, in what order and with which descriptors it is answered.
type fakeDaemon struct {
	l *net.UnixListener
}

// startFake listens for the client at a new path and returns it.
func startFake(t *testing.T) (string, *fakeDaemon) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	t.Cleanup(func() { l.Close() })
	return path, &fakeDaemon{l: l}
}

// accept waits for the client's next connection.
func (f *fakeDaemon) accept(t *testing.T) *fakeConn {
	t.Helper()
	f.l.SetDeadline(time.Now().Add(guard))
	uc, err := f.l.AcceptUnix()
	if err != nil {
		t.Fatalf("accepting the client: %v", err)
	}
	t.Cleanup(func() { uc.Close() })
	return &fakeConn{uc: uc}
}

// fakeConn is the daemon's end of one client connection.
type fakeConn struct {
	uc *net.UnixConn
}

// read reads the next request.
func (c *fakeConn) read(t *testing.T) *wire.Request {
	t.Helper()
	c.uc.SetReadDeadline(time.Now().Add(guard))
	buf := make([]byte, wire.MaxMessageSize)
	n, err := c.uc.Read(buf)
	if err != nil {
		t.Fatalf("reading a request: %v", err)
	}
	req, err := wire.DecodeRequest(buf[:n])
	if err != nil {
		t.Fatalf("decoding request %q: %v", buf[:n], err)
	}
	return req
}

// fileID identifies an open file description across descriptors.
type fileID struct{ dev, ino uint64 }

func statID(t *testing.T, fd int) fileID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat: %v", err)
	}
	return fileID{uint64(st.Dev), st.Ino}
}

func fileIDOf(t *testing.T, f *os.File) fileID {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fileID{uint64(st.Dev), st.Ino}
}

// replyFD answers a connect request with a new pipe end, which it closes
// on its side once sent, and returns its identity.
func (c *fakeConn) replyFD(t *testing.T, req *wire.Request) fileID {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatalf("pipe: %v", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	id := statID(t, p[0])
	c.send(t, &wire.Reply{V: wire.Version, ID: req.ID, FDs: 1, Connect: &wire.ConnectResult{Local: "127.0.0.1:1", Remote: "127.0.0.1:2"}}, p[0])
	return id
}

// replyErr answers req with an error of code.
func (c *fakeConn) replyErr(t *testing.T, req *wire.Request, code wire.Code) {
	t.Helper()
	c.send(t, &wire.Reply{V: wire.Version, ID: req.ID, Error: &wire.Error{Code: code, Message: "scripted"}})
}

func (c *fakeConn) send(t *testing.T, rep *wire.Reply, fds ...int) {
	t.Helper()
	b, err := wire.Encode(rep)
	if err != nil {
		t.Fatal(err)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.uc.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatalf("sending reply %d: %v", rep.ID, err)
	}
}

// outcome is what one ConnectFile call returned.
type outcome struct {
	f   *os.File
	err error
}

// connectFile runs c.ConnectFile in a goroutine of its own; its outcome
// comes on the returned channel. The test must receive it.
func connectFile(ctx context.Context, c *sockfactory.Client, address string) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		f, err := c.ConnectFile(ctx, "tcp", address, 0)
		ch <- outcome{f, err}
	}()
	return ch
}

// await receives an outcome, failing the test if none comes in time.
func await(t *testing.T, ch <-chan outcome, what string) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(guard):
		t.Fatalf("%s: no result after %v", what, guard)
		return outcome{}
	}
}

// wantFile checks that o is a success whose file is the one with id, and
// closes it.
func wantFile(t *testing.T, o outcome, id fileID, what string) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("%s: %v, want a file", what, o.err)
	}
	defer o.f.Close()
	if got := fileIDOf(t, o.f); got != id {
		t.Errorf("%s: got file %v, want %v: a reply's descriptor went to another request", what, got, id)
	}
}

// warmUp makes c connect to the fake daemon with one request and returns
// the connection and the number of descriptors the process has open with
// c connected and idle.
func warmUp(t *testing.T, c *sockfactory.Client, fd *fakeDaemon) (*fakeConn, int) {
	t.Helper()
	first := connectFile(t.Context(), c, "127.0.0.1:1")
	conn := fd.accept(t)
	id := conn.replyFD(t, conn.read(t))
	wantFile(t, await(t, first, "first request"), id, "first request")
	n, err := countFDs()
	if err != nil {
		t.Fatal(err)
	}
	return conn, n
}

// wantFDs checks that the process has want descriptors open (after
// whatever closing is in progress).
func wantFDs(t *testing.T, want int, when string) {
	t.Helper()
	if got, err := waitFDs(want); got != want {
		t.Errorf("%s: %d descriptors open, want %d (%v): a descriptor of an abandoned reply was left open", when, got, want, err)
	}
}

// TestClientCancel checks that a caller whose context ends before its
// reply returns at once, whether it was reading the connection for every
// caller or waiting for another reader, that the others still get their
// replies with the right descriptors, and that the descriptor its own reply
// brings later is closed.
func TestClientCancel(t *testing.T) {
	tests := []struct {
		name string
		// cancelFirst: the cancelled call is made first, so that it
		// is the one reading; else a second call waits while the
		// first reads.
		cancelFirst bool
		// alone: no other call is in flight.
		alone bool
		// orphanFirst: the cancelled call's reply comes before the
		// other's.
		orphanFirst bool
	}{
		{"reader cancelled, its reply first", true, false, true},
		{"reader cancelled, its reply last", true, false, false},
		{"waiter cancelled, its reply first", false, false, true},
		{"waiter cancelled, its reply last", false, false, false},
		{"lone reader cancelled", true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			path, fd := startFake(t)
			c := newClient(t, path)
			conn, base := warmUp(t, c, fd)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var (
				cancelled, other       <-chan outcome
				cancelledReq, otherReq *wire.Request
			)
			if tt.cancelFirst {
				cancelled = connectFile(ctx, c, "127.0.0.1:1")
				cancelledReq = conn.read(t)
				if !tt.alone {
					other = connectFile(t.Context(), c, "127.0.0.1:2")
					otherReq = conn.read(t)
				}
			} else {
				other = connectFile(t.Context(), c, "127.0.0.1:2")
				otherReq = conn.read(t)
				cancelled = connectFile(ctx, c, "127.0.0.1:1")
				cancelledReq = conn.read(t)
			}

			cancel() // no reply has been sent yet
			if o := await(t, cancelled, "cancelled call"); !errors.Is(o.err, context.Canceled) {
				if o.f != nil {
					o.f.Close()
				}
				t.Fatalf("cancelled call: got %v, want %v", o.err, context.Canceled)
			}

			if tt.alone {
				conn.replyFD(t, cancelledReq)
				wantFDs(t, base, "after the reply to the cancelled call")
				// The Client still works: whoever read the orphan
				// reply let go of the connection.
				next := connectFile(t.Context(), c, "127.0.0.1:3")
				id := conn.replyFD(t, conn.read(t))
				wantFile(t, await(t, next, "call after the cancelled one"), id, "call after the cancelled one")
				wantFDs(t, base, "at the end")
				return
			}
			var id fileID
			if tt.orphanFirst {
				conn.replyFD(t, cancelledReq)
				id = conn.replyFD(t, otherReq)
			} else {
				id = conn.replyFD(t, otherReq)
				conn.replyFD(t, cancelledReq)
			}
			wantFile(t, await(t, other, "other call"), id, "other call")
			wantFDs(t, base, "after both replies")
		})
	}
}

// TestClientPipelineMatched checks that replies sent in another order than
// the requests, from many goroutines on one Client, each reach their
// request with their own descriptor.
func TestClientPipelineMatched(t *testing.T) {
	checkFDs(t)
	path, fd := startFake(t)
	c := newClient(t, path)
	conn, base := warmUp(t, c, fd)

	const n = 48 // below the Client's in-flight limit: all are sent at once
	calls := make(map[string]<-chan outcome, n)
	for i := range n {
		addr := fmt.Sprintf("127.0.0.1:%d", 1000+i)
		calls[addr] = connectFile(t.Context(), c, addr)
	}
	reqs := make([]*wire.Request, n)
	for i := range reqs {
		reqs[i] = conn.read(t)
	}
	rand.Shuffle(n, func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	ids := make(map[string]fileID, n)
	failed := make(map[string]bool, n)
	for i, req := range reqs {
		if i%5 == 0 {
			conn.replyErr(t, req, wire.CodeDenied)
			failed[req.Connect.Address] = true
			continue
		}
		ids[req.Connect.Address] = conn.replyFD(t, req)
	}
	for addr, ch := range calls {
		o := await(t, ch, addr)
		if failed[addr] {
			if o.f != nil {
				o.f.Close()
			}
			if !errors.Is(o.err, sockfactory.ErrDenied) {
				t.Errorf("call to %s: got %v, want %v", addr, o.err, sockfactory.ErrDenied)
			}
			continue
		}
		wantFile(t, o, ids[addr], "call to "+addr)
	}
	wantFDs(t, base, "after every reply")
}

// TestClientConcurrentMatched has many goroutines share one Client of a
// real daemon, each connecting to its own listener several times: every
// connection must reach the listener its request named.
func TestClientConcurrentMatched(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	const (
		goroutines = 32
		each       = 8
	)
	addrs := make([]string, goroutines)
	for i := range addrs {
		addrs[i] = listen(t, "tcp4", "127.0.0.1:0").Addr().String()
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for i := range goroutines {
		wg.Go(func() {
			for j := range each {
				conn, err := c.DialContext(t.Context(), "tcp", addrs[i])
				if err != nil {
					errs <- fmt.Errorf("goroutine %d, dial %d: %w", i, j, err)
					return
				}
				// The peer address comes from the socket itself.
				if got := conn.RemoteAddr().String(); got != addrs[i] {
					errs <- fmt.Errorf("goroutine %d, dial %d: connected to %s, want %s", i, j, got, addrs[i])
				}
				conn.Close()
				// A request that fails, between those that succeed.
				if _, err := c.DialContext(t.Context(), "tcp", "198.51.100.1:80"); !errors.Is(err, sockfactory.ErrDenied) {
					errs <- fmt.Errorf("goroutine %d, denied dial %d: got %v, want %v", i, j, err, sockfactory.ErrDenied)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClientConnectionBreaks checks that when the daemon's connection
// breaks with requests in flight, each of them fails once with
// ErrUnavailable, replies already sent still arrive, and the next request
// connects again.
func TestClientConnectionBreaks(t *testing.T) {
	checkFDs(t)
	path, fd := startFake(t)
	c := newClient(t, path)
	conn, base := warmUp(t, c, fd)

	const n = 10
	calls := make(map[string]<-chan outcome, n)
	for i := range n {
		addr := fmt.Sprintf("127.0.0.1:%d", 1000+i)
		calls[addr] = connectFile(t.Context(), c, addr)
	}
	answered := make(map[string]fileID)
	for i := range n {
		req := conn.read(t)
		if i%2 == 0 {
			answered[req.Connect.Address] = conn.replyFD(t, req)
		}
	}
	conn.uc.Close()
	for addr, ch := range calls {
		o := await(t, ch, addr)
		if id, ok := answered[addr]; ok {
			wantFile(t, o, id, "answered call to "+addr)
			continue
		}
		if o.f != nil {
			o.f.Close()
		}
		if !errors.Is(o.err, sockfactory.ErrUnavailable) {
			t.Errorf("call to %s in flight when the connection broke: got %v, want %v", addr, o.err, sockfactory.ErrUnavailable)
		}
		select {
		case o := <-ch:
			t.Errorf("call to %s returned twice, again with %v", addr, o.err)
		default:
		}
	}
	wantFDs(t, base-2, "after the connection broke") // both its ends are gone

	next := connectFile(t.Context(), c, "127.0.0.1:3")
	conn = fd.accept(t)
	id := conn.replyFD(t, conn.read(t))
	wantFile(t, await(t, next, "call after the break"), id, "call after the break")
}

// TestClientDaemonStops checks the same against a real daemon stopped
// while connect requests wait for a destination that never answers. The
// daemon may still answer a request it cancels (ErrInternal) before its
// connection goes (ErrUnavailable); either way each fails once.
func TestClientDaemonStops(t *testing.T) {
	checkFDs(t)
	path := filepath.Join(t.TempDir(), "sf.sock")
	stop := serveAt(t, path, server.Options{Policy: loopbackPolicy()})
	c := newClient(t, path)
	echo := startEcho(t, listen(t, "tcp4", "127.0.0.1:0"))
	hole := blackhole(t)

	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			conn, err := c.DialContext(t.Context(), "tcp", hole.String())
			if err == nil {
				conn.Close()
			}
			errs <- err
		}()
	}
	waitConnecting(t, hole)
	stop()
	for range n {
		select {
		case err := <-errs:
			if !errors.Is(err, sockfactory.ErrUnavailable) && !errors.Is(err, sockfactory.ErrInternal) {
				t.Errorf("dial in flight when the daemon stopped: got %v, want an error matching %v or %v", err, sockfactory.ErrUnavailable, sockfactory.ErrInternal)
			}
		case <-time.After(guard):
			t.Fatalf("a dial in flight did not end after the daemon stopped")
		}
	}

	serveAt(t, path, server.Options{Policy: loopbackPolicy()})
	conn, err := c.DialContext(t.Context(), "tcp", echo)
	if err != nil {
		t.Fatalf("dial after the daemon restarted: %v", err)
	}
	defer conn.Close()
	echoOnce(t, conn, "restarted")
}

// TestClientConnectNotSerialized checks that a caller stuck connecting (the
// daemon took the connection but never answers the hello) holds up no
// other caller beyond its own context, and that Close ends it.
func TestClientConnectNotSerialized(t *testing.T) {
	checkFDs(t)
	path, fd := startFake(t)
	c := newClient(t, path) // closed after t.Context() is done, which unsticks a Client that serializes
	c.App = "stuck"

	first := connectFile(t.Context(), c, "127.0.0.1:1")
	conn := fd.accept(t)
	if req := conn.read(t); req.Op != wire.OpHello {
		t.Fatalf("first request is %q, want %q", req.Op, wire.OpHello)
	}
	// The first caller now waits for the hello's reply, which never comes.

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	o := await(t, connectFile(ctx, c, "127.0.0.1:2"), "second call, while the first connects")
	if o.f != nil {
		o.f.Close()
	}
	if !errors.Is(o.err, context.DeadlineExceeded) {
		t.Fatalf("second call: got %v, want %v", o.err, context.DeadlineExceeded)
	}

	c.Close()
	o = await(t, first, "the stuck call, after Close")
	if o.f != nil {
		o.f.Close()
	}
	if !errors.Is(o.err, net.ErrClosed) {
		t.Errorf("stuck call after Close: got %v, want %v", o.err, net.ErrClosed)
	}
}

// TestClientConnectWaitersShare checks that callers arriving while another
// connects use its connection once it is up, and connect no other.
func TestClientConnectWaitersShare(t *testing.T) {
	checkFDs(t)
	path, fd := startFake(t)
	c := newClient(t, path)
	c.App = "shared"

	first := connectFile(t.Context(), c, "127.0.0.1:1")
	conn := fd.accept(t)
	hello := conn.read(t)
	if hello.Op != wire.OpHello {
		t.Fatalf("first request is %q, want %q", hello.Op, wire.OpHello)
	}
	// The second caller waits for the first's connection.
	second := connectFile(t.Context(), c, "127.0.0.1:2")
	conn.send(t, &wire.Reply{V: wire.Version, ID: hello.ID, OK: true})
	reqs := map[string]*wire.Request{}
	for range 2 {
		req := conn.read(t)
		reqs[req.Connect.Address] = req
	}
	id1 := conn.replyFD(t, reqs["127.0.0.1:1"])
	id2 := conn.replyFD(t, reqs["127.0.0.1:2"])
	wantFile(t, await(t, first, "first call"), id1, "first call")
	wantFile(t, await(t, second, "second call"), id2, "second call")
}

// TestClientCancelStorm has many goroutines share one Client, most of
// their requests cut short by deadlines that end at random points: before
// sending, while reading for others, while waiting. Every request ends
// with a socket or a context error, and once the replies are in, no
// descriptor is left open.
func TestClientCancelStorm(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	// Nothing accepts: connections wait in the backlog, outside this
	// process's descriptor table.
	addr := listen(t, "tcp4", "127.0.0.1:0").Addr().String()
	// The Client's connection will add two: its end and the daemon's. (The
	// daemon closes its copy of a socket it passed a moment after the
	// reply, so a count taken just after a request may include that.)
	base, err := countFDs()
	if err != nil {
		t.Fatal(err)
	}
	base += 2

	const (
		goroutines = 16
		each       = 40
	)
	var (
		wg        sync.WaitGroup
		cancelled atomic.Int64
	)
	errs := make(chan error, goroutines*each)
	for i := range goroutines {
		wg.Go(func() {
			for j := range each {
				timeout := time.Duration(rand.IntN(2000)) * time.Microsecond
				if j%4 == 0 {
					timeout = guard // some always get their reply
				}
				ctx, cancel := context.WithTimeout(t.Context(), timeout)
				f, err := c.ConnectFile(ctx, "tcp", addr, 0)
				cancel()
				switch {
				case err == nil:
					f.Close()
				case errors.Is(err, context.DeadlineExceeded):
					cancelled.Add(1)
				default:
					errs <- fmt.Errorf("goroutine %d, request %d: %w", i, j, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d of %d requests cut short", cancelled.Load(), goroutines*each)
	// A last request, read by this caller or a drain of abandoned
	// replies; then every abandoned reply is read and closed.
	f, err := c.ConnectFile(t.Context(), "tcp", addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	wantFDs(t, base, "after the storm")
}

// TestClientBadReplies checks that a reply whose descriptors do not match
// what it announces fails its request with ErrProtocol, with every
// descriptor that came closed, and that the connection stays usable; and
// that an undecodable reply breaks the connection with ErrProtocol.
func TestClientBadReplies(t *testing.T) {
	pipes := func(t *testing.T, n int) []int {
		t.Helper()
		var fds []int
		for range n {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			unix.Close(p[1])
			fds = append(fds, p[0])
		}
		t.Cleanup(func() {
			for _, fd := range fds {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
		})
		return fds
	}
	connect := &wire.ConnectResult{Local: "127.0.0.1:1", Remote: "127.0.0.1:2"}
	tests := []struct {
		name      string
		announced int // the reply's "fds"
		sent      int // descriptors in its control data
	}{
		{"fewer than announced", 2, 1},
		{"more than announced", 1, 2},
		{"none announced", 0, 1},
		{"more than a reply may carry", 1, wire.MaxFDs + 4}, // cut short by the kernel: MSG_CTRUNC
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			path, fd := startFake(t)
			c := newClient(t, path)
			conn, base := warmUp(t, c, fd)

			call := connectFile(t.Context(), c, "127.0.0.1:1")
			req := conn.read(t)
			fds := pipes(t, tt.sent)
			conn.send(t, &wire.Reply{V: wire.Version, ID: req.ID, FDs: tt.announced, Connect: connect}, fds...)
			for i, fd := range fds {
				unix.Close(fd)
				fds[i] = -1
			}
			o := await(t, call, "call")
			if o.f != nil {
				o.f.Close()
			}
			checkErrIs(t, o.err, sockfactory.ErrProtocol)
			wantFDs(t, base, "after the bad reply")

			next := connectFile(t.Context(), c, "127.0.0.1:2")
			id := conn.replyFD(t, conn.read(t))
			wantFile(t, await(t, next, "call after the bad reply"), id, "call after the bad reply")
		})
	}

	t.Run("undecodable", func(t *testing.T) {
		checkFDs(t)
		path, fd := startFake(t)
		c := newClient(t, path)
		conn, _ := warmUp(t, c, fd)
		first := connectFile(t.Context(), c, "127.0.0.1:1")
		conn.read(t)
		second := connectFile(t.Context(), c, "127.0.0.1:2")
		conn.read(t)
		fds := pipes(t, 1)
		if _, _, err := conn.uc.WriteMsgUnix([]byte(`{"v":1,"id":`), unix.UnixRights(fds...), nil); err != nil {
			t.Fatal(err)
		}
		for _, o := range []outcome{await(t, first, "first call"), await(t, second, "second call")} {
			if o.f != nil {
				o.f.Close()
			}
			checkErrIs(t, o.err, sockfactory.ErrProtocol)
		}
	})
}
