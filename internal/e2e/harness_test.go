package e2e

import (
	"bytes"
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

// raceEnabled is set by race_test.go; the binaries are then built with
// -race too, so that the daemon's races fail the tests.
var raceEnabled bool

// bin holds the paths of the binaries TestMain builds.
var bin struct {
	dir, daemon, cli string
}

const helperEnv = "SOCKFACTORY_E2E_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[len(os.Args)-1]))
	}
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "sockfactory-e2e-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	// Other uids run the CLI from here.
	if err := os.Chmod(dir, 0o755); err != nil {
		return 0, err
	}
	bin.dir = dir
	bin.daemon = filepath.Join(dir, "sockfactoryd")
	bin.cli = filepath.Join(dir, "sockfactory")
	for out, pkg := range map[string]string{bin.daemon: "github.com/sockfactory/sockfactory/cmd/sockfactoryd", bin.cli: "github.com/sockfactory/sockfactory/cmd/sockfactory"} {
		args := []string{"build", "-o", out}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, pkg)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("building %s: %v\n%s", pkg, err, b)
		}
	}
	return m.Run(), nil
}

// requireRoot skips (or, with SOCKFACTORY_REQUIRE_ROOT=1, fails) a test
// that needs root and network namespaces when they are missing.
func requireRoot(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root (run the tests as root, e.g. sudo -E go test ./...)"
	} else {
		cmd := exec.Command("/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		if err := cmd.Run(); err != nil {
			why = fmt.Sprintf("cannot create a network namespace (%v); run where unshare -n works", err)
		}
	}
	if why != "" {
		testnet.SkipOrFail(t, "this test "+why)
	}
}

// daemon is a running sockfactoryd process.
type daemon struct {
	t      testing.TB
	cmd    *exec.Cmd
	dir    string
	socket string
	config string
	log    *syncBuffer
	exited chan error
	// prepare, if set, adjusts the command before start runs it (extra
	// descriptors, a network namespace).
	prepare func(*exec.Cmd)
}

// publicTempDir returns a fresh directory other uids can enter.
func publicTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sockfactory-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startDaemon writes config (with %SOCKET% replaced by the socket path) and
// starts the daemon on it; it waits until the socket answers. Cleanup stops
// it with SIGTERM and checks it exits 0 and removes its socket.
func startDaemon(t testing.TB, config string) *daemon {
	t.Helper()
	return startDaemonWith(t, config, nil)
}

// startDaemonWith is startDaemon with prepare, if not nil, adjusting the
// command before it starts (see daemon.prepare).
func startDaemonWith(t testing.TB, config string, prepare func(*exec.Cmd)) *daemon {
	t.Helper()
	dir := publicTempDir(t)
	d := &daemon{t: t, dir: dir, socket: filepath.Join(dir, "run", "sockfactory.sock"), config: filepath.Join(dir, "sockfactoryd.toml"), prepare: prepare}
	d.writeConfig(config)
	d.start()
	t.Cleanup(d.stop)
	return d
}

// startDaemonNetns is startDaemon with the daemon in a network namespace
// of its own, lo up and nothing else: the ports it binds (53, say) are not
// the host's, so the test passes whatever holds them on the machine.
// Clients reach the daemon by its socket's path, as ever; servers the
// daemon must reach, and clients of the sockets it hands out, are made in
// the returned namespace. A test that restarts the daemon (d.start) gets a
// new namespace: call d.netns again then.
func startDaemonNetns(t *testing.T, config string) (*daemon, *testnet.Netns) {
	t.Helper()
	d := startDaemonWith(t, config, func(cmd *exec.Cmd) {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
	})
	return d, d.netns()
}

// netns returns the network namespace of the running daemon, with lo
// brought up (a new namespace has it down; the daemon binds or connects
// only when asked, so it has not needed lo before this).
func (d *daemon) netns() *testnet.Netns {
	d.t.Helper()
	n := testnet.OpenNetns(d.t, d.cmd.Process.Pid)
	if err := n.LoopbackUp(); err != nil {
		d.t.Fatalf("bringing lo up in the daemon's network namespace: %v", err)
	}
	return n
}

