package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
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

// The bound-socket broker (issue 4), driven through the real daemon: share
// modes, tokens, crash release, options, linger, and `sockfactory exec`
// handing sockets to a program that reads LISTEN_FDS. Holders are Clients
// of this process (one connection each) or helper processes (registered
// below), some of them running as uid 65534, which may not bind port 53
// itself.

// bindAllOptions lists every socket option a rule may allow.
const bindAllOptions = `["reuseaddr", "reuseport", "v6only", "freebind", "transparent", "rcvbuf", "sndbuf", "bind_to_device", "pmtud_off", "fastopen", "defer_accept", "backlog", "listen"]`

// bindBase is the [daemon] part of every configuration here: a socket
// every uid may connect to (the policy decides).
const bindBase = `
[daemon]
socket = "%SOCKET%"
socket_mode = "0666"
`

// bindRootAdmin lets root bind any port on the loopback addresses, with
// every option, and see and release every reference.
const bindRootAdmin = `
[[rule]]
name = "root-loopback"
users = [0]
bind = ["*:127.0.0.1:*", "*:[::1]:*"]
bind_options = ` + bindAllOptions + `
admin = true
`

// bindNobodyDNS lets uid 65534 bind port 53 on the loopback addresses.
const bindNobodyDNS = `
[[rule]]
name = "nobody-dns"
users = [65534]
bind = ["tcp:127.0.0.1:53", "udp:127.0.0.1:53", "*:[::1]:53"]
`

func init() {
	helperModes["bind-hold"] = bindHelperHold
	helperModes["bind-pickup"] = bindHelperPickup
	helperModes["bind-nobody53"] = bindHelperNobody53
	helperModes["bind-listenfds"] = bindHelperListenFDs
}

// startBindDaemon starts a daemon on config, makes one bind request as a
// warm-up (the first one reads /proc/sys/net/core/somaxconn), waits until
// every connection so far is gone, and takes the fd baseline that cleanup
// checks. It returns the daemon and that baseline, for checks in between.
func startBindDaemon(t *testing.T, config string) (*daemon, int) {
	t.Helper()
	d := startDaemon(t, config)
	return d, bindWarmUp(t, d)
}

func bindWarmUp(t *testing.T, d *daemon) int {
	t.Helper()
	c := &sockfactory.Client{Socket: d.socket, App: "warm-up"}
	f, b, err := c.BindFile(context.Background(), "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("warm-up bind: %v", err)
	}
	f.Close()
	if err := c.Release(context.Background(), b.Token); err != nil {
		t.Fatalf("warm-up release: %v", err)
	}
	c.Close()
	waitFor(t, "warm-up connections to end", func() bool {
		log := d.log.String()
		return strings.Count(log, "client connected") == strings.Count(log, "client disconnected")
	})
	d.checkFDs()
	return d.fds()
}

// bindOpen makes c connect (with a status request) and returns the
// daemon's descriptor count with that connection open: the baseline of
// scenarios that keep c.
func bindOpen(t *testing.T, d *daemon, c *sockfactory.Client) int {
	t.Helper()
	bindStatus(t, c)
	return d.fds()
}

// bindWaitFDs waits until the daemon is back to base open descriptors.
func bindWaitFDs(t *testing.T, d *daemon, base int) {
	t.Helper()
	var got int
	if !poll(10*time.Second, func() bool { got = d.fds(); return got == base }) {
		t.Fatalf("daemon fd count after the scenario: got %d, want baseline %d; open: %s", got, base, bindFDList(d))
	}
}

// bindFDList describes the daemon's open descriptors, for failures.
func bindFDList(d *daemon) string {
	dir := fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	return strings.Join(out, " ")
}

func bindCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// bindClient returns a Client of d declaring app (none if empty), closed
// at cleanup.
func bindClient(t *testing.T, d *daemon, app string) *sockfactory.Client {
	c := &sockfactory.Client{Socket: d.socket, App: app}
	t.Cleanup(func() { c.Close() })
	return c
}

// bindStatus returns what c's caller sees of the daemon's sockets.
func bindStatus(t *testing.T, c *sockfactory.Client) []sockfactory.SocketStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// bindFind returns the socket network/addr in st, or nil.
func bindFind(st []sockfactory.SocketStatus, network, addr string) *sockfactory.SocketStatus {
	for i := range st {
		if st[i].Network == network && st[i].Addr == addr {
			return &st[i]
		}
	}
	return nil
}

// bindStable drops the fields of a status that change with time alone.
func bindStable(st []sockfactory.SocketStatus) []sockfactory.SocketStatus {
	out := make([]sockfactory.SocketStatus, len(st))
	for i, s := range st {
		s.Age = 0
		if s.Lingering > 0 {
			s.Lingering = 1
		}
		out[i] = s
	}
	return out
}

// bindWaitGone waits until c's status lists no socket network/addr.
func bindWaitGone(t *testing.T, c *sockfactory.Client, network, addr string) {
	t.Helper()
	var st []sockfactory.SocketStatus
	if !poll(10*time.Second, func() bool { st = bindStatus(t, c); return bindFind(st, network, addr) == nil }) {
		t.Fatalf("%s %s still held by the daemon: %+v", network, addr, st)
	}
}

// bindControl runs fn on the descriptor of c.
func bindControl(t *testing.T, c syscall.Conn, fn func(fd int)) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Control(func(fd uintptr) { fn(int(fd)) }); err != nil {
		t.Fatal(err)
	}
}

// bindInode returns the inode of c's socket: two descriptors with the same
// inode are the same socket.
func bindInode(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	var st unix.Stat_t
	var err error
	bindControl(t, c, func(fd int) { err = unix.Fstat(fd, &st) })
	if err != nil {
		t.Fatalf("fstat: %v", err)
	}
	return st.Ino
}

// bindOpt returns an integer socket option of c.
func bindOpt(t *testing.T, c syscall.Conn, level, opt int) int {
	t.Helper()
	var v int
	var err error
	bindControl(t, c, func(fd int) { v, err = unix.GetsockoptInt(fd, level, opt) })
	if err != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, opt, err)
	}
	return v
}

// bindPortFreeIn reports whether network addr can be bound directly now in
// the network namespace ns.
func bindPortFreeIn(ns *testnet.Netns, network, addr string) error {
	if strings.HasPrefix(network, "tcp") {
		l, err := ns.Listen(network, addr)
		if err == nil {
			l.Close()
		}
		return err
	}
	pc, err := ns.ListenPacket(network, addr)
	if err == nil {
		pc.Close()
	}
	return err
}

// bindPortFree reports whether network addr can be bound directly now.
func bindPortFree(network, addr string) error {
	if strings.HasPrefix(network, "tcp") {
		l, err := net.Listen(network, addr)
		if err == nil {
			l.Close()
		}
		return err
	}
	pc, err := net.ListenPacket(network, addr)
	if err == nil {
		pc.Close()
	}
	return err
}

// bindServeOnce shows that the socket f (network tcp or udp, bound to
// addr) serves: a client sends msg to addr, a server on (a duplicate of) f
// accepts it or reads it, and echoes it back.
func bindServeOnce(t *testing.T, network string, f *os.File, addr, msg string) {
	t.Helper()
	if network == "tcp" {
		l, err := net.FileListener(f)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		defer conn.Close()
		l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		srv, err := l.Accept()
		if err != nil {
			t.Fatalf("accept on %s: %v", addr, err)
		}
		defer srv.Close()
		go func() { io.Copy(srv, srv) }()
		roundTrip(t, conn, msg)
		return
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatal(err)
	}
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("datagram on %s: got %q, %v; want %q", addr, buf[:n], err, msg)
	}
	if _, err := pc.WriteTo(buf[:n], from); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err = conn.Read(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("answer from %s: got %q, %v; want %q", addr, buf[:n], err, msg)
	}
}

