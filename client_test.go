package sockfactory_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/paths"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/server"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// TestMain starts the daemon the Examples talk to (through
// SOCKFACTORY_SOCKET, as a user's program would find it) and, once every test
// and example has run and it is stopped, checks that the process holds no
// more file descriptors than before.
func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	// The runtime's network poller keeps its descriptors for the life of the
	// process: create them now, so that they are part of the baseline.
	if l, err := net.Listen("tcp4", "127.0.0.1:0"); err == nil {
		l.Close()
	}
	before, err := countFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "counting descriptors:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "sockfactory-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	d, err := startDaemon(filepath.Join(dir, "sf.sock"), server.Options{Policy: loopbackPolicy()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the examples' daemon:", err)
		return 1
	}
	os.Setenv(paths.EnvSocket, d.path)

	code := m.Run()

	if err := d.close(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the examples' daemon:", err)
		code = 1
	}
	if code == 0 {
		if got, err := waitFDs(before); got != before {
			fmt.Fprintf(os.Stderr, "descriptors leaked by the tests: have %d open, want %d as before (%v)\n", got, before, err)
			code = 1
		}
	}
	return code
}

// testUID is the caller the test daemons see: this process.
var testUID = uint32(os.Getuid())

// loopbackPolicy grants testUID every port on the loopback addresses and
// on localhost, and nothing else.
func loopbackPolicy() *policy.Policy {
	return grant(testUID, "127.0.0.0/8:*", "[::1]:*", "localhost:*")
}

// grant returns a policy with one rule granting uid connect to dests.
func grant(uid uint32, dests ...string) *policy.Policy {
	r := policy.Rule{Name: "test", UIDs: []uint32{uid}}
	for _, s := range dests {
		d, err := policy.ParseDest(s)
		if err != nil {
			panic(err) // a typo in a test's table
		}
		r.Connect = append(r.Connect, d)
	}
	return &policy.Policy{Rules: []policy.Rule{r}}
}

// Names the test daemons' DNS server knows. Every other name does not exist.
var testNames = map[string][]netip.Addr{
	"loopback.sockfactory.test.": {netip.MustParseAddr("127.0.0.1")},
	// Outside every grant: a name must not smuggle a caller past them.
	"outside.sockfactory.test.": {netip.MustParseAddr("198.51.100.7")},
}

// daemon is an in-process sockfactoryd with its own DNS server, so that no
// test depends on the machine's resolver.
type daemon struct {
	path   string
	srv    *server.Server
	served chan error // Serve's result
	dns    net.PacketConn
	dnsEnd chan struct{}
	once   sync.Once
	err    error
}

// startDaemon serves the native protocol on path with options o, its
// Connector replaced by one that asks the daemon's own DNS server.
func startDaemon(path string, o server.Options) (*daemon, error) {
	dns, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &daemon{path: path, dns: dns, dnsEnd: make(chan struct{}), served: make(chan error, 1)}
	go func() {
		defer close(d.dnsEnd)
		serveDNS(dns)
	}()
	l, err := server.Listen("unixpacket", path, 0o600, -1)
	if err != nil {
		dns.Close()
		<-d.dnsEnd
		return nil, err
	}
	o.Connector = &connector.Connector{Resolver: connector.NewResolver([]string{dns.LocalAddr().String()})}
	d.srv = server.New(o)
	go func() { d.served <- d.srv.Serve(l) }()
	return d, nil
}

// close stops the daemon and waits for all of its goroutines. It is
// idempotent.
func (d *daemon) close() error {
	d.once.Do(func() {
		d.srv.Close()
		if err := <-d.served; !errors.Is(err, server.ErrServerClosed) {
			d.err = fmt.Errorf("Serve returned %v, want %v", err, server.ErrServerClosed)
		}
		d.dns.Close()
		<-d.dnsEnd
	})
	return d.err
}

