package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/paths"
)

// cliCase is one run of a binary: what a user types and what they see.
type cliCase struct {
	name   string
	args   []string
	code   int
	stdout string // stdout contains it
	stderr string // stderr begins with it; "" wants an empty stderr
}

func (tc cliCase) check(t *testing.T, prog, stdout, stderr string, code int) {
	t.Helper()
	stderrOK := strings.HasPrefix(stderr, tc.stderr) && (tc.stderr != "" || stderr == "")
	if code != tc.code || !strings.Contains(stdout, tc.stdout) || !stderrOK {
		t.Fatalf("%s %q: exit %d, stdout %q, stderr %q;\nwant exit %d, stdout containing %q, stderr beginning %q",
			prog, tc.args, code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
	}
	if strings.Contains(stderr, prog+": "+prog) {
		t.Errorf("%s %q: stderr %q repeats the program's name", prog, tc.args, stderr)
	}
}

// TestCLIConventions checks the CLI's command line as its users type it:
// --socket anywhere, --version, help on stdout, and for a mistake one error
// line then usage on stderr with exit 2; a refusal exits 1.
func TestCLIConventions(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	noDaemon := "sockfactory: no daemon socket at " + missing + ": start sockfactoryd, or point --socket or SOCKFACTORY_SOCKET at its socket\n"
	cases := []cliCase{
		{"--socket before the command", []string{"--socket", missing, "status"}, 1, "", noDaemon},
		{"--socket after the command", []string{"status", "--socket", missing}, 1, "", noDaemon},
		{"--socket=PATH", []string{"status", "--socket=" + missing, "--json"}, 1, "", noDaemon},
		{"-socket as before", []string{"status", "-socket", missing}, 1, "", noDaemon},
		{"--socket after the address", []string{"connect", "127.0.0.1:1", "--socket", missing}, 1, "", noDaemon},
		{"--version", []string{"--version"}, 0, "sockfactory ", ""},
		{"version", []string{"version"}, 0, "sockfactory ", ""},
		{"--help on stdout", []string{"--help"}, 0, "Available Commands:", ""},
		{"status -h on stdout", []string{"status", "-h"}, 0, "Usage:\n  sockfactory status", ""},
		{"help exec on stdout", []string{"help", "exec"}, 0, "--listen NETWORK://HOST:PORT", ""},
		{"no command", nil, 2, "", "sockfactory: no command given\n\nUsage:\n"},
		{"unknown command", []string{"frobnicate"}, 2, "", `sockfactory: unknown command "frobnicate" for "sockfactory"`},
		{"unknown flag", []string{"status", "--bogus"}, 2, "", "sockfactory: unknown flag: --bogus\n\nUsage:\n  sockfactory status"},
		{"unknown flag before the command", []string{"--bogus", "status"}, 2, "", "sockfactory: unknown flag: --bogus\n\nUsage:\n"},
		{"flag after the address", []string{"connect", "127.0.0.1:1", "--bogus"}, 2, "", "sockfactory: unknown flag: --bogus\n\nUsage:\n  sockfactory connect"},
		{"missing address", []string{"connect"}, 2, "", "sockfactory: connect: missing HOST:PORT\n\nUsage:\n  sockfactory connect"},
		{"exec leaves the program's flags alone", []string{"exec", "--socket", missing, "--listen", "tcp://127.0.0.1:0", "true", "--bogus"}, 1, "", noDaemon},
		{"completion bash", []string{"completion", "bash"}, 0, "__start_sockfactory", ""},
		{"completion zsh", []string{"completion", "zsh"}, 0, "#compdef sockfactory", ""},
		{"completion fish", []string{"completion", "fish"}, 0, "complete -c sockfactory", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "", nil, tc.args...)
			tc.check(t, "sockfactory", stdout, stderr, code)
		})
	}
}

