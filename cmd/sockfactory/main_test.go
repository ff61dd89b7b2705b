package main

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-daemon.sock")
	noDaemon := "no daemon socket at " + missing
	cases := []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string // "" wants an empty stderr
	}{
		{"no command", nil, 2, "", "sockfactory: no command given\n\nUsage:"},
		{"help", []string{"-h"}, 0, "Available Commands:", ""},
		{"help command", []string{"help", "connect"}, 0, "sockfactory connect [flags] HOST:PORT", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `sockfactory: unknown command "frobnicate"`},
		{"version", []string{"version"}, 0, "sockfactory ", ""},
		{"--version", []string{"--version"}, 0, "sockfactory ", ""},
		{"-version", []string{"-version"}, 0, "sockfactory ", ""},
		{"version with an argument", []string{"version", "x"}, 2, "", "sockfactory: version takes no arguments"},
		{"connect help", []string{"connect", "-h"}, 0, "sockfactory connect [flags] HOST:PORT", ""},
		{"connect --help", []string{"connect", "--help"}, 0, "--socket PATH", ""},
		{"connect without address", []string{"connect"}, 2, "", "sockfactory: connect: missing HOST:PORT\n\nUsage:\n  sockfactory connect"},
		{"connect bad flag", []string{"connect", "-bogus", "x:1"}, 2, "", "sockfactory: unknown flag: --bogus\n"},
		{"connect flag after the address", []string{"connect", "127.0.0.1:1", "--bogus"}, 2, "", "sockfactory: unknown flag: --bogus\n\nUsage:"},
		{"connect bad duration", []string{"connect", "--timeout", "soon", "x:1"}, 2, "", `invalid argument "soon" for "--timeout"`},
		{"connect with no daemon", []string{"connect", "--socket", missing, "127.0.0.1:1"}, 1, "", noDaemon},
		{"connect, socket last", []string{"connect", "127.0.0.1:1", "--socket", missing}, 1, "", noDaemon},
		{"connect, socket first", []string{"--socket", missing, "connect", "127.0.0.1:1"}, 1, "", noDaemon},
		{"connect, -socket", []string{"connect", "-socket", missing, "-network", "udp", "-q", "1s", "127.0.0.1:1"}, 1, "", noDaemon},
		{"connect, --socket=", []string{"connect", "--socket=" + missing, "127.0.0.1:1"}, 1, "", noDaemon},
		{"release without a token", []string{"release"}, 2, "", "sockfactory: release: missing TOKEN"},
		{"release with no daemon", []string{"release", "--socket", missing, "abc"}, 1, "", noDaemon},
		{"reload with an argument", []string{"reload", "now"}, 2, "", `sockfactory: reload takes no arguments, got ["now"]`},
		{"reload with no daemon", []string{"reload", "--socket", missing}, 1, "", noDaemon},
		{"status with no daemon", []string{"status", "--socket", missing}, 1, "", noDaemon},
		{"status, socket first", []string{"--socket", missing, "status", "--json"}, 1, "", noDaemon},
		{"exec without listen", []string{"exec", "--", "true"}, 2, "", "sockfactory: exec: missing --listen"},
		{"exec without a program", []string{"exec", "--listen", "tcp://:1"}, 2, "", "sockfactory: exec: missing CMD"},
		{"exec bad listen", []string{"exec", "--listen", "http://x:1", "--", "true"}, 2, "", `unknown network "http"`},
		{"exec bad reuseaddr", []string{"exec", "--reuseaddr=maybe", "--listen", "tcp://:1", "true"}, 2, "", `invalid argument "maybe" for "--reuseaddr"`},
		{"exec with no daemon", []string{"exec", "--socket", missing, "--listen", "tcp://:1", "true"}, 1, "", noDaemon},
		{"completion", []string{"completion", "bash"}, 0, "bash completion", ""},
		{"man page", []string{"__man"}, 0, ".TH \"SOCKFACTORY\" 1", ""},
		{"man page with an argument", []string{"__man", "x"}, 2, "", "sockfactory: __man takes no arguments"},
		{"completing a flag's value", []string{"__complete", "connect", "--network", ""}, 0, "tcp6\n", "ShellCompDirectiveNoFileComp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &out, &errOut)
			stderrOK := strings.Contains(errOut.String(), tc.inStderr) && (tc.inStderr != "" || errOut.Len() == 0)
			if code != tc.code || !strings.Contains(out.String(), tc.inStdout) || !stderrOK {
				t.Fatalf("sockfactory %q: exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr containing %q",
					tc.args, code, out.String(), errOut.String(), tc.code, tc.inStdout, tc.inStderr)
			}
			if tc.name == "help" && strings.Contains(out.String(), "__man") {
				t.Errorf("help lists the hidden __man: %q", out.String())
			}
			if strings.Contains(errOut.String(), "sockfactory: sockfactory") {
				t.Errorf("stderr %q repeats the prefix", errOut.String())
			}
		})
	}
}

