package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// The chaos test (issue 5, part 7): hundreds of client processes hammer one
// daemon through both front doors with a random mix of good, hostile and
// broken requests, some of them killed mid-request; afterwards the daemon
// must be alive, answering, and back to the descriptors, goroutines and
// references it had before, with bounded memory.

const (
	// chaosChildren client processes in all, at most chaosParallel at once.
	chaosChildren = 300
	chaosParallel = 60
	// chaosLaunchFor bounds the time in which children are started, and
	// chaosChildLimit the life of each (a child still running then is
	// killed and counted as hung), so the test always stops by itself.
	// A child takes well under a second on an idle machine, and up to
	// 20 s built with -race on two loaded cores.
	chaosLaunchFor  = 45 * time.Second
	chaosChildLimit = 60 * time.Second
	// chaosKillPercent of the children are killed with SIGKILL just as
	// one of their operations starts.
	chaosKillPercent = 20
	// chaosHeapBound bounds the daemon's live heap afterwards: its idle
	// heap is about 1 MiB; every request buffer (64 KiB) of the chaos is
	// pooled garbage by then.
	chaosHeapBound = 64 << 20
	// chaosRSSBound bounds the daemon's resident memory afterwards: about
	// 10 MiB at the baseline, 15 to 35 MiB after the chaos. The bound
	// leaves room for the high-water mark of the chaos (up to 60 clients
	// with 64 requests in flight each, a goroutine and its stack per
	// request), which the Go runtime returns to the system only slowly.
	// chaosRaceRSSBound applies when the daemon is built with -race: its
	// shadow memory and per-goroutine state take about 35 MiB at the
	// baseline and 160 to 250 MiB after the chaos, and are not given back.
	chaosRSSBound     = 128 << 20
	chaosRaceRSSBound = 512 << 20
)

// chaosConfig has a native socket and a Clearwater listener (%DIR% is the
// daemon's directory); root may connect to and bind loopback and is an
// admin (for daemon statistics and reload). Limits are high enough that
// the chaos exercises the daemon rather than its limits. Tokens live 1 s,
// so that tokens left behind have expired when the test checks. Names are
// never asked for; the resolver would ask a port that refuses at once.
const chaosConfig = `
[daemon]
socket = "%SOCKET%"

[connect]
timeout = "5s"

[resolver]
servers = ["127.0.0.1:%CLOSED%"]

[bind]
token_ttl = "1s"

[limits]
connections = 4000
connections_per_uid = 2000
sockets = 20000
sockets_per_uid = 10000
tokens = 4000
tokens_per_uid = 2000

[[clearwater]]
socket = "%DIR%/clearwater.sock"
allowed_hosts = ["127.0.0.1"]
connect_timeout = "5s"
read_timeout = "2s"

[[rule]]
name = "chaos"
users = ["root"]
connect = ["127.0.0.1:*"]
bind = ["*:127.0.0.1:*"]
admin = true
`

func init() {
	helperModes["chaos-client"] = chaosClientMain
}

// chaosParams is what the test tells a chaos-client process, as JSON in its
// last argument.
type chaosParams struct {
	// Seed seeds the client's choices.
	Seed uint64 `json:"seed"`
	// Socket and Clearwater are the daemon's native and Clearwater sockets.
	Socket     string `json:"socket"`
	Clearwater string `json:"clearwater"`
	// Echo is a loopback TCP echo server, Closed a loopback port with no
	// listener.
	Echo   string `json:"echo"`
	Closed string `json:"closed"`
	// Ports are loopback ports the clients share sockets on.
	Ports []int `json:"ports"`
	// Netns is the daemon's network namespace, of its own
	// (/proc/PID/ns/net): the echo server, the closed port and the
	// sockets the daemon hands out are there, and the client makes its
	// own direct connections there.
	Netns string `json:"netns"`
	// Ops is how many random operations to run.
	Ops int `json:"ops"`
	// WarmUp runs every operation once, in order, releasing everything.
	WarmUp bool `json:"warm_up"`
}

// chaosReport is what a chaos-client prints, as "report JSON", when it
// finishes (a killed one prints none). Before each operation it prints
// "op NAME".
type chaosReport struct {
	// Ops counts completed operations by name.
	Ops map[string]int `json:"ops"`
	// Outcomes counts errors and other results besides plain success, as
	// "op: kind".
	Outcomes map[string]int `json:"outcomes"`
	// Violations are results the protocol rules out.
	Violations []string `json:"violations,omitempty"`
	// Slowest is the operation that took longest, and SlowestMS its time.
	Slowest   string `json:"slowest"`
	SlowestMS int64  `json:"slowest_ms"`
}

// chaosOp is one kind of operation a client may run.
type chaosOp struct {
	name   string
	weight int
	run    func(*chaosClient, string)
}

var chaosOps = []chaosOp{
	{"connect", 6, (*chaosClient).connect},
	{"connect-refused", 1, (*chaosClient).connectRefused},
	{"connect-denied", 1, (*chaosClient).connectDenied},
	{"connect-udp", 1, (*chaosClient).connectUDP},
	{"listen-shared", 4, (*chaosClient).listenShared},
	{"udp-shared", 2, (*chaosClient).udpShared},
	{"listen-port0", 2, (*chaosClient).listenPort0},
	{"bind-none-shared", 1, (*chaosClient).bindNoneShared},
	{"token", 4, (*chaosClient).token},
	{"status", 2, (*chaosClient).status},
	{"reload", 1, (*chaosClient).reload},
	{"cw-good", 3, (*chaosClient).cwGood},
	{"cw-denied", 1, (*chaosClient).cwDenied},
	{"cw-garbage", 1, (*chaosClient).cwGarbage},
	{"cw-half", 1, (*chaosClient).cwHalf},
	{"cw-oversize", 1, (*chaosClient).cwOversize},
	{"cw-silent", 1, (*chaosClient).cwSilent},
	{"raw-bad-packets", 3, (*chaosClient).rawBad},
	{"raw-fds", 1, (*chaosClient).rawFDs},
	{"raw-empty", 1, (*chaosClient).rawEmpty},
	{"raw-flood", 2, (*chaosClient).rawFlood},
}