// serveDNS answers queries on pc from testNames until pc is closed.
func serveDNS(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var q dnsmessage.Message
		if q.Unpack(buf[:n]) != nil || len(q.Questions) != 1 {
			continue
		}
		question := q.Questions[0]
		resp := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: q.ID, Response: true, Authoritative: true, RecursionDesired: q.RecursionDesired, RecursionAvailable: true},
			Questions: q.Questions,
		}
		addrs, ok := testNames[strings.ToLower(question.Name.String())]
		if !ok {
			resp.RCode = dnsmessage.RCodeNameError
		}
		for _, a := range addrs {
			h := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 60}
			switch {
			case question.Type == dnsmessage.TypeA && a.Is4():
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
			case question.Type == dnsmessage.TypeAAAA && a.Is6():
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
			}
		}
		if b, err := resp.Pack(); err == nil {
			pc.WriteTo(b, from)
		}
	}
}

// startServer starts a daemon granting the test loopbackPolicy and returns
// its socket path. The daemon stops when the test ends.
func startServer(t *testing.T) string {
	t.Helper()
	return startServerPolicy(t, loopbackPolicy())
}

// startServerPolicy starts a daemon under policy p in a new directory and
// returns its socket path.
func startServerPolicy(t *testing.T, p *policy.Policy) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sf.sock")
	serveAt(t, path, server.Options{Policy: p})
	return path
}