// TestCompatArgs checks that single-dash long flags are read as double-dash
// ones, and that a program's arguments after exec's flags are left alone.
func TestCompatArgs(t *testing.T) {
	cases := []struct{ in, want []string }{
		{[]string{"-socket", "s", "status", "-json"}, []string{"--socket", "s", "status", "--json"}},
		{[]string{"status", "-socket=s"}, []string{"status", "--socket=s"}},
		{[]string{"connect", "-q", "-socket", "h:1"}, []string{"connect", "-q", "-socket", "h:1"}}, // -q's value
		{[]string{"connect", "--socket", "-json", "h:1"}, []string{"connect", "--socket", "-json", "h:1"}},
		{[]string{"connect", "-bogus", "h:1"}, []string{"connect", "--bogus", "h:1"}},
		{[]string{"connect", "-q5s", "h:1"}, []string{"connect", "-q5s", "h:1"}},
		{[]string{"-version"}, []string{"--version"}},
		{[]string{"exec", "-listen", "tcp://:1", "prog", "-name", "x", "-socket"}, []string{"exec", "--listen", "tcp://:1", "prog", "-name", "x", "-socket"}},
		{[]string{"exec", "-listen", "tcp://:1", "--", "prog", "-name"}, []string{"exec", "--listen", "tcp://:1", "--", "prog", "-name"}},
		{[]string{"exec", "-reuseport", "-listen", "tcp://:1", "status", "-json"}, []string{"exec", "--reuseport", "--listen", "tcp://:1", "status", "-json"}},
	}
	for _, tc := range cases {
		c := &cli{}
		if got := compatArgs(c.root(), tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("compatArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestExecReuseAddr checks that --reuseaddr is tri-state: unset leaves the
// daemon's default, --reuseaddr asks for it on, --reuseaddr=false off.
func TestExecReuseAddr(t *testing.T) {
	cases := []struct {
		args    []string
		on, off bool
	}{
		{nil, false, false},
		{[]string{"--reuseaddr"}, true, false},
		{[]string{"--reuseaddr=true"}, true, false},
		{[]string{"--reuseaddr=false"}, false, true},
		{[]string{"-reuseaddr=false"}, false, true},
	}
	for _, tc := range cases {
		c := &cli{}
		root := c.root()
		cmd, _, err := root.Find([]string{"exec"})
		if err != nil {
			t.Fatal(err)
		}
		args := compatArgs(root, append([]string{"exec"}, tc.args...))[1:]
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatalf("exec %q: %v", tc.args, err)
		}
		got := c.exec.listenOptions()
		if got.ReuseAddr != tc.on || got.NoReuseAddr != tc.off {
			t.Errorf("exec %q: ReuseAddr %v, NoReuseAddr %v; want %v, %v", tc.args, got.ReuseAddr, got.NoReuseAddr, tc.on, tc.off)
		}
	}
}
