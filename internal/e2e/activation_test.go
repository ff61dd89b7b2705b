package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// socketActivate returns the path of systemd-socket-activate, failing (or
// skipping, outside CI) when it is missing.
func socketActivate(t *testing.T) string {
	t.Helper()
	return systemdTool(t, "systemd-socket-activate")
}

// systemdTool returns the path of one of systemd's programs, failing (or
// skipping, outside CI) when it is missing.
func systemdTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testnet.SkipOrFail(t, fmt.Sprintf("%s not found (%v): install the Debian package systemd (.ci/run does)", name, err))
	}
	return p
}

const activationConfig = `
[daemon]
socket = "%DIR%/native.sock"

[[rule]]
name = "root"
users = ["root"]
admin = true
connect = ["127.0.0.0/8:*"]
bind = ["tcp:127.0.0.0/8:*"]

[[clearwater]]
socket = "%DIR%/cw.sock"
allowed_hosts = ["127.0.0.1"]
`

// activated is a daemon started through systemd-socket-activate: an outer
// one listens on the Clearwater socket and, at the first connection
// there, runs an inner one that listens on the native socket
// (SOCK_SEQPACKET; one systemd-socket-activate makes sockets of one type)
// and passes both on to the daemon at once, the first connection waiting
// in the Clearwater socket's backlog.
type activated struct {
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan error
	dir    string
}

// startActivated starts the chain; fdnames, when set, is the inner
// --fdname (names for fd 3, the Clearwater socket, and fd 4, the native
// one), and cwPath the path the outer one listens on.
func startActivated(t *testing.T, dir, cwPath, fdnames string) *activated {
	t.Helper()
	sa := socketActivate(t)
	config := filepath.Join(dir, "sockfactoryd.toml")
	if err := os.WriteFile(config, []byte(strings.ReplaceAll(activationConfig, "%DIR%", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	inner := []string{sa, "--seqpacket", "-l", filepath.Join(dir, "native.sock")}
	if fdnames != "" {
		inner = append(inner, "--fdname="+fdnames)
	}
	args := append([]string{"-l", cwPath}, inner...)
	args = append(args, bin.daemon, "-config", config, "-log-level", "debug", "-log-flush", "0")
	a := &activated{cmd: exec.Command(sa, args...), log: &syncBuffer{}, exited: make(chan error, 1), dir: dir}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.exited <- a.cmd.Wait() }()
	t.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(20 * time.Second):
			a.cmd.Process.Kill()
			t.Errorf("the activated daemon did not exit within 20 s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("log:\n%s", a.log)
		}
	})
	waitFor(t, "systemd-socket-activate to listen", func() bool { _, err := os.Stat(cwPath); return err == nil })
	return a
}

// TestIntegrationSocketActivation starts the daemon through the real
// systemd-socket-activate, with the native socket and a Clearwater
// listener passed in, named and (matched by type and path) unnamed: the
// daemon serves on them without creating sockets of its own, answers the
// request that started it, and leaves the socket files (systemd's) when it
// stops.
func TestIntegrationSocketActivation(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct{ name, fdnames string }{
		{"named", "clearwater:native"},
		{"by type and path", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := publicTempDir(t)
			target := echoServer(t, "tcp", "127.0.0.1:0")
			cwPath := filepath.Join(dir, "cw.sock")
			a := startActivated(t, dir, cwPath, c.fdnames)
			// This request starts the daemon; it waits in the backlog.
			if err := clearwaterConnect(cwPath, target); err != nil {
				t.Fatalf("the first Clearwater request: %v\n%s", err, a.log)
			}
			native := filepath.Join(dir, "native.sock")
			client := &sockfactory.Client{Socket: native}
			defer client.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			st, err := client.Stats(ctx)
			if err != nil {
				t.Fatalf("stats over the activated native socket: %v\n%s", err, a.log)
			}
			if st.PID != a.cmd.Process.Pid {
				t.Errorf("served by pid %d, want the activated process %d", st.PID, a.cmd.Process.Pid)
			}
			if err := clearwaterConnect(cwPath, target); err != nil {
				t.Errorf("a second Clearwater request: %v", err)
			}
			if !strings.Contains(a.log.String(), "activated=true") {
				t.Errorf("the daemon does not log that it was activated:\n%s", a.log)
			}
			client.Close()
			a.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-a.exited:
				a.exited <- err // for the cleanup
				if err != nil {
					t.Errorf("daemon exit: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no exit after SIGTERM")
			}
			for _, p := range []string{native, cwPath} {
				if _, err := os.Lstat(p); err != nil {
					t.Errorf("the daemon removed %s, which is systemd's: %v", p, err)
				}
			}
		})
	}
}

// TestIntegrationSocketActivationMismatch passes a socket the
// configuration has no front door for: the daemon refuses to start and
// says which socket and what to do.
func TestIntegrationSocketActivationMismatch(t *testing.T) {
	requireRoot(t)
	dir := publicTempDir(t)
	stray := filepath.Join(dir, "stray.sock")
	a := startActivated(t, dir, stray, "")
	c, err := net.Dial("unix", stray)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case err := <-a.exited:
		a.exited <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("daemon exit: %v, want exit status 1", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the daemon started on a socket it cannot place\n%s", a.log)
	}
	want := fmt.Sprintf(`passed socket \"LISTEN_FD_3\" (fd 3, unix %s) matches no front door of the configuration`, stray)
	if !strings.Contains(a.log.String(), want) {
		t.Errorf("log does not name the socket (%s):\n%s", want, a.log)
	}
	if bytes.Contains([]byte(a.log.String()), []byte(`msg=listening`)) {
		t.Errorf("the daemon listened anyway:\n%s", a.log)
	}
}

// TestIntegrationContribUnits checks contrib/systemd's units with
// systemd-analyze verify, pointed at the built binaries. Settings newer
// than this machine's systemd (Type=notify-reload and
// FileDescriptorStorePreserve= need 253 and 254) are the only complaints
// allowed.
func TestIntegrationContribUnits(t *testing.T) {
	requireRoot(t)
	analyze := systemdTool(t, "systemd-analyze")
	dir := publicTempDir(t)
	for _, name := range []string{"sockfactoryd.service", "sockfactoryd.socket"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "contrib", "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/usr/local/bin/sockfactoryd", bin.daemon)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := exec.Command(analyze, "verify", filepath.Join(dir, "sockfactoryd.service"), filepath.Join(dir, "sockfactoryd.socket")).CombinedOutput()
	allowed := []string{"Failed to parse service type, ignoring: notify-reload", "Unknown key 'FileDescriptorStorePreserve'"}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || strings.Contains(line, a)
		}
		if !ok {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}