// serveAt starts a daemon on path with options o, logging to the test's
// output. The returned stop, also called when the test ends, stops it and
// waits for it.
func serveAt(t *testing.T, path string, o server.Options) (stop func()) {
	t.Helper()
	o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := startDaemon(path, o)
	if err != nil {
		t.Fatalf("starting daemon on %s: %v", path, err)
	}
	stop = func() {
		t.Helper()
		if err := d.close(); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// newClient returns a Client of the daemon at path, closed when the test
// ends.
func newClient(t *testing.T, path string) *sockfactory.Client {
	t.Helper()
	c := &sockfactory.Client{Socket: path}
	t.Cleanup(func() { c.Close() })
	return c
}

// countFDs returns the number of descriptors the process has open.
func countFDs() (int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	return len(ents), err
}

// waitFDs waits, boundedly, until the process has want descriptors open:
// sockets closed by other goroutines go away asynchronously. It returns the
// last count.
func waitFDs(want int) (int, error) {
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := countFDs()
		if err != nil || got == want || time.Now().After(deadline) {
			return got, err
		}
		<-tick.C
	}
}

// checkFDs makes the test fail if it ends with more (or fewer) descriptors
// open than it started with. Call it first, so that its check runs after
// every other cleanup.
func checkFDs(t *testing.T) {
	t.Helper()
	before, err := openFDs()
	if err != nil {
		t.Fatalf("listing descriptors: %v", err)
	}
	t.Cleanup(func() {
		if got, err := waitFDs(len(before)); got != len(before) {
			after, _ := openFDs()
			t.Errorf("descriptors open after the test: got %d, want %d as before it (%v)\nopened: %v\nclosed: %v",
				got, len(before), err, fdDiff(after, before), fdDiff(before, after))
		}
	})
}

// openFDs returns what each open descriptor of the process refers to.
func openFDs() (map[string]string, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	fds := make(map[string]string, len(ents))
	for _, e := range ents {
		fds[e.Name()], _ = os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
	}
	return fds, nil
}

// fdDiff lists the descriptors in a that are not, or not the same, in b.
func fdDiff(a, b map[string]string) []string {
	var d []string
	for fd, target := range a {
		if b[fd] != target {
			d = append(d, fd+"->"+target)
		}
	}
	slices.Sort(d)
	return d
}

// skipNoIPv6 skips a test that needs IPv6 loopback where there is none,
// and fails it instead under SOCKFACTORY_REQUIRE_ROOT=1 (CI has ::1).
func skipNoIPv6(t *testing.T, err error) {
	t.Helper()
	testnet.SkipOrFail(t, fmt.Sprintf("no IPv6 loopback: %v; enable ::1 on lo to run this test", err))
}

// listen listens on network at address, skipping the test if address is
// IPv6 and the machine has no IPv6 loopback.
func listen(t *testing.T, network, address string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, address)
	if err != nil {
		if strings.HasSuffix(network, "6") {
			skipNoIPv6(t, err)
		}
		t.Fatalf("listen %s %s: %v", network, address, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// startEcho runs a TCP server on l that echoes every connection until its
// peer closes it. The server, and any connection still open, is closed when
// the test ends.
func startEcho(t *testing.T, l net.Listener) string {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				// Not io.Copy: between two TCP conns it splices through
				// a pipe the runtime caches until a GC, which would
				// show as descriptors the test left open.
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// echoOnce sends msg on c and checks that it comes back.
func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

// closedPort returns a loopback address on which nothing listens, held
// until the test ends so that nothing can (testnet.ClosedPort).
func closedPort(t *testing.T) string {
	t.Helper()
	return testnet.ClosedPort(t).String()
}

// blackhole returns a loopback address where connect hangs: a listener
// with a backlog of 0 whose accept queue holds one connection nobody
// accepts, so that the kernel drops every further SYN.
func blackhole(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	filler, err := net.Dial("tcp4", ap.String())
	if err != nil {
		t.Fatalf("filling the accept queue of %s: %v", ap, err)
	}
	t.Cleanup(func() { filler.Close() })
	return ap
}

// waitConnecting waits, boundedly, until some socket of this network
// namespace is in SYN_SENT towards ap: the daemon is connecting there.
func waitConnecting(t *testing.T, ap netip.AddrPort) {
	t.Helper()
	// /proc/net/tcp shows 127.0.0.1:port as 0100007F:PORT, state 02 SYN_SENT.
	a := ap.Addr().As4()
	remote := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		f, err := os.Open("/proc/net/tcp")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 3 && fields[2] == remote && fields[3] == "02" {
				f.Close()
				return
			}
		}
		f.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no connect to %s in progress after 10s: the request did not reach the daemon", ap)
		}
		<-tick.C
	}
}

// sentinels are the errors a caller branches on; an error matches exactly
// the ones it should.
var sentinels = []struct {
	name string
	err  error
}{
	{"ErrInvalidRequest", sockfactory.ErrInvalidRequest},
	{"ErrUnsupportedVersion", sockfactory.ErrUnsupportedVersion},
	{"ErrDenied", sockfactory.ErrDenied},
	{"ErrResolveFailed", sockfactory.ErrResolveFailed},
	{"ErrConnectFailed", sockfactory.ErrConnectFailed},
	{"ErrTimeout", sockfactory.ErrTimeout},
	{"ErrLimitExceeded", sockfactory.ErrLimitExceeded},
	{"ErrInternal", sockfactory.ErrInternal},
	{"ErrUnavailable", sockfactory.ErrUnavailable},
	{"ErrProtocol", sockfactory.ErrProtocol},
	{"net.ErrClosed", net.ErrClosed},
}

// checkErrIs checks that err matches every error in want with errors.Is
// and no sentinel that is not in want.
func checkErrIs(t *testing.T, err error, want ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one matching %v", want)
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Errorf("errors.Is(%v, %v) = false, want true", err, w)
		}
	}
	for _, s := range sentinels {
		wanted := false
		for _, w := range want {
			wanted = wanted || w == s.err
		}
		if !wanted && errors.Is(err, s.err) {
			t.Errorf("errors.Is(%v, %s) = true, want false", err, s.name)
		}
	}
}

// checkDialOpError checks that err is the *net.OpError of a dial to
// address on network, as net.Dialer would return.
func checkDialOpError(t *testing.T, err error, network, address string) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("error %v (%T) is no *net.OpError", err, err)
	}
	if oe.Op != "dial" || oe.Net != network || oe.Addr == nil || oe.Addr.String() != address {
		t.Errorf("OpError{Op: %q, Net: %q, Addr: %v}, want {%q, %q, %s}", oe.Op, oe.Net, oe.Addr, "dial", network, address)
	}
}

