package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// Tests for the gaps docs/security.md listed as untested: a native client
// that never reads its replies, the accept back-off when the daemon runs
// out of descriptors, the refusal of a socket directory another user could
// have planted, and the Clearwater connection limits.

func init() {
	helperModes["gaps-rlimit-exec"] = gapsRlimitExec
}

// gapsRlimitExec is the fallback for a system without util-linux's
// prlimit: arg is a JSON gapsRlimitArg; it sets RLIMIT_NOFILE and execs
// the program in its place (same pid), so the limit applies from its
// first instruction.
func gapsRlimitExec(arg string) int {
	var a gapsRlimitArg
	if err := json.Unmarshal([]byte(arg), &a); err != nil || len(a.Argv) == 0 {
		fmt.Fprintf(os.Stderr, "gaps-rlimit-exec: bad argument %q: %v\n", arg, err)
		return 2
	}
	lim := unix.Rlimit{Cur: a.NoFile, Max: a.NoFile}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, "gaps-rlimit-exec: setrlimit:", err)
		return 2
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, helperEnv+"=") {
			env = append(env, e)
		}
	}
	err := syscall.Exec(a.Argv[0], a.Argv, env)
	fmt.Fprintln(os.Stderr, "gaps-rlimit-exec: exec:", err)
	return 2
}

type gapsRlimitArg struct {
	NoFile uint64   `json:"nofile"`
	Argv   []string `json:"argv"`
}

// gapsLimitedCommand returns a command running argv with RLIMIT_NOFILE set
// to nofile (soft and hard), as the process argv[0] itself: with prlimit
// when installed, otherwise through the test binary's gaps-rlimit-exec
// helper mode.
func gapsLimitedCommand(t *testing.T, nofile uint64, argv ...string) *exec.Cmd {
	t.Helper()
	if prlimit, err := exec.LookPath("prlimit"); err == nil {
		return exec.Command(prlimit, append([]string{fmt.Sprintf("--nofile=%d:%d", nofile, nofile)}, argv...)...)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	arg, err := json.Marshal(gapsRlimitArg{NoFile: nofile, Argv: argv})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$", string(arg))
	cmd.Env = append(os.Environ(), helperEnv+"=gaps-rlimit-exec")
	return cmd
}

// startCmd starts d with cmd (which must run bin.daemon as its own
// process, on d.config), as d.start does, and registers d.stop.
func (d *daemon) startCmd(cmd *exec.Cmd) {
	d.t.Helper()
	d.log = &syncBuffer{}
	d.cmd = cmd
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.cmd.Wait() }()
	d.t.Cleanup(d.stop)
	waitFor(d.t, "daemon socket to answer", func() bool {
		d.requireRunning()
		c, err := net.Dial("unixpacket", d.socket)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// requireRunning fails the test if the daemon has exited.
func (d *daemon) requireRunning() {
	d.t.Helper()
	select {
	case err := <-d.exited:
		d.exited <- err // for stop
		d.cmd = nil
		d.t.Fatalf("daemon exited: %v\n%s", err, d.log)
	default:
	}
}

// gapsCPUTicks returns the user plus system CPU time of pid, in clock ticks
// (USER_HZ, 100 per second on Linux), from /proc/pid/stat.
func gapsCPUTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...: comm may hold spaces; utime and stime
	// are fields 14 and 15, the 12th and 13th after the ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		t.Fatalf("short /proc/%d/stat: %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("parsing /proc/%d/stat %q: %v, %v", pid, b, err1, err2)
	}
	return utime + stime
}

// gapsStats returns the daemon's own counts (the client must be an admin).
func gapsStats(t *testing.T, c *sockfactory.Client) *sockfactory.DaemonStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	return st
}

// gapsReadOne reads one reply packet from a raw native connection, closing
// any descriptors it carries. It returns the reply (nil on a read error)
// and the number of descriptors.
func gapsReadOne(c *net.UnixConn, timeout time.Duration) (*wire.Reply, int, error) {
	buf := make([]byte, wire.MaxMessageSize)
	oob := make([]byte, unix.CmsgSpace(wire.MaxFDs*4))
	c.SetReadDeadline(time.Now().Add(timeout))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	nfds := 0
	if oobn > 0 {
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					unix.Close(fd)
				}
				nfds += len(fds)
			}
		}
	}
	if err != nil {
		return nil, nfds, err
	}
	if n == 0 {
		return nil, nfds, io.EOF
	}
	rep, err := wire.DecodeReply(buf[:n])
	if err != nil {
		return nil, nfds, fmt.Errorf("undecodable reply %q: %w", buf[:n], err)
	}
	return rep, nfds, nil
}

