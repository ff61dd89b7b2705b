package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// connectConfig grants root the loopback addresses and names the tests
// use; 127.0.0.2 is deliberately not granted. Other uids get nothing.
const connectConfig = `
[daemon]
socket = "%SOCKET%"
socket_mode = "0666"

[connect]
timeout = "5s"

[resolver]
servers = ["%DNS%"]

[[rule]]
name = "root-loopback"
users = ["root"]
connect = ["127.0.0.1:*", "[::1]:*", "localhost:*", "*.test:*"]
`

func startConnectDaemon(t *testing.T, records map[string][]netip.Addr) *daemon {
	t.Helper()
	dns := startFakeDNS(t, records)
	d := startDaemon(t, strings.ReplaceAll(connectConfig, "%DNS%", dns.addr))
	// Warm up (the first request opens files such as /etc/hosts and
	// starts the resolver), then take the fd baseline.
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	c := d.client()
	conn, err := c.DialContext(context.Background(), "tcp", echo)
	if err != nil {
		t.Fatalf("warm-up dial: %v", err)
	}
	conn.Close()
	if conn, err := c.DialContext(context.Background(), "tcp", "localhost:"+port(echo)); err == nil {
		conn.Close()
	}
	c.Close()
	waitFor(t, "warm-up client to disconnect", func() bool {
		return !strings.Contains(d.log.String(), "client connected") || strings.Count(d.log.String(), "client connected") == strings.Count(d.log.String(), "client disconnected")
	})
	d.checkFDs()
	return d
}

func port(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

// TestIntegrationNamespaceConnect: a client in a fresh network namespace,
// which cannot reach the default namespace's loopback, gets a working
// connection through the daemon: over IPv4, IPv6 and a DNS name, with both
// the CLI and the Go Dialer.
func TestIntegrationNamespaceConnect(t *testing.T) {
	requireRoot(t)
	d := startConnectDaemon(t, nil)
	v4 := echoServer(t, "tcp", "127.0.0.1:0")
	v6 := echoServer(t, "tcp", "[::1]:0")
	cases := []struct {
		name, network, address string
	}{
		{"ipv4", "tcp", v4},
		{"tcp4", "tcp4", v4},
		{"ipv6", "tcp", v6},
		{"dns-name", "tcp", "localhost:" + port(v4)},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/cli", func(t *testing.T) {
			msg := "ping " + tc.name + "\n"
			out, errOut, code := runCLI(t, msg, inNewNetns(), "connect", "-socket", d.socket, "-network", tc.network, tc.address)
			if code != 0 || out != msg {
				t.Fatalf("sockfactory connect %s from a new netns: exit %d, stdout %q, stderr %q; want exit 0 and stdout %q", tc.address, code, out, errOut, msg)
			}
		})
		t.Run(tc.name+"/dialer", func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$", tc.network+" "+tc.address)
			cmd.Env = append(os.Environ(), helperEnv+"=dial", "SOCKFACTORY_SOCKET="+d.socket)
			cmd.SysProcAttr = inNewNetns()
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "OK") {
				t.Fatalf("Dialer in a new netns to %s: %v\n%s", tc.address, err, out)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		})
	}
	if got := strings.Count(d.log.String(), "msg=grant"); got < 2*len(cases) {
		t.Errorf("audit log has %d grant lines, want at least %d", got, 2*len(cases))
	}
}