// chaosClient is the state of one chaos-client process.
type chaosClient struct {
	p      chaosParams
	rng    *rand.Rand
	c      *sockfactory.Client
	ns     *testnet.Netns // the daemon's network namespace
	held   []io.Closer    // kept until the end, or until the process dies
	rep    chaosReport
	warmUp bool
}

// chaosClientMain runs in a chaos-client process: arg holds chaosParams.
func chaosClientMain(arg string) int {
	var p chaosParams
	if err := json.Unmarshal([]byte(arg), &p); err != nil {
		fmt.Fprintln(os.Stderr, "chaos-client: bad parameters:", err)
		return 2
	}
	ns, err := testnet.OpenNetnsPath(p.Netns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos-client: the daemon's network namespace:", err)
		return 2
	}
	defer ns.Close()
	cc := &chaosClient{
		p:      p,
		ns:     ns,
		rng:    rand.New(rand.NewPCG(p.Seed, 0x5eed)),
		c:      &sockfactory.Client{Socket: p.Socket},
		rep:    chaosReport{Ops: map[string]int{}, Outcomes: map[string]int{}},
		warmUp: p.WarmUp,
	}
	if cc.warmUp || cc.rng.IntN(2) == 0 {
		cc.c.App = fmt.Sprintf("chaos-%d", cc.rng.IntN(4)) // a hello on every connection
	}
	run := func(op chaosOp) {
		fmt.Printf("op %s\n", op.name)
		began := time.Now()
		op.run(cc, op.name)
		if ms := time.Since(began).Milliseconds(); ms >= cc.rep.SlowestMS {
			cc.rep.Slowest, cc.rep.SlowestMS = op.name, ms
		}
		cc.rep.Ops[op.name]++
	}
	if cc.warmUp {
		for _, op := range chaosOps {
			run(op)
		}
	} else {
		total := 0
		for _, op := range chaosOps {
			total += op.weight
		}
		for range p.Ops {
			n := cc.rng.IntN(total)
			for _, op := range chaosOps {
				if n -= op.weight; n < 0 {
					run(op)
					break
				}
			}
		}
	}
	// Leave in one of three ways: release everything, close the daemon
	// connection (which releases what it held) and exit holding the
	// sockets, or just exit.
	switch end := cc.rng.IntN(3); {
	case cc.warmUp || end == 0:
		for _, h := range cc.held {
			cc.close("end", h)
		}
		cc.c.Close()
	case end == 1:
		cc.c.Close()
	}
	b, _ := json.Marshal(cc.rep)
	fmt.Printf("report %s\n", b)
	return 0
}

func (cc *chaosClient) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

func (cc *chaosClient) outcome(op, kind string) { cc.rep.Outcomes[op+": "+kind]++ }

func (cc *chaosClient) violation(op, format string, args ...any) {
	cc.rep.Violations = append(cc.rep.Violations, op+": "+fmt.Sprintf(format, args...))
}

// keep closes x now, or (a third of the time, never in the warm-up) keeps
// it until the end: a socket, listener or daemon connection held while the
// process may be killed.
func (cc *chaosClient) keep(op string, x io.Closer) {
	if !cc.warmUp && cc.rng.IntN(3) == 0 {
		cc.held = append(cc.held, x)
		cc.outcome(op, "held")
		return
	}
	cc.close(op, x)
}

// close closes x; for listeners and Clients that releases references, which
// must not fail.
func (cc *chaosClient) close(op string, x io.Closer) {
	if err := x.Close(); err != nil {
		cc.violation(op, "closing %T (releasing its reference): %v", x, err)
	}
}

func (cc *chaosClient) bytes(min, max int) []byte {
	b := make([]byte, min+cc.rng.IntN(max-min+1))
	for i := range b {
		b[i] = byte(cc.rng.Uint32())
	}
	return b
}

// chaosKind names an error for the counts.
func chaosKind(err error) string {
	var se *sockfactory.Error
	switch {
	case errors.As(err, &se):
		if se.Errno != 0 {
			return se.Code + " " + unix.ErrnoName(se.Errno)
		}
		return se.Code
	case errors.Is(err, sockfactory.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, sockfactory.ErrProtocol):
		return "protocol"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	}
	return "other"
}

// echo writes random bytes to c and checks they come back.
func (cc *chaosClient) echo(op string, c net.Conn) bool {
	msg := cc.bytes(1, 8192)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		cc.violation(op, "writing to the echo server: %v", err)
		return false
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		cc.violation(op, "echo of %d bytes: %v (match %v)", len(msg), err, bytes.Equal(got, msg))
		return false
	}
	return true
}

// --- native protocol, through the Go client ---

func (cc *chaosClient) connect(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	conn, err := cc.c.DialContext(ctx, "tcp", cc.p.Echo)
	if err != nil {
		cc.violation(op, "dial %s: %v", cc.p.Echo, err)
		return
	}
	cc.echo(op, conn)
	cc.keep(op, conn)
}

func (cc *chaosClient) connectRefused(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	conn, err := cc.c.DialContext(ctx, "tcp", cc.p.Closed)
	if err == nil {
		conn.Close()
		cc.violation(op, "dial to closed port %s succeeded", cc.p.Closed)
		return
	}
	if !errors.Is(err, sockfactory.ErrConnectFailed) || !errors.Is(err, syscall.ECONNREFUSED) {
		cc.violation(op, "dial to closed port: got %v; want connect_failed with ECONNREFUSED", err)
		return
	}
	cc.outcome(op, chaosKind(err))
}

func (cc *chaosClient) connectDenied(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	addr := "127.0.0.2:" + port(cc.p.Echo)
	conn, err := cc.c.DialContext(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		cc.violation(op, "dial to ungranted %s succeeded", addr)
		return
	}
	if !errors.Is(err, sockfactory.ErrDenied) {
		cc.violation(op, "dial to ungranted %s: got %v; want denied", addr, err)
		return
	}
	cc.outcome(op, chaosKind(err))
}

func (cc *chaosClient) connectUDP(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	conn, err := cc.c.DialContext(ctx, "udp", cc.p.Closed)
	if err != nil {
		cc.violation(op, "udp dial %s: %v", cc.p.Closed, err)
		return
	}
	if _, ok := conn.(*net.UDPConn); !ok {
		cc.violation(op, "udp dial gave a %T", conn)
	}
	cc.keep(op, conn)
}

