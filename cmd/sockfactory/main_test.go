package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-daemon.sock")
	cases := []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"no command", nil, 2, "", "Usage: sockfactory COMMAND"},
		{"help", []string{"-h"}, 0, "Commands:", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"version", []string{"version"}, 0, "sockfactory ", ""},
		{"connect help", []string{"connect", "-h"}, 0, "", "Usage: sockfactory connect"},
		{"connect without address", []string{"connect"}, 2, "", "Usage: sockfactory connect"},
		{"connect bad flag", []string{"connect", "-bogus", "x:1"}, 2, "", "flag provided but not defined"},
		{"connect with no daemon", []string{"connect", "-socket", missing, "127.0.0.1:1"}, 1, "", "daemon unavailable"},
		{"release without a token", []string{"release"}, 2, "", "Usage: sockfactory release"},
		{"release with no daemon", []string{"release", "-socket", missing, "abc"}, 1, "", "daemon unavailable"},
		{"reload with an argument", []string{"reload", "now"}, 2, "", "Usage: sockfactory reload"},
		{"reload with no daemon", []string{"reload", "-socket", missing}, 1, "", "daemon unavailable"},
		{"status with no daemon", []string{"status", "-socket", missing}, 1, "", "daemon unavailable"},
		{"exec without listen", []string{"exec", "--", "true"}, 2, "", "Usage: sockfactory exec"},
		{"exec bad listen", []string{"exec", "--listen", "http://x:1", "--", "true"}, 2, "", "unknown network"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &out, &errOut)
			if code != tc.code || !strings.Contains(out.String(), tc.inStdout) || !strings.Contains(errOut.String(), tc.inStderr) {
				t.Fatalf("sockfactory %v: exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr containing %q",
					tc.args, code, out.String(), errOut.String(), tc.code, tc.inStdout, tc.inStderr)
			}
		})
	}
}
