package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// upgradeConfig lets root bind and connect on loopback and be an admin,
// with one Clearwater listener that may reach loopback.
const upgradeConfig = `
[daemon]
socket = "%SOCKET%"
upgrade_timeout = "%UPGRADE_TIMEOUT%"

[limits]
sockets = 20000
sockets_per_uid = 20000

[[rule]]
name = "root"
users = ["root"]
admin = true
connect = ["127.0.0.0/8:*"]
bind = ["tcp:127.0.0.0/8:*", "udp:127.0.0.0/8:*"]

[[clearwater]]
socket = "%DIR%/clearwater.sock"
allowed_hosts = ["127.0.0.1"]
`

// upgradable is a harness daemon whose process live upgrades replace: pid
// is the one serving now, old the ones it replaced. Its cleanup ends the
// one serving and checks they are all gone and the socket file removed.
type upgradable struct {
	*daemon
	pid int
	old []int
}

// startUpgradable starts the daemon of upgradeConfig from exe (a copy of
// the daemon binary the test may replace; empty: the harness's own).
func startUpgradable(t testing.TB, exe, upgradeTimeout string) *upgradable {
	t.Helper()
	dir := publicTempDir(t)
	config := strings.NewReplacer("%DIR%", dir, "%UPGRADE_TIMEOUT%", upgradeTimeout).Replace(upgradeConfig)
	d := startDaemonWith(t, config, func(cmd *exec.Cmd) {
		if exe != "" {
			cmd.Path = exe
			cmd.Args[0] = exe
		}
	})
	u := &upgradable{daemon: d, pid: d.cmd.Process.Pid}
	waitFor(t, "the Clearwater listener", func() bool { return strings.Contains(d.log.String(), `msg="listening (clearwater)"`) })
	t.Cleanup(u.stop)
	return u
}

func (u *upgradable) readConfig() string {
	b, err := os.ReadFile(u.config)
	if err != nil {
		u.t.Fatal(err)
	}
	return string(b)
}

// upgrade runs sockfactory upgrade and checks it worked: a new pid, the
// old process gone.
func (u *upgradable) upgrade(t *testing.T) {
	t.Helper()
	out, errOut, code := runCLI(t, "", nil, "--socket", u.socket, "upgrade")
	m := regexp.MustCompile(`^upgraded: pid (\d+) -> (\d+), version \S+, took \S+\n$`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("sockfactory upgrade: exit %d, stdout %q, stderr %q; want exit 0 and \"upgraded: pid A -> B, ...\"\n%s", code, out, errOut, u.log)
	}
	oldPID, _ := strconv.Atoi(m[1])
	newPID, _ := strconv.Atoi(m[2])
	if oldPID != u.pid || newPID == u.pid {
		t.Fatalf("upgrade: pid %d -> %d; want %d -> a new pid", oldPID, newPID, u.pid)
	}
	u.old = append(u.old, u.pid)
	u.pid = newPID
	waitFor(t, fmt.Sprintf("the old daemon (pid %d) to exit", oldPID), func() bool { return gone(oldPID) })
}

func sorted(s []uint64) []uint64 { slices.Sort(s); return s }

// gone reports whether pid has exited (a zombie counts: it serves nothing).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// fds counts the serving daemon's descriptors.
func (u *upgradable) fds(t testing.TB) int { return len(testnet.ProcFDs(t, u.pid)) }

// fdList describes the serving daemon's descriptors, for failures.
func (u *upgradable) fdList(t testing.TB) map[int]string { return testnet.ProcFDs(t, u.pid) }

// socketInodes lists the inodes of the serving daemon's sockets.
func (u *upgradable) socketInodes(t testing.TB) []uint64 { return socketInodes(t, u.pid) }

// socketInodes lists the inodes of pid's sockets.
func socketInodes(t testing.TB, pid int) []uint64 {
	t.Helper()
	var out []uint64
	for _, l := range testnet.ProcFDs(t, pid) {
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
			out = append(out, n)
		}
	}
	return out
}

