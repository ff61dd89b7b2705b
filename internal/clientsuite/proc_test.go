package clientsuite

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// commandTimeout bounds the wait for one reply line: a driver that hangs
// fails its case (with its stderr) instead of hanging the test.
const commandTimeout = 10 * time.Second

// zeroToken is a well-formed token no daemon ever issues (the odds are
// 2^-128): releasing it is answered not_found, with no effect. The suite
// uses it to make a driver's library connect, so that its descriptor count
// includes the daemon connection.
const zeroToken = "00000000000000000000000000000000"

// proc is one running driver process.
type proc struct {
	t      *testing.T
	label  string // the driver and, when a case runs several, which one
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // reply lines; closed at end of stdout
	stderr *syncBuffer
	exited chan struct{} // closed once the process has been waited for
	err    error         // the process's exit, once exited is closed

	handles []string // handles the driver holds, as the suite has seen them
	baseFDs int      // the driver's descriptor count after warm-up; -1: none
	killed  bool
}

// startProc starts a driver with argv and env. Cleanup finishes it
// (finish); it shows the driver's stderr when the test fails.
func startProc(t *testing.T, label string, argv, env []string) *proc {
	t.Helper()
	p := &proc{t: t, label: label, stderr: &syncBuffer{}, lines: make(chan string, 16), exited: make(chan struct{}), baseFDs: -1}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = env
	p.cmd.Stderr = p.stderr
	p.cmd.WaitDelay = 2 * time.Second // a child left holding stderr cannot stall Wait
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: starting %v: %v", label, argv, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = p.cmd.Wait() // after every read from stdout, as os/exec wants
		close(p.exited)
	}()
	t.Cleanup(p.finish)
	return p
}

// pending is a command sent whose reply has not been read yet.
type pending struct {
	p   *proc
	cmd string
}

// send writes one command line and returns without waiting for its reply.
func (p *proc) send(cmd string) *pending {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		p.fatalf("sending %q: %v", cmd, err)
	}
	return &pending{p: p, cmd: cmd}
}

// wait returns the reply line to the command, failing the test if none
// comes within commandTimeout or the driver exits first.
func (c *pending) wait() string {
	p := c.p
	p.t.Helper()
	t := time.NewTimer(commandTimeout)
	defer t.Stop()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.exited
			p.fatalf("%q: the driver exited (%v) without a reply", c.cmd, p.err)
		}
		p.t.Logf("%s: %s -> %s", p.label, c.cmd, l)
		return l
	case <-t.C:
		p.kill()
		p.fatalf("%q: no reply within %v (driver killed)", c.cmd, commandTimeout)
	}
	return ""
}

// do sends cmd and returns its reply line.
func (p *proc) do(cmd string) string {
	p.t.Helper()
	return p.send(cmd).wait()
}

// ok sends cmd and returns the words after "ok". Any other reply fails
// the test, except "err unsupported 0", which skips it: the library has
// no call for the command. The handles a reply gives and closefd or close
// take are tracked, so that cleanup can close what a case left open.
func (c *pending) ok() []string {
	p := c.p
	p.t.Helper()
	l := c.wait()
	p.skipUnsupported(c.cmd, l)
	w := strings.Split(l, " ")
	if w[0] != "ok" {
		p.fatalf("%q: got %q, want ok", c.cmd, l)
	}
	w = w[1:]
	cw := strings.Split(c.cmd, " ")
	want := map[string]int{"connect": 1, "bind": 2, "bindtoken": 1, "pickup": 2, "sockname": 1, "fdinfo": 4, "echo": 1, "status": 1, "fds": 1}
	if n, known := want[cw[0]]; known && len(w) != n {
		p.fatalf("%q: got %q, want ok and %d words", c.cmd, l, n)
	}
	switch cw[0] {
	case "connect", "bind", "pickup":
		if _, err := strconv.Atoi(w[0]); err != nil {
			p.fatalf("%q: got %q: handle %q is not a number", c.cmd, l, w[0])
		}
		if slices.Contains(p.handles, w[0]) {
			p.fatalf("%q: got %q: handle %s given out twice", c.cmd, l, w[0])
		}
		p.handles = append(p.handles, w[0])
	case "closefd", "close":
		p.handles = slices.DeleteFunc(p.handles, func(h string) bool { return h == cw[1] })
	}
	return w
}

// ok is send(cmd).ok().
func (p *proc) ok(cmd string) []string {
	p.t.Helper()
	return p.send(cmd).ok()
}

// one is ok for a command with a single result word.
func (p *proc) one(cmd string) string {
	p.t.Helper()
	return p.ok(cmd)[0]
}

// expect sends cmd and checks the reply is exactly want ("ok",
// "err denied 0", ...); "err unsupported 0" skips the test.
func (p *proc) expect(cmd, want string) {
	p.t.Helper()
	got := p.do(cmd)
	p.skipUnsupported(cmd, got)
	if got != want {
		p.errorf("%q: got %q, want %q", cmd, got, want)
	}
	if strings.HasPrefix(got, "ok") {
		if cw := strings.Split(cmd, " "); cw[0] == "closefd" || cw[0] == "close" {
			p.handles = slices.DeleteFunc(p.handles, func(h string) bool { return h == cw[1] })
		}
	}
}

// expectErr is expect with want "err CODE ERRNO".
func (p *proc) expectErr(cmd, code string, errno syscall.Errno) {
	p.t.Helper()
	p.expect(cmd, fmt.Sprintf("err %s %d", code, int(errno)))
}