func TestDialContextTCP(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	tests := []struct {
		listenNet, listenHost string // where the server listens
		dialNet, dialHost     string // what the client asks for
	}{
		{"tcp4", "127.0.0.1", "tcp", "127.0.0.1"},
		{"tcp4", "127.0.0.1", "tcp4", "127.0.0.1"},
		{"tcp4", "127.0.0.1", "tcp", "localhost"},
		{"tcp4", "127.0.0.1", "tcp4", "localhost"},
		{"tcp4", "127.0.0.1", "tcp", "loopback.sockfactory.test"},
		{"tcp6", "::1", "tcp", "::1"},
		{"tcp6", "::1", "tcp6", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.dialNet+"/"+tt.dialHost, func(t *testing.T) {
			l := listen(t, tt.listenNet, net.JoinHostPort(tt.listenHost, "0"))
			_, port, _ := net.SplitHostPort(l.Addr().String())
			address := net.JoinHostPort(tt.dialHost, port)

			conn, err := c.DialContext(t.Context(), tt.dialNet, address)
			if err != nil {
				t.Fatalf("DialContext(%q, %q): %v", tt.dialNet, address, err)
			}
			defer conn.Close()
			tc, ok := conn.(*net.TCPConn)
			if !ok {
				t.Fatalf("DialContext returned a %T, want *net.TCPConn", conn)
			}
			peer, err := l.Accept()
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			defer peer.Close()
			// A native socket: the two ends see each other's addresses,
			// no proxy in between.
			if got, want := tc.RemoteAddr().String(), l.Addr().String(); got != want {
				t.Errorf("RemoteAddr: got %s, want %s", got, want)
			}
			if got, want := tc.LocalAddr().String(), peer.RemoteAddr().String(); got != want {
				t.Errorf("LocalAddr: got %s, want the address the server saw, %s", got, want)
			}

			if _, err := io.WriteString(tc, "ping"); err != nil {
				t.Fatalf("client write: %v", err)
			}
			got := make([]byte, 4)
			if _, err := io.ReadFull(peer, got); err != nil || string(got) != "ping" {
				t.Fatalf("server read: got %q, %v; want %q", got, err, "ping")
			}
			if _, err := io.WriteString(peer, "pong"); err != nil {
				t.Fatalf("server write: %v", err)
			}
			peer.Close()
			// The client sees the server's half-close as EOF after its data.
			all, err := io.ReadAll(tc)
			if err != nil || string(all) != "pong" {
				t.Fatalf("client read to EOF: got %q, %v; want %q, nil", all, err, "pong")
			}
		})
	}
}

func TestDialContextUDP(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	tests := []struct {
		listenNet, listenHost string
		dialNet, dialHost     string
	}{
		{"udp4", "127.0.0.1", "udp", "127.0.0.1"},
		{"udp4", "127.0.0.1", "udp4", "localhost"},
		{"udp6", "::1", "udp6", "::1"},
		{"udp6", "::1", "udp", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.dialNet+"/"+tt.dialHost, func(t *testing.T) {
			pc, err := net.ListenPacket(tt.listenNet, net.JoinHostPort(tt.listenHost, "0"))
			if err != nil {
				if tt.listenNet == "udp6" {
					skipNoIPv6(t, err)
				}
				t.Fatal(err)
			}
			defer pc.Close()
			_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
			address := net.JoinHostPort(tt.dialHost, port)

			conn, err := c.DialContext(t.Context(), tt.dialNet, address)
			if err != nil {
				t.Fatalf("DialContext(%q, %q): %v", tt.dialNet, address, err)
			}
			defer conn.Close()
			if _, ok := conn.(*net.UDPConn); !ok {
				t.Fatalf("DialContext returned a %T, want *net.UDPConn", conn)
			}
			if got, want := conn.RemoteAddr().String(), pc.LocalAddr().String(); got != want {
				t.Errorf("RemoteAddr: got %s, want %s", got, want)
			}
			// Guards against a hang if a datagram is lost; not a sleep.
			guard := time.Now().Add(10 * time.Second)
			pc.SetDeadline(guard)
			conn.SetDeadline(guard)

			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatalf("client write: %v", err)
			}
			buf := make([]byte, 64)
			n, from, err := pc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("server read: got %q, %v; want %q", buf[:n], err, "ping")
			}
			if got, want := from.String(), conn.LocalAddr().String(); got != want {
				t.Errorf("datagram came from %s, want the client's LocalAddr %s", got, want)
			}
			if _, err := pc.WriteTo([]byte("pong"), from); err != nil {
				t.Fatalf("server write: %v", err)
			}
			n, err = conn.Read(buf)
			if err != nil || string(buf[:n]) != "pong" {
				t.Fatalf("client read: got %q, %v; want %q", buf[:n], err, "pong")
			}
		})
	}
}