// TestIntegrationBindShareMatrix: the share rule of BIND 10's socket
// creator, through the daemon, for every pair of modes, with the same and
// different names (taken from each connection's hello), on TCP and UDP. A
// compatible second request gets the very same socket; an incompatible one
// gets share_conflict and changes nothing. A pending token counts as a
// holder.
func TestIntegrationBindShareMatrix(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+bindRootAdmin)
	admin := bindClient(t, d, "")
	base = bindOpen(t, d, admin)
	modes := []string{"none", "same-name", "any"}
	for _, network := range []string{"tcp", "udp"} {
		for _, first := range modes {
			for _, second := range modes {
				for _, sameName := range []bool{true, false} {
					names := "same-names"
					if !sameName {
						names = "different-names"
					}
					want := first != "none" && second != "none" && (sameName || (first != "same-name" && second != "same-name"))
					t.Run(fmt.Sprintf("%s/%s-then-%s/%s", network, first, second, names), func(t *testing.T) {
						appB := "web"
						if !sameName {
							appB = "dns"
						}
						bindShareCase(t, d, admin, network, &sockfactory.ListenOptions{Share: first}, "web", &sockfactory.ListenOptions{Share: second}, appB, want)
						bindWaitFDs(t, d, base)
					})
				}
			}
		}
	}

	// An explicit share name overrides the connection's app name.
	t.Run("explicit-name-matches", func(t *testing.T) {
		bindShareCase(t, d, admin, "tcp", &sockfactory.ListenOptions{Share: "same-name"}, "web", &sockfactory.ListenOptions{Share: "same-name", Name: "web"}, "dns", true)
		bindWaitFDs(t, d, base)
	})
	t.Run("explicit-name-differs", func(t *testing.T) {
		bindShareCase(t, d, admin, "udp", &sockfactory.ListenOptions{Share: "same-name", Name: "resolver"}, "web", &sockfactory.ListenOptions{Share: "same-name"}, "web", false)
		bindWaitFDs(t, d, base)
	})
	// Compatible modes but other options: a shared socket has one set.
	t.Run("options-differ", func(t *testing.T) {
		bindShareCase(t, d, admin, "tcp", &sockfactory.ListenOptions{Share: "any"}, "web", &sockfactory.ListenOptions{Share: "any", RcvBuf: 16384}, "web", false)
		bindWaitFDs(t, d, base)
	})

	t.Run("pending-token", func(t *testing.T) {
		ctx := bindCtx(t)
		a, b := bindClient(t, d, "web"), bindClient(t, d, "web")
		// A pending none token blocks everyone, any included.
		tok, err := a.BindToken(ctx, "tcp", "127.0.0.1:0", nil)
		if err != nil {
			t.Fatalf("BindToken: %v", err)
		}
		if tok.Expires <= 0 || tok.Expires > 30*time.Second {
			t.Errorf("token expiry: got %v, want within the default 30s TTL", tok.Expires)
		}
		st := bindFind(bindStatus(t, admin), "tcp", tok.Addr)
		if st == nil || st.Refs != 1 || len(st.Holders) != 1 || !st.Holders[0].Pending || st.Holders[0].App != "web" || st.Holders[0].Token != tok.Token {
			t.Fatalf("status of a pending token: got %+v; want one pending holder app web with the token", st)
		}
		before := bindStable(bindStatus(t, admin))
		for _, share := range []string{"none", "same-name", "any"} {
			f, _, err := b.BindFile(ctx, "tcp", tok.Addr, &sockfactory.ListenOptions{Share: share})
			if err == nil {
				f.Close()
				t.Fatalf("share %s against a pending none token: granted; want share_conflict", share)
			}
			if !errors.Is(err, sockfactory.ErrShareConflict) {
				t.Fatalf("share %s against a pending none token: got %v; want ErrShareConflict", share, err)
			}
		}
		if after := bindStable(bindStatus(t, admin)); !reflect.DeepEqual(after, before) {
			t.Fatalf("status after rejected requests:\n got  %+v\nwant %+v", after, before)
		}
		// Picked up by another connection, it is that connection's.
		f, pb, err := b.Pickup(ctx, tok.Token)
		if err != nil {
			t.Fatalf("pickup by another connection: %v", err)
		}
		f.Close()
		if pb.Token != tok.Token || pb.Addr != tok.Addr || pb.Network != "tcp" {
			t.Errorf("pickup: got %+v; want token %s at tcp %s", pb, tok.Token, tok.Addr)
		}
		st = bindFind(bindStatus(t, admin), "tcp", tok.Addr)
		if st == nil || st.Refs != 1 || st.Holders[0].Pending {
			t.Fatalf("status after pickup: got %+v; want one held reference", st)
		}
		if err := b.Release(ctx, tok.Token); err != nil {
			t.Fatalf("release by the connection that picked it up: %v", err)
		}
		bindWaitGone(t, admin, "tcp", tok.Addr)

		// A pending same-name token: the same name may join, another not.
		tok, err = a.BindToken(ctx, "udp", "[::1]:0", &sockfactory.ListenOptions{Share: "same-name", Name: "ns"})
		if err != nil {
			t.Fatalf("BindToken: %v", err)
		}
		before = bindStable(bindStatus(t, admin))
		if f, _, err := b.BindFile(ctx, "udp", tok.Addr, &sockfactory.ListenOptions{Share: "same-name", Name: "other"}); !errors.Is(err, sockfactory.ErrShareConflict) {
			if f != nil {
				f.Close()
			}
			t.Fatalf("other name against a pending same-name token: got %v; want ErrShareConflict", err)
		}
		if after := bindStable(bindStatus(t, admin)); !reflect.DeepEqual(after, before) {
			t.Fatalf("status after a rejected request:\n got  %+v\nwant %+v", after, before)
		}
		f, jb, err := b.BindFile(ctx, "udp", tok.Addr, &sockfactory.ListenOptions{Share: "any", Name: "ns"})
		if err != nil {
			t.Fatalf("same name, share any, against a pending same-name token: %v", err)
		}
		if !jb.Shared {
			t.Errorf("joining a pending token's socket: Shared false, want true")
		}
		pf, _, err := a.Pickup(ctx, tok.Token)
		if err != nil {
			t.Fatalf("pickup by the asker: %v", err)
		}
		if bindInode(t, f) != bindInode(t, pf) {
			t.Errorf("picked-up socket and joined socket differ; want one socket")
		}
		f.Close()
		pf.Close()
		a.Close()
		b.Close()
		bindWaitGone(t, admin, "udp", tok.Addr)
		bindWaitFDs(t, d, base)
	})
}

// bindShareCase binds with oa on a connection declaring appA, then asks for
// the same address with ob on another connection declaring appB, and checks
// the outcome against want (shared) or not (share_conflict, nothing
// changed). Everything is released at the end.
func bindShareCase(t *testing.T, d *daemon, admin *sockfactory.Client, network string, oa *sockfactory.ListenOptions, appA string, ob *sockfactory.ListenOptions, appB string, want bool) {
	t.Helper()
	ctx := bindCtx(t)
	a, b := bindClient(t, d, appA), bindClient(t, d, appB)
	fa, ba, err := a.BindFile(ctx, network, "127.0.0.1:0", oa)
	if err != nil {
		t.Fatalf("first bind: %v", err)
	}
	defer fa.Close()
	if ba.Shared {
		t.Errorf("first bind: Shared true, want false")
	}
	before := bindStable(bindStatus(t, admin))
	fb, bb, err := b.BindFile(ctx, network, ba.Addr, ob)
	if want {
		if err != nil {
			t.Fatalf("second bind (%+v after %+v): %v; want shared", ob, oa, err)
		}
		defer fb.Close()
		if !bb.Shared || bb.Addr != ba.Addr || bb.Token == ba.Token {
			t.Errorf("second bind: got %+v; want shared %s with a token of its own", bb, ba.Addr)
		}
		if ia, ib := bindInode(t, fa), bindInode(t, fb); ia != ib {
			t.Errorf("holders' sockets: inodes %d and %d; want the same socket", ia, ib)
		}
		st := bindFind(bindStatus(t, admin), network, ba.Addr)
		if st == nil || st.Refs != 2 || len(st.Holders) != 2 {
			t.Fatalf("status: got %+v; want 2 references", st)
		}
		apps := map[string]bool{}
		for _, h := range st.Holders {
			apps[h.App] = true
			if h.UID != 0 || h.PID != int32(os.Getpid()) || h.Pending {
				t.Errorf("holder %+v: want uid 0, pid %d, held", h, os.Getpid())
			}
		}
		if !apps[appA] || !apps[appB] {
			t.Errorf("holders' apps: got %v; want %s and %s", apps, appA, appB)
		}
	} else {
		if err == nil {
			fb.Close()
			t.Fatalf("second bind (%+v after %+v): granted %+v; want share_conflict", ob, oa, bb)
		}
		if !errors.Is(err, sockfactory.ErrShareConflict) {
			t.Fatalf("second bind (%+v after %+v): got %v; want ErrShareConflict", ob, oa, err)
		}
		if after := bindStable(bindStatus(t, admin)); !reflect.DeepEqual(after, before) {
			t.Fatalf("status after the rejected request:\n got  %+v\nwant %+v (unchanged)", after, before)
		}
		// The first holder's socket still serves.
		bindServeOnce(t, network, fa, ba.Addr, "still mine\n")
	}
	a.Close()
	b.Close()
	bindWaitGone(t, admin, network, ba.Addr)
}