// TestDaemonCommandLine checks sockfactoryd's help, version and mistakes.
func TestDaemonCommandLine(t *testing.T) {
	socket := paths.SystemSocket
	if os.Geteuid() != 0 {
		socket = filepath.Join("/tmp", "sockfactory-"+strconv.Itoa(os.Geteuid()), "sockfactory.sock")
	}
	cases := []cliCase{
		{"-h on stdout with the default socket", []string{"-h"}, 0, "Default socket for this user now: " + socket + "\n", ""},
		{"--help", []string{"--help"}, 0, "Usage: sockfactoryd [flags]", ""},
		{"--version", []string{"--version"}, 0, "sockfactoryd ", ""},
		{"-version", []string{"-version"}, 0, "sockfactoryd ", ""},
		{"unknown flag", []string{"--bogus"}, 2, "", "sockfactoryd: flag provided but not defined: -bogus\n\nUsage: sockfactoryd [flags]"},
		{"stray argument", []string{"now"}, 2, "", "sockfactoryd: unexpected argument \"now\": sockfactoryd takes only flags\n\nUsage: sockfactoryd [flags]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin.daemon, tc.args...)
			cmd.Env = []string{"PATH=/usr/bin:/bin"} // no SOCKFACTORY_SOCKET, no XDG_RUNTIME_DIR
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			code := 0
			var ee *exec.ExitError
			if err := cmd.Run(); errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("running sockfactoryd: %v", err)
			}
			tc.check(t, "sockfactoryd", out.String(), errb.String(), code)
		})
	}
}

// cliConfig: a socket only root may open; root may connect to and bind
// 127.0.0.1.
const cliConfig = `
[daemon]
socket = "%SOCKET%"
socket_mode = "0600"

[[rule]]
name = "root-loopback"
users = [0]
connect = ["127.0.0.1:*"]
bind = ["tcp:127.0.0.1:*"]
admin = true
`

// TestIntegrationCLIDaemon runs the CLI against a daemon: --socket reaches
// it wherever it stands, exec passes its program's flags through, and a user
// the socket shuts out is told what to do.
func TestIntegrationCLIDaemon(t *testing.T) {
	requireRoot(t)
	d := startDaemon(t, cliConfig)
	s := d.socket

	t.Run("--socket anywhere", func(t *testing.T) {
		for _, args := range [][]string{
			{"--socket", s, "status"},
			{"status", "--socket", s},
			{"status", "--socket=" + s},
			{"-socket", s, "status"},
		} {
			stdout, stderr, code := runCLI(t, "", nil, args...)
			cliCase{args: args, code: 0, stdout: "NETWORK  ADDRESS"}.check(t, "sockfactory", stdout, stderr, code)
		}
	})

	t.Run("connect relays with --socket last", func(t *testing.T) {
		// In a network namespace of its own the CLI can reach the echo
		// server only through the daemon.
		echo := echoServer(t, "tcp", "127.0.0.1:0")
		stdout, stderr, code := runCLI(t, "hello\n", inNewNetns(), "connect", echo, "--socket", s)
		cliCase{args: []string{"connect", echo, "--socket", s}, code: 0, stdout: "hello\n"}.check(t, "sockfactory", stdout, stderr, code)
	})

	t.Run("exec passes the program's flags", func(t *testing.T) {
		args := []string{"exec", "--socket", s, "--listen", "tcp://127.0.0.1:0", "/bin/sh", "-c", `echo "$LISTEN_FDS $LISTEN_FDNAMES" "$@"`, "sh", "--socket", "-x", "--help"}
		stdout, stderr, code := runCLI(t, "", nil, args...)
		cliCase{args: args, code: 0, stdout: "1 tcp-"}.check(t, "sockfactory", stdout, stderr, code)
		if !strings.HasSuffix(stdout, " --socket -x --help\n") {
			t.Errorf("exec's program printed %q; want its own arguments --socket -x --help untouched", stdout)
		}
	})

	t.Run("exec exits with the program's status, no usage", func(t *testing.T) {
		args := []string{"exec", "--socket", s, "--listen", "tcp://127.0.0.1:0", "--", "/bin/sh", "-c", "exit 2"}
		stdout, stderr, code := runCLI(t, "", nil, args...)
		cliCase{args: args, code: 2}.check(t, "sockfactory", stdout, stderr, code)
	})

	t.Run("permission denied", func(t *testing.T) {
		want := "sockfactory: permission denied on the daemon socket " + s + ": it exists, but this user (uid 65534) may not open it; " +
			"ask an admin for the socket's group (ls -l " + s + " shows it), or point --socket or SOCKFACTORY_SOCKET at a daemon of your own\n"
		for _, args := range [][]string{
			{"status", "--socket", s},
			{"connect", "--socket", s, "127.0.0.1:1"},
			{"exec", "--socket", s, "--listen", "tcp://127.0.0.1:0", "true"},
		} {
			stdout, stderr, code := runCLI(t, "", asUser(65534, 65534), args...)
			tc := cliCase{args: args, code: 1, stderr: want}
			tc.check(t, "sockfactory", stdout, stderr, code)
			if stderr != want {
				t.Errorf("sockfactory %q as uid 65534: stderr %q, want exactly %q", args, stderr, want)
			}
		}
	})
}
