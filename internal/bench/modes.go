package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
)

// mode is one kind of operation the tool measures.
type mode struct {
	// name is the mode's name on the command line and in reports.
	name string
	// floor names the mode it is compared with; empty for a floor.
	floor string
	// roundTrips is how many request/reply exchanges one operation takes.
	roundTrips int
	// uses says what the mode needs set up.
	uses need
	// newClient sets one client up: its first operation has succeeded
	// when it returns.
	newClient func(e *env) (op, closer, error)
}

// need is a set of things a mode needs.
type need uint8

const (
	needSink need = 1 << iota
	needDaemon
	needClearwater
	needFDPass
	needShared
	needClearwaterPeer
	needCC // a C compiler, to build the C floor
)

// modes in the order they run for each number of clients: each floor next
// to the modes compared with it, so that they see the same machine.
var modes = []*mode{
	{name: "direct-connect", roundTrips: 0, uses: needSink, newClient: newDirectConnect},
	{name: "fdpass", roundTrips: 1, uses: needFDPass, newClient: fdPassClient("fdpass")},
	{name: "fdpass-threads", roundTrips: 1, uses: needFDPass, newClient: fdPassClient("fdpass-threads")},
	{name: "fdpass-c", roundTrips: 1, uses: needFDPass | needCC, newClient: fdPassClient("fdpass-c")},
	{name: "fdpass-c-epoll", roundTrips: 1, uses: needFDPass | needCC, newClient: fdPassClient("fdpass-c-epoll")},
	{name: "connect", floor: "connect-floor", roundTrips: 1, uses: needSink | needDaemon, newClient: newConnect},
	{name: "clearwater", floor: "connect-floor", roundTrips: 1, uses: needSink | needDaemon | needClearwater, newClient: newClearwater},
	{name: "clearwater-peer", floor: "connect-floor", roundTrips: 1, uses: needSink | needClearwaterPeer, newClient: newClearwaterPeer},
	{name: "handoff", floor: "fdpass-floor", roundTrips: 1, uses: needDaemon | needShared, newClient: newHandoff},
	{name: "handoff-release", floor: "fdpass-floor", roundTrips: 2, uses: needDaemon | needShared, newClient: newHandoffRelease},
	{name: "pickup", floor: "fdpass-floor", roundTrips: 2, uses: needDaemon | needShared, newClient: newPickup},
	{name: "direct-bind", roundTrips: 0, newClient: newDirectBind},
}

// derivedFloors are floors computed from the measured ones of the same
// round and number of clients, never run themselves:
//
//   - fdpass-floor is the fastest of the fd-passing floors: the least any
//     server here needs to answer a request with a descriptor.
//   - connect-floor is a connect made directly and its descriptor passed
//     on, one after the other: 1/(1/direct-connect + 1/fdpass-floor)
//     operations per second. A brokered connect does both; it cannot beat
//     their sum.
var derivedFloors = map[string][]string{
	"fdpass-floor":  {"fdpass", "fdpass-threads", "fdpass-c", "fdpass-c-epoll"},
	"connect-floor": {"direct-connect", "fdpass-floor"},
}

// ModeNames lists the modes, in the order they run.
func ModeNames() []string {
	var names []string
	for _, m := range modes {
		names = append(names, m.name)
	}
	return names
}