// TestIntegrationBindSharedLifecycle: two holders of one socket have the
// same socket (same inode); when one closes its connection the other keeps
// serving on it; when the last goes the daemon closes its copy, a fresh
// share-none request gets a new socket, and the port can be bound directly.
func TestIntegrationBindSharedLifecycle(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+bindRootAdmin)
	admin := bindClient(t, d, "")
	base = bindOpen(t, d, admin)
	for _, tc := range []struct{ network, host string }{{"tcp", "127.0.0.1"}, {"udp", "[::1]"}} {
		t.Run(tc.network, func(t *testing.T) {
			ctx := bindCtx(t)
			a, b := bindClient(t, d, "worker"), bindClient(t, d, "worker")
			opts := &sockfactory.ListenOptions{Share: "same-name"}
			fa, ba, err := a.BindFile(ctx, tc.network, tc.host+":0", opts)
			if err != nil {
				t.Fatal(err)
			}
			fb, bb, err := b.BindFile(ctx, tc.network, ba.Addr, opts)
			if err != nil {
				fa.Close()
				t.Fatal(err)
			}
			if ia, ib := bindInode(t, fa), bindInode(t, fb); ia != ib || !bb.Shared {
				t.Errorf("two holders: inodes %d, %d, shared %v; want one socket", ia, ib, bb.Shared)
			}
			if err := bindPortFree(tc.network, ba.Addr); !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("direct bind of the held %s: got %v; want EADDRINUSE", ba.Addr, err)
			}

			// The first holder goes: its connection closes.
			fa.Close()
			a.Close()
			var st *sockfactory.SocketStatus
			waitFor(t, "the first holder's reference to go", func() bool {
				st = bindFind(bindStatus(t, admin), tc.network, ba.Addr)
				return st != nil && st.Refs == 1
			})
			if st.Holders[0].Token != bb.Token {
				t.Fatalf("remaining reference: got %+v; want token %s", st.Holders[0], bb.Token)
			}
			bindServeOnce(t, tc.network, fb, ba.Addr, "served by the second holder\n")

			// The last holder goes.
			fb.Close()
			b.Close()
			bindWaitGone(t, admin, tc.network, ba.Addr)
			c := bindClient(t, d, "fresh")
			fc, bc, err := c.BindFile(ctx, tc.network, ba.Addr, nil)
			if err != nil {
				t.Fatalf("share-none request for the freed %s: %v", ba.Addr, err)
			}
			if bc.Shared {
				t.Errorf("fresh request: Shared true; want a new socket")
			}
			fc.Close()
			if err := c.Release(ctx, bc.Token); err != nil {
				t.Fatal(err)
			}
			bindWaitGone(t, admin, tc.network, ba.Addr)
			if err := bindPortFree(tc.network, ba.Addr); err != nil {
				t.Fatalf("direct bind of the released %s: %v", ba.Addr, err)
			}
			c.Close()
			bindWaitFDs(t, d, base)
		})
	}
}

// TestIntegrationBindCrashRelease: kill -9 of a process holding a shared
// socket drops exactly its reference; when the last holder is killed the
// socket is gone and the port is free.
func TestIntegrationBindCrashRelease(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+bindRootAdmin)
	admin := bindClient(t, d, "")
	base = bindOpen(t, d, admin)
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			first := bindHelper(t, d, "", nil, "bind-hold", network+" 127.0.0.1:0 any holder-1")
			f1 := strings.Fields(first.expect(t, "READY"))
			addr := f1[2]
			second := bindHelper(t, d, "", nil, "bind-hold", network+" "+addr+" any holder-2")
			f2 := strings.Fields(second.expect(t, "READY"))
			if f1[3] != f2[3] {
				t.Errorf("holders' inodes: %s and %s; want the same socket", f1[3], f2[3])
			}
			st := bindFind(bindStatus(t, admin), network, addr)
			if st == nil || st.Refs != 2 {
				t.Fatalf("status with two holder processes: got %+v; want 2 references", st)
			}
			pids := map[int32]string{}
			for _, h := range st.Holders {
				pids[h.PID] = h.App
			}
			if pids[int32(first.pid())] != "holder-1" || pids[int32(second.pid())] != "holder-2" {
				t.Errorf("holders: got pid->app %v; want %d->holder-1, %d->holder-2", pids, first.pid(), second.pid())
			}

			first.kill9(t)
			waitFor(t, "the killed holder's reference to go", func() bool {
				st = bindFind(bindStatus(t, admin), network, addr)
				return st != nil && st.Refs == 1
			})
			if h := st.Holders[0]; h.PID != int32(second.pid()) || h.Token != f2[1] {
				t.Fatalf("remaining holder: got %+v; want pid %d token %s", h, second.pid(), f2[1])
			}
			second.kill9(t)
			bindWaitGone(t, admin, network, addr)
			if err := bindPortFree(network, addr); err != nil {
				t.Fatalf("direct bind after both holders were killed: %v", err)
			}
			bindWaitFDs(t, d, base)
		})
	}
}

// TestIntegrationBindTokens: a token is single-use; it cannot be picked
// up by a caller the policy does not grant the socket, nor released by a
// connection that does not hold the reference (an admin can); the reference
// it stands for outlives such attempts unchanged.
func TestIntegrationBindTokens(t *testing.T) {
	requireRoot(t)
	// root is no admin here; uid 1000 is, and may do nothing else.
	d, base := startBindDaemon(t, bindBase+`
[[rule]]
name = "root-loopback"
users = [0]
bind = ["*:127.0.0.1:*", "*:[::1]:*"]
`+bindNobodyDNS+`
[[rule]]
name = "operator"
users = [1000]
admin = true
`)
	ctx := bindCtx(t)
	a, b := bindClient(t, d, "a"), bindClient(t, d, "b")

	t.Run("stolen-token", func(t *testing.T) {
		tok, err := a.BindToken(ctx, "tcp", "127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		before := bindStable(bindStatus(t, a))
		// uid 65534 is known to the policy, but granted only port 53.
		thief := bindHelper(t, d, bindPublicBinary(t), asUser(65534, 65534), "bind-pickup", tok.Token)
		if got := thief.expect(t, ""); got != "ERR not_found" {
			t.Fatalf("pickup by uid 65534: got %q; want ERR not_found", got)
		}
		thief.wait(t)
		if after := bindStable(bindStatus(t, a)); !reflect.DeepEqual(after, before) {
			t.Fatalf("status after the refused pickup:\n got  %+v\nwant %+v", after, before)
		}
		f, pb, err := b.Pickup(ctx, tok.Token)
		if err != nil {
			t.Fatalf("pickup by a granted connection after the refused one: %v", err)
		}
		f.Close()
		if pb.Addr != tok.Addr {
			t.Errorf("pickup: got %s, want %s", pb.Addr, tok.Addr)
		}
		if f, _, err := a.Pickup(ctx, tok.Token); !errors.Is(err, sockfactory.ErrNotFound) {
			if f != nil {
				f.Close()
			}
			t.Fatalf("second pickup of one token: got %v; want ErrNotFound", err)
		}
		if err := b.Release(ctx, tok.Token); err != nil {
			t.Fatal(err)
		}
		bindWaitFDs(t, d, base+2) // a's and b's connections
	})

	t.Run("release-by-non-holder", func(t *testing.T) {
		f, ba, err := a.BindFile(ctx, "udp", "127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		before := bindStable(bindStatus(t, a))
		if err := b.Release(ctx, ba.Token); !errors.Is(err, sockfactory.ErrNotFound) {
			t.Fatalf("release by another connection of the same uid: got %v; want ErrNotFound", err)
		}
		if f, _, err := b.Pickup(ctx, ba.Token); !errors.Is(err, sockfactory.ErrNotFound) {
			if f != nil {
				f.Close()
			}
			t.Fatalf("pickup of a held reference: got %v; want ErrNotFound", err)
		}
		_, errOut, code := runCLI(t, "", asUser(65534, 65534), "release", "-socket", d.socket, ba.Token)
		if code != 1 || !strings.Contains(errOut, "not_found") {
			t.Fatalf("sockfactory release by uid 65534: exit %d, stderr %q; want exit 1, not_found", code, errOut)
		}
		if after := bindStable(bindStatus(t, a)); !reflect.DeepEqual(after, before) {
			t.Fatalf("status after refused releases:\n got  %+v\nwant %+v", after, before)
		}
		// An admin may release anyone's reference.
		out, errOut, code := runCLI(t, "", asUser(1000, 1000), "release", "-socket", d.socket, ba.Token)
		if code != 0 || out != "released\n" {
			t.Fatalf("sockfactory release by the admin: exit %d, stdout %q, stderr %q; want exit 0, released", code, out, errOut)
		}
		if st := bindFind(bindStatus(t, a), "udp", ba.Addr); st != nil {
			t.Fatalf("status after the admin's release: got %+v; want the socket gone", st)
		}
		if err := a.Release(ctx, ba.Token); !errors.Is(err, sockfactory.ErrNotFound) {
			t.Fatalf("release of a reference an admin released: got %v; want ErrNotFound", err)
		}
		// The holder's own descriptor is its own: it still works.
		bindServeOnce(t, "udp", f, ba.Addr, "mine still\n")
	})

	t.Run("pending-token-release", func(t *testing.T) {
		tok, err := a.BindToken(ctx, "tcp", "[::1]:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Release(ctx, tok.Token); !errors.Is(err, sockfactory.ErrNotFound) {
			t.Fatalf("release of a's pending token by b: got %v; want ErrNotFound", err)
		}
		if err := a.Release(ctx, tok.Token); err != nil {
			t.Fatalf("release of a pending token by its asker: %v", err)
		}
		if f, _, err := b.Pickup(ctx, tok.Token); !errors.Is(err, sockfactory.ErrNotFound) {
			if f != nil {
				f.Close()
			}
			t.Fatalf("pickup of a released token: got %v; want ErrNotFound", err)
		}
		if err := bindPortFree("tcp", tok.Addr); err != nil {
			t.Fatalf("direct bind after the pending token's release: %v", err)
		}
	})
	a.Close()
	b.Close()
	bindWaitFDs(t, d, base)
}

// TestIntegrationBindTokenExpiry: an unpicked token expires after
// [bind] token_ttl, stops counting as a holder, and can no longer be
// picked up.
func TestIntegrationBindTokenExpiry(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+`
[bind]
token_ttl = "200ms"
`+bindRootAdmin)
	ctx := bindCtx(t)
	a, b := bindClient(t, d, "a"), bindClient(t, d, "b")
	tok, err := a.BindToken(ctx, "udp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Expires <= 0 || tok.Expires > 200*time.Millisecond {
		t.Errorf("token expiry: got %v; want at most the configured 200ms", tok.Expires)
	}
	// Poll until the daemon dropped it: the socket had no other holder.
	bindWaitGone(t, b, "udp", tok.Addr)
	for _, c := range []*sockfactory.Client{a, b} {
		if f, _, err := c.Pickup(ctx, tok.Token); !errors.Is(err, sockfactory.ErrNotFound) {
			if f != nil {
				f.Close()
			}
			t.Fatalf("pickup of an expired token: got %v; want ErrNotFound", err)
		}
	}
	f, bb, err := b.BindFile(ctx, "udp", tok.Addr, nil)
	if err != nil {
		t.Fatalf("share-none request after the token expired: %v", err)
	}
	f.Close()
	if bb.Shared {
		t.Errorf("request after expiry: Shared true; want a new socket")
	}
	a.Close()
	b.Close()
	bindWaitFDs(t, d, base)
}

// TestIntegrationBindNobodyPort53: a process running as uid 65534, which
// the kernel does not let bind port 53, gets TCP and UDP port 53 on
// 127.0.0.1 and ::1 from the daemon and answers on each; when it exits its
// references are gone. The daemon runs in a network namespace of its own,
// so that the host's port 53 may be taken.
func TestIntegrationBindNobodyPort53(t *testing.T) {
	requireRoot(t)
	d, ns := startDaemonNetns(t, bindBase+bindRootAdmin+bindNobodyDNS)
	base := bindWarmUp(t, d)
	ctx := bindCtx(t)
	admin := bindClient(t, d, "")
	dns := bindHelper(t, d, bindPublicBinary(t), asUser(65534, 65534), "bind-nobody53", "")
	dns.expect(t, "READY")
	st := bindStatus(t, admin)
	for _, k := range [][2]string{{"tcp", "127.0.0.1:53"}, {"tcp", "[::1]:53"}, {"udp", "127.0.0.1:53"}, {"udp", "[::1]:53"}} {
		s := bindFind(st, k[0], k[1])
		if s == nil || s.Refs != 1 || s.Holders[0].UID != 65534 || s.Holders[0].PID != int32(dns.pid()) {
			t.Fatalf("status of %s %s: got %+v; want held by uid 65534 pid %d", k[0], k[1], s, dns.pid())
		}
	}
	for i, addr := range []string{"127.0.0.1:53", "[::1]:53"} {
		q := fmt.Sprintf("query %d\n", i)
		conn, err := ns.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("tcp %s: %v", addr, err)
		}
		if _, err := io.WriteString(conn, q); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if want := "answer from " + addr + ": " + q; got != want {
			t.Fatalf("tcp %s: got %q, %v; want %q", addr, got, err, want)
		}
		uc, err := ns.DialContext(ctx, "udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(uc, q); err != nil {
			t.Fatal(err)
		}
		uc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		n, err := uc.Read(buf)
		uc.Close()
		if want := "answer from " + addr + ": " + q; string(buf[:n]) != want {
			t.Fatalf("udp %s: got %q, %v; want %q", addr, buf[:n], err, want)
		}
	}
	dns.expect(t, "DONE")
	dns.wait(t)
	waitFor(t, "uid 65534's sockets to be released", func() bool { return len(bindStatus(t, admin)) == 0 })
	bindWaitFDs(t, d, base+1) // the admin's connection
}

