package clientsuite

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/testnet"
)

// cases is the table every driver runs: the real daemon's, then the fake
// daemon's.
var cases = append(realCases, fakeCases...)

// What a delivered socket looks like (docs/protocol.md, 6 "The delivered
// socket" and 7.2): blocking as after socket(2), close-on-exec because the
// library receives with MSG_CMSG_CLOEXEC.
const (
	tcpInfo  = "ok stream inet blocking cloexec"
	udpInfo  = "ok dgram inet blocking cloexec"
	tcp6Info = "ok stream inet6 blocking cloexec"
)

// aToken is a well-formed token the daemon never issued.
const aToken = "0123456789abcdef0123456789abcdef"

var realCases = []testCase{
	{name: "selftest", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		for _, cmd := range []string{"frobnicate", "connect", "connect tcp", "fdinfo"} {
			if got := p.do(cmd); !strings.HasPrefix(got, "bad ") {
				t.Errorf("%q: got %q, want bad WHAT", cmd, got)
			}
		}
	}},
	{name: "connect_tcp", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h := p.one("connect tcp " + x.s.echoTCP)
		p.expect("fdinfo "+h, tcpInfo)
		p.expect("echo "+h+" hello-over-tcp", "ok hello-over-tcp")
		p.expect("fdinfo "+h, tcpInfo) // using it changed nothing
		checkLoopback(t, p.one("sockname "+h), "127.0.0.1")
		p.expect("close "+h, "ok")
	}},
	{name: "connect_udp", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h := p.one("connect udp " + x.s.echoUDP)
		p.expect("fdinfo "+h, udpInfo)
		p.expect("echo "+h+" hello-over-udp", "ok hello-over-udp")
		checkLoopback(t, p.one("sockname "+h), "127.0.0.1")
		p.expect("close "+h, "ok")
	}},
	{name: "connect_tcp6", run: func(t *testing.T, x *caseEnv) {
		needIPv6(t)
		echo := echoTCP(t, "[::1]:0")
		p := x.driver()
		h := p.one("connect tcp6 " + echo)
		p.expect("fdinfo "+h, tcp6Info)
		p.expect("echo "+h+" hello-over-tcp6", "ok hello-over-tcp6")
		checkLoopback(t, p.one("sockname "+h), "[::1]")
		p.expect("close "+h, "ok")
	}},
	{name: "denied", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		p.expectErr("connect tcp 127.0.0.3:9", "denied", 0)
		p.expectErr("connect udp 127.0.0.3:9", "denied", 0)
		p.expectErr("bind tcp 127.0.0.3:0 - -", "denied", 0)
		p.expectErr("bindtoken udp 127.0.0.3:0 - -", "denied", 0)
	}},
	{name: "connect_failed", run: func(t *testing.T, x *caseEnv) {
		closed := testnet.ClosedPort(t)
		p := x.driver()
		p.expectErr("connect tcp "+closed.String(), "connect_failed", syscall.ECONNREFUSED)
	}},
	{name: "invalid_request", run: func(t *testing.T, x *caseEnv) {
		// A library may refuse these itself instead of asking the
		// daemon, but must then report the same code, with no errno.
		p := x.driver()
		p.expectErr("connect sctp 127.0.0.1:9", "invalid_request", 0)
		p.expectErr("connect tcp 127.1:80", "invalid_request", 0)
		p.expectErr("connect tcp6 127.0.0.1:80", "invalid_request", 0)
		p.expectErr("bind tcp 127.0.0.1:99999 - -", "invalid_request", 0)
	}},
	{name: "resolve_failed", run: func(t *testing.T, x *caseEnv) {
		// The daemon asks only the suite's DNS server, which knows no name.
		p := x.driver()
		p.expectErr("connect tcp nonexistent.invalid:80", "resolve_failed", 0)
	}},
	{name: "not_found", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		p.expectErr("pickup "+aToken, "not_found", 0)
		p.expectErr("release "+aToken, "not_found", 0)
	}},
	{name: "share_conflict", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h, tok := bind(p, "tcp 127.0.0.1:0 none -")
		addr := p.one("sockname " + h)
		p.expectErr("bind tcp "+addr+" none -", "share_conflict", 0)
		p.expectErr("bind tcp "+addr+" any -", "share_conflict", 0)
		p.expectErr("bindtoken tcp "+addr+" - -", "share_conflict", 0)
		if st := x.d.byToken(t, tok); st == nil || st.Refs != 1 {
			t.Errorf("status after the refused binds: %+v, want the one reference", st)
		}
	}},
	{name: "share_sameapp", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h1, _ := bind(p, "udp 127.0.0.1:0 sameapp web")
		addr := p.one("sockname " + h1)
		h2, _ := bind(p, "udp "+addr+" sameapp web")
		if got := p.one("sockname " + h2); got != addr {
			t.Errorf("sockname of the shared socket: got %s, want %s", got, addr)
		}
		p.expectErr("bind udp "+addr+" sameapp other", "share_conflict", 0)
		st := x.d.byAddr(t, "udp", addr)
		if st == nil || st.Refs != 2 {
			t.Fatalf("status of %s: %+v, want 2 references", addr, st)
		}
		for _, hs := range st.Holders {
			if hs.Share != "same-name" || hs.Name != "web" {
				t.Errorf("holder %+v: want share same-name, name web", hs)
			}
		}
	}},
	{name: "share_any", run: func(t *testing.T, x *caseEnv) {
		a, b := x.driver(), x.driver()
		ha, tokA := bind(a, "tcp 127.0.0.1:0 any -")
		addr := a.one("sockname " + ha)
		hb, _ := bind(b, "tcp "+addr+" any -")
		if st := x.d.byAddr(t, "tcp", addr); st == nil || st.Refs != 2 {
			t.Errorf("status of %s: %+v, want 2 references", addr, st)
		}
		serveCheck(t, b, hb, addr) // one socket: b serves what a bound
		a.expect("close "+ha, "ok")
		x.d.waitGone(t, tokA, "close of the first holder")
		if st := x.d.byAddr(t, "tcp", addr); st == nil || st.Refs != 1 {
			t.Errorf("status of %s after the first holder closed: %+v, want 1 reference", addr, st)
		}
	}},
	{name: "bind_failed", run: func(t *testing.T, x *caseEnv) {
		busy, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		p := x.driver()
		p.expectErr("bind udp "+busy.LocalAddr().String()+" - -", "bind_failed", syscall.EADDRINUSE)
	}},
	{name: "limit_exceeded", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		for range socketsPerUID {
			bind(p, "tcp 127.0.0.1:0 - -")
		}
		p.expectErr("bind tcp 127.0.0.1:0 - -", "limit_exceeded", 0)
	}},
	{name: "bind_serve", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h, tok := bind(p, "tcp 127.0.0.1:0 - -")
		p.expect("fdinfo "+h, tcpInfo)
		addr := p.one("sockname " + h)
		checkLoopback(t, addr, "127.0.0.1")
		checkListed(t, x, tok, "tcp", addr)
		serveCheck(t, p, h, addr)
		p.expect("fdinfo "+h, tcpInfo)
		p.expect("close "+h, "ok")
	}},
	{name: "bind_udp", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h, tok := bind(p, "udp 127.0.0.1:0 - -")
		p.expect("fdinfo "+h, udpInfo)
		checkListed(t, x, tok, "udp", p.one("sockname "+h))
		p.expect("close "+h, "ok")
	}},
	{name: "bind_tcp6", run: func(t *testing.T, x *caseEnv) {
		needIPv6(t)
		p := x.driver()
		h, tok := bind(p, "tcp6 [::1]:0 - -")
		p.expect("fdinfo "+h, tcp6Info)
		addr := p.one("sockname " + h)
		checkLoopback(t, addr, "[::1]")
		checkListed(t, x, tok, "tcp", addr)
		serveCheck(t, p, h, addr)
		p.expect("close "+h, "ok")
	}},
	{name: "pickup", run: func(t *testing.T, x *caseEnv) {
		a := x.driver()
		tok := a.one("bindtoken tcp 127.0.0.1:0 any -")
		checkToken(t, tok)
		st := x.d.byToken(t, tok)
		if st == nil || len(st.Holders) != 1 || !st.Holders[0].Pending {
			t.Fatalf("status after bindtoken: %+v, want one pending reference", st)
		}
		b := x.driver()
		w := b.ok("pickup " + tok)
		h := w[0]
		if w[1] != tok {
			t.Errorf("pickup: got token %s, want %s", w[1], tok)
		}
		if got := b.one("sockname " + h); got != st.Addr {
			t.Errorf("sockname of the picked-up socket: got %s, want %s", got, st.Addr)
		}
		b.expect("fdinfo "+h, tcpInfo)
		if st := x.d.byToken(t, tok); st == nil || st.Refs != 1 || st.Holders[0].Pending {
			t.Errorf("status after pickup: %+v, want one held reference", st)
		}
		serveCheck(t, b, h, st.Addr)
		a.expectErr("pickup "+tok, "not_found", 0) // a token is single-use
		b.expect("close "+h, "ok")
		x.d.waitGone(t, tok, "close of the picked-up socket")
	}},
	{name: "release", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h, tok := bind(p, "tcp 127.0.0.1:0 - -")
		addr := p.one("sockname " + h)
		p.expect("release "+tok, "ok")
		if st := x.d.byToken(t, tok); st != nil {
			t.Errorf("status after release (which waits for the reply): %+v, want the reference gone", st)
		}
		// Releasing the reference leaves the descriptor open and working.
		p.expect("fdinfo "+h, tcpInfo)
		serveCheck(t, p, h, addr)
		p.expectErr("release "+tok, "not_found", 0)
		p.expect("closefd "+h, "ok")
	}},
	{name: "close", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h, tok := bind(p, "tcp 127.0.0.1:0 - -")
		addr := p.one("sockname " + h)
		p.expect("close "+h, "ok")
		x.d.waitGone(t, tok, "close")
		p.expectErr("release "+tok, "not_found", 0)
		waitFree(t, addr, "after close")
	}},
	{name: "closefd", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h, tok := bind(p, "tcp 127.0.0.1:0 - -")
		p.expect("closefd "+h, "ok")
		p.expectErr("release "+aToken, "not_found", 0) // a round trip after closefd
		if st := x.d.byToken(t, tok); st == nil || st.Refs != 1 {
			t.Errorf("status after closefd: %+v, want the reference kept", st)
		}
		p.expect("release "+tok, "ok")
		if st := x.d.byToken(t, tok); st != nil {
			t.Errorf("status after release: %+v, want the reference gone", st)
		}
	}},
	{name: "reconnect", run: func(t *testing.T, x *caseEnv) {
		p := x.driver()
		h, tok := bind(p, "tcp 127.0.0.1:0 - -")
		p.expect("reconnect", "ok")
		x.d.waitGone(t, tok, "reconnect (the old connection's references go with it)")
		p.expect("fdinfo "+h, tcpInfo) // the descriptor stays
		p.expectErr("release "+tok, "not_found", 0)
	}},
	{name: "crash", run: func(t *testing.T, x *caseEnv) {
		p := x.driverAt(x.socket)
		h, tok := bind(p, "tcp 127.0.0.1:0 - -")
		addr := p.one("sockname " + h)
		p.kill()
		x.d.waitGone(t, tok, "SIGKILL of the holder")
		waitFree(t, addr, "after the holder was killed")
	}},
	{name: "crash_linger", run: func(t *testing.T, x *caseEnv) {
		p := x.driverAt(x.socket)
		h, tok := bind(p, "tcp "+lingerAddr+":0 - -")
		addr := p.one("sockname " + h)
		if st := x.d.byToken(t, tok); st == nil || st.Linger != lingerTime {
			t.Fatalf("status after bind: %+v, want linger %v", st, lingerTime)
		}
		// Taken before the kill: the daemon may see the connection end
		// before kill returns, and cannot before it is sent.
		killed := time.Now()
		p.kill()
		lingered := false
		if !poll(lingerTime+10*time.Second, func() bool {
			st := x.d.byAddr(t, "tcp", addr)
			if st != nil && st.Refs == 0 && st.Lingering > 0 {
				lingered = true
			}
			return st == nil
		}) {
			t.Fatalf("the daemon still lists %s %v after the holder was killed", addr, lingerTime+10*time.Second)
		}
		if took := time.Since(killed); !lingered || took < lingerTime {
			t.Errorf("socket gone %v after the kill, seen lingering: %v; want it kept lingering for %v", took, lingered, lingerTime)
		}
	}},
	{name: "status", run: func(t *testing.T, x *caseEnv) {
		// The driver runs as the test's uid, an admin: it sees every socket.
		p := x.driver()
		p.expect("status", "ok 0")
		bind(p, "tcp 127.0.0.1:0 - -")
		bind(p, "udp 127.0.0.1:0 - -")
		p.expect("status", "ok 2")
		tok := p.one("bindtoken tcp 127.0.0.1:0 - -")
		p.expect("status", "ok 3")
		if n := len(x.d.status(t)); n != 3 {
			t.Errorf("the admin's status lists %d sockets, want 3", n)
		}
		p.expect("release "+tok, "ok")
		p.expect("status", "ok 2")
	}},
	{name: "unreachable", run: func(t *testing.T, x *caseEnv) {
		// No daemon at the path: unavailable, with whatever errno the
		// failed connect(2) left (ENOENT, here).
		p := x.driverAt(filepath.Join(shortTempDir(t), "absent.sock"))
		base := p.fds()
		p.expectCode("connect tcp "+x.s.echoTCP, "unavailable")
		p.expectCode("bind tcp 127.0.0.1:0 - -", "unavailable")
		p.expectCode("release "+aToken, "unavailable")
		if got := p.fds(); got != base {
			t.Errorf("driver descriptors after the failed requests: got %d, want %d", got, base)
		}
	}},
}