// TestConnectFile checks that the socket a caller gets is one it could have
// made itself: blocking, close-on-exec, of the right type, connected.
func TestConnectFile(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	tests := []struct {
		network  string
		listen   func(t *testing.T) (addr string, stop func())
		wantType int
	}{
		{"tcp", func(t *testing.T) (string, func()) {
			l := listen(t, "tcp4", "127.0.0.1:0")
			return l.Addr().String(), func() { l.Close() }
		}, unix.SOCK_STREAM},
		{"udp", func(t *testing.T) (string, func()) {
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return pc.LocalAddr().String(), func() { pc.Close() }
		}, unix.SOCK_DGRAM},
	}
	for _, tt := range tests {
		t.Run(tt.network, func(t *testing.T) {
			addr, stop := tt.listen(t)
			defer stop()
			f, err := c.ConnectFile(t.Context(), tt.network, addr, 0)
			if err != nil {
				t.Fatalf("ConnectFile(%q, %q): %v", tt.network, addr, err)
			}
			defer f.Close()
			rc, err := f.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var (
				fl, fdfl, typ int
				peer          unix.Sockaddr
				errs          [4]error
			)
			err = rc.Control(func(fd uintptr) {
				fl, errs[0] = unix.FcntlInt(fd, unix.F_GETFL, 0)
				fdfl, errs[1] = unix.FcntlInt(fd, unix.F_GETFD, 0)
				typ, errs[2] = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
				peer, errs[3] = unix.Getpeername(int(fd))
			})
			if err := errors.Join(err, errors.Join(errs[:]...)); err != nil {
				t.Fatal(err)
			}
			if fl&unix.O_NONBLOCK != 0 {
				t.Errorf("F_GETFL = %#x: O_NONBLOCK set, want a blocking socket", fl)
			}
			if fdfl&unix.FD_CLOEXEC == 0 {
				t.Errorf("F_GETFD = %#x: FD_CLOEXEC clear, want close-on-exec", fdfl)
			}
			if typ != tt.wantType {
				t.Errorf("SO_TYPE = %d, want %d", typ, tt.wantType)
			}
			if p4, ok := peer.(*unix.SockaddrInet4); !ok {
				t.Errorf("getpeername: got %#v, want an IPv4 address", peer)
			} else if got := netip.AddrPortFrom(netip.AddrFrom4(p4.Addr), uint16(p4.Port)).String(); got != addr {
				t.Errorf("getpeername: got %s, want %s", got, addr)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	refused := closedPort(t)
	tests := []struct {
		name             string
		network, address string
		want             []error
	}{
		{"address outside the grants", "tcp", "198.51.100.1:80", []error{sockfactory.ErrDenied}},
		{"name resolving outside the grants", "tcp", "outside.sockfactory.test:80", []error{sockfactory.ErrDenied}},
		{"closed port", "tcp", refused, []error{sockfactory.ErrConnectFailed, syscall.ECONNREFUSED}},
		{"unknown name", "tcp", "nosuchhost.sockfactory.test:80", []error{sockfactory.ErrResolveFailed}},
		{"no port", "tcp", "nocolon", []error{sockfactory.ErrInvalidRequest}},
		{"unclosed bracket", "tcp", "[::1", []error{sockfactory.ErrInvalidRequest}},
		{"shorthand IPv4", "tcp", "127.1:80", []error{sockfactory.ErrInvalidRequest}},
		{"port 0", "tcp", "host:0", []error{sockfactory.ErrInvalidRequest}},
		{"port too large", "tcp", "host:99999", []error{sockfactory.ErrInvalidRequest}},
		{"IPv6 zone", "tcp", "[fe80::1%lo]:80", []error{sockfactory.ErrInvalidRequest}},
		{"IPv6 address on tcp4", "tcp4", "[::1]:80", []error{sockfactory.ErrInvalidRequest}},
		{"unknown network", "sctp", "127.0.0.1:80", []error{sockfactory.ErrInvalidRequest}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := c.DialContext(t.Context(), tt.network, tt.address)
			if err == nil {
				conn.Close()
				t.Fatalf("DialContext(%q, %q) succeeded, want an error matching %v", tt.network, tt.address, tt.want)
			}
			checkErrIs(t, err, tt.want...)
			checkDialOpError(t, err, tt.network, tt.address)
			var e *sockfactory.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v holds no *sockfactory.Error", err)
			}
			if e.Op != "connect" || e.Message == "" {
				t.Errorf("Error{Op: %q, Message: %q}, want Op %q and a message", e.Op, e.Message, "connect")
			}
		})
	}
}

// TestDialPolicy checks that the daemon enforces what the policy says,
// port by port and caller by caller.
func TestDialPolicy(t *testing.T) {
	checkFDs(t)
	l := listen(t, "tcp4", "127.0.0.1:0")
	addr := startEcho(t, l)
	_, port, _ := net.SplitHostPort(addr)
	otherAddr := closedPort(t)
	tests := []struct {
		name    string
		policy  *policy.Policy
		address string
		want    error // nil: the dial succeeds
	}{
		{"granted port", grant(testUID, "127.0.0.1:"+port), addr, nil},
		{"granted range", grant(testUID, "127.0.0.0/8:1-65535"), addr, nil},
		{"granted name", grant(testUID, "localhost:"+port), "localhost:" + port, nil},
		{"port not granted", grant(testUID, "127.0.0.1:"+port), otherAddr, sockfactory.ErrDenied},
		{"name not granted", grant(testUID, "127.0.0.1:"+port), "localhost:" + port, nil}, // its address is granted
		{"name granted on another port", grant(testUID, "localhost:"+port), "localhost:1", sockfactory.ErrDenied},
		{"address of a granted name", grant(testUID, "localhost:"+port), addr, sockfactory.ErrDenied},
		{"another uid's grant", grant(testUID+1, "127.0.0.0/8:*"), addr, sockfactory.ErrDenied},
		{"empty policy", &policy.Policy{}, addr, sockfactory.ErrDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, startServerPolicy(t, tt.policy))
			conn, err := c.DialContext(t.Context(), "tcp", tt.address)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("DialContext(%q): %v, want a connection", tt.address, err)
				}
				defer conn.Close()
				echoOnce(t, conn, "granted")
				return
			}
			if err == nil {
				conn.Close()
				t.Fatalf("DialContext(%q) succeeded, want %v", tt.address, tt.want)
			}
			checkErrIs(t, err, tt.want)
		})
	}
}