func (cc *chaosClient) sharedAddr() string {
	return fmt.Sprintf("127.0.0.1:%d", cc.p.Ports[cc.rng.IntN(len(cc.p.Ports))])
}

// sharedBindRefused reports (and counts) the refusals a bind on a shared
// port may get through no fault of the daemon: share_conflict while a
// bind-none-shared holds the socket, and EADDRINUSE while a client still
// has its copy of a listening socket the daemon no longer holds (one that
// closed its daemon connection, or was released, before closing the
// socket).
func (cc *chaosClient) sharedBindRefused(op string, err error) bool {
	if errors.Is(err, sockfactory.ErrShareConflict) || errors.Is(err, syscall.EADDRINUSE) {
		cc.outcome(op, chaosKind(err))
		return true
	}
	return false
}

// chaosTooLarge reports whether err is the daemon's refusal to send a
// status reply over the protocol's 64 KiB limit: an admin's status lists
// every socket and reference, and the chaos holds more than fit.
func chaosTooLarge(code wire.Code, message string) bool {
	return code == wire.CodeInternal && strings.Contains(message, "would exceed")
}

// dialDirect connects to the TCP address addr in the daemon's network
// namespace itself, not through the daemon.
func (cc *chaosClient) dialDirect(addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cc.ns.DialContext(ctx, "tcp", addr)
}

// listenShared listens with share mode any on a shared port, connects to
// it and accepts one connection. Every holder of the socket accepts from
// the same queue, so the accepted connection may be another client's, or
// another holder may have taken ours.
func (cc *chaosClient) listenShared(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	addr := cc.sharedAddr()
	l, err := cc.c.Listen(ctx, "tcp", addr, &sockfactory.ListenOptions{Share: "any"})
	if cc.sharedBindRefused(op, err) {
		return
	}
	if err != nil {
		cc.violation(op, "listen %s share any: %v", addr, err)
		return
	}
	d, err := cc.dialDirect(addr)
	if err != nil {
		cc.violation(op, "connecting to the held listener %s: %v", addr, err)
	} else {
		l.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if a, err := l.Accept(); err == nil {
			a.Close()
			cc.outcome(op, "accepted")
		} else {
			cc.outcome(op, "accepted by another holder")
		}
		l.SetDeadline(time.Time{})
		d.Close()
	}
	cc.keep(op, l)
}

// udpShared binds a shared UDP port with share mode any and sends itself a
// datagram, which any holder may receive.
func (cc *chaosClient) udpShared(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	addr := cc.sharedAddr()
	pc, err := cc.c.ListenPacket(ctx, "udp", addr, &sockfactory.ListenOptions{Share: "any"})
	if cc.sharedBindRefused(op, err) {
		return
	}
	if err != nil {
		cc.violation(op, "listen udp %s share any: %v", addr, err)
		return
	}
	if _, err := pc.WriteTo([]byte("chaos"), pc.LocalAddr()); err != nil {
		cc.violation(op, "sending to %s: %v", addr, err)
	}
	pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, _, err := pc.ReadFrom(make([]byte, 64)); err == nil {
		cc.outcome(op, "received")
	} else {
		cc.outcome(op, "received by another holder")
	}
	pc.SetReadDeadline(time.Time{})
	cc.keep(op, pc)
}

// listenPort0 gets a socket of its own (share none, port 0) and must be
// able to accept on it.
func (cc *chaosClient) listenPort0(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	l, err := cc.c.Listen(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		cc.violation(op, "listen 127.0.0.1:0: %v", err)
		return
	}
	d, err := cc.dialDirect(l.Addr().String())
	if err != nil {
		cc.violation(op, "connecting to own listener %s: %v", l.Addr(), err)
		cc.keep(op, l)
		return
	}
	defer d.Close()
	l.SetDeadline(time.Now().Add(10 * time.Second))
	a, err := l.Accept()
	l.SetDeadline(time.Time{})
	if err != nil {
		cc.violation(op, "accepting on own listener %s: %v", l.Addr(), err)
	} else {
		a.SetDeadline(time.Now().Add(10 * time.Second))
		d.Write([]byte("x"))
		if _, err := io.ReadFull(a, make([]byte, 1)); err != nil {
			cc.violation(op, "reading from an accepted connection: %v", err)
		}
		a.Close()
	}
	cc.keep(op, l)
}

// bindNoneShared asks for a shared port with share mode none: a conflict
// when anyone holds it, else a socket that is released at once.
func (cc *chaosClient) bindNoneShared(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	addr := cc.sharedAddr()
	l, err := cc.c.Listen(ctx, "tcp", addr, nil)
	if cc.sharedBindRefused(op, err) {
		return
	}
	if err != nil {
		cc.violation(op, "listen %s share none: %v", addr, err)
		return
	}
	cc.outcome(op, "got it alone")
	cc.close(op, l)
}