// bind runs "bind ARGS" and returns the handle and the token.
func bind(p *proc, args string) (h, token string) {
	p.t.Helper()
	w := p.ok("bind " + args)
	checkToken(p.t, w[1])
	return w[0], w[1]
}

var tokenForm = regexp.MustCompile(`^[0-9a-f]{32}$`)

func checkToken(t *testing.T, tok string) {
	t.Helper()
	if !tokenForm.MatchString(tok) {
		t.Errorf("token %q: want 32 lowercase hexadecimal digits", tok)
	}
}

// checkListed checks that the admin's status lists the reference tok on a
// socket of network bound to addr.
func checkListed(t *testing.T, x *caseEnv, tok, network, addr string) {
	t.Helper()
	st := x.d.byToken(t, tok)
	if st == nil || st.Network != network || st.Addr != addr || st.Refs != 1 {
		t.Errorf("status of the reference: %+v, want %s %s with 1 reference", st, network, addr)
	}
}

// checkLoopback checks that addr is HOST:PORT with a port and host as given.
func checkLoopback(t *testing.T, addr, host string) {
	t.Helper()
	h, port, ok := strings.Cut(addr, "]:")
	if ok {
		h += "]"
	} else {
		h, port, ok = strings.Cut(addr, ":")
	}
	if !ok || h != host || port == "" || port == "0" {
		t.Errorf("sockname %q: want %s:PORT", addr, host)
	}
}