// closedByPeer reports errors that mean the other end closed the
// connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// TestIntegrationStalledReader: a native client that holds a socket, then
// pipelines requests (binds of port 0 and status) and never reads a reply
// stalls only itself: while the daemon's writes to it are blocked, another
// client is served; after the 10 s write timeout the daemon logs "client
// did not take its reply; closing connection" and closes the connection
// (the stalled client reads its queued replies, then end of file, and its
// writes fail), every socket the connection held is released (Stats: 0
// references, 0 sockets) and the daemon's descriptor count is back to its
// baseline.
func TestIntegrationStalledReader(t *testing.T) {
	requireRoot(t)
	d := startDaemon(t, `
[daemon]
socket = "%SOCKET%"

[[rule]]
name = "root"
users = ["root"]
bind = ["tcp:127.0.0.1:*"]
admin = true
`)
	// Warm up (the first bind reads /proc/sys/net/core/somaxconn), then
	// take the descriptor baseline that cleanup checks.
	warm := &sockfactory.Client{Socket: d.socket}
	if l, err := warm.Listen(context.Background(), "tcp", "127.0.0.1:0", nil); err != nil {
		t.Fatalf("warm-up listen: %v", err)
	} else {
		l.Close()
	}
	warm.Close()
	waitFor(t, "warm-up connections to end", func() bool {
		log := d.log.String()
		return strings.Count(log, "client connected") == strings.Count(log, "client disconnected")
	})
	base := gapsSettle(t, d)
	d.checkFDs()

	raw, err := net.Dial("unixpacket", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	stalled := raw.(*net.UnixConn)
	if rep, nfds := bindRaw(t, stalled, `{"v":1,"id":1,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:0"}}`); rep.Error != nil || nfds != 1 {
		t.Fatalf("stalled client's first bind: error %+v, %d fds; want a socket", rep.Error, nfds)
	}
	admin := d.client()
	if st := gapsStats(t, admin); st.Refs != 1 || st.Sockets != 1 {
		t.Fatalf("after the first bind: %d refs, %d sockets; want 1 and 1", st.Refs, st.Sockets)
	}

	// Pipeline requests without reading. The daemon answers until its
	// send buffer to us is full; then its writes block, it stops reading,
	// and our writes block in turn: that is the stall.
	const maxRequests = 100000
	sent := 0
	for id := 2; ; id++ {
		req := fmt.Sprintf(`{"v":1,"id":%d,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:0"}}`, id)
		if id%2 == 1 {
			req = fmt.Sprintf(`{"v":1,"id":%d,"op":"status"}`, id)
		}
		stalled.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, err := stalled.Write([]byte(req))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("pipelining request %d: %v; want the daemon to stop reading, not to close", id, err)
		}
		if sent++; sent == maxRequests {
			t.Fatalf("the daemon read %d requests whose replies were never read; want it to stall on its writes", sent)
		}
	}
	t.Logf("the daemon stopped reading after %d pipelined requests", sent)

	// Another client is served while the daemon's writes to the stalled
	// one are blocked: the stalled connection still holds its socket.
	other := d.client()
	if _, err := other.Status(context.Background()); err != nil {
		t.Fatalf("status from another client while one is stalled: %v", err)
	}
	if st := gapsStats(t, admin); st.Refs < 1 || st.Sessions < 3 {
		t.Fatalf("while stalled: %d refs, %d sessions; want the stalled connection still there (>= 1 ref, >= 3 sessions)", st.Refs, st.Sessions)
	}
	if line, ok := d.logLine("client did not take its reply"); ok {
		t.Fatalf("the stalled client was dropped before the other client was served: %s", line)
	}

	// The write timeout (10 s) drops it.
	if !poll(30*time.Second, func() bool {
		_, ok := d.logLine("client did not take its reply; closing connection")
		return ok
	}) {
		t.Fatal("no \"client did not take its reply\" line 30 s after the stall (the daemon log follows)")
	}
	// The kernel reports ECONNRESET once (the daemon closed with our
	// requests unread), then the replies still queued, then end of file.
	replies, fds := 0, 0
	var errs []error
	for {
		rep, n, err := gapsReadOne(stalled, 10*time.Second)
		fds += n
		if errors.Is(err, syscall.ECONNRESET) && len(errs) < 10 {
			errs = append(errs, err)
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the stalled connection after %d replies (and errors %v): %v; want end of file (the daemon closed it)", replies, errs, err)
		}
		if e := rep.Error; e != nil && e.Code != wire.CodeLimitExceeded {
			t.Errorf("queued reply %d: %s: %s", rep.ID, e.Code, e.Message)
		}
		replies++
	}
	t.Logf("the stalled client then read errors %v, %d queued replies carrying %d descriptors, then end of file", errs, replies, fds)
	stalled.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := stalled.Write([]byte(`{"v":1,"id":1000000,"op":"status"}`)); !closedByPeer(err) {
		t.Fatalf("write on the dropped connection: %v; want EPIPE or ECONNRESET", err)
	}

	var st *sockfactory.DaemonStats
	if !poll(10*time.Second, func() bool { st = gapsStats(t, admin); return st.Refs == 0 && st.Sockets == 0 }) {
		t.Fatalf("after the drop: %d refs, %d sockets; want 0 and 0 (the connection's sockets released)", st.Refs, st.Sockets)
	}
	other.Close()
	admin.Close()
	bindWaitFDs(t, d, base)
}