// token takes a token-only binding and then picks it up (on this or
// another connection, once or twice), releases it, or leaves it to expire.
func (cc *chaosClient) token(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	addr, o := "127.0.0.1:0", (*sockfactory.ListenOptions)(nil)
	if cc.rng.IntN(2) == 0 {
		addr, o = cc.sharedAddr(), &sockfactory.ListenOptions{Share: "any"}
	}
	asked := time.Now()
	b, err := cc.c.BindToken(ctx, "tcp", addr, o)
	if cc.sharedBindRefused(op, err) {
		return
	}
	if err != nil {
		cc.violation(op, "token-only bind %s: %v", addr, err)
		return
	}
	// A token lives 1 s: on a loaded machine it may expire before it is
	// used, but not before that time has passed here.
	expired := func(what string, err error) bool {
		if errors.Is(err, sockfactory.ErrNotFound) && time.Since(asked) >= b.Expires {
			cc.outcome(op, "expired before "+what)
			return true
		}
		return false
	}
	pickup := func(c *sockfactory.Client) bool {
		f, _, err := c.Pickup(ctx, b.Token)
		if err != nil {
			if !expired("pickup", err) {
				cc.violation(op, "pickup of a fresh token for %s: %v", b.Addr, err)
			}
			return false
		}
		f.Close()
		return true
	}
	mode := cc.rng.IntN(5)
	if cc.warmUp {
		mode = 0
	}
	switch mode {
	case 0: // pick up here, then release
		if pickup(cc.c) {
			if err := cc.c.Release(ctx, b.Token); err != nil {
				cc.violation(op, "release after pickup: %v", err)
			}
		}
	case 1: // pick up on another connection, which then closes or is kept
		c2 := &sockfactory.Client{Socket: cc.p.Socket}
		if pickup(c2) {
			cc.outcome(op, "picked up elsewhere")
		}
		cc.keep(op, c2)
	case 2: // release the pending token
		if err := cc.c.Release(ctx, b.Token); err != nil && !expired("release", err) {
			cc.violation(op, "release of a pending token: %v", err)
		}
	case 3: // leave it to expire
		cc.outcome(op, "left to expire")
	case 4: // pick up twice: the token is single-use
		if pickup(cc.c) {
			if f, _, err := cc.c.Pickup(ctx, b.Token); err == nil {
				f.Close()
				cc.violation(op, "second pickup of a token succeeded")
			} else if !errors.Is(err, sockfactory.ErrNotFound) {
				cc.violation(op, "second pickup: got %v; want not_found", err)
			} else {
				cc.outcome(op, "second pickup "+chaosKind(err))
			}
		}
	}
}

func (cc *chaosClient) status(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	check := func(what string, err error) {
		var se *sockfactory.Error
		switch {
		case err == nil:
		case errors.Is(err, sockfactory.ErrTruncated):
			// Hundreds of sockets held: the listing is cut to one packet.
			cc.outcome(op, what+" listing truncated")
		case errors.As(err, &se) && chaosTooLarge(wire.Code(se.Code), se.Message):
			cc.outcome(op, what+" reply too large")
		default:
			cc.violation(op, "%s: %v", what, err)
		}
	}
	_, err := cc.c.Status(ctx)
	check("status", err)
	_, err = cc.c.Stats(ctx)
	check("daemon statistics as admin", err)
}

func (cc *chaosClient) reload(op string) {
	ctx, cancel := cc.ctx()
	defer cancel()
	if err := cc.c.Reload(ctx); err != nil {
		cc.violation(op, "reload as admin: %v", err)
	}
}

// --- the Clearwater front door ---

// cwAsk sends req to the Clearwater listener and reads the answer. With
// want, the answer must be one space with one connected socket, which is
// used; otherwise a close without a descriptor (a reset when the daemon
// left part of the request unread).
func (cc *chaosClient) cwAsk(op string, req []byte, want bool) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: cc.p.Clearwater, Net: "unix"})
	if err != nil {
		cc.violation(op, "connecting to the Clearwater socket: %v", err)
		return
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		cc.violation(op, "sending the request: %v", err)
		return
	}
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	buf, oob := make([]byte, 16), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	files := chaosFiles(oob[:oobn])
	defer chaosClose(files)
	n = max(n, 0) // -1 with some errors
	if errors.Is(err, io.EOF) {
		err = nil // a close, as n == 0 also says
	}
	switch {
	case want && (err != nil || n != 1 || buf[0] != ' ' || len(files) != 1):
		cc.violation(op, "request %q: got %q, %d fds, %v; want one space and one fd", req, buf[:n], len(files), err)
	case want:
		conn, err := net.FileConn(files[0])
		if err != nil {
			cc.violation(op, "the passed fd is not a connection: %v", err)
			return
		}
		cc.echo(op, conn)
		cc.keep(op, conn)
		if n, err := c.Read(buf); n != 0 || err != io.EOF {
			cc.violation(op, "after the reply: got %q, %v; want the daemon to close", buf[:n], err)
		}
	case len(files) != 0 || n != 0:
		cc.violation(op, "request %q: got %q and %d fds; want a plain close", req, buf[:n], len(files))
	case err != nil && !errors.Is(err, syscall.ECONNRESET):
		cc.violation(op, "request %q: %v; want a plain close", req, err)
	case err != nil:
		cc.outcome(op, "closed "+chaosKind(err))
	default:
		cc.outcome(op, "closed")
	}
}

func (cc *chaosClient) cwGood(op string) {
	req := cc.p.Echo
	if cc.rng.IntN(4) == 0 {
		req += "\x00trailing bytes after a NUL are ignored"
	}
	cc.cwAsk(op, []byte(req), true)
}

func (cc *chaosClient) cwDenied(op string) {
	reqs := []string{"127.0.0.2:" + port(cc.p.Echo), "[::1]:" + port(cc.p.Echo), "127.0.0.1:0", "127.0.0.1:65536", "127.1:" + port(cc.p.Echo)}
	cc.cwAsk(op, []byte(reqs[cc.rng.IntN(len(reqs))]), false)
}

// cwGarbage sends random bytes without a colon, so never a host:port that
// could be resolved.
func (cc *chaosClient) cwGarbage(op string) {
	b := cc.bytes(1, 1000)
	for i := range b {
		if b[i] == ':' {
			b[i] = '.'
		}
	}
	if b[0] == 0 {
		b[0] = 'x'
	}
	cc.cwAsk(op, b, false)
}

// cwHalf sends the start of a request and closes, at once or after the
// daemon's answer to the incomplete request.
func (cc *chaosClient) cwHalf(op string) {
	req := []byte(cc.p.Echo)[:1+cc.rng.IntN(len(cc.p.Echo)-1)]
	if cc.rng.IntN(2) == 0 {
		cc.cwAsk(op, req, false)
		return
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: cc.p.Clearwater, Net: "unix"})
	if err != nil {
		cc.violation(op, "connecting to the Clearwater socket: %v", err)
		return
	}
	c.Write(req)
	c.Close()
	cc.outcome(op, "closed at once")
}

func (cc *chaosClient) cwOversize(op string) {
	req := append([]byte(cc.p.Echo), bytes.Repeat([]byte("9"), 1024+cc.rng.IntN(4096))...)
	cc.cwAsk(op, req, false)
}