func (u *upgradable) stop() {
	t := u.t
	if u.daemon.cmd == nil {
		return
	}
	syscall.Kill(u.pid, syscall.SIGTERM)
	if !poll(20*time.Second, func() bool { return gone(u.pid) }) {
		syscall.Kill(u.pid, syscall.SIGKILL)
		t.Errorf("daemon pid %d did not exit within 20 s of SIGTERM", u.pid)
	}
	// The first process's Wait ends once every daemon that shared its
	// log pipe has exited.
	select {
	case <-u.exited:
	case <-time.After(20 * time.Second):
		t.Errorf("a daemon process still holds the log pipe")
	}
	for _, p := range append(u.old, u.pid) {
		if !gone(p) {
			t.Errorf("daemon pid %d still running", p)
		}
	}
	u.daemon.cmd = nil
	if _, err := os.Lstat(u.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file %s still there after shutdown (err %v)", u.socket, err)
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", u.log)
	}
}

// inode is the inode of a socket's descriptor.
func inode(t testing.TB, rc syscall.Conn) uint64 {
	t.Helper()
	raw, err := rc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	raw.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) })
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// comparable status: everything but ages.
func statusKey(ss []sockfactory.SocketStatus) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "%s %s refs=%d linger=%s lingering=%t", s.Network, s.Addr, s.Refs, s.Linger, s.Lingering > 0)
		for _, h := range s.Holders {
			fmt.Fprintf(&b, " [%s %q uid=%d pid=%d app=%q pending=%t token=%s]", h.Share, h.Name, h.UID, h.PID, h.App, h.Pending, h.Token)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// loop runs op until stop is closed, counting successes and keeping the
// first few failures.
type loop struct {
	name    string
	ok      atomic.Int64
	mu      sync.Mutex
	errs    []error
	nerrs   int
	done    chan struct{}
	stopped chan struct{}
}

func startLoop(name string, op func() error) *loop {
	l := &loop{name: name, done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(l.stopped)
		for {
			select {
			case <-l.done:
				return
			default:
			}
			if err := op(); err != nil {
				l.mu.Lock()
				l.nerrs++
				if len(l.errs) < 5 {
					l.errs = append(l.errs, err)
				}
				l.mu.Unlock()
				continue
			}
			l.ok.Add(1)
		}
	}()
	return l
}

func (l *loop) stop(t *testing.T) {
	t.Helper()
	close(l.done)
	<-l.stopped
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nerrs > 0 {
		t.Errorf("%s: %d failed requests (%d ok); first: %v", l.name, l.nerrs, l.ok.Load(), l.errs)
	}
}

// waitMore waits until the loop has done n more requests than it had.
func (l *loop) waitMore(t *testing.T, n int64) {
	t.Helper()
	base := l.ok.Load()
	waitFor(t, l.name+" to make progress", func() bool { return l.ok.Load() >= base+n })
}

// clearwaterConnect makes one Clearwater request for target and checks the
// reply: one space byte and one connected socket.
func clearwaterConnect(path, target string) error {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(target)); err != nil {
		return err
	}
	buf, oob := make([]byte, 16), make([]byte, 64)
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return fmt.Errorf("clearwater reply %q with %d control messages (%v)", buf[:n], len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err != nil || len(fds) != 1 || n != 1 || buf[0] != ' ' {
		return fmt.Errorf("clearwater reply %q with %d fds (%v)", buf[:n], len(fds), err)
	}
	return nil
}

// TestIntegrationUpgradeUnderLoad upgrades the daemon three times while a
// holder keeps a listening socket with connections waiting in its accept
// queue, a client binds and releases that socket in a loop on one
// connection, and a Clearwater client connects in a loop. Nothing may
// fail or be lost; the socket, the references and the daemon's fd count
// are the same afterwards, and every old process is gone.
func TestIntegrationUpgradeUnderLoad(t *testing.T) {
	requireRoot(t)
	u := startUpgradable(t, "", "30s")
	ctx := context.Background()
	target := echoServer(t, "tcp", "127.0.0.1:0")
	cwPath := u.cwPathFromConfig(t)
	if err := clearwaterConnect(cwPath, target); err != nil {
		t.Fatalf("clearwater warm-up: %v", err)
	}

	holder, ln, ino := holdListener(t, u.socket, "holder")
	addr := ln.Addr().String()
	// Connections the holder has not accepted: they wait in the kernel's
	// queue of the very socket the daemon holds.
	const queued = 5
	for i := range queued {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "queued-%d\n", i)
	}

	looper := &sockfactory.Client{Socket: u.socket, App: "looper"}
	defer looper.Close()
	// Warm up every path once, then take the baselines.
	if f, b, err := looper.BindFile(ctx, "tcp", addr, &sockfactory.ListenOptions{Share: "any"}); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
		looper.Release(ctx, b.Token)
	}
	admin := &sockfactory.Client{Socket: u.socket}
	before, err := admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin.Close()
	if !slices.Contains(u.socketInodes(t), ino) {
		t.Fatalf("the daemon does not hold the listener's socket (inode %d)", ino)
	}
	waitFor(t, "the harness's probe connections to end", func() bool {
		log := u.log.String()
		return strings.Count(log, "client connected") == strings.Count(log, "client disconnected")+2
	})
	baseFDs := u.fds(t)
	baseList := u.fdList(t)
	baseSockets := sorted(u.socketInodes(t))

	handoffs := startLoop("bind/release on one connection", func() error {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		f, b, err := looper.BindFile(ctx, "tcp", addr, &sockfactory.ListenOptions{Share: "any"})
		if err != nil {
			return err
		}
		f.Close()
		return looper.Release(ctx, b.Token)
	})
	cwLoop := startLoop("clearwater connect", func() error { return clearwaterConnect(cwPath, target) })
	for range 3 {
		handoffs.waitMore(t, 20)
		cwLoop.waitMore(t, 5)
		u.upgrade(t)
	}
	handoffs.waitMore(t, 20)
	cwLoop.waitMore(t, 5)
	handoffs.stop(t)
	cwLoop.stop(t)

	// The same socket, the same references.
	if !slices.Contains(u.socketInodes(t), ino) {
		t.Errorf("after the upgrades the daemon does not hold the listener's socket (inode %d)", ino)
	}
	admin = &sockfactory.Client{Socket: u.socket}
	after, err := admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin.Close()
	if got, want := statusKey(after), statusKey(before); got != want {
		t.Errorf("status after the upgrades:\n%s\nwant (before):\n%s", got, want)
	}
	// Every queued connection is still there.
	seen := map[string]bool{}
	for range queued {
		ln.SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("accepting a queued connection: %v (got %d of %d)", err, len(seen), queued)
		}
		line := make([]byte, 16)
		n, _ := io.ReadAtLeast(c, line, len("queued-0\n"))
		seen[strings.TrimSpace(string(line[:n]))] = true
		c.Close()
	}
	if len(seen) != queued {
		t.Errorf("queued connections: got %v, want queued-0 to queued-%d", seen, queued-1)
	}
	// The holder's and the looper's connections still work: they were
	// handed over, not reconnected.
	if _, err := holder.Stats(ctx); err != nil {
		t.Errorf("the holder's connection after the upgrades: %v", err)
	}
	// The same sockets (the two listeners, the holder's and the looper's
	// connections, the cached socket) and none more: every socket now was
	// there at the baseline (which may also have had a connection on its
	// way out), and no more descriptors in all than the first daemon had
	// (it also had what the test harness leaked into it, which it sealed:
	// a daemon it starts gets none of them).
	var got int
	var now []uint64
	if !poll(10*time.Second, func() bool {
		got, now = u.fds(t), sorted(u.socketInodes(t))
		// Six descriptors, five sockets: the Clearwater door holds a
		// second descriptor of its listener, which it polls itself.
		sub := len(now) == 6 && len(slices.Compact(slices.Clone(now))) == 5
		for _, ino := range now {
			sub = sub && slices.Contains(baseSockets, ino)
		}
		return got <= baseFDs && sub
	}) {
		t.Errorf("daemon fds after three upgrades: %d, sockets %v; want at most %d, and 6 descriptors of 5 sockets all among the baseline's %v\nnow: %v\nbaseline: %v",
			got, now, baseFDs, baseSockets, u.fdList(t), baseList)
	}
	if n := strings.Count(u.log.String(), `msg="upgrade: took over"`); n != 3 {
		t.Errorf("log has %d take-overs, want 3", n)
	}
}