func TestDialUnavailable(t *testing.T) {
	checkFDs(t)
	path := filepath.Join(t.TempDir(), "nonexistent.sock")
	c := newClient(t, path)
	conn, err := c.DialContext(t.Context(), "tcp", "127.0.0.1:80")
	if err == nil {
		conn.Close()
		t.Fatalf("DialContext through %s succeeded, want %v", path, sockfactory.ErrUnavailable)
	}
	checkErrIs(t, err, sockfactory.ErrUnavailable, syscall.ENOENT)
	checkDialOpError(t, err, "tcp", "127.0.0.1:80")
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the socket path %s", err, path)
	}
}

// TestDialSlow checks that a dial that cannot complete holds up nothing
// else on its Client and ends when its context or timeout says.
func TestDialSlow(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	echo := startEcho(t, listen(t, "tcp4", "127.0.0.1:0"))

	t.Run("deadline", func(t *testing.T) {
		hole := blackhole(t)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		slow := make(chan error, 1)
		go func() {
			conn, err := c.DialContext(ctx, "tcp", hole.String())
			if err == nil {
				conn.Close()
			}
			slow <- err
		}()
		waitConnecting(t, hole)

		fast, err := c.DialContext(t.Context(), "tcp", echo)
		if err != nil {
			t.Fatalf("fast dial while a slow one is pending: %v", err)
		}
		defer fast.Close()
		echoOnce(t, fast, "not blocked")
		select {
		case err := <-slow:
			t.Fatalf("the slow dial ended (err %v) before the fast one, want it still pending", err)
		default:
		}

		err = <-slow
		if err == nil {
			t.Fatal("dial to a destination that never answers succeeded")
		}
		if !errors.Is(err, sockfactory.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want an error matching ErrTimeout or context.DeadlineExceeded", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("got %v, want a net.Error whose Timeout() is true", err)
		}
	})

	t.Run("Dialer.Timeout", func(t *testing.T) {
		hole := blackhole(t)
		d := &sockfactory.Dialer{Client: c, Timeout: 100 * time.Millisecond}
		conn, err := d.DialContext(t.Context(), "tcp", hole.String())
		if err == nil {
			conn.Close()
			t.Fatal("dial to a destination that never answers succeeded")
		}
		// Only the daemon has a clock here: its timeout is what ends it.
		checkErrIs(t, err, sockfactory.ErrTimeout)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("got %v, want a net.Error whose Timeout() is true", err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		hole := blackhole(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		slow := make(chan error, 1)
		go func() {
			conn, err := c.DialContext(ctx, "tcp", hole.String())
			if err == nil {
				conn.Close()
			}
			slow <- err
		}()
		waitConnecting(t, hole)
		cancel()
		err := <-slow
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want an error matching context.Canceled", err)
		}
		// The Client is still usable.
		conn, err := c.DialContext(t.Context(), "tcp", echo)
		if err != nil {
			t.Fatalf("dial after a cancelled one: %v", err)
		}
		defer conn.Close()
		echoOnce(t, conn, "still here")
	})

	t.Run("cancelled before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		conn, err := c.DialContext(ctx, "tcp", echo)
		if err == nil {
			conn.Close()
			t.Fatalf("dial with a cancelled context succeeded: %v -> %v, ctx.Err()=%v", conn.LocalAddr(), conn.RemoteAddr(), ctx.Err())
		}
		checkErrIs(t, err, context.Canceled)
	})
}