// cwSilent connects and sends nothing: it closes at once, or holds the
// connection (the daemon drops it after its read timeout).
func (cc *chaosClient) cwSilent(op string) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: cc.p.Clearwater, Net: "unix"})
	if err != nil {
		cc.violation(op, "connecting to the Clearwater socket: %v", err)
		return
	}
	cc.keep(op, c)
}

// --- the native protocol, raw ---

func (cc *chaosClient) rawDial(op string) *net.UnixConn {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: cc.p.Socket, Net: "unixpacket"})
	if err != nil {
		cc.violation(op, "connecting to the native socket: %v", err)
		return nil
	}
	return c
}

// chaosFiles returns the descriptors in SCM_RIGHTS control data.
func chaosFiles(oob []byte) []*os.File {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "passed"))
		}
	}
	return files
}

func chaosClose(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// chaosRead reads one reply packet, closing any descriptors it carries.
// A closed connection is io.EOF.
func chaosRead(c *net.UnixConn, timeout time.Duration) (*wire.Reply, int, error) {
	buf, oob := make([]byte, wire.MaxMessageSize), make([]byte, unix.CmsgSpace(wire.MaxFDs*4))
	c.SetReadDeadline(time.Now().Add(timeout))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	files := chaosFiles(oob[:oobn])
	chaosClose(files)
	if err != nil {
		return nil, len(files), err
	}
	if n == 0 && oobn == 0 {
		return nil, 0, io.EOF
	}
	rep, err := wire.DecodeReply(buf[:n])
	return rep, len(files), err
}

// rawExpect sends packet (with oob) and checks the reply's error code and,
// when id is not 0, its id.
func (cc *chaosClient) rawExpect(op string, c *net.UnixConn, what string, packet, oob []byte, code wire.Code, id uint64) bool {
	if _, _, err := c.WriteMsgUnix(packet, oob, nil); err != nil {
		cc.violation(op, "sending %s: %v", what, err)
		return false
	}
	rep, fds, err := chaosRead(c, 10*time.Second)
	switch {
	case err != nil:
		cc.violation(op, "%s: no reply: %v", what, err)
		return false
	case rep.Error == nil || rep.Error.Code != code || (id != 0 && rep.ID != id) || fds != 0:
		cc.violation(op, "%s: got reply %+v (error %+v, %d fds); want %s for id %d", what, rep, rep.Error, fds, code, id)
		return false
	}
	cc.outcome(op, what+" "+string(code))
	return true
}

// rawStillServes checks that the connection still answers a valid request.
func (cc *chaosClient) rawStillServes(op string, c *net.UnixConn) {
	if _, err := c.Write([]byte(`{"v":1,"id":99,"op":"status","status":{}}`)); err != nil {
		cc.violation(op, "sending status after bad packets: %v", err)
		return
	}
	rep, _, err := chaosRead(c, 10*time.Second)
	switch {
	case err != nil || rep.ID != 99:
		cc.violation(op, "status after bad packets: got %+v, %v; want a reply to id 99", rep, err)
	case rep.Error != nil && chaosTooLarge(rep.Error.Code, rep.Error.Message):
		cc.outcome(op, "status reply too large")
	case rep.Status == nil:
		cc.violation(op, "status after bad packets: got %+v (error %+v); want a status", rep, rep.Error)
	}
}

// rawBad sends a few malformed packets on one connection; each gets its
// error reply and the connection keeps serving.
func (cc *chaosClient) rawBad(op string) {
	c := cc.rawDial(op)
	if c == nil {
		return
	}
	garbage := cc.bytes(1, 2000)
	if len(garbage) == 1 && garbage[0] == 0 {
		garbage[0] = 'x'
	}
	bad := []struct {
		what   string
		packet []byte
		code   wire.Code
		id     uint64
	}{
		{"garbage", garbage, wire.CodeInvalidRequest, 0},
		{"half json", []byte(`{"v":1,"id":7,"op":"connect","connect":{"network":"tcp","addr`), wire.CodeInvalidRequest, 0},
		{"oversize", bytes.Repeat([]byte(" "), wire.MaxMessageSize+1+cc.rng.IntN(20000)), wire.CodeInvalidRequest, 0},
		{"unknown op", []byte(`{"v":1,"id":8,"op":"frobnicate"}`), wire.CodeInvalidRequest, 8},
		{"unknown field", []byte(`{"v":1,"id":9,"op":"status","evil":true}`), wire.CodeInvalidRequest, 9},
		{"version 2", []byte(`{"v":2,"id":10,"op":"status","status":{}}`), wire.CodeUnsupportedVersion, 10},
		{"bad app name", []byte(`{"v":1,"id":11,"op":"hello","hello":{"app":"two words"}}`), wire.CodeInvalidRequest, 11},
		{"bad address", []byte(`{"v":1,"id":12,"op":"connect","connect":{"network":"tcp","address":"0x7f000001:80"}}`), wire.CodeInvalidRequest, 12},
		{"bad port", []byte(`{"v":1,"id":13,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:65536"}}`), wire.CodeInvalidRequest, 13},
		{"unknown token", []byte(`{"v":1,"id":14,"op":"pickup","token":{"token":"00"}}`), wire.CodeNotFound, 14},
		{"non-utf8", []byte("{\"v\":1,\"id\":15,\"op\":\"status\",\"status\":{},\"x\":\"\xff\"}"), wire.CodeInvalidRequest, 0},
	}
	var pick []int
	if cc.warmUp {
		for i := range bad {
			pick = append(pick, i)
		}
	} else {
		for range 1 + cc.rng.IntN(4) {
			pick = append(pick, cc.rng.IntN(len(bad)))
		}
	}
	var sent []string
	for _, i := range pick {
		b := bad[i]
		sent = append(sent, b.what)
		if !cc.rawExpect(op, c, b.what, b.packet, nil, b.code, b.id) {
			c.Close()
			return
		}
	}
	cc.rawStillServes(op+" after "+strings.Join(sent, ", "), c)
	cc.keep(op, c)
}

// rawFDs sends a request carrying descriptors (two copies of a pipe's write
// end): refused, and the daemon must have closed both copies, so that the
// pipe's read end sees end-of-file once ours is closed.
func (cc *chaosClient) rawFDs(op string) {
	c := cc.rawDial(op)
	if c == nil {
		return
	}
	defer c.Close()
	r, w, err := os.Pipe()
	if err != nil {
		cc.violation(op, "pipe: %v", err)
		return
	}
	defer r.Close()
	rc, err := w.SyscallConn()
	if err != nil {
		cc.violation(op, "pipe: %v", err)
		w.Close()
		return
	}
	var oob []byte
	rc.Control(func(fd uintptr) { oob = unix.UnixRights(int(fd), int(fd)) })
	ok := cc.rawExpect(op, c, "fds", []byte(`{"v":1,"id":20,"op":"status","status":{}}`), oob, wire.CodeInvalidRequest, 0)
	w.Close()
	if !ok {
		return
	}
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		cc.violation(op, "pipe read end after the daemon's reply: %d bytes, %v; want EOF (the daemon kept a passed fd)", n, err)
	}
	cc.rawStillServes(op, c)
}

