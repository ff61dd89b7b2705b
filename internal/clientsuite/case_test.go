package clientsuite

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// suite is one driver's run of the cases.
type suite struct {
	t         *testing.T
	name      string   // the driver: go, python, c
	argv, env []string // how to run it
	d         *daemon  // the real daemon the real cases share
	echoTCP   string   // loopback echo servers
	echoUDP   string
}

// testCase is one behaviour case, run against every driver.
type testCase struct {
	name string
	// fake cases run against a scripted fake daemon of their own, the
	// others against the suite's real daemon.
	fake bool
	run  func(t *testing.T, x *caseEnv)
}

// caseEnv is what a case works with.
type caseEnv struct {
	t      *testing.T
	s      *suite
	d      *daemon // the real daemon; nil in a fake case
	fake   *fake   // the fake daemon; nil in a real case
	socket string  // the socket the drivers are given
	procs  int
}

// run runs c for s's driver. A real case checks at its end that the
// daemon's descriptor count is back to what it was at its start.
func (s *suite) run(t *testing.T, c testCase) {
	x := &caseEnv{t: t, s: s}
	if c.fake {
		x.fake = startFake(t)
		x.socket = x.fake.socket
	} else {
		x.d = s.d
		x.socket = s.d.socket
		if st := s.d.status(t); len(st) != 0 {
			t.Fatalf("the daemon holds sockets before the case (a case before it left them): %+v", st)
		}
		s.d.checkFDs(t)
	}
	c.run(t, x)
}

// driver starts a driver process on the case's daemon, warmed up (its
// library connected), with the descriptor baseline its cleanup checks.
func (x *caseEnv) driver() *proc {
	x.t.Helper()
	p := x.driverAt(x.socket)
	p.baseline()
	return p
}

// driverAt starts a driver process given socket as SOCKFACTORY_SOCKET,
// without warm-up.
func (x *caseEnv) driverAt(socket string) *proc {
	x.t.Helper()
	x.procs++
	label := x.s.name + " driver"
	if x.procs > 1 {
		label = fmt.Sprintf("%s driver #%d", x.s.name, x.procs)
	}
	return startProc(x.t, label, x.s.argv, append(x.s.env, "SOCKFACTORY_SOCKET="+socket))
}

var fdsReply = regexp.MustCompile(`^ok [0-9]+$`)

// probe runs the driver once, with no daemon, and checks that it answers
// fds and quit. It returns why the driver cannot be run, or "".
func (s *suite) probe() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.argv[0], s.argv[1:]...)
	cmd.Env = append(s.env, "SOCKFACTORY_SOCKET="+filepath.Join(s.t.TempDir(), "none.sock"))
	cmd.Stdin = strings.NewReader("fds\nquit\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if err != nil || len(lines) != 2 || !fdsReply.MatchString(lines[0]) || lines[1] != "ok" {
		return fmt.Sprintf("%v does not run: with stdin \"fds\\nquit\\n\" it wrote %q and exited with %v, want \"ok N\\nok\\n\" and status 0; stderr:\n%s",
			s.argv, out.String(), err, errb.String())
	}
	return ""
}
