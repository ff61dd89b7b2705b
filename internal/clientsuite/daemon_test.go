package clientsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// lingerAddr is the loopback address whose bind grant has a linger time
// (the rule "linger"), and lingerTime that time.
const (
	lingerAddr = "127.0.0.2"
	lingerTime = time.Second
)

// socketsPerUID is the daemon's [limits] sockets_per_uid: low, for the
// limit_exceeded case, and above what any other case holds at once.
const socketsPerUID = 3

// daemonConfig is the real daemon's configuration. The test's uid (root
// here and in CI) may connect to and bind loopback addresses, and is an
// admin, so the test's own client sees every socket; names are resolved
// by the test's DNS server only (%DNS%), which knows none: no lookup
// leaves the host.
const daemonConfig = `
[daemon]
socket = "%SOCKET%"

[limits]
sockets_per_uid = %LIMIT%

[resolver]
servers = ["%DNS%"]

[[rule]]
name = "suite"
users = [%UID%]
connect = ["127.0.0.1:*", "[::1]:*", "nonexistent.invalid:*"]
bind = ["*:127.0.0.1:*", "*:[::1]:*"]
admin = true

[[rule]]
name = "linger"
users = [%UID%]
bind = ["*:` + lingerAddr + `:*"]
linger = "%LINGER%"
`

// daemon is a running sockfactoryd.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	socket string
	log    *syncBuffer
	exited chan error
	admin  *sockfactory.Client // the test's own client, an admin
}

// startDaemon starts sockfactoryd on daemonConfig, warms it up (every kind
// of request once, so that what it opens on first use is open) and returns
// it. Cleanup stops it with SIGTERM and checks a clean exit.
func startDaemon(t *testing.T, dns string) *daemon {
	t.Helper()
	dir := shortTempDir(t)
	d := &daemon{t: t, socket: filepath.Join(dir, "sf.sock"), log: &syncBuffer{}, exited: make(chan error, 1)}
	config := strings.NewReplacer("%SOCKET%", d.socket, "%LIMIT%", fmt.Sprint(socketsPerUID), "%DNS%", dns,
		"%UID%", fmt.Sprint(os.Getuid()), "%LINGER%", lingerTime.String()).Replace(daemonConfig)
	path := filepath.Join(dir, "sockfactoryd.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin.daemon, "-config", path, "-log-level", "debug", "-log-flush", "0")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(d.stop)
	if !poll(10*time.Second, func() bool {
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("sockfactoryd exited at start: %v\n%s", err, d.log)
		default:
		}
		c, err := net.Dial("unixpacket", d.socket)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("sockfactoryd did not answer on %s within 10s\n%s", d.socket, d.log)
	}
	d.admin = &sockfactory.Client{Socket: d.socket}
	t.Cleanup(func() { d.admin.Close() })
	return d
}

// warmUp makes one request of every kind the cases make, with the admin
// client, so that the daemon has opened what it opens on first use (it
// reads somaxconn at its first bind, say) before any baseline is taken.
func (d *daemon) warmUp(echoTCP, echoUDP string) {
	t := d.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, c := range [][2]string{{"tcp", echoTCP}, {"udp", echoUDP}} {
		f, err := d.admin.ConnectFile(ctx, c[0], c[1], 0)
		if err != nil {
			t.Fatalf("warm-up connect %s %s: %v", c[0], c[1], err)
		}
		f.Close()
	}
	if _, err := d.admin.ConnectFile(ctx, "tcp", "nonexistent.invalid:80", 0); !errors.Is(err, sockfactory.ErrResolveFailed) {
		t.Fatalf("warm-up connect to nonexistent.invalid: got %v, want ErrResolveFailed", err)
	}
	for _, network := range []string{"tcp", "udp"} {
		f, b, err := d.admin.BindFile(ctx, network, "127.0.0.1:0", nil)
		if err != nil {
			t.Fatalf("warm-up bind %s: %v", network, err)
		}
		f.Close()
		if err := d.admin.Release(ctx, b.Token); err != nil {
			t.Fatalf("warm-up release: %v", err)
		}
	}
	b, err := d.admin.BindToken(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("warm-up bind token: %v", err)
	}
	if err := d.admin.Release(ctx, b.Token); err != nil {
		t.Fatalf("warm-up release token: %v", err)
	}
	if st := d.status(t); len(st) != 0 {
		t.Fatalf("status after warm-up: %d sockets, want none: %+v", len(st), st)
	}
}

// stop sends SIGTERM and checks that the daemon exits 0.
func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Errorf("sockfactoryd exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		d.t.Errorf("sockfactoryd did not exit within 20s of SIGTERM")
	}
	if d.t.Failed() {
		d.t.Logf("sockfactoryd log:\n%s", d.log)
	}
}

// fds returns the daemon's open descriptor count.
func (d *daemon) fds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("counting the daemon's descriptors: %v", err)
	}
	return len(ents)
}

// checkFDs waits, at t's cleanup, for the daemon's descriptor count to
// come back to what it is now: the connections a case's drivers made are
// gone and the sockets they held closed.
func (d *daemon) checkFDs(t *testing.T) {
	t.Helper()
	base := d.fds(t)
	t.Cleanup(func() {
		var got int
		if !poll(10*time.Second, func() bool { got = d.fds(t); return got == base }) {
			t.Errorf("daemon descriptors after the case: got %d, want the %d it had before (status: %+v)", got, base, d.status(t))
		}
	})
}

// status is the admin's status listing.
func (d *daemon) status(t testing.TB) []sockfactory.SocketStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	st, err := d.admin.Status(ctx)
	if err != nil {
		t.Errorf("admin status: %v", err)
	}
	return st
}

// byToken returns the socket that a reference with token holds, or nil.
func (d *daemon) byToken(t testing.TB, token string) *sockfactory.SocketStatus {
	t.Helper()
	st := d.status(t)
	for i := range st {
		for _, h := range st[i].Holders {
			if h.Token == token {
				return &st[i]
			}
		}
	}
	return nil
}

// byAddr returns the socket bound to network and addr, or nil.
func (d *daemon) byAddr(t testing.TB, network, addr string) *sockfactory.SocketStatus {
	t.Helper()
	for _, s := range d.status(t) {
		if s.Network == network && s.Addr == addr {
			return &s
		}
	}
	return nil
}

// waitGone waits until no socket listed holds a reference with token.
func (d *daemon) waitGone(t *testing.T, token, why string) {
	t.Helper()
	if !poll(10*time.Second, func() bool { return d.byToken(t, token) == nil }) {
		t.Errorf("%s: the daemon still lists the reference after 10s: %+v", why, d.byToken(t, token))
	}
}

// shortTempDir returns a new directory with a short path (a UNIX socket's
// path must fit in 108 bytes; t.TempDir's may not), removed at cleanup.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sfsuite-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// poll calls cond until it holds or limit has passed.
func poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
	}
}

// echoTCP listens on addr (a loopback address, port 0) and echoes every
// connection until it closes. It returns the address.
func echoTCP(t *testing.T, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("echo server on %s: %v", addr, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); io.Copy(c, c) })
		}
	})
	return l.Addr().String()
}

// echoUDP answers every datagram on a loopback UDP socket with the same
// datagram. It returns the address.
func echoUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

// dnsServer starts a DNS server on loopback that knows no name: every
// query is answered NXDOMAIN.
func dnsServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return testnet.ServeDNS(t, pc, nil).Addr()
}