// rawEmpty sends an empty packet: the daemon ends the connection.
func (cc *chaosClient) rawEmpty(op string) {
	c := cc.rawDial(op)
	if c == nil {
		return
	}
	defer c.Close()
	if _, err := c.Write(nil); err != nil {
		cc.violation(op, "sending an empty packet: %v", err)
		return
	}
	if rep, _, err := chaosRead(c, 10*time.Second); !errors.Is(err, io.EOF) {
		cc.violation(op, "after an empty packet: got %+v, %v; want the connection closed", rep, err)
	}
}

// rawFlood pipelines many requests (status, connects and port-0 binds that
// reply with descriptors, more than may be in flight) and leaves: at once,
// after reading some replies, or holding the connection unread.
func (cc *chaosClient) rawFlood(op string) {
	c := cc.rawDial(op)
	if c == nil {
		return
	}
	reqs := []string{
		`{"v":1,"id":%d,"op":"status","status":{}}`,
		`{"v":1,"id":%d,"op":"connect","connect":{"network":"tcp","address":"` + cc.p.Echo + `"}}`,
		`{"v":1,"id":%d,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:0"}}`,
		`{"v":1,"id":%d,"op":"bind","bind":{"network":"udp","address":"127.0.0.1:0"}}`,
	}
	n := 10 + cc.rng.IntN(150)
	// Unread replies soon stall the daemon's writes, then its reads,
	// then ours: give up sending after a short while.
	c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	sent := 0
	for i := range n {
		if _, err := fmt.Fprintf(c, reqs[cc.rng.IntN(len(reqs))], i+1); err != nil {
			cc.outcome(op, "send stalled: "+chaosKind(err))
			break
		}
		sent++
	}
	mode := cc.rng.IntN(3)
	if cc.warmUp {
		mode = 1
	}
	switch mode {
	case 0:
		cc.outcome(op, "left at once")
		c.Close()
	case 1:
		got := 0
		for range min(sent, 1+cc.rng.IntN(20)) {
			rep, _, err := chaosRead(c, 10*time.Second)
			if err != nil {
				cc.violation(op, "reading replies to %d pipelined requests: %v", sent, err)
				break
			}
			if e := rep.Error; e != nil && e.Code != wire.CodeLimitExceeded && !chaosTooLarge(e.Code, e.Message) {
				cc.violation(op, "pipelined request %d: %s: %s", rep.ID, rep.Error.Code, rep.Error.Message)
			}
			got++
		}
		cc.outcome(op, "left after reading some replies")
		c.Close()
	default:
		cc.keep(op, c)
	}
}

// chaosTally collects the children's results.
type chaosTally struct {
	mu                                      sync.Mutex
	started, finished, killed, killsTooLate int
	slowest                                 time.Duration // of the children that finished
	slowestOp                               string        // and of their operations
	slowestOpTook                           time.Duration
	opsStarted, opsKilled, ops, outcomes    map[string]int
	violations, failures                    []string
}

func (ct *chaosTally) add(dst map[string]int, src map[string]int) {
	for k, v := range src {
		dst[k] += v
	}
}

// chaosChild is one planned client process.
type chaosChild struct {
	p      chaosParams
	killAt int           // kill when its killAt-th operation starts; 0: never
	jitter time.Duration // after so long
}

// run runs the child and adds its results to ct.
func (ch *chaosChild) run(ct *chaosTally) {
	arg, err := json.Marshal(ch.p)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), chaosChildLimit)
	defer cancel()
	began := time.Now()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$", string(arg))
	cmd.Env = append(os.Environ(), helperEnv+"=chaos-client")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	ct.mu.Lock()
	ct.started++
	ct.mu.Unlock()
	if err != nil {
		ct.mu.Lock()
		ct.failures = append(ct.failures, fmt.Sprintf("seed %d: starting: %v", ch.p.Seed, err))
		ct.mu.Unlock()
		return
	}
	started := map[string]int{}
	var (
		report string
		last   string
		kill   *time.Timer
	)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 0; sc.Scan(); {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "op "); ok {
			started[name]++
			last = name
			if n++; n == ch.killAt {
				kill = time.AfterFunc(ch.jitter, func() { cmd.Process.Kill() })
			}
			continue
		}
		if r, ok := strings.CutPrefix(line, "report "); ok {
			report = r
		}
	}
	werr := cmd.Wait()
	if kill != nil {
		kill.Stop()
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	ct.add(ct.opsStarted, started)
	var ee *exec.ExitError
	killed := false
	if errors.As(werr, &ee) {
		ws, ok := ee.Sys().(syscall.WaitStatus)
		killed = ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
	}
	switch {
	case ctx.Err() != nil:
		ct.violations = append(ct.violations, fmt.Sprintf("seed %d: still running after %v (last op %s), killed: the daemon stopped answering?\n%s", ch.p.Seed, chaosChildLimit, last, stderr.Bytes()))
	case killed && kill != nil:
		ct.killed++
		ct.opsKilled[last]++
	case werr != nil || report == "":
		ct.failures = append(ct.failures, fmt.Sprintf("seed %d: %v, report %q\n%s", ch.p.Seed, werr, report, stderr.Bytes()))
	default:
		var rep chaosReport
		if err := json.Unmarshal([]byte(report), &rep); err != nil {
			ct.failures = append(ct.failures, fmt.Sprintf("seed %d: bad report %q: %v", ch.p.Seed, report, err))
			return
		}
		ct.finished++
		ct.slowest = max(ct.slowest, time.Since(began))
		if took := time.Duration(rep.SlowestMS) * time.Millisecond; took >= ct.slowestOpTook {
			ct.slowestOp, ct.slowestOpTook = rep.Slowest, took
		}
		if kill != nil {
			ct.killsTooLate++
		}
		ct.add(ct.ops, rep.Ops)
		ct.add(ct.outcomes, rep.Outcomes)
		for _, v := range rep.Violations {
			ct.violations = append(ct.violations, fmt.Sprintf("seed %d: %s", ch.p.Seed, v))
		}
	}
}