// expectErrIn checks that cmd fails with code and one of errnos: for
// the cases where a C call must set errno while Go and Python may carry
// none (DRIVER.md, "Replies").
func (p *proc) expectErrIn(cmd, code string, errnos ...syscall.Errno) {
	p.t.Helper()
	got := p.do(cmd)
	p.skipUnsupported(cmd, got)
	var want []string
	for _, e := range errnos {
		w := fmt.Sprintf("err %s %d", code, int(e))
		if got == w {
			return
		}
		want = append(want, w)
	}
	p.errorf("%q: got %q, want one of %q", cmd, got, want)
}

// expectCode checks that cmd fails with code, whatever errno it carries.
func (p *proc) expectCode(cmd, code string) {
	p.t.Helper()
	got := p.do(cmd)
	p.skipUnsupported(cmd, got)
	w := strings.Split(got, " ")
	if len(w) != 3 || w[0] != "err" || w[1] != code {
		p.errorf("%q: got %q, want err %s ERRNO", cmd, got, code)
		return
	}
	if _, err := strconv.Atoi(w[2]); err != nil {
		p.errorf("%q: got %q: errno %q is not a number", cmd, got, w[2])
	}
}

func (p *proc) skipUnsupported(cmd, reply string) {
	p.t.Helper()
	if reply == "err unsupported 0" {
		// Every client has every call the suite uses: a driver that
		// answers so has fallen behind its library or DRIVER.md.
		p.t.Fatalf("%s: %q answered %q: the driver has no call for it; every client must pass every case", p.label, cmd, reply)
	}
}

// fds returns the driver's own descriptor count.
func (p *proc) fds() int {
	p.t.Helper()
	n, err := strconv.Atoi(p.one("fds"))
	if err != nil {
		p.fatalf("fds: %v", err)
	}
	return n
}

// warm makes the driver's library connect (a release of zeroToken, which
// the daemon, and the fake daemon, answer not_found) and returns the
// driver's descriptor count then.
func (p *proc) warm() int {
	p.t.Helper()
	p.expectErr("release "+zeroToken, "not_found", 0)
	return p.fds()
}

// baseline records the descriptor count that finish checks the driver
// comes back to.
func (p *proc) baseline() { p.t.Helper(); p.baseFDs = p.warm() }

// kill ends the driver with SIGKILL and waits for it: the crash case.
func (p *proc) kill() {
	if p.killed {
		return
	}
	p.killed = true
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s: not gone 10s after SIGKILL", p.label)
	}
}

// finish ends the driver at cleanup: it closes the handles the case left
// open, checks that the driver's descriptor count is back to its baseline
// (after a reconnect, which drops the references the case left, and a
// warm-up), sends quit and checks for "ok" and exit status 0.
func (p *proc) finish() {
	t := p.t
	defer func() {
		if t.Failed() {
			t.Logf("%s: stderr:\n%s", p.label, p.stderr)
		}
	}()
	if p.killed {
		return
	}
	select {
	case <-p.exited:
		t.Errorf("%s: exited before the end of the case: %v", p.label, p.err)
		return
	default:
	}
	// Commands here use Errorf: a Fatal in cleanup would skip quit.
	cmd := func(c string) (string, bool) {
		if _, err := io.WriteString(p.stdin, c+"\n"); err != nil {
			t.Errorf("%s: sending %q: %v", p.label, c, err)
			return "", false
		}
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Errorf("%s: %q: exited without a reply", p.label, c)
			}
			return l, ok
		case <-time.After(commandTimeout):
			t.Errorf("%s: %q: no reply within %v", p.label, c, commandTimeout)
			p.kill()
			return "", false
		}
	}
	if p.baseFDs >= 0 && !t.Failed() && !t.Skipped() {
		for _, h := range p.handles {
			if l, ok := cmd("closefd " + h); !ok {
				return
			} else if l != "ok" {
				t.Errorf("%s: closefd %s at the end of the case: got %q, want ok", p.label, h, l)
			}
		}
		if l, ok := cmd("reconnect"); !ok {
			return
		} else if l != "ok" {
			t.Errorf("%s: reconnect at the end of the case: got %q, want ok", p.label, l)
		}
		want := "err not_found 0"
		if l, ok := cmd("release " + zeroToken); !ok {
			return
		} else if l != want {
			t.Errorf("%s: release %s at the end of the case: got %q, want %q", p.label, zeroToken, l, want)
		}
		l, ok := cmd("fds")
		if !ok {
			return
		}
		if got := strings.TrimPrefix(l, "ok "); got != strconv.Itoa(p.baseFDs) {
			t.Errorf("%s: descriptors at the end of the case: got %q, want ok %d (the count after warm-up at its start): the library leaks or closed one", p.label, l, p.baseFDs)
		}
	}
	if l, ok := cmd("quit"); ok && l != "ok" {
		t.Errorf("%s: quit: got %q, want ok", p.label, l)
	}
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(commandTimeout):
		t.Errorf("%s: still running %v after quit; killed", p.label, commandTimeout)
		p.kill()
		return
	}
	if p.err != nil {
		t.Errorf("%s: exit after quit: %v, want status 0", p.label, p.err)
	}
	for l := range p.lines {
		t.Errorf("%s: extra line on stdout after quit: %q", p.label, l)
	}
}

func (p *proc) fatalf(format string, args ...any) {
	p.t.Helper()
	p.t.Fatalf("%s: %s\n%s stderr:\n%s", p.label, fmt.Sprintf(format, args...), p.label, p.stderr)
}

func (p *proc) errorf(format string, args ...any) {
	p.t.Helper()
	p.t.Errorf("%s: %s", p.label, fmt.Sprintf(format, args...))
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(b)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