// TestIntegrationBindLinger: with linger in the rule, the daemon keeps a
// socket nobody holds; a TCP connection queued (and a datagram sent)
// meanwhile is taken by the next holder, on the same socket. After the
// linger time the socket is closed.
func TestIntegrationBindLinger(t *testing.T) {
	requireRoot(t)
	// The warm-up binds 127.0.0.1, which does not linger.
	d, base := startBindDaemon(t, bindBase+`
[[rule]]
name = "root-lingering"
users = [0]
bind = ["*:127.0.0.2:*"]
linger = "5s"
`+bindRootAdmin)
	admin := bindClient(t, d, "")
	base = bindOpen(t, d, admin)
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			ctx := bindCtx(t)
			a := bindClient(t, d, "restarting")
			f, ba, err := a.BindFile(ctx, network, "127.0.0.2:0", nil)
			if err != nil {
				t.Fatal(err)
			}
			ino := bindInode(t, f)
			f.Close()
			a.Close() // the application exits
			var st *sockfactory.SocketStatus
			waitFor(t, "the socket to linger", func() bool {
				st = bindFind(bindStatus(t, admin), network, ba.Addr)
				return st != nil && st.Refs == 0
			})
			if st.Linger != 5*time.Second || st.Lingering <= 0 {
				t.Errorf("lingering socket status: got %+v; want linger 5s and lingering", st)
			}
			out, _, _ := runCLI(t, "", nil, "status", "-socket", d.socket)
			if !strings.Contains(out, ba.Addr) || !strings.Contains(out, "lingering") {
				t.Errorf("sockfactory status of a lingering socket:\n%s\nwant %s shown lingering", out, ba.Addr)
			}

			// A client arrives while nobody holds the socket.
			conn, err := net.DialTimeout(network, ba.Addr, 10*time.Second)
			if err != nil {
				t.Fatalf("dial the lingering socket: %v", err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "queued\n"); err != nil {
				t.Fatal(err)
			}

			// The application is back.
			b := bindClient(t, d, "restarting")
			f, bb, err := b.BindFile(ctx, network, ba.Addr, nil)
			if err != nil {
				t.Fatalf("re-bind within linger: %v", err)
			}
			if got := bindInode(t, f); got != ino || !bb.Shared {
				t.Errorf("re-bound socket: inode %d (shared %v); want the lingering socket %d", got, bb.Shared, ino)
			}
			buf := make([]byte, 64)
			if network == "tcp" {
				l, err := net.FileListener(f)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
				srv, err := l.Accept()
				if err != nil {
					t.Fatalf("accept of the queued connection: %v", err)
				}
				defer srv.Close()
				srv.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(srv, buf[:7]); err != nil || string(buf[:7]) != "queued\n" {
					t.Fatalf("queued connection's data: got %q, %v", buf[:7], err)
				}
			} else {
				pc, err := net.FilePacketConn(f)
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				pc.SetDeadline(time.Now().Add(10 * time.Second))
				n, _, err := pc.ReadFrom(buf)
				if err != nil || string(buf[:n]) != "queued\n" {
					t.Fatalf("datagram sent while lingering: got %q, %v", buf[:n], err)
				}
			}
			f.Close()
			b.Close()
			// After the linger time the daemon closes it.
			bindWaitGone(t, admin, network, ba.Addr)
		})
	}
	bindWaitFDs(t, d, base)
}