// selectModes returns the named modes and their floors, in run order.
// "all" leaves out the modes that need a server the caller names
// (clearwater-peer) when none is named; asking for one by name without it
// is an error.
func selectModes(names []string, o *Options) ([]*mode, error) {
	haveCC := cCompiler() != ""
	var want map[string]bool
	var addFloor func(string)
	addFloor = func(f string) {
		if parts, ok := derivedFloors[f]; ok {
			for _, p := range parts {
				addFloor(p)
			}
			return
		}
		want[f] = true
	}
	if len(names) == 0 || (len(names) == 1 && names[0] == "all") {
		var out []*mode
		for _, m := range modes {
			if (m.uses&needClearwaterPeer == 0 || o.ClearwaterPeer != "") && (m.uses&needCC == 0 || haveCC) {
				out = append(out, m)
			}
		}
		return out, nil
	}
	want = map[string]bool{}
	named := map[string]bool{}
	for _, n := range names {
		found := false
		for _, m := range modes {
			if m.name == n {
				want[n], named[n], found = true, true, true
				if m.floor != "" {
					addFloor(m.floor)
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown mode %q: want all or some of %s", n, strings.Join(ModeNames(), ", "))
		}
		if n == "clearwater-peer" && o.ClearwaterPeer == "" {
			return nil, errors.New("mode clearwater-peer measures the daemon given with -clearwater-peer PATH; give its socket")
		}
	}
	var out []*mode
	for _, m := range modes {
		if !want[m.name] {
			continue
		}
		if m.uses&needCC != 0 && !haveCC {
			if named[m.name] {
				return nil, fmt.Errorf("mode %s builds a C program: no C compiler (install gcc, or set CC)", m.name)
			}
			continue // a floor part that cannot be had: the others stand
		}
		out = append(out, m)
	}
	return out, nil
}

// cCompiler returns the path of the C compiler ($CC, else cc), or "".
func cCompiler() string {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	p, err := exec.LookPath(cc)
	if err != nil {
		return ""
	}
	return p
}

// serverInfo names the process a mode's requests are served by.
type serverInfo struct {
	name string
	pid  int
}

func (m *mode) server(e *env) serverInfo {
	switch {
	case m.uses&needDaemon != 0:
		return serverInfo{"sockfactoryd", e.daemonPID}
	case m.uses&needClearwaterPeer != 0:
		return serverInfo{"clearwater-peer", e.peerPID}
	case m.uses&needFDPass != 0 && e.floors[m.name] != nil:
		return serverInfo{m.name, e.floors[m.name].pid()}
	}
	return serverInfo{}
}

// setUp runs the client's first operation, so that connections exist and
// failures show before anything is timed.
func setUp(f op, c closer) (op, closer, error) {
	if err := f(); err != nil {
		c()
		return nil, nil, err
	}
	return f, c, nil
}

// newConnect is the brokered connect through the native protocol: one
// persistent daemon connection per client (a Client of its own), each
// operation a ConnectFile to the sink and a close of the socket.
func newConnect(e *env) (op, closer, error) {
	c := &sockfactory.Client{Socket: e.socket}
	ctx := context.Background()
	return setUp(func() error {
		f, err := c.ConnectFile(ctx, "tcp", e.sinkAddr, 0)
		if err != nil {
			return err
		}
		return abortiveClose(f)
	}, func() { c.Close() })
}

// releaseBatch is how many references a handoff or pickup client
// collects before it closes its daemon connection, which releases them all
// at once, and opens a new one. The cost of that release and of the new
// connection is part of the measured time and of the daemon's CPU.
const releaseBatch = 1000

// batchClient is a daemon connection (a Client of its own) that is
// replaced every releaseBatch operations.
type batchClient struct {
	socket string
	c      *sockfactory.Client
	n      int
}

// next returns the Client for one more operation.
func (b *batchClient) next() *sockfactory.Client {
	if b.c == nil || b.n == releaseBatch {
		if b.c != nil {
			b.c.Close()
		}
		b.c, b.n = &sockfactory.Client{Socket: b.socket}, 0
	}
	b.n++
	return b.c
}

func (b *batchClient) close() {
	if b.c != nil {
		b.c.Close()
	}
}

// newHandoff is the broker's own cost, one request for one fd as the fdpass
// floor: BindFile of the already cached shared socket (share mode any), and
// a close of the received copy. The reference it takes is released when
// the client's connection closes, every releaseBatch operations, as when a
// program that took its sockets exits.
func newHandoff(e *env) (op, closer, error) {
	bc := &batchClient{socket: e.socket}
	ctx := context.Background()
	lo := &sockfactory.ListenOptions{Share: "any"}
	return setUp(func() error {
		f, b, err := bc.next().BindFile(ctx, "tcp", e.shared, lo)
		if err != nil {
			return err
		}
		f.Close()
		if !b.Shared {
			return fmt.Errorf("bind of %s was not served from the cache", e.shared)
		}
		return nil
	}, bc.close)
}

// newHandoffRelease is a handoff whose reference is given back at once:
// BindFile of the cached shared socket, close the received copy, Release.
func newHandoffRelease(e *env) (op, closer, error) {
	c := &sockfactory.Client{Socket: e.socket}
	ctx := context.Background()
	lo := &sockfactory.ListenOptions{Share: "any"}
	return setUp(func() error {
		f, b, err := c.BindFile(ctx, "tcp", e.shared, lo)
		if err != nil {
			return err
		}
		f.Close()
		if !b.Shared {
			c.Release(ctx, b.Token)
			return fmt.Errorf("bind of %s was not served from the cache", e.shared)
		}
		return c.Release(ctx, b.Token)
	}, func() { c.Close() })
}

// newPickup is the two-phase bind: BindToken of the shared socket, Pickup
// of the token by the same connection, close the received copy. The
// reference goes with the connection, as in newHandoff.
func newPickup(e *env) (op, closer, error) {
	bc := &batchClient{socket: e.socket}
	ctx := context.Background()
	lo := &sockfactory.ListenOptions{Share: "any"}
	return setUp(func() error {
		c := bc.next()
		b, err := c.BindToken(ctx, "tcp", e.shared, lo)
		if err != nil {
			return err
		}
		f, _, err := c.Pickup(ctx, b.Token)
		if err != nil {
			return err
		}
		return f.Close()
	}, bc.close)
}

// newClearwater is a Clearwater client as the original C clients are
// written: blocking calls, a new UNIX stream connection per request, one
// send of "host:port", one recvmsg of 1 byte and one fd.
func newClearwater(e *env) (op, closer, error) { return clearwaterClient(e, e.cwSocket) }

// newClearwaterPeer is the same client against the Clearwater-protocol
// daemon the caller named, which must allow 127.0.0.1.
func newClearwaterPeer(e *env) (op, closer, error) { return clearwaterClient(e, e.o.ClearwaterPeer) }

func clearwaterClient(e *env, path string) (op, closer, error) {
	req := []byte(e.sinkAddr)
	return setUp(func() error {
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		defer unix.Close(s)
		if err := setRecvTimeout(s); err != nil {
			return err
		}
		if err := unix.Connect(s, &unix.SockaddrUnix{Name: path}); err != nil {
			return os.NewSyscallError("connect", err)
		}
		if _, err := unix.Write(s, req); err != nil {
			return os.NewSyscallError("send", err)
		}
		fd, b, err := recvOneFD(s)
		if err != nil {
			return fmt.Errorf("clearwater reply: %w", err)
		}
		if b != ' ' {
			unix.Close(fd)
			return fmt.Errorf("clearwater reply byte %#x, want 0x20", b)
		}
		return abortiveCloseFD(fd)
	}, func() {})
}

// newDirectConnect is the connect floor: the client's own socket() and
// connect() to the sink, then the same close as the brokered modes.
func newDirectConnect(e *env) (op, closer, error) {
	sa := &unix.SockaddrInet4{Port: e.sinkPort, Addr: [4]byte{127, 0, 0, 1}}
	return setUp(func() error {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		if err := unix.Connect(s, sa); err != nil {
			unix.Close(s)
			return os.NewSyscallError("connect", err)
		}
		return abortiveCloseFD(s)
	}, func() {})
}

// newDirectBind is the bind floor: the client's own socket(), SO_REUSEADDR
// (as the daemon sets), bind() to 127.0.0.1:0, listen(), close().
func newDirectBind(*env) (op, closer, error) {
	sa := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	return setUp(func() error {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		defer unix.Close(s)
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
		if err := unix.Bind(s, sa); err != nil {
			return os.NewSyscallError("bind", err)
		}
		if err := unix.Listen(s, 4096); err != nil {
			return os.NewSyscallError("listen", err)
		}
		return nil
	}, func() {})
}

// newFDPass is the handoff floor's client: one SOCK_SEQPACKET connection
// to the minimal fd-passing server, each operation a 1-byte send and one
// recvmsg of 1 byte and one fd, which it closes.
// fdPassClient returns the client of the fdpass floor server of mode
// name: one byte sent, one byte and one descriptor received, closed.
func fdPassClient(name string) func(e *env) (op, closer, error) {
	return func(e *env) (op, closer, error) {
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, nil, os.NewSyscallError("socket", err)
		}
		if err := setRecvTimeout(s); err != nil {
			unix.Close(s)
			return nil, nil, err
		}
		if err := unix.Connect(s, &unix.SockaddrUnix{Name: e.floorSockets[name]}); err != nil {
			unix.Close(s)
			return nil, nil, os.NewSyscallError("connect", err)
		}
		req := []byte{1}
		return setUp(func() error {
			if _, err := unix.Write(s, req); err != nil {
				return os.NewSyscallError("send", err)
			}
			fd, _, err := recvOneFD(s)
			if err != nil {
				return fmt.Errorf("%s reply: %w", name, err)
			}
			return unix.Close(fd)
		}, func() { unix.Close(s) })
	}
}

// recvTimeout bounds each blocking receive of the raw-syscall clients, so
// that a stuck server cannot hang the tool.
const recvTimeout = 20

func setRecvTimeout(s int) error {
	tv := unix.Timeval{Sec: recvTimeout}
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt SO_RCVTIMEO", err)
	}
	return nil
}