// TestIntegrationEMFILE: a daemon under RLIMIT_NOFILE 40 flooded with 60
// connections runs out of descriptors. It does not crash or spin: it logs
// "accept failed; pausing" with a growing pause, uses little CPU while it
// sits at the limit, answers a bind and a connect on an open connection
// with limit_exceeded, and once the connections go it accepts again and
// serves a new client normally.
func TestIntegrationEMFILE(t *testing.T) {
	requireRoot(t)
	const nofile, flood = 40, 60
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	dir := publicTempDir(t)
	d := &daemon{t: t, dir: dir, socket: filepath.Join(dir, "run", "sockfactory.sock"), config: filepath.Join(dir, "sockfactoryd.toml")}
	d.writeConfig(`
[daemon]
socket = "%SOCKET%"

[[rule]]
name = "root"
users = ["root"]
connect = ["127.0.0.1:*"]
bind = ["tcp:127.0.0.1:*"]
admin = true
`)
	d.startCmd(gapsLimitedCommand(t, nofile, bin.daemon, "-config", d.config, "-log-level", "debug", "-log-flush", "0"))
	pid := d.cmd.Process.Pid
	if lim := gapsNoFile(t, pid); lim != nofile {
		t.Fatalf("daemon's open files limit: %d; want %d", lim, nofile)
	}

	ctx := context.Background()
	// This client's connection is accepted before the flood and stays.
	c := &sockfactory.Client{Socket: d.socket}
	defer c.Close()
	gapsServed(t, c, echo, "warm-up")
	waitFor(t, "warm-up probes to end", func() bool {
		log := d.log.String()
		return strings.Count(log, "client connected") == strings.Count(log, "client disconnected")+1
	})
	base := gapsSettle(t, d)

	conns := make([]net.Conn, 0, flood)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer func() { closeAll() }()
	for i := range flood {
		cn, err := net.Dial("unixpacket", d.socket)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, flood, err)
		}
		conns = append(conns, cn)
	}
	first := d.waitLog(t, `msg="accept failed; pausing"`, "too many open files")
	cpu0, atLimit := gapsCPUTicks(t, pid), time.Now()
	// Every descriptor number below the limit is taken. (A count would
	// also see descriptors above it inherited from the test's parent.)
	if got := gapsFDsBelow(t, pid, nofile); got != nofile {
		t.Errorf("daemon descriptors below the limit of %d: %d open; want all; open: %s", nofile, got, bindFDList(d))
	}
	t.Logf("%s", first)

	t.Run("requests at the limit get limit_exceeded", func(t *testing.T) {
		f, _, err := c.BindFile(ctx, "tcp", "127.0.0.1:0", nil)
		if err == nil {
			f.Close()
		}
		var se *sockfactory.Error
		if !errors.As(err, &se) || se.Code != string(wire.CodeLimitExceeded) {
			t.Errorf("bind without descriptors left: %v; want limit_exceeded (see docs/security.md, Known gaps 5)", err)
		} else if se.Errno != syscall.EMFILE {
			t.Errorf("bind without descriptors left: errno %v; want EMFILE", se.Errno)
		}
		conn, err := c.DialContext(ctx, "tcp", echo)
		if err == nil {
			conn.Close()
		}
		if !errors.As(err, &se) || se.Code != string(wire.CodeLimitExceeded) {
			t.Errorf("connect without descriptors left: %v; want limit_exceeded", err)
		}
	})

	// The back-off grows to its 1 s cap (about 3 s at the limit, the
	// pending connections still unaccepted); the CPU time used meanwhile
	// is measured over at least 3 s, so that a loop that spins without
	// logging shows too.
	waitFor(t, "the accept back-off to reach 1 s twice, 3 s at the limit", func() bool {
		d.requireRunning()
		return d.countLog(`msg="accept failed; pausing"`, "pause=1s") >= 2 && time.Since(atLimit) >= 3*time.Second
	})
	cpu := gapsCPUTicks(t, pid) - cpu0
	pauses := d.countLog(`msg="accept failed; pausing"`)
	t.Logf("at the limit for %v: %d accept failures logged, %d ms of CPU", time.Since(atLimit).Round(time.Millisecond), pauses, cpu*10)
	if cpu > 200 {
		t.Errorf("daemon used %d ms of CPU while waiting at the descriptor limit; want at most 2000 (no busy loop)", cpu*10)
	}
	if pauses > 30 {
		t.Errorf("%d accept failures logged before the pause reached 1 s twice; want about 10 (5 ms doubling to 1 s)", pauses)
	}

	// Once the connections go, it accepts (and closes) the pending ones
	// and serves a new client.
	closeAll()
	waitFor(t, fmt.Sprintf("daemon descriptors back to %d", base), func() bool {
		d.requireRunning()
		return d.fds() == base
	})
	fresh := &sockfactory.Client{Socket: d.socket}
	defer fresh.Close()
	gapsServed(t, fresh, echo, "new client after the flood")
	gapsServed(t, c, echo, "client connected through the flood")
	fresh.Close()
	if st := gapsStats(t, c); st.Refs != 0 || st.Sockets != 0 {
		t.Errorf("after the flood: %d refs, %d sockets; want 0 and 0", st.Refs, st.Sockets)
	}
	waitFor(t, fmt.Sprintf("daemon descriptors back to %d", base), func() bool { return d.fds() == base })
}