// TestIntegrationBindOptions: each socket option a request sets is on the
// received socket (read back with getsockopt); the defaults are
// IPV6_V6ONLY on, blocking, TCP listening with the system's maximum
// backlog, SO_REUSEADDR on only where TCP listens. Options the granting
// rule does not allow are denied, and so are share modes it does not allow.
func TestIntegrationBindOptions(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+bindRootAdmin+`
[[rule]]
name = "root-all-addresses"
users = [0]
bind = ["tcp:[::]:*"]
bind_options = ["v6only", "listen"]

[[rule]]
name = "root-default-options"
users = [0]
bind = ["*:127.0.0.2:*"]

[[rule]]
name = "root-plain"
users = [0]
bind = ["*:127.0.0.3:*"]
bind_shares = ["none"]
bind_options = []
`)
	admin := bindClient(t, d, "")
	c := bindClient(t, d, "options")
	somaxconn := 4096
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		somaxconn, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	sol, ip, ip6, tcp := unix.SOL_SOCKET, unix.IPPROTO_IP, unix.IPPROTO_IPV6, unix.IPPROTO_TCP
	type opt struct {
		level, name, want int
		what              string
	}
	cases := []struct {
		name, network, address string
		opts                   *sockfactory.ListenOptions
		want                   []opt
		backlog                int    // TCP_INFO tcpi_sacked of a listener is its backlog
		device                 string // SO_BINDTODEVICE
	}{
		{"defaults-tcp4", "tcp", "127.0.0.1:0", nil, []opt{
			{sol, unix.SO_TYPE, unix.SOCK_STREAM, "SO_TYPE"}, {sol, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"},
			{sol, unix.SO_REUSEPORT, 0, "SO_REUSEPORT"}, {sol, unix.SO_ACCEPTCONN, 1, "SO_ACCEPTCONN"},
			{ip, unix.IP_FREEBIND, 0, "IP_FREEBIND"}, {ip, unix.IP_TRANSPARENT, 0, "IP_TRANSPARENT"},
		}, somaxconn, ""},
		{"defaults-tcp6", "tcp6", "[::1]:0", nil, []opt{{ip6, unix.IPV6_V6ONLY, 1, "IPV6_V6ONLY"}, {sol, unix.SO_ACCEPTCONN, 1, "SO_ACCEPTCONN"}}, somaxconn, ""},
		{"defaults-udp4", "udp", "127.0.0.1:0", nil, []opt{
			{sol, unix.SO_TYPE, unix.SOCK_DGRAM, "SO_TYPE"}, {sol, unix.SO_REUSEADDR, 0, "SO_REUSEADDR"},
		}, 0, ""},
		{"defaults-udp6", "udp", "[::1]:0", nil, []opt{{ip6, unix.IPV6_V6ONLY, 1, "IPV6_V6ONLY"}}, 0, ""},
		{"reuseport", "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{ReusePort: true}, []opt{{sol, unix.SO_REUSEPORT, 1, "SO_REUSEPORT"}}, 0, ""},
		{"reuseaddr-off", "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{NoReuseAddr: true}, []opt{{sol, unix.SO_REUSEADDR, 0, "SO_REUSEADDR"}}, 0, ""},
		{"reuseaddr-on", "udp", "127.0.0.1:0", &sockfactory.ListenOptions{ReuseAddr: true}, []opt{{sol, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"}}, 0, ""},
		// The kernel turns IPV6_V6ONLY on when a socket binds a specific
		// IPv6 address, so v6only shows only on [::]: bound, not
		// listening, so that nothing is reachable there.
		{"v6only-default", "tcp6", "[::]:0", &sockfactory.ListenOptions{NoListen: true}, []opt{{ip6, unix.IPV6_V6ONLY, 1, "IPV6_V6ONLY"}}, 0, ""},
		{"v6only-off", "tcp6", "[::]:0", &sockfactory.ListenOptions{DualStack: true, NoListen: true}, []opt{{ip6, unix.IPV6_V6ONLY, 0, "IPV6_V6ONLY"}, {sol, unix.SO_ACCEPTCONN, 0, "SO_ACCEPTCONN"}}, 0, ""},
		{"empty-host-is-dual-stack", "tcp", ":0", &sockfactory.ListenOptions{NoListen: true}, []opt{{ip6, unix.IPV6_V6ONLY, 0, "IPV6_V6ONLY"}}, 0, ""},
		{"freebind4", "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{FreeBind: true}, []opt{{ip, unix.IP_FREEBIND, 1, "IP_FREEBIND"}}, 0, ""},
		{"freebind6", "udp", "[::1]:0", &sockfactory.ListenOptions{FreeBind: true}, []opt{{ip6, unix.IPV6_FREEBIND, 1, "IPV6_FREEBIND"}}, 0, ""},
		{"transparent4", "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Transparent: true}, []opt{{ip, unix.IP_TRANSPARENT, 1, "IP_TRANSPARENT"}}, 0, ""},
		{"transparent6", "udp", "[::1]:0", &sockfactory.ListenOptions{Transparent: true}, []opt{{ip6, unix.IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT"}}, 0, ""},
		// The kernel doubles SO_RCVBUF and SO_SNDBUF for its bookkeeping.
		{"rcvbuf-sndbuf", "udp", "127.0.0.1:0", &sockfactory.ListenOptions{RcvBuf: 16384, SndBuf: 24576}, []opt{
			{sol, unix.SO_RCVBUF, 2 * 16384, "SO_RCVBUF"}, {sol, unix.SO_SNDBUF, 2 * 24576, "SO_SNDBUF"},
		}, 0, ""},
		{"bind-to-device", "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{BindToDevice: "lo"}, nil, 0, "lo"},
		{"pmtud-off4", "udp", "127.0.0.1:0", &sockfactory.ListenOptions{PMTUDiscOff: true}, []opt{{ip, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT, "IP_MTU_DISCOVER"}}, 0, ""},
		{"pmtud-off6", "udp6", "[::1]:0", &sockfactory.ListenOptions{PMTUDiscOff: true}, []opt{{ip6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_OMIT, "IPV6_MTU_DISCOVER"}}, 0, ""},
		{"fastopen", "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{FastOpen: 16}, []opt{{tcp, unix.TCP_FASTOPEN, 16, "TCP_FASTOPEN"}}, 0, ""},
		{"backlog", "tcp", "[::1]:0", &sockfactory.ListenOptions{Backlog: 7}, nil, 7, ""},
		{"bound-only", "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{NoListen: true}, []opt{{sol, unix.SO_ACCEPTCONN, 0, "SO_ACCEPTCONN"}, {sol, unix.SO_REUSEADDR, 0, "SO_REUSEADDR"}}, 0, ""},
		{"default-options-rule", "tcp", "127.0.0.2:0", &sockfactory.ListenOptions{RcvBuf: 16384, FastOpen: 4, Backlog: 9, NoReuseAddr: true}, []opt{
			{sol, unix.SO_RCVBUF, 2 * 16384, "SO_RCVBUF"}, {tcp, unix.TCP_FASTOPEN, 4, "TCP_FASTOPEN"}, {sol, unix.SO_REUSEADDR, 0, "SO_REUSEADDR"},
		}, 9, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := bindCtx(t)
			f, b, err := c.BindFile(ctx, tc.network, tc.address, tc.opts)
			if err != nil {
				t.Fatalf("bind %s %s with %+v: %v", tc.network, tc.address, tc.opts, err)
			}
			defer func() {
				f.Close()
				if err := c.Release(ctx, b.Token); err != nil {
					t.Errorf("release: %v", err)
				}
			}()
			for _, o := range tc.want {
				if got := bindOpt(t, f, o.level, o.name); got != o.want {
					t.Errorf("%s: got %d, want %d", o.what, got, o.want)
				}
			}
			var flags int
			bindControl(t, f, func(fd int) { flags, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0) })
			if err != nil || flags&unix.O_NONBLOCK != 0 {
				t.Errorf("file status flags %#x, %v: want a blocking socket", flags, err)
			}
			if tc.backlog != 0 {
				var info *unix.TCPInfo
				bindControl(t, f, func(fd int) { info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO) })
				if err != nil || int(info.Sacked) != tc.backlog {
					t.Errorf("listen backlog (tcpi_sacked): got %v, %v; want %d", info, err, tc.backlog)
				}
			}
			if tc.device != "" {
				var dev string
				bindControl(t, f, func(fd int) { dev, err = unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE) })
				if err != nil || dev != tc.device {
					t.Errorf("SO_BINDTODEVICE: got %q, %v; want %q", dev, err, tc.device)
				}
			}
		})
	}

	// TCP_DEFER_ACCEPT is kept as a count of SYN-ACK retransmissions:
	// reading it back gives the time those take, at least what was asked.
	t.Run("defer-accept", func(t *testing.T) {
		ctx := bindCtx(t)
		f, b, err := c.BindFile(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{DeferAccept: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release(ctx, b.Token)
		defer f.Close()
		if got := bindOpt(t, f, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT); got < 3 {
			t.Errorf("TCP_DEFER_ACCEPT: got %d s, want at least 3", got)
		}
	})

	denied := []struct {
		name, network, address string
		opts                   *sockfactory.ListenOptions
		mention                string
	}{
		{"reuseport-not-allowed", "tcp", "127.0.0.2:0", &sockfactory.ListenOptions{ReusePort: true}, `socket option "reuseport"`},
		{"freebind-not-allowed", "tcp", "127.0.0.2:0", &sockfactory.ListenOptions{FreeBind: true}, `socket option "freebind"`},
		{"transparent-not-allowed", "udp", "127.0.0.2:0", &sockfactory.ListenOptions{Transparent: true}, `socket option "transparent"`},
		{"bind-to-device-not-allowed", "udp", "127.0.0.2:0", &sockfactory.ListenOptions{BindToDevice: "lo"}, `socket option "bind_to_device"`},
		{"empty-option-list", "udp", "127.0.0.3:0", &sockfactory.ListenOptions{RcvBuf: 16384}, `socket option "rcvbuf"`},
		{"share-mode-not-allowed", "tcp", "127.0.0.3:0", &sockfactory.ListenOptions{Share: "any"}, `share mode "any"`},
		{"address-not-granted", "tcp", "127.0.0.4:0", nil, "no rule grants"},
	}
	for _, tc := range denied {
		t.Run(tc.name, func(t *testing.T) {
			ctx := bindCtx(t)
			f, _, err := c.BindFile(ctx, tc.network, tc.address, tc.opts)
			if err == nil {
				f.Close()
				t.Fatalf("bind %s %s with %+v: granted; want denied", tc.network, tc.address, tc.opts)
			}
			if !errors.Is(err, sockfactory.ErrDenied) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("bind %s %s with %+v: got %v; want ErrDenied mentioning %s", tc.network, tc.address, tc.opts, err, tc.mention)
			}
		})
	}
	// The plain rule still grants a plain request.
	f, b, err := c.BindFile(bindCtx(t), "tcp", "127.0.0.3:0", nil)
	if err != nil {
		t.Fatalf("plain bind under the rule without options: %v", err)
	}
	f.Close()
	c.Release(bindCtx(t), b.Token)
	if st := bindStatus(t, admin); len(st) != 0 {
		t.Fatalf("status after every option case: got %+v; want nothing held", st)
	}
	c.Close()
	bindWaitFDs(t, d, base+1)
}

// bindRaw sends one raw request packet on uc and returns the reply and
// the number of descriptors it carried (closed here).
func bindRaw(t *testing.T, uc *net.UnixConn, msg string) (*wire.Reply, int) {
	t.Helper()
	if _, _, err := uc.WriteMsgUnix([]byte(msg), nil, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	buf := make([]byte, wire.MaxMessageSize)
	oob := make([]byte, unix.CmsgSpace(wire.MaxFDs*4))
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no reply to %s: %v", msg, err)
	}
	nfds := 0
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			for _, fd := range fds {
				unix.Close(fd)
			}
			nfds += len(fds)
		}
	}
	rep, err := wire.DecodeReply(buf[:n])
	if err != nil {
		t.Fatalf("undecodable reply %q: %v", buf[:n], err)
	}
	return rep, nfds
}

// TestIntegrationBindInvalidRequests: malformed bind, pickup, release and
// hello packets, unknown socket options among them, get invalid_request
// with their id and no descriptor, and create nothing; the connection
// keeps working.
func TestIntegrationBindInvalidRequests(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+bindRootAdmin)
	conn, err := net.Dial("unixpacket", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)
	bind := func(id int, body string) string {
		return fmt.Sprintf(`{"v":1,"id":%d,"op":"bind","bind":%s}`, id, body)
	}
	cases := []struct{ name, msg string }{
		{"unknown option", bind(1, `{"network":"tcp","address":"127.0.0.1:0","options":{"nodelay":true}}`)},
		{"unknown bind field", bind(2, `{"network":"tcp","address":"127.0.0.1:0","shared":"any"}`)},
		{"option of the wrong type", bind(3, `{"network":"tcp","address":"127.0.0.1:0","options":{"v6only":"yes"}}`)},
		{"unknown share mode", bind(4, `{"network":"tcp","address":"127.0.0.1:0","share":"all"}`)},
		{"port out of range", bind(5, `{"network":"udp","address":"127.0.0.1:65536"}`)},
		{"host name", bind(6, `{"network":"udp","address":"localhost:53"}`)},
		{"unknown network", bind(7, `{"network":"sctp","address":"127.0.0.1:0"}`)},
		{"family mismatch", bind(8, `{"network":"tcp4","address":"[::1]:0"}`)},
		{"tcp option on udp", bind(9, `{"network":"udp","address":"127.0.0.1:0","options":{"fastopen":5}}`)},
		{"negative rcvbuf", bind(10, `{"network":"tcp","address":"127.0.0.1:0","options":{"rcvbuf":-1}}`)},
		{"device name with a slash", bind(11, `{"network":"tcp","address":"127.0.0.1:0","options":{"bind_to_device":"../lo"}}`)},
		{"backlog without listening", bind(12, `{"network":"tcp","address":"127.0.0.1:0","options":{"listen":false,"backlog":5}}`)},
		{"share name too long", bind(13, `{"network":"tcp","address":"127.0.0.1:0","name":"`+strings.Repeat("n", 65)+`"}`)},
		{"bind without parameters", `{"v":1,"id":14,"op":"bind"}`},
		{"pickup without token", `{"v":1,"id":15,"op":"pickup"}`},
		{"release with an unknown field", `{"v":1,"id":16,"op":"release","token":{"token":"x","all":true}}`},
		{"app name with a space", `{"v":1,"id":17,"op":"hello","hello":{"app":"my app"}}`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, nfds := bindRaw(t, uc, tc.msg)
			if rep.Error == nil || rep.Error.Code != wire.CodeInvalidRequest || rep.ID != uint64(i+1) || nfds != 0 || rep.FDs != 0 {
				t.Fatalf("reply %+v (error %+v) with %d fds; want invalid_request for id %d and no fds", rep, rep.Error, nfds, i+1)
			}
		})
	}
	// Unknown tokens are not_found, for pickup and release alike.
	for _, op := range []string{"pickup", "release"} {
		rep, nfds := bindRaw(t, uc, `{"v":1,"id":40,"op":"`+op+`","token":{"token":"00112233445566778899aabbccddeeff"}}`)
		if rep.Error == nil || rep.Error.Code != wire.CodeNotFound || nfds != 0 {
			t.Fatalf("%s of an unknown token: reply %+v; want not_found", op, rep.Error)
		}
	}
	// The same connection still gets a socket, with one descriptor.
	rep, nfds := bindRaw(t, uc, bind(50, `{"network":"udp","address":"127.0.0.1:0"}`))
	if rep.Error != nil || rep.Bind == nil || rep.FDs != 1 || nfds != 1 || len(rep.Bind.Token) != 32 {
		t.Fatalf("valid bind after the invalid ones: reply %+v (error %+v), %d fds; want a token of 128 bits and one fd", rep, rep.Error, nfds)
	}
	admin := bindClient(t, d, "")
	if st := bindStatus(t, admin); len(st) != 1 {
		t.Fatalf("status: got %+v; want only the valid request's socket", st)
	}
	conn.Close()
	waitFor(t, "the raw connection's socket to be released", func() bool { return len(bindStatus(t, admin)) == 0 })
	admin.Close()
	bindWaitFDs(t, d, base)
}

// TestIntegrationBindAddressInUse: an address someone else has bound gets
// bind_failed with EADDRINUSE reachable and advice in the message; nothing
// is cached.
func TestIntegrationBindAddressInUse(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+bindRootAdmin)
	c := bindClient(t, d, "late")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pc, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, tc := range []struct{ network, addr string }{{"tcp", l.Addr().String()}, {"udp", pc.LocalAddr().String()}} {
		f, _, err := c.BindFile(bindCtx(t), tc.network, tc.addr, nil)
		if err == nil {
			f.Close()
			t.Fatalf("bind of %s %s, which this test holds: granted; want bind_failed", tc.network, tc.addr)
		}
		var se *sockfactory.Error
		if !errors.Is(err, sockfactory.ErrBindFailed) || !errors.Is(err, syscall.EADDRINUSE) || !errors.As(err, &se) || se.Errno != syscall.EADDRINUSE {
			t.Fatalf("bind of %s %s in use: got %v; want ErrBindFailed with errno EADDRINUSE", tc.network, tc.addr, err)
		}
		if !strings.Contains(se.Message, "another socket holds this address and port") {
			t.Errorf("bind_failed message %q: want advice on what holds the address", se.Message)
		}
	}
	if st := bindStatus(t, c); len(st) != 0 {
		t.Fatalf("status after failed binds: got %+v; want nothing", st)
	}
	c.Close()
	bindWaitFDs(t, d, base)
}

// TestIntegrationBindUnprivilegedDaemon: a daemon running without
// privileges reports the kernel's refusals with their errno and what to do:
// EACCES for port 53, EPERM for IP_TRANSPARENT.
func TestIntegrationBindUnprivilegedDaemon(t *testing.T) {
	requireRoot(t)
	dir := publicTempDir(t)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, dir: dir, socket: filepath.Join(dir, "run", "sockfactory.sock"), config: filepath.Join(dir, "sockfactoryd.toml")}
	d.writeConfig(bindBase + bindRootAdmin)
	d.log = &syncBuffer{}
	d.cmd = exec.Command(bin.daemon, "-config", d.config, "-log-level", "debug", "-log-flush", "0")
	d.cmd.SysProcAttr = asUser(65534, 65534)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(d.stop)
	waitFor(t, "the unprivileged daemon's socket", func() bool {
		c, err := net.Dial("unixpacket", d.socket)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	base := bindWarmUp(t, d)
	c := bindClient(t, d, "")
	cases := []struct {
		network, addr string
		opts          *sockfactory.ListenOptions
		errno         syscall.Errno
		advice        string
	}{
		{"udp", "127.0.0.1:53", nil, syscall.EACCES, "CAP_NET_BIND_SERVICE"},
		{"tcp", "[::1]:53", nil, syscall.EACCES, "CAP_NET_BIND_SERVICE"},
		{"tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Transparent: true}, syscall.EPERM, "CAP_NET_ADMIN"},
	}
	for _, tc := range cases {
		f, _, err := c.BindFile(bindCtx(t), tc.network, tc.addr, tc.opts)
		if err == nil {
			f.Close()
			t.Fatalf("unprivileged daemon, %s %s %+v: granted; want bind_failed", tc.network, tc.addr, tc.opts)
		}
		var se *sockfactory.Error
		if !errors.Is(err, sockfactory.ErrBindFailed) || !errors.Is(err, tc.errno) || !errors.As(err, &se) || !strings.Contains(se.Message, tc.advice) {
			t.Fatalf("unprivileged daemon, %s %s %+v: got %v; want ErrBindFailed, errno %v, advice naming %s", tc.network, tc.addr, tc.opts, err, tc.errno, tc.advice)
		}
	}
	if st := bindStatus(t, c); len(st) != 0 {
		t.Fatalf("status after failed binds: got %+v; want nothing", st)
	}
	c.Close()
	bindWaitFDs(t, d, base)
}

// TestIntegrationBindExec: `sockfactory exec`, run by uid 65534, hands TCP
// port 53 on 127.0.0.1 and UDP port 53 on ::1 to an unmodified program in
// the systemd convention; the program serves on them. While it runs,
// `sockfactory status` (table and JSON) shows the sockets held by the exec
// process's uid, pid and app name; when the program exits they are
// released. The daemon runs in a network namespace of its own, so that
// the host's port 53 may be taken.
func TestIntegrationBindExec(t *testing.T) {
	requireRoot(t)
	d, ns := startDaemonNetns(t, bindBase+bindRootAdmin+bindNobodyDNS)
	base := bindWarmUp(t, d)
	ctx := bindCtx(t)
	prog := bindPublicBinary(t)
	p := bindStartProc(t, bin.cli, bindHelperEnv(d, "bind-listenfds"), asUser(65534, 65534),
		"exec", "-socket", d.socket, "--listen", "tcp://127.0.0.1:53", "--listen", "udp://[::1]:53", "--share", "any", "--name", "web",
		"--", prog, "-test.run=^$", "serve")
	ready := p.expect(t, "READY")
	// READY pid=P fds=2 tcp-53=127.0.0.1:53 udp-53=[::1]:53
	if f := strings.Fields(ready); len(f) != 5 || f[2] != "fds=2" || f[3] != "tcp-53=127.0.0.1:53" || f[4] != "udp-53=[::1]:53" {
		t.Fatalf("program's view of LISTEN_FDS: %q; want fds=2 tcp-53=127.0.0.1:53 udp-53=[::1]:53", ready)
	}
	if pid := strings.TrimPrefix(strings.Fields(ready)[1], "pid="); pid == strconv.Itoa(p.pid()) {
		t.Errorf("the program runs as pid %s, the exec process's own pid; want a child", pid)
	}
	execPID := p.pid()

	// status --json, as root (an admin).
	out, errOut, code := runCLI(t, "", nil, "status", "--json", "-socket", d.socket)
	if code != 0 {
		t.Fatalf("sockfactory status --json: exit %d, %s", code, errOut)
	}
	var js struct {
		Sockets []sockfactory.SocketStatus `json:"sockets"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("sockfactory status --json: %v\n%s", err, out)
	}
	st := js.Sockets
	for _, k := range [][2]string{{"tcp", "127.0.0.1:53"}, {"udp", "[::1]:53"}} {
		s := bindFind(st, k[0], k[1])
		if s == nil || s.Refs != 1 || len(s.Holders) != 1 {
			t.Fatalf("status --json: %s %s: got %+v; want one holder\n%s", k[0], k[1], s, out)
		}
		h := s.Holders[0]
		if h.UID != 65534 || h.PID != int32(execPID) || h.App != "web" || h.Share != "any" || h.Name != "web" || h.Pending || len(h.Token) != 32 {
			t.Errorf("status --json holder of %s %s: got %+v; want uid 65534, pid %d, app web, share any, name web, held, with its token", k[0], k[1], h, execPID)
		}
	}
	// The table, as root.
	out, errOut, code = runCLI(t, "", nil, "status", "-socket", d.socket)
	if code != 0 || !strings.Contains(out, "\nNETWORK ") && !strings.HasPrefix(out, "NETWORK ") {
		t.Fatalf("sockfactory status: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, k := range []string{"tcp 127.0.0.1:53", "udp [::1]:53"} {
		if !bindTableRow(out, k, "any", "web", "65534", strconv.Itoa(execPID), "web", "held") {
			t.Errorf("sockfactory status has no row for %s held by uid 65534 pid %d app web:\n%s", k, execPID, out)
		}
	}
	// The table, as the holders' own (unprivileged) uid.
	out, errOut, code = runCLI(t, "", asUser(65534, 65534), "status", "-socket", d.socket)
	if code != 0 || !bindTableRow(out, "tcp 127.0.0.1:53", "any", "web", "65534", strconv.Itoa(execPID), "web", "held") {
		t.Errorf("sockfactory status as uid 65534: exit %d, stderr %q; want its own socket listed:\n%s", code, errOut, out)
	}

	conn, err := ns.DialContext(ctx, "tcp", "127.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTripAnswer(t, conn, "over tcp\n", "tcp got: over tcp\n")
	uc, err := ns.DialContext(ctx, "udp", "[::1]:53")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	roundTripAnswer(t, uc, "over udp", "udp got: over udp")
	if got := p.expect(t, "GOT"); got != `GOT tcp "over tcp\n" udp "over udp"` {
		t.Errorf("program's report: %q", got)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("sockfactory exec: exit %d; want the program's 0\n%s", code, p.stderr)
	}
	admin := bindClient(t, d, "")
	waitFor(t, "the exec'd program's sockets to be released", func() bool { return len(bindStatus(t, admin)) == 0 })
	for _, k := range [][2]string{{"tcp", "127.0.0.1:53"}, {"udp", "[::1]:53"}} {
		if err := bindPortFreeIn(ns, k[0], k[1]); err != nil {
			t.Errorf("direct bind of %s %s after the program exited: %v", k[0], k[1], err)
		}
	}
	admin.Close()
	bindWaitFDs(t, d, base)
}

// TestIntegrationBindExecKilled: an admin releases one of an exec'd
// program's references with `sockfactory release TOKEN` (the program keeps
// its socket); when the program is killed with SIGKILL, `sockfactory exec`
// exits 137 and the remaining reference is released.
func TestIntegrationBindExecKilled(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+bindRootAdmin)
	admin := bindClient(t, d, "")
	p := bindStartProc(t, bin.cli, bindHelperEnv(d, "bind-listenfds"), nil,
		"exec", "-socket", d.socket, "--listen", "tcp://127.0.0.1:0", "--listen", "udp://127.0.0.1:0",
		"--", bindExecutable(t), "-test.run=^$", "hold")
	f := strings.Fields(p.expect(t, "READY"))
	if len(f) != 5 || f[2] != "fds=2" {
		t.Fatalf("program's view of LISTEN_FDS: %q", f)
	}
	progPID, _ := strconv.Atoi(strings.TrimPrefix(f[1], "pid="))
	_, tcpAddr, _ := strings.Cut(f[3], "=")
	_, udpAddr, _ := strings.Cut(f[4], "=")
	st := bindStatus(t, admin)
	tcpRef, udpRef := bindFind(st, "tcp", tcpAddr), bindFind(st, "udp", udpAddr)
	if tcpRef == nil || udpRef == nil || tcpRef.Holders[0].App != filepath.Base(bindExecutable(t)) {
		t.Fatalf("status: got %+v; want the program's two sockets, app named after the program", st)
	}

	out, errOut, code := runCLI(t, "", nil, "release", "-socket", d.socket, tcpRef.Holders[0].Token)
	if code != 0 || out != "released\n" {
		t.Fatalf("sockfactory release as admin: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	st = bindStatus(t, admin)
	if bindFind(st, "tcp", tcpAddr) != nil || bindFind(st, "udp", udpAddr) == nil {
		t.Fatalf("status after releasing the TCP reference: got %+v; want only the UDP socket", st)
	}
	// The program's own descriptor still serves.
	conn, err := net.DialTimeout("tcp", tcpAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	roundTripAnswer(t, conn, "still there?\n", "tcp got: still there?\n")
	conn.Close()

	if err := syscall.Kill(progPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("sockfactory exec after its program was killed: exit %d; want %d", code, 128+int(syscall.SIGKILL))
	}
	bindWaitGone(t, admin, "udp", udpAddr)
	for _, k := range [][2]string{{"tcp", tcpAddr}, {"udp", udpAddr}} {
		if err := bindPortFree(k[0], k[1]); err != nil {
			t.Errorf("direct bind of %s %s after the program was killed: %v", k[0], k[1], err)
		}
	}
	admin.Close()
	bindWaitFDs(t, d, base)
}

// bindTableRow reports whether the status table has a row for key
// ("NETWORK ADDRESS") whose SHARE, NAME, UID, PID, APP and STATE columns
// are want.
func bindTableRow(table, key string, want ...string) bool {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		// NETWORK ADDRESS REFS AGE LINGER SHARE NAME UID PID APP STATE TOKEN NETNS
		if len(f) == 13 && f[0]+" "+f[1] == key && reflect.DeepEqual(f[5:11], want) {
			return true
		}
	}
	return false
}

// roundTripAnswer writes msg on c and expects answer back.
func roundTripAnswer(t *testing.T, c net.Conn, msg, answer string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, err := io.ReadAtLeast(c, buf, len(answer))
	if string(buf[:n]) != answer {
		t.Fatalf("answer to %q: got %q, %v; want %q", msg, buf[:n], err, answer)
	}
}

// bindExecutable returns the path of this test binary.
func bindExecutable(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// bindPublicBinary copies this test binary where other uids can run it.
func bindPublicBinary(t *testing.T) string {
	t.Helper()
	src, err := os.Open(bindExecutable(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(publicTempDir(t), "e2e.test")
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// bindHelperEnv is the environment of a helper process of mode talking to d.
func bindHelperEnv(d *daemon, mode string) []string {
	return append(os.Environ(), helperEnv+"="+mode, "SOCKFACTORY_SOCKET="+d.socket)
}

// bindHelper starts this test binary (or its copy at path) in helper mode
// with arg, talking to d.
func bindHelper(t *testing.T, d *daemon, path string, attr *syscall.SysProcAttr, mode, arg string) *bindProc {
	t.Helper()
	if path == "" {
		path = bindExecutable(t)
	}
	return bindStartProc(t, path, bindHelperEnv(d, mode), attr, "-test.run=^$", arg)
}

// bindProc is a child process whose output lines the test reads. Its
// stdin stays open (helpers block on it) until it is killed or cleanup.
type bindProc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *syncBuffer
	stdin  io.WriteCloser
	exited chan struct{}
	err    error
}

func bindStartProc(t *testing.T, path string, env []string, attr *syscall.SysProcAttr, args ...string) *bindProc {
	t.Helper()
	p := &bindProc{cmd: exec.Command(path, args...), lines: make(chan string, 64), stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = env
	// A process group of its own, so that cleanup also kills what it
	// started (the program of `sockfactory exec`).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{}
	if attr != nil {
		*p.cmd.SysProcAttr = *attr
	}
	p.cmd.SysProcAttr.Setpgid = true
	p.cmd.Stdout = &bindLineWriter{ch: p.lines}
	p.cmd.Stderr = p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.lines)
		close(p.exited)
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.exited
	})
	return p
}

func (p *bindProc) pid() int { return p.cmd.Process.Pid }

// expect returns the next output line, which must start with prefix; a
// line starting with FAIL, an exit, or 30 s of silence fail the test.
func (p *bindProc) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.exited
			t.Fatalf("%s exited (%v) before printing %s\nstderr:\n%s", p.cmd.Path, p.err, prefix, p.stderr)
		}
		if !strings.HasPrefix(l, prefix) || strings.HasPrefix(l, "FAIL") {
			t.Fatalf("%s printed %q; want a line starting with %q\nstderr:\n%s", p.cmd.Path, l, prefix, p.stderr)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("%s printed nothing for 30s; want %s\nstderr:\n%s", p.cmd.Path, prefix, p.stderr)
	}
	return ""
}

// wait waits for the process to exit and returns its exit code (-1 when
// killed by a signal).
func (p *bindProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running after 30s\nstderr:\n%s", p.cmd.Path, p.stderr)
	}
	for l := range p.lines {
		if strings.HasPrefix(l, "FAIL") {
			t.Errorf("%s: %s", p.cmd.Path, l)
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *bindProc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
}

// bindLineWriter sends each complete line written to it to ch.
type bindLineWriter struct {
	ch  chan string
	buf []byte
}

func (w *bindLineWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(b), nil
		}
		w.ch <- string(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

// Helper modes: each prints a READY line (or its result) on stdout, FAIL:
// lines for failures, and returns the exit code. They find the daemon
// through $SOCKFACTORY_SOCKET.

// bindHelperHold ("NETWORK ADDRESS SHARE APP") binds through the daemon,
// prints "READY TOKEN ADDR INODE" and holds the socket until stdin ends.
func bindHelperHold(arg string) int {
	f := strings.Fields(arg)
	if len(f) != 4 {
		fmt.Println("FAIL: want NETWORK ADDRESS SHARE APP, got", arg)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := &sockfactory.Client{App: f[3]}
	defer c.Close()
	file, b, err := c.BindFile(ctx, f[0], f[1], &sockfactory.ListenOptions{Share: f[2]})
	if err != nil {
		fmt.Println("FAIL: bind:", err)
		return 3
	}
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		fmt.Println("FAIL: fstat:", err)
		return 3
	}
	fmt.Printf("READY %s %s %d\n", b.Token, b.Addr, st.Ino)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// bindHelperPickup (TOKEN) tries to pick the token up and prints
// "OK ADDR" or "ERR CODE".
func bindHelperPickup(token string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := &sockfactory.Client{}
	defer c.Close()
	f, b, err := c.Pickup(ctx, token)
	if err == nil {
		f.Close()
		fmt.Println("OK", b.Addr)
		return 0
	}
	var se *sockfactory.Error
	if errors.As(err, &se) {
		fmt.Println("ERR", se.Code)
		return 0
	}
	fmt.Println("FAIL: pickup:", err)
	return 3
}

// bindHelperNobody53 runs as uid 65534: it checks that it may not bind
// port 53 itself, gets TCP and UDP port 53 on 127.0.0.1 and ::1 from the
// daemon with the package-level Listen and ListenPacket, prints READY,
// answers one query on each, closes them (releasing the references) and
// prints DONE.
func bindHelperNobody53(string) int {
	if os.Getuid() != 65534 {
		fmt.Println("FAIL: running as uid", os.Getuid(), "want 65534")
		return 2
	}
	for _, k := range [][2]string{{"tcp", "127.0.0.1:53"}, {"udp", "[::1]:53"}} {
		if err := bindPortFree(k[0], k[1]); !errors.Is(err, syscall.EACCES) {
			fmt.Printf("FAIL: direct bind of %s %s as uid 65534: %v; want EACCES\n", k[0], k[1], err)
			return 3
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var (
		ls  []*sockfactory.Listener
		pcs []*sockfactory.PacketConn
	)
	for _, k := range [][2]string{{"tcp4", "127.0.0.1:53"}, {"tcp6", "[::1]:53"}} {
		l, err := sockfactory.Listen(ctx, k[0], k[1], nil)
		if err != nil {
			fmt.Println("FAIL: listen:", err)
			return 4
		}
		ls = append(ls, l)
	}
	for _, k := range [][2]string{{"udp", "127.0.0.1:53"}, {"udp6", "[::1]:53"}} {
		pc, err := sockfactory.ListenPacket(ctx, k[0], k[1], nil)
		if err != nil {
			fmt.Println("FAIL: listen packet:", err)
			return 4
		}
		pcs = append(pcs, pc)
	}
	fmt.Println("READY")
	var wg sync.WaitGroup
	errs := make(chan error, len(ls)+len(pcs))
	for _, l := range ls {
		wg.Go(func() {
			l.SetDeadline(time.Now().Add(30 * time.Second))
			c, err := l.Accept()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			q, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				_, err = fmt.Fprintf(c, "answer from %s: %s", l.Addr(), q)
			}
			errs <- err
		})
	}
	for _, pc := range pcs {
		wg.Go(func() {
			pc.SetDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, 512)
			n, from, err := pc.ReadFrom(buf)
			if err == nil {
				_, err = pc.WriteTo([]byte(fmt.Sprintf("answer from %s: %s", pc.LocalAddr(), buf[:n])), from)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			fmt.Println("FAIL: serving:", err)
			return 5
		}
	}
	for _, l := range ls {
		if err := l.Close(); err != nil {
			fmt.Println("FAIL: close (release):", err)
			return 6
		}
	}
	for _, pc := range pcs {
		if err := pc.Close(); err != nil {
			fmt.Println("FAIL: close (release):", err)
			return 6
		}
	}
	fmt.Println("DONE")
	return 0
}

// bindHelperListenFDs is a program started by `sockfactory exec`: it reads
// its sockets the systemd way (LISTEN_PID must be its own pid, LISTEN_FDS
// sockets from fd 3, named in LISTEN_FDNAMES) and prints
// "READY pid=PID fds=N NAME=ADDR...". With "serve" it answers one TCP
// connection and one datagram, prints what it got and exits; with "hold"
// it answers every TCP connection until stdin ends.
func bindHelperListenFDs(mode string) int {
	if pid := os.Getenv("LISTEN_PID"); pid != strconv.Itoa(os.Getpid()) {
		fmt.Printf("FAIL: LISTEN_PID=%q, my pid is %d\n", pid, os.Getpid())
		return 2
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	if err != nil || n < 1 || len(names) != n {
		fmt.Printf("FAIL: LISTEN_FDS=%q LISTEN_FDNAMES=%q\n", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
		return 2
	}
	var (
		tcpL net.Listener
		udpC net.PacketConn
		desc []string
	)
	for i := range n {
		fd := 3 + i
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			fmt.Printf("FAIL: fd %d is not a socket: %v\n", fd, err)
			return 3
		}
		f := os.NewFile(uintptr(fd), names[i])
		var addr net.Addr
		switch typ {
		case unix.SOCK_STREAM:
			if acc, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); acc != 1 {
				fmt.Printf("FAIL: TCP fd %d is not listening\n", fd)
				return 3
			}
			tcpL, err = net.FileListener(f)
			if err == nil {
				addr = tcpL.Addr()
			}
		case unix.SOCK_DGRAM:
			udpC, err = net.FilePacketConn(f)
			if err == nil {
				addr = udpC.LocalAddr()
			}
		}
		f.Close()
		if err != nil || addr == nil {
			fmt.Printf("FAIL: fd %d (type %d): %v\n", fd, typ, err)
			return 3
		}
		_, port, _ := net.SplitHostPort(addr.String())
		if want := addr.Network() + "-" + port; names[i] != want {
			fmt.Printf("FAIL: fd %d is %s %s but named %q; want %q\n", fd, addr.Network(), addr, names[i], want)
			return 3
		}
		desc = append(desc, names[i]+"="+addr.String())
	}
	fmt.Printf("READY pid=%d fds=%d %s\n", os.Getpid(), n, strings.Join(desc, " "))
	answer := func(c net.Conn) (string, error) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		q, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			_, err = io.WriteString(c, "tcp got: "+q)
		}
		return q, err
	}
	if mode == "hold" {
		go func() {
			for {
				c, err := tcpL.Accept()
				if err != nil {
					return
				}
				answer(c)
			}
		}()
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	if tcpL == nil || udpC == nil {
		fmt.Println("FAIL: serve needs a TCP and a UDP socket")
		return 2
	}
	tcpL.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := tcpL.Accept()
	if err != nil {
		fmt.Println("FAIL: accept:", err)
		return 4
	}
	tq, err := answer(c)
	if err != nil {
		fmt.Println("FAIL: tcp:", err)
		return 4
	}
	udpC.SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 512)
	k, from, err := udpC.ReadFrom(buf)
	if err == nil {
		_, err = udpC.WriteTo(append([]byte("udp got: "), buf[:k]...), from)
	}
	if err != nil {
		fmt.Println("FAIL: udp:", err)
		return 4
	}
	fmt.Printf("GOT tcp %q udp %q\n", tq, buf[:k])
	return 0
}