func (d *daemon) writeConfig(config string) {
	d.t.Helper()
	config = strings.ReplaceAll(config, "%SOCKET%", d.socket)
	if err := os.WriteFile(d.config, []byte(config), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// start runs the daemon with every log line written at once (-log-flush 0):
// tests wait for log lines that tell what the daemon has done.
// TestIntegrationLogFlush covers the default, gathered writing.
func (d *daemon) start() {
	d.t.Helper()
	d.log = &syncBuffer{}
	d.cmd = exec.Command(bin.daemon, "-config", d.config, "-log-level", "debug", "-log-flush", "0")
	d.cmd.Stderr = d.log
	d.cmd.Stdout = d.log
	if d.prepare != nil {
		d.prepare(d.cmd)
	}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan error, 1)
	go func() { d.exited <- d.cmd.Wait() }()
	waitFor(d.t, "daemon socket to answer", func() bool {
		select {
		case err := <-d.exited:
			d.t.Fatalf("daemon exited at start: %v\n%s", err, d.log)
		default:
		}
		c, err := net.Dial("unixpacket", d.socket)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// stop sends SIGTERM and checks a clean exit that removed the socket.
func (d *daemon) stop() {
	d.t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Errorf("daemon exit after SIGTERM: %v\n%s", err, d.log)
		}
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		d.t.Errorf("daemon did not exit within 20s of SIGTERM\n%s", d.log)
	}
	d.cmd = nil
	if _, err := os.Lstat(d.socket); !errors.Is(err, os.ErrNotExist) {
		d.t.Errorf("socket file %s still there after shutdown (err %v)", d.socket, err)
	}
	if d.t.Failed() {
		d.t.Logf("daemon log:\n%s", d.log)
	}
}

// fds returns the daemon's open descriptor count.
func (d *daemon) fds() int {
	d.t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	if err != nil {
		d.t.Fatalf("counting daemon fds: %v", err)
	}
	return len(ents)
}

// checkFDs records the daemon's fd count now and, at cleanup, waits for it
// to come back to that count. Call it after a warm-up request.
func (d *daemon) checkFDs() {
	d.t.Helper()
	base := d.fds()
	d.t.Cleanup(func() {
		if d.cmd == nil {
			return
		}
		var got int
		ok := poll(10*time.Second, func() bool { got = d.fds(); return got == base })
		if !ok {
			d.t.Errorf("daemon fd count: got %d, want baseline %d", got, base)
		}
	})
}

// client returns a Go client of the daemon, closed at cleanup.
func (d *daemon) client() *sockfactory.Client {
	c := &sockfactory.Client{Socket: d.socket}
	d.t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !poll(10*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// echoServer listens on network/addr (e.g. "tcp", "127.0.0.1:0") and echoes
// each connection until it closes. It returns the listening address.
func echoServer(t testing.TB, network, addr string) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("echo server on %s: %v", addr, err)
	}
	return serveEcho(t, l)
}

// echoServerNetns is echoServer in the network namespace ns (a daemon's
// of its own, say); addr is numeric.
func echoServerNetns(t *testing.T, ns *testnet.Netns, network, addr string) string {
	t.Helper()
	l, err := ns.Listen(network, addr)
	if err != nil {
		t.Fatalf("echo server on %s in a namespace: %v", addr, err)
	}
	return serveEcho(t, l)
}

// serveEcho echoes each connection l accepts until it closes; l is closed
// at cleanup. It returns l's address.
func serveEcho(t testing.TB, l net.Listener) string {
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

// runCLI runs the sockfactory CLI with stdin; opts adjust the process (a
// new network namespace, another uid). It returns stdout, stderr and the
// exit code.
func runCLI(t testing.TB, stdin string, attr *syscall.SysProcAttr, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.cli, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = attr
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running CLI: %v", err)
	}
	return out.String(), errb.String(), code
}

// inNewNetns makes a child process start in a fresh network namespace,
// where only a down loopback exists.
func inNewNetns() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
}

// asUser makes a child process run as uid/gid with no supplementary groups.
func asUser(uid, gid uint32) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
}