// gapsServed checks c gets a status, a listening socket on port 0 (then
// released) and a connection to the echo server.
func gapsServed(t *testing.T, c *sockfactory.Client, echo, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("%s: status: %v", what, err)
	}
	l, err := c.Listen(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("%s: listen on port 0: %v", what, err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("%s: closing the listener: %v", what, err)
	}
	conn, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		t.Fatalf("%s: connect to the echo server: %v", what, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	roundTrip(t, conn, what+"\n")
}

// gapsFDsBelow counts pid's open descriptors numbered below n.
func gapsFDsBelow(t *testing.T, pid int, n uint64) uint64 {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var got uint64
	for _, e := range ents {
		if fd, err := strconv.ParseUint(e.Name(), 10, 64); err == nil && fd < n {
			got++
		}
	}
	return got
}

// gapsSettle waits until every socket the daemon has open is a UNIX one
// (its listener and client connections): the sockets of warm-up requests,
// which it closes just after sending them, are gone. It returns the
// daemon's descriptor count then, the baseline for later checks.
func gapsSettle(t *testing.T, d *daemon) int {
	t.Helper()
	pid := d.cmd.Process.Pid
	var other []string
	if !poll(10*time.Second, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", pid))
		if err != nil {
			t.Fatal(err)
		}
		unixInodes := map[string]bool{}
		for l := range strings.SplitSeq(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 7 {
				unixInodes[f[6]] = true
			}
		}
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		other = other[:0]
		for _, e := range ents {
			target, _ := os.Readlink(filepath.Join(dir, e.Name()))
			if ino, ok := strings.CutPrefix(target, "socket:["); ok && !unixInodes[strings.TrimSuffix(ino, "]")] {
				other = append(other, e.Name()+"->"+target)
			}
		}
		return len(other) == 0
	}) {
		t.Fatalf("daemon still has non-UNIX sockets open after the warm-up: %v", other)
	}
	return d.fds()
}