func TestDialConcurrent(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	echo := startEcho(t, listen(t, "tcp4", "127.0.0.1:0"))
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			conn, err := c.DialContext(t.Context(), "tcp", echo)
			if err != nil {
				errs <- fmt.Errorf("dial %d: %w", i, err)
				return
			}
			defer conn.Close()
			msg := strconv.Itoa(i)
			if _, err := io.WriteString(conn, msg); err != nil {
				errs <- fmt.Errorf("dial %d: write: %w", i, err)
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(conn, got); err != nil || string(got) != msg {
				errs <- fmt.Errorf("dial %d: echo: got %q, %v; want %q", i, got, err, msg)
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		failed++
		t.Error(err)
	}
	if failed > 0 {
		t.Errorf("%d of %d concurrent dials failed, want none", failed, n)
	}
}

// TestDialBeyondDaemonLimit checks that a request the daemon refuses for
// having too many in flight on the connection waits for room instead of
// failing.
func TestDialBeyondDaemonLimit(t *testing.T) {
	checkFDs(t)
	path := filepath.Join(t.TempDir(), "sf.sock")
	serveAt(t, path, server.Options{Policy: loopbackPolicy(), MaxInFlight: 1})
	c := newClient(t, path)
	echo := startEcho(t, listen(t, "tcp4", "127.0.0.1:0"))
	hole := blackhole(t)

	slow := make(chan error, 1)
	go func() {
		d := &sockfactory.Dialer{Client: c, Timeout: 200 * time.Millisecond}
		conn, err := d.DialContext(t.Context(), "tcp", hole.String())
		if err == nil {
			conn.Close()
		}
		slow <- err
	}()
	waitConnecting(t, hole) // the daemon's only slot is taken

	conn, err := c.DialContext(t.Context(), "tcp", echo)
	if err != nil {
		t.Fatalf("dial while the daemon's limit is reached: %v, want it to wait and succeed", err)
	}
	defer conn.Close()
	echoOnce(t, conn, "waited")
	checkErrIs(t, <-slow, sockfactory.ErrTimeout)
}

func TestClientReconnects(t *testing.T) {
	checkFDs(t)
	echo := startEcho(t, listen(t, "tcp4", "127.0.0.1:0"))
	path := filepath.Join(t.TempDir(), "sf.sock")
	c := newClient(t, path)
	dial := func(when string) error {
		t.Helper()
		conn, err := c.DialContext(t.Context(), "tcp", echo)
		if err != nil {
			return err
		}
		defer conn.Close()
		echoOnce(t, conn, when)
		return nil
	}

	if err := dial("before the daemon"); !errors.Is(err, sockfactory.ErrUnavailable) {
		t.Fatalf("dial before the daemon started: got %v, want %v", err, sockfactory.ErrUnavailable)
	}
	for i := range 3 {
		stop := serveAt(t, path, server.Options{Policy: loopbackPolicy()})
		for j := range 2 {
			if err := dial(fmt.Sprintf("daemon %d, dial %d", i, j)); err != nil {
				t.Fatalf("dial %d to daemon %d: %v", j, i, err)
			}
		}
		stop()
	}
	if err := dial("after the daemon"); !errors.Is(err, sockfactory.ErrUnavailable) {
		t.Fatalf("dial after the daemon stopped: got %v, want %v", err, sockfactory.ErrUnavailable)
	}
}

func TestClientClose(t *testing.T) {
	checkFDs(t)
	path := startServer(t)
	echo := startEcho(t, listen(t, "tcp4", "127.0.0.1:0"))

	t.Run("used", func(t *testing.T) {
		c := newClient(t, path)
		conn, err := c.DialContext(t.Context(), "tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i := range 2 {
			if err := c.Close(); err != nil {
				t.Fatalf("Close #%d: %v, want nil", i+1, err)
			}
		}
		// What the Client handed out stays the caller's.
		echoOnce(t, conn, "after Close")
		checkClosed(t, c, echo)
	})

	t.Run("unused", func(t *testing.T) {
		c := newClient(t, path)
		for i := range 2 {
			if err := c.Close(); err != nil {
				t.Fatalf("Close #%d: %v, want nil", i+1, err)
			}
		}
		checkClosed(t, c, echo)
	})

	t.Run("Dialer", func(t *testing.T) {
		t.Setenv(paths.EnvSocket, path)
		var d sockfactory.Dialer // the zero value: its own Client of $SOCKFACTORY_SOCKET
		conn, err := d.DialContext(t.Context(), "tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for i := range 2 {
			if err := d.Close(); err != nil {
				t.Fatalf("Close #%d: %v, want nil", i+1, err)
			}
		}
		echoOnce(t, conn, "after Close")
		conn2, err := d.DialContext(t.Context(), "tcp", echo)
		if err == nil {
			conn2.Close()
		}
		checkErrIs(t, err, net.ErrClosed)
	})

	t.Run("Dialer with a shared Client", func(t *testing.T) {
		c := newClient(t, path)
		d := &sockfactory.Dialer{Client: c}
		if err := d.Close(); err != nil {
			t.Fatalf("Close: %v, want nil", err)
		}
		conn, err := c.DialContext(t.Context(), "tcp", echo)
		if err != nil {
			t.Fatalf("dial on the shared Client after Dialer.Close: %v, want it left open", err)
		}
		defer conn.Close()
		echoOnce(t, conn, "shared")
	})
}

// checkClosed checks that every request on a closed Client fails with
// net.ErrClosed.
func checkClosed(t *testing.T, c *sockfactory.Client, address string) {
	t.Helper()
	conn, err := c.DialContext(t.Context(), "tcp", address)
	if err == nil {
		conn.Close()
	}
	checkErrIs(t, err, net.ErrClosed)
	f, err := c.ConnectFile(t.Context(), "tcp", address, 0)
	if err == nil {
		f.Close()
	}
	checkErrIs(t, err, net.ErrClosed)
}

// TestCloseInFlight checks that closing a Client ends the requests it
// carries with net.ErrClosed.
func TestCloseInFlight(t *testing.T) {
	checkFDs(t)
	c := newClient(t, startServer(t))
	hole := blackhole(t)
	slow := make(chan error, 1)
	go func() {
		conn, err := c.DialContext(t.Context(), "tcp", hole.String())
		if err == nil {
			conn.Close()
		}
		slow <- err
	}()
	waitConnecting(t, hole)
	c.Close()
	err := <-slow
	checkErrIs(t, err, net.ErrClosed)
}