// TestIntegrationConnectErrors: each failure gets its typed error, and the
// daemon keeps serving.
func TestIntegrationConnectErrors(t *testing.T) {
	requireRoot(t)
	d := startConnectDaemon(t, map[string][]netip.Addr{
		"known.test": {netip.MustParseAddr("127.0.0.1")},
		// Names outside the name grants: only their granted addresses
		// may be used.
		"hostile.example": {netip.MustParseAddr("127.0.0.2")},
		// A granted name (*.test) whose answer is the unspecified
		// address, which connect(2) treats as this host.
		"zero.test":     {netip.MustParseAddr("0.0.0.0")},
		"mixed.example": {netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")},
	})
	c := d.client()
	closed := closedPort(t)
	ctx := context.Background()

	cases := []struct {
		name    string
		network string
		address string
		want    error
		errno   syscall.Errno
	}{
		{"denied destination", "tcp", "127.0.0.2:" + closed, sockfactory.ErrDenied, 0},
		{"refused port", "tcp", "127.0.0.1:" + closed, sockfactory.ErrConnectFailed, syscall.ECONNREFUSED},
		{"refused port by name", "tcp", "known.test:" + closed, sockfactory.ErrConnectFailed, syscall.ECONNREFUSED},
		{"unresolvable name", "tcp", "nx.test:80", sockfactory.ErrResolveFailed, 0},
		{"name resolving only to a denied address", "tcp", "hostile.example:80", sockfactory.ErrDenied, 0},
		{"granted name resolving to a deny-listed address", "tcp", "zero.test:" + closed, sockfactory.ErrDenied, 0},
		{"unresolvable name outside the grants", "tcp", "example.net:80", sockfactory.ErrResolveFailed, 0},
		{"numeric-looking name", "tcp", "127.1:80", sockfactory.ErrInvalidRequest, 0},
		{"family mismatch", "tcp6", "127.0.0.1:80", sockfactory.ErrInvalidRequest, 0},
		{"unknown network", "sctp", "127.0.0.1:80", sockfactory.ErrInvalidRequest, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := c.DialContext(ctx, tc.network, tc.address)
			if err == nil {
				conn.Close()
				t.Fatalf("dial %s %s succeeded; want %v", tc.network, tc.address, tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("dial %s %s: got %v; want errors.Is %v", tc.network, tc.address, err, tc.want)
			}
			if tc.errno != 0 && !errors.Is(err, tc.errno) {
				t.Fatalf("dial %s: got %v; want errno %v reachable", tc.address, err, tc.errno)
			}
		})
	}

	t.Run("denied caller", func(t *testing.T) {
		echo := echoServer(t, "tcp", "127.0.0.1:0")
		_, errOut, code := runCLI(t, "", asUser(65534, 65534), "connect", "-socket", d.socket, echo)
		if code != 1 || !strings.Contains(errOut, "denied") || !strings.Contains(errOut, "uid 65534") {
			t.Fatalf("CLI as uid 65534: exit %d, stderr %q; want exit 1 and a denial naming uid 65534", code, errOut)
		}
		if !strings.Contains(d.log.String(), "msg=deny uid=65534") {
			t.Errorf("no audit line for the denied caller in:\n%s", d.log)
		}
	})

	t.Run("name with one granted address", func(t *testing.T) {
		echo := echoServer(t, "tcp", "127.0.0.1:0")
		conn, err := c.DialContext(ctx, "tcp", "mixed.example:"+port(echo))
		if err != nil {
			t.Fatalf("dial mixed.example: %v", err)
		}
		defer conn.Close()
		if got := conn.RemoteAddr().String(); got != echo {
			t.Fatalf("mixed.example connected to %s; want only the granted %s", got, echo)
		}
		roundTrip(t, conn, "mixed\n")
	})

	t.Run("still serving", func(t *testing.T) {
		echo := echoServer(t, "tcp", "127.0.0.1:0")
		conn, err := c.DialContext(ctx, "tcp", echo)
		if err != nil {
			t.Fatalf("dial after the failures: %v", err)
		}
		defer conn.Close()
		roundTrip(t, conn, "still here\n")
	})
}

// TestIntegrationConnectTimeout: a destination that never answers times out
// with ErrTimeout, and a concurrent request on the same connection completes
// meanwhile.
func TestIntegrationConnectTimeout(t *testing.T) {
	requireRoot(t)
	d := startConnectDaemon(t, nil)
	c := d.client()
	hole := blackhole(t)
	echo := echoServer(t, "tcp", "127.0.0.1:0")

	slowDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := (&sockfactory.Dialer{Client: c, Timeout: 3 * time.Second}).DialContext(ctx, "tcp", hole)
		if err == nil {
			conn.Close()
		}
		slowDone <- err
	}()
	// Wait until the daemon is working on the slow request.
	waitFor(t, "the slow request to reach the daemon", func() bool {
		return strings.Contains(d.log.String(), "client connected")
	})
	for i := range 5 {
		conn, err := c.DialContext(context.Background(), "tcp", echo)
		if err != nil {
			t.Fatalf("fast dial %d: %v", i, err)
		}
		roundTrip(t, conn, "fast\n")
		conn.Close()
		select {
		case err := <-slowDone:
			t.Fatalf("the hanging connect finished (%v) before fast request %d: it should still be pending", err, i)
		default:
		}
	}
	err := <-slowDone
	if !errors.Is(err, sockfactory.ErrTimeout) {
		t.Fatalf("hanging connect: got %v; want ErrTimeout", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("hanging connect error %v is not a net.Error with Timeout()", err)
	}
}

// TestIntegrationUDP: a connected UDP socket works from another namespace.
func TestIntegrationUDP(t *testing.T) {
	requireRoot(t)
	d := startConnectDaemon(t, nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	out, errOut, code := runCLI(t, "datagram\n", inNewNetns(), "connect", "-socket", d.socket, "-network", "udp", "-q", "5s", pc.LocalAddr().String())
	if code != 0 || out != "datagram\n" {
		t.Fatalf("udp from a new netns: exit %d, stdout %q, stderr %q; want the datagram echoed", code, out, errOut)
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: got %q, %v; want %q", buf, err, msg)
	}
}

// closedPort returns a loopback TCP port nobody listens on, held so that
// nothing else can listen there until the test ends (testnet.ClosedPort).
func closedPort(t *testing.T) string {
	t.Helper()
	return strconv.Itoa(int(testnet.ClosedPort(t).Port()))
}

// blackhole returns a loopback address where connects hang: a listener
// with a backlog of 0 whose accept queue is already full drops SYNs.
func blackhole(t *testing.T) string {
	ap, _ := testnet.FullQueue(t)
	return ap.String()
}