// gapsNoFile returns pid's soft open files limit.
func gapsNoFile(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			f := strings.Fields(rest)
			if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				return n
			}
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits:\n%s", pid, b)
	return 0
}

// TestIntegrationSocketDirRefused: the daemon refuses to start on a socket
// directory another user could have planted (owned by another uid, or
// writable by everyone without the sticky bit), for the native socket and
// for a Clearwater one, with a message naming the directory and the reason,
// and leaves no socket behind; a root-owned 0755 directory and a sticky
// 1777 one are accepted.
func TestIntegrationSocketDirRefused(t *testing.T) {
	requireRoot(t)
	type dirSetup struct {
		uid  int
		mode os.FileMode
	}
	cases := []struct {
		name string
		// native and cw set up the directories of the native and the
		// Clearwater socket; cw nil means no Clearwater listener.
		native, cw *dirSetup
		// want is the start-up error, "" when the daemon must start.
		want string
	}{
		{name: "owned by another uid", native: &dirSetup{65534, 0o755}, want: "is owned by uid 65534, not by this user or root; refusing to use it"},
		{name: "writable by everyone, not sticky", native: &dirSetup{0, 0o777}, want: "is writable by everyone and not sticky; refusing to use it"},
		{name: "clearwater directory owned by another uid", native: &dirSetup{0, 0o755}, cw: &dirSetup{65534, 0o755}, want: "clearwater listener: socket directory"},
		{name: "root-owned 0755", native: &dirSetup{0, 0o755}},
		{name: "sticky 1777", native: &dirSetup{0, 0o777 | os.ModeSticky}, cw: &dirSetup{0, 0o777 | os.ModeSticky}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			top := publicTempDir(t)
			mk := func(name string, s *dirSetup) string {
				t.Helper()
				dir := filepath.Join(top, name)
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, s.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(dir, s.uid, s.uid); err != nil {
					t.Fatal(err)
				}
				return dir
			}
			nativeDir := mk("native", tc.native)
			d := &daemon{t: t, dir: top, socket: filepath.Join(nativeDir, "sockfactory.sock"), config: filepath.Join(top, "sockfactoryd.toml")}
			config := `
[daemon]
socket = "%SOCKET%"

[[rule]]
users = ["root"]
bind = ["tcp:127.0.0.1:*"]
`
			var cwSock, cwDir string
			if tc.cw != nil {
				cwDir = mk("clearwater", tc.cw)
				cwSock = filepath.Join(cwDir, "cw.sock")
				config += fmt.Sprintf("\n[[clearwater]]\nsocket = %q\nallowed_hosts = [\"127.0.0.1\"]\n", cwSock)
			}
			d.writeConfig(config)

			if tc.want == "" {
				d.startCmd(exec.Command(bin.daemon, "-config", d.config, "-log-level", "debug", "-log-flush", "0"))
				if _, err := d.client().Status(context.Background()); err != nil {
					t.Fatalf("status from the daemon on a %s directory: %v", tc.name, err)
				}
				if cwSock != "" {
					d.waitLog(t, `msg="listening (clearwater)"`, "socket="+cwSock)
				}
				if fi, err := os.Stat(nativeDir); err != nil || fi.Mode()&(os.ModePerm|os.ModeSticky) != tc.native.mode {
					t.Errorf("socket directory after start: %v, %v; want its mode %v untouched", fi.Mode(), err, tc.native.mode)
				}
				return
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin.daemon, "-config", d.config).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("daemon on a %s socket directory: %v; want exit status 1\n%s", tc.name, err, out)
			}
			bad := nativeDir
			if tc.cw != nil {
				bad = cwDir
			}
			wantMsg := "socket directory " + bad + " "
			if !strings.Contains(string(out), `msg="cannot start"`) || !strings.Contains(string(out), wantMsg) || !strings.Contains(string(out), tc.want) {
				t.Fatalf("start-up error: %s; want \"cannot start\" naming %q and %q", out, bad, tc.want)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
			for _, p := range []string{d.socket, cwSock} {
				if p == "" {
					continue
				}
				if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind by the refused start (err %v)", p, err)
				}
			}
		})
	}
}