// chaosPorts returns n distinct loopback ports below the ephemeral range
// (so that no outgoing connection or port-0 bind takes one), chosen by rng.
// They are ports of the daemon's network namespace of its own, where
// nothing else runs: all are free.
func chaosPorts(rng *rand.Rand, n int) []int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				low = v
			}
		}
	}
	var ports []int
	for len(ports) < n {
		if p := low - 10000 + rng.IntN(10000); !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// chaosStats returns the daemon's statistics as the admin c sees them.
func chaosStats(t *testing.T, c *sockfactory.Client) *sockfactory.DaemonStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("daemon statistics: %v", err)
	}
	return st
}

// chaosRSS returns the daemon's resident memory in bytes.
func chaosRSS(t *testing.T, pid int) int64 {
	t.Helper()
	v := procStatus(t, pid, "VmRSS") // "12345 kB"
	kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		t.Fatalf("VmRSS %q: %v", v, err)
	}
	return kb << 10
}

func chaosCounts(m map[string]int) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "\n    %-52s %6d", k, m[k])
	}
	return b.String()
}

func chaosSum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestIntegrationChaos: hundreds of concurrent client processes do random
// operations on both front doors and both capabilities (connect, bind,
// tokens, status, reload; Clearwater requests good and bad; garbage, half,
// oversize and fd-carrying packets; pipelined floods), some holding sockets
// as they exit and a fifth killed with SIGKILL mid-operation. Afterwards the
// daemon is alive and answering; its open descriptors and goroutines are
// back to the baseline taken after a warm-up; it holds no socket and no
// reference; its memory is bounded; and it logged no panic. Set
// SOCKFACTORY_CHAOS_SEED to replay a run's choices.
func TestIntegrationChaos(t *testing.T) {
	requireRoot(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SOCKFACTORY_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SOCKFACTORY_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (SOCKFACTORY_CHAOS_SEED=%d replays the choices)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	// Three ports to share, and one nobody listens on: all below the
	// ephemeral range, where no port-0 bind or outgoing connection lands,
	// in the daemon's network namespace of its own.
	ports := chaosPorts(rng, 4)
	closed := strconv.Itoa(ports[3])
	dir := publicTempDir(t)
	d := &daemon{t: t, dir: dir, socket: filepath.Join(dir, "run", "sockfactory.sock"), config: filepath.Join(dir, "sockfactoryd.toml")}
	d.prepare = func(cmd *exec.Cmd) { cmd.SysProcAttr = inNewNetns() }
	d.writeConfig(strings.NewReplacer("%DIR%", dir, "%CLOSED%", closed).Replace(chaosConfig))
	d.start()
	t.Cleanup(d.stop)
	ns := d.netns()
	echo := echoServerNetns(t, ns, "tcp", "127.0.0.1:0")
	waitFor(t, "the Clearwater listener to start", func() bool {
		return strings.Contains(d.log.String(), `msg="listening (clearwater)"`)
	})
	base := chaosParams{
		Socket:     d.socket,
		Clearwater: filepath.Join(dir, "clearwater.sock"),
		Echo:       echo,
		Closed:     "127.0.0.1:" + closed,
		Ports:      ports[:3],
		// Not /proc/PID/ns/net: the daemon that made the namespace
		// is replaced by upgrades.
		Netns: ns.Path(),
	}

	// Warm up: one client runs every operation once and releases
	// everything, so that whatever the daemon sets up on first use exists
	// before the baseline.
	ct := &chaosTally{opsStarted: map[string]int{}, opsKilled: map[string]int{}, ops: map[string]int{}, outcomes: map[string]int{}}
	warm := base
	warm.Seed, warm.WarmUp = seed, true
	(&chaosChild{p: warm}).run(ct)
	if ct.finished != 1 || len(ct.violations) > 0 || len(ct.failures) > 0 {
		t.Fatalf("warm-up client: violations %q, failures %q", ct.violations, ct.failures)
	}
	admin := d.client()
	var st *sockfactory.DaemonStats
	settled := func() bool {
		st = chaosStats(t, admin)
		return st.Sessions == 1 && st.Refs == 0 && st.Sockets == 0
	}
	if !poll(20*time.Second, settled) {
		t.Fatalf("after the warm-up: %+v; want 1 session (the admin's), no references, no sockets", st)
	}
	baseFDs, baseStats := d.fds(), st
	t.Logf("baseline: %d fds, %d goroutines, heap %d KiB, rss %d KiB", baseFDs, baseStats.Goroutines, baseStats.HeapBytes>>10, chaosRSS(t, d.cmd.Process.Pid)>>10)

	// The chaos, with the daemon upgraded live in its midst: nothing a
	// client sees may change (the checks of every operation apply), and
	// afterwards the newest daemon is held to the first one's baseline.
	ct = &chaosTally{opsStarted: map[string]int{}, opsKilled: map[string]int{}, ops: map[string]int{}, outcomes: map[string]int{}}
	pid := d.cmd.Process.Pid
	upgraded := make(chan []string, 1)
	stopUpgrades := make(chan struct{})
	go func() { upgraded <- chaosUpgrades(d.socket, &pid, stopUpgrades) }()
	t.Cleanup(func() {
		// The harness stops the first daemon; the newest is this one.
		if pid != d.cmd.Process.Pid && d.cmd != nil {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	})
	start := time.Now()
	sem := make(chan struct{}, chaosParallel)
	var wg sync.WaitGroup
	for i := range chaosChildren {
		if time.Since(start) > chaosLaunchFor {
			t.Logf("launch deadline %v reached after %d children", chaosLaunchFor, i)
			break
		}
		ch := &chaosChild{p: base}
		ch.p.Seed = seed + 1 + uint64(i)
		ch.p.Ops = 4 + rng.IntN(13)
		if rng.IntN(100) < chaosKillPercent {
			ch.killAt = 1 + rng.IntN(ch.p.Ops)
			ch.jitter = time.Duration(rng.IntN(20_000)) * time.Microsecond
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ch.run(ct)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stopUpgrades)
	for _, e := range <-upgraded {
		t.Errorf("upgrade during the chaos: %s", e)
	}
	if pid == d.cmd.Process.Pid {
		t.Errorf("no upgrade happened during the chaos")
	}
	t.Logf("daemon pid after the upgrades: %d (first %d)", pid, d.cmd.Process.Pid)

	t.Logf("chaos: %d client processes in %v (at most %d at once): %d finished (the slowest in %v; the slowest operation %s in %v), %d killed with SIGKILL (%d kills came too late), %d failed, %d violations",
		ct.started, took.Round(time.Millisecond), chaosParallel, ct.finished, ct.slowest.Round(time.Millisecond), ct.slowestOp, ct.slowestOpTook,
		ct.killed, ct.killsTooLate, len(ct.failures), len(ct.violations))
	t.Logf("operations started: %d%s", chaosSum(ct.opsStarted), chaosCounts(ct.opsStarted))
	t.Logf("operations completed by clients that finished: %d%s", chaosSum(ct.ops), chaosCounts(ct.ops))
	t.Logf("operations under way when SIGKILL came: %d%s", chaosSum(ct.opsKilled), chaosCounts(ct.opsKilled))
	t.Logf("outcomes other than plain success (errors by kind, and more): %d%s", chaosSum(ct.outcomes), chaosCounts(ct.outcomes))
	for i, f := range ct.failures {
		if i == 10 {
			t.Errorf("... and %d more failed clients", len(ct.failures)-i)
			break
		}
		t.Errorf("client failed: %s", f)
	}
	for i, v := range ct.violations {
		if i == 20 {
			t.Errorf("... and %d more violations", len(ct.violations)-i)
			break
		}
		t.Errorf("violation: %s", v)
	}
	if ct.killed < ct.started*chaosKillPercent/200 {
		t.Errorf("only %d children were killed; want about %d%% of %d", ct.killed, chaosKillPercent, ct.started)
	}

	// The daemon is alive and answers.
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("daemon is gone after the chaos: %v\n%s", err, d.log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := &sockfactory.Client{Socket: d.socket}
	conn, err := check.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatalf("connect after the chaos: %v", err)
	}
	roundTrip(t, conn, "still here\n")
	conn.Close()
	if _, err := check.Status(ctx); err != nil {
		t.Fatalf("status after the chaos: %v", err)
	}
	check.Close()

	// Everything the chaos held is gone: held references with their
	// connections, pending tokens after their 1 s, sessions, descriptors.
	if !poll(30*time.Second, settled) {
		t.Errorf("after the chaos: %d sessions, %d references, %d sockets; want 1 (the admin's), 0, 0", st.Sessions, st.Refs, st.Sockets)
	}
	// The first daemon also had what the harness leaked into it, which
	// it sealed and no daemon it starts gets: at most the baseline.
	var fds int
	if !poll(30*time.Second, func() bool { fds = len(testnet.ProcFDs(t, pid)); return fds <= baseFDs }) {
		t.Errorf("daemon fd count after the chaos: got %d, want at most the baseline %d", fds, baseFDs)
	}
	// Goroutines: the baseline and this count both include the admin's
	// session and the goroutine serving the status request itself, so no
	// allowance is needed. The count may briefly exceed the baseline while
	// the runtime's finalizer and cleanup goroutines run the os.File
	// cleanups of closed descriptors (they count only while running user
	// code), hence the poll; a count below the baseline is no leak.
	if !poll(30*time.Second, func() bool { st = chaosStats(t, admin); return st.Goroutines <= baseStats.Goroutines }) {
		t.Errorf("daemon goroutines after the chaos: got %d, want at most the baseline %d", st.Goroutines, baseStats.Goroutines)
	}
	if st.HeapBytes > chaosHeapBound {
		t.Errorf("daemon heap after the chaos: %d MiB, want at most %d MiB", st.HeapBytes>>20, chaosHeapBound>>20)
	}
	rss, rssBound := chaosRSS(t, pid), int64(chaosRSSBound)
	if raceEnabled {
		rssBound = chaosRaceRSSBound
	}
	if rss > rssBound {
		t.Errorf("daemon resident memory after the chaos: %d MiB, want at most %d MiB", rss>>20, rssBound>>20)
	}
	t.Logf("after: %d fds, %d goroutines, %d sessions, %d sockets, %d references, heap %d KiB, rss %d KiB",
		fds, st.Goroutines, st.Sessions, st.Sockets, st.Refs, st.HeapBytes>>10, rss>>10)
	log := d.log.String()
	for _, bad := range []string{"panic", "DATA RACE", "fatal error"} {
		if i := strings.Index(log, bad); i >= 0 {
			t.Errorf("daemon log has %q:\n%s", bad, log[max(0, i-2000):min(len(log), i+4000)])
		}
	}
}

// chaosUpgrades upgrades the daemon at socket every 1.5 s until stop is
// closed, at most three times, keeping *pid the serving daemon's. It
// returns what went wrong, and how many upgrades there were.
func chaosUpgrades(socket string, pid *int, stop <-chan struct{}) (errs []string) {
	for range 3 {
		select {
		case <-stop:
			return errs
		case <-time.After(1500 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		out, err := exec.CommandContext(ctx, bin.cli, "--socket", socket, "upgrade").CombinedOutput()
		cancel()
		var oldPID, newPID int
		if _, serr := fmt.Sscanf(string(out), "upgraded: pid %d -> %d", &oldPID, &newPID); err != nil || serr != nil || oldPID != *pid {
			errs = append(errs, fmt.Sprintf("%v: %q (serving pid %d)", err, out, *pid))
			continue
		}
		*pid = newPID
	}
	return errs
}
