package connector

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/testnet"
)

func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	return testnet.ClosedPort(t)
}

func getInt(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestConnectDeliversPlainSocket: the socket is connected, blocking,
// close-on-exec, with socket(2)'s defaults rather than Go's dialer's.
func TestConnectDeliversPlainSocket(t *testing.T) {
	srv := testnet.Sink(t)
	var c Connector
	f, res, err := c.Connect(context.Background(), Network{Proto: "tcp"}, []netip.AddrPort{srv}, Options{SendTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if res.Remote != srv {
		t.Errorf("remote %v; want %v", res.Remote, srv)
	}
	fd := f.FD()
	fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	fdfl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what      string
		got, want int
	}{
		{"O_NONBLOCK", fl & unix.O_NONBLOCK, 0},
		{"FD_CLOEXEC", fdfl & unix.FD_CLOEXEC, unix.FD_CLOEXEC},
		{"TCP_NODELAY", getInt(t, fd, unix.IPPROTO_TCP, unix.TCP_NODELAY), 0},
		{"SO_KEEPALIVE", getInt(t, fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE), 0},
		{"SO_SNDTIMEO seconds", int(tv.Sec), 3},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %d; want %d", c.what, c.got, c.want)
		}
	}
}

func TestConnectUDPNoBroadcast(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var c Connector
	f, _, err := c.Connect(context.Background(), Network{Proto: "udp"}, []netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := getInt(t, f.FD(), unix.SOL_SOCKET, unix.SO_BROADCAST); got != 0 {
		t.Errorf("SO_BROADCAST: got %d; want 0", got)
	}
}

// TestConnectTriesInOrder: a refused first address falls through to the
// next; when all fail the first non-timeout error is kept with its errno.
func TestConnectTriesInOrder(t *testing.T) {
	srv, dead := testnet.Sink(t), closedPort(t)
	var c Connector
	f, res, err := c.Connect(context.Background(), Network{Proto: "tcp"}, []netip.AddrPort{dead, srv}, Options{})
	if err != nil {
		t.Fatalf("refused then good: %v", err)
	}
	f.Close()
	if res.Remote != srv {
		t.Errorf("connected to %v; want the second address %v", res.Remote, srv)
	}
	_, _, err = c.Connect(context.Background(), Network{Proto: "tcp"}, []netip.AddrPort{dead}, Options{})
	if !errors.Is(err, syscall.ECONNREFUSED) || IsTimeout(err) {
		t.Errorf("refused only: got %v; want ECONNREFUSED", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, _, err = c.Connect(ctx, Network{Proto: "tcp"}, []netip.AddrPort{srv}, Options{}); !IsTimeout(err) {
		t.Errorf("expired context: got %v; want a timeout", err)
	}
}

func TestParseNetwork(t *testing.T) {
	for _, s := range []string{"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"} {
		n, err := ParseNetwork(s)
		if err != nil || n.String() != s {
			t.Errorf("ParseNetwork(%q) = %v, %v", s, n, err)
		}
	}
	for _, s := range []string{"", "ip", "unix", "tcp5", "TCP"} {
		if _, err := ParseNetwork(s); err == nil {
			t.Errorf("ParseNetwork(%q) accepted", s)
		}
	}
	v4, v6, mapped := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("::ffff:10.0.0.1")
	if !(Network{Family: 4}).Allows(mapped) || (Network{Family: 4}).Allows(v6) || (Network{Family: 6}).Allows(v4) || !(Network{}).Allows(v6) {
		t.Error("Allows: family checks wrong")
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestConnectInProgress covers a connect that does not finish at once: it
// times out within its context, stops when cancelled, and succeeds once the
// peer takes it, leaving no descriptor behind in each case.
func TestConnectInProgress(t *testing.T) {
	ap, drain := testnet.FullQueue(t)
	base := openFDs(t)
	var c Connector
	tcp := Network{Proto: "tcp"}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, _, err := c.Connect(ctx, tcp, []netip.AddrPort{ap}, Options{})
	cancel()
	if !IsTimeout(err) {
		t.Fatalf("connect to a full accept queue: got %v, want a timeout", err)
	}
	if n := openFDs(t); n != base {
		t.Errorf("after the timeout: %d fds open, want %d", n, base)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, _, err = c.Connect(ctx, tcp, []netip.AddrPort{ap}, Options{})
	if !errors.Is(err, context.Canceled) || IsTimeout(err) {
		t.Fatalf("cancelled connect: got %v, want context.Canceled", err)
	}
	if n := openFDs(t); n != base {
		t.Errorf("after the cancel: %d fds open, want %d", n, base)
	}

	// Drained while the connect waits, the queue takes the SYN sent
	// again and the connect finishes through the poller.
	time.AfterFunc(200*time.Millisecond, drain)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, res, err := c.Connect(ctx, tcp, []netip.AddrPort{ap}, Options{})
	if err != nil {
		t.Fatalf("connect once the queue drained: %v", err)
	}
	defer f.Close()
	if res.Remote != ap || !res.Local.Addr().IsLoopback() || res.Local.Port() == 0 {
		t.Errorf("result %+v: want remote %v and a loopback local address", res, ap)
	}
	fd := f.FD()
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("delivered socket flags %#x, %v: want blocking", fl, err)
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("delivered socket fd flags %#x, %v: want close-on-exec", fl, err)
	}
	if peer, err := unix.Getpeername(fd); err != nil || peer.(*unix.SockaddrInet4).Port != int(ap.Port()) {
		t.Errorf("delivered socket's peer: %v, %v", peer, err)
	}
	f.Close()
	if n := openFDs(t); n != base {
		t.Errorf("after closing the socket: %d fds open, want %d", n, base)
	}
}