// serveCheck has the driver serve one connection on its listening socket
// h while the test connects to addr and checks the echo.
func serveCheck(t *testing.T, p *proc, h, addr string) {
	t.Helper()
	served := p.send("serve " + h)
	c, err := net.DialTimeout("tcp", addr, commandTimeout)
	if err != nil {
		t.Fatalf("connecting to %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(commandTimeout))
	const line = "ping through the daemon's socket\n"
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatalf("writing to %s: %v", addr, err)
	}
	got, err := io.ReadAll(c) // the driver closes the connection after its echo
	if err != nil || string(got) != line {
		t.Errorf("echo from the driver's server: got %q (%v), want %q", got, err, line)
	}
	if w := served.ok(); len(w) != 0 {
		t.Errorf("serve: got ok %q, want ok", w)
	}
}

// waitFree waits until the test can listen on addr itself: nobody holds
// the socket any more, neither the driver nor the daemon.
func waitFree(t *testing.T, addr, why string) {
	t.Helper()
	var err error
	if !poll(10*time.Second, func() bool {
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			l.Close()
		}
		return err == nil
	}) {
		t.Errorf("%s: %s still taken after 10s: %v", why, addr, err)
	}
}

// needIPv6 skips t where the host has no IPv6 loopback (and fails it
// where SOCKFACTORY_REQUIRE_ROOT=1 says the machine has every capability).
func needIPv6(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		testnet.SkipOrFail(t, fmt.Sprintf("no IPv6 loopback on this host (%v): enable it with sysctl net.ipv6.conf.lo.disable_ipv6=0", err))
		return
	}
	l.Close()
}