// recvOneFD reads one reply of one byte that must carry exactly one fd,
// which the caller owns. Every fd that arrives is closed on error.
func recvOneFD(s int) (int, byte, error) {
	var (
		buf [1]byte
		oob [64]byte
	)
	var (
		n, oobn, flags int
		err            error
	)
	// These are raw blocking calls with a receive timeout: the kernel does
	// not restart them after a signal, and the Go runtime signals threads
	// to preempt goroutines, so EINTR is an expected outcome here.
	for {
		n, oobn, flags, _, err = unix.Recvmsg(s, buf[:], oob[:], unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return -1, 0, os.NewSyscallError("recvmsg", err)
	}
	fds, perr := parseRights(oob[:oobn])
	switch {
	case perr != nil:
		err = perr
	case flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0:
		err = errors.New("reply truncated")
	case n != 1:
		err = fmt.Errorf("reply of %d bytes, want 1 (0: the server closed the connection)", n)
	case len(fds) != 1:
		err = fmt.Errorf("reply carried %d fds, want 1", len(fds))
	}
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, 0, err
	}
	return fds[0], buf[0], nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return fds, err
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// abortiveClose closes a connected TCP socket with SO_LINGER 0 (a reset,
// no TIME_WAIT), as abortiveCloseFD.
func abortiveClose(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptLinger(int(fd), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}); err != nil {
		serr = err
	}
	cerr := f.Close()
	if serr != nil {
		return os.NewSyscallError("setsockopt SO_LINGER", serr)
	}
	return cerr
}

// abortiveCloseFD closes a connected TCP socket with SO_LINGER 0. Every
// connect mode and its floor close this way: tens of thousands of
// connections a second closed normally would leave as many client ports in
// TIME_WAIT and run the ephemeral port range dry within seconds.
func abortiveCloseFD(fd int) error {
	err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
	if err != nil {
		return os.NewSyscallError("setsockopt SO_LINGER", err)
	}
	return nil
}