// TestIntegrationClearwaterConnLimit: with connections_per_uid = 3, three
// silent Clearwater connections are held (until read_timeout); a fourth is
// closed at once with no data and logged code=limit_exceeded, while the
// three are still open; once they close, a request is served as a
// Clearwater client expects (one byte, one descriptor).
func TestIntegrationClearwaterConnLimit(t *testing.T) {
	requireRoot(t)
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	d := startCWDaemon(t, nil, `
[limits]
connections_per_uid = 3

[[clearwater]]
socket = "%DIR%/cw.sock"
allowed_hosts = ["127.0.0.1"]
read_timeout = "5s"
`, nil)
	sock := d.cwPath("cw.sock")
	d.cwWarmUp(t, [2]string{sock, echo})
	base := d.fds()
	pid := pidField(os.Getpid())

	// Four connections, each accepted before the next is made. The
	// daemon admits a connection on its own goroutine after accepting it,
	// so which one finds the three places taken is usually, not always,
	// the fourth: the test takes whichever it is.
	var conns []*net.UnixConn
	for i := range 4 {
		c := cwDial(t, sock)
		defer c.Close()
		conns = append(conns, c)
		if i < 3 {
			waitFor(t, fmt.Sprintf("the daemon to accept connection %d", i+1), func() bool { return d.fds() == base+i+1 })
		}
	}
	refused := -1
	state := make([]string, len(conns))
	waitFor(t, "one of the four connections to be closed", func() bool {
		for i, c := range conns {
			if state[i] = recvNoWait(t, c); state[i] != "open" {
				refused = i
			}
		}
		return refused >= 0
	})
	// Had it been dropped by the read timeout instead, the others, opened
	// within moments of it, would have been dropped too.
	for i, st := range state {
		if want := map[bool]string{true: "eof", false: "open"}[i == refused]; st != want {
			t.Fatalf("connections over a limit of 3: %q; want exactly one closed (\"eof\": refused at once, no data) and the others \"open\" (held until the read timeout)", state)
		}
	}
	requirePlainClose(t, cwReadAll(t, conns[refused]), fmt.Sprintf("connection %d, over the limit", refused+1))
	if refused != 3 {
		t.Logf("connection %d (not the fourth) was the one refused: its admission lost the race with the fourth's", refused+1)
	}
	t.Logf("%s", d.waitLog(t, "msg=fail", "listener=clearwater", "uid=0 ", pid, "code=limit_exceeded"))
	if n := d.countLog("code=limit_exceeded"); n != 1 {
		t.Errorf("%d limit_exceeded lines; want 1 (the connection over the limit)", n)
	}
	silent := slices.Delete(conns, refused, refused+1)

	for _, c := range silent {
		c.Close()
	}
	waitFor(t, fmt.Sprintf("daemon descriptors back to %d", base), func() bool { return d.fds() == base })

	// A request read as the C clients do: one recvmsg of 1 byte with room
	// for one descriptor.
	c := cwDial(t, sock)
	defer c.Close()
	if _, err := c.Write([]byte(echo)); err != nil {
		t.Fatalf("sending %q: %v", echo, err)
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil || n != 1 || buf[0] != ' ' || flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
		t.Fatalf("reply after the silent connections closed: %d bytes %q, flags %#x, %v; want one space", n, buf[:max(n, 0)], flags, err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control data % x: %d messages, %v; want one SCM_RIGHTS", oob[:oobn], len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	for _, fd := range fds {
		t.Cleanup(func() { unix.Close(fd) })
	}
	if err != nil || len(fds) != 1 {
		t.Fatalf("SCM_RIGHTS: %v, %v; want one descriptor", fds, err)
	}
	checkDelivered(t, fds[0], unix.AF_INET, echo, 30*time.Second)
	requirePlainClose(t, cwReadAll(t, c), "rest of the granted connection")
}