func (u *upgradable) cwPathFromConfig(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^socket = "([^"]*clearwater\.sock)"`).FindStringSubmatch(u.readConfig())
	if m == nil {
		t.Fatal("no clearwater socket in the configuration")
	}
	return m[1]
}

// TestIntegrationUpgradeFails replaces the daemon's executable with one
// that exits at once, then with one that never becomes ready: each
// upgrade fails, says why and exits 1, and the old daemon serves on with
// the same process, sockets, references and descriptors. A real binary
// put back then upgrades.
func TestIntegrationUpgradeFails(t *testing.T) {
	requireRoot(t)
	exe := filepath.Join(publicTempDir(t), "sockfactoryd")
	install := func(src string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		// Written beside and renamed over, as a package manager does: the
		// running daemon keeps its own (now unlinked) executable.
		if err := os.WriteFile(exe+".new", b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(exe+".new", exe); err != nil {
			t.Fatal(err)
		}
	}
	install(bin.daemon)
	u := startUpgradable(t, exe, "2s")
	ctx := context.Background()
	holder, ln, ino := holdListener(t, u.socket, "holder")
	status := func() string {
		t.Helper()
		c := &sockfactory.Client{Socket: u.socket}
		defer c.Close()
		ss, err := c.Status(ctx)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		return statusKey(ss)
	}
	before := status()
	waitFor(t, "the probe connections to end", func() bool {
		log := u.log.String()
		return strings.Count(log, "client connected") == strings.Count(log, "client disconnected")+1
	})
	baseList := u.fdList(t)
	baseFDs := len(baseList)
	baseSockets := sorted(u.socketInodes(t))

	scripts := filepath.Dir(exe)
	for _, c := range []struct {
		name, script, want string
	}{
		{"exits at once", "#!/bin/sh\nexit 3\n", "exited (exit status 3)"},
		{"never ready", "#!/bin/sh\nexec sleep 60\n", "no answer within [daemon] upgrade_timeout"},
		{"not the daemon", "#!/bin/sh\necho '{\"type\":\"hello\",\"min\":7,\"max\":9}' >&$SOCKFACTORY_UPGRADE_FD\nexec sleep 60\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := filepath.Join(scripts, "script")
			if err := os.WriteFile(src, []byte(c.script), 0o755); err != nil {
				t.Fatal(err)
			}
			install(src)
			out, errOut, code := runCLI(t, "", nil, "--socket", u.socket, "upgrade")
			if code != 1 || out != "" || !strings.Contains(errOut, "keeps serving with nothing lost") || !strings.Contains(errOut, c.want) {
				t.Errorf("sockfactory upgrade: exit %d, stdout %q, stderr %q; want exit 1 and an error saying %q and that the daemon keeps serving", code, out, errOut, c.want)
			}
			if gone(u.pid) {
				t.Fatalf("the daemon (pid %d) exited", u.pid)
			}
			if got := status(); got != before {
				t.Errorf("status after a failed upgrade:\n%s\nwant:\n%s", got, before)
			}
			if !slices.Contains(u.socketInodes(t), ino) {
				t.Errorf("the daemon no longer holds the listener's socket")
			}
			// No more descriptors than before, and no socket the daemon
			// did not have before (a descriptor the daemon had open for a
			// moment when the baseline was read may be gone: at most).
			var got int
			var now []uint64
			if !poll(10*time.Second, func() bool {
				got, now = u.fds(t), sorted(u.socketInodes(t))
				sub := slices.Contains(now, ino)
				for _, s := range now {
					sub = sub && slices.Contains(baseSockets, s)
				}
				return got <= baseFDs && sub
			}) {
				t.Errorf("daemon fds after a failed upgrade: %d, sockets %v; want at most %d, and only sockets among the baseline's %v\nnow: %v\nbaseline: %v",
					got, now, baseFDs, baseSockets, u.fdList(t), baseList)
			}
			// It still serves binds, on the held socket too.
			f, b, err := holder.BindFile(ctx, "tcp", ln.Addr().String(), &sockfactory.ListenOptions{Share: "any"})
			if err != nil {
				t.Fatalf("bind after a failed upgrade: %v", err)
			}
			f.Close()
			holder.Release(ctx, b.Token)
		})
	}
	// The scripts' hello named versions this daemon does not write.
	if !strings.Contains(u.log.String(), "this daemon writes handover versions 1 to 1; the new one reads 7 to 9") {
		t.Errorf("log does not say why the version was refused:\n%s", u.log)
	}
	install(bin.daemon)
	u.upgrade(t)
	if got := status(); got != before {
		t.Errorf("status after the upgrade:\n%s\nwant:\n%s", got, before)
	}
}
