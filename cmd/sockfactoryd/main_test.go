package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/paths"
)

func TestRunFlagsAndCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(good, []byte("[[rule]]\nusers = [\"root\"]\nconnect = [\"127.0.0.1:*\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("[[rule]]\nusers = [\"root\"]\n\nconnect = [\"127.0.0.1\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"version", []string{"-version"}, 0, "sockfactoryd ", ""},
		{"--version", []string{"--version"}, 0, "sockfactoryd ", ""},
		{"help on stdout", []string{"-h"}, 0, "Usage: sockfactoryd", ""},
		{"--help names this user's socket", []string{"--help"}, 0, "Default socket for this user now: " + paths.DaemonSocket(), ""},
		{"unknown flag", []string{"--bogus"}, 2, "", "sockfactoryd: flag provided but not defined: -bogus\n\nUsage: sockfactoryd"},
		{"bad flag value", []string{"-log-flush", "soon"}, 2, "", "sockfactoryd: invalid value \"soon\" for flag -log-flush"},
		{"stray argument", []string{"extra"}, 2, "", "sockfactoryd: unexpected argument \"extra\": sockfactoryd takes only flags\n\nUsage:"},
		{"check good config", []string{"-check-config", good}, 0, "OK (1 rules", ""},
		{"check bad config names the line", []string{"-check-config", bad}, 1, "", "bad.toml:4:"},
		{"missing config", []string{"-config", filepath.Join(dir, "nope.toml")}, 1, "", "no such file"},
		{"allowed hosts without a listener", []string{"-allowed-hosts", "a"}, 2, "", "must follow the -clearwater-socket"},
		{"listener without hosts", []string{"-socket", filepath.Join(dir, "n.sock"), "-clearwater-socket", filepath.Join(dir, "c.sock")}, 1, "", "give -allowed-hosts"},
		{"bad allowed host", []string{"-socket", filepath.Join(dir, "n.sock"), "-clearwater-socket", filepath.Join(dir, "c.sock"), "-allowed-hosts", "bad host"}, 1, "", "bad host"},
		{"bad mode", []string{"-clearwater-socket", "/x", "-clearwater-mode", "999"}, 2, "", "bad mode"},
		{"bad log format", []string{"-log-format", "xml"}, 1, "", "-log-format"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			stderrOK := strings.Contains(errOut.String(), tc.inStderr) && (tc.inStderr != "" || tc.code != 0 || errOut.Len() == 0)
			if code != tc.code || !strings.Contains(out.String(), tc.inStdout) || !stderrOK {
				t.Fatalf("sockfactoryd %v: exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr containing %q",
					tc.args, code, out.String(), errOut.String(), tc.code, tc.inStdout, tc.inStderr)
			}
		})
	}
}
