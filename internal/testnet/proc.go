package testnet

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// RequireRoot skips t with a reason unless it runs as root, and fails it
// instead when SOCKFACTORY_REQUIRE_ROOT=1.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	SkipOrFail(t, fmt.Sprintf("needs root (running as uid %d): run the tests as root, e.g. sudo -E go test", os.Geteuid()))
}

// SkipOrFail skips t for why, a capability this machine lacks (why says
// what, and how to get it), and fails it instead when
// SOCKFACTORY_REQUIRE_ROOT=1: CI has every capability the tests need, so
// a skip there would hide a test that no longer runs.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("SOCKFACTORY_REQUIRE_ROOT") == "1" {
		t.Fatal(why + "; SOCKFACTORY_REQUIRE_ROOT=1 forbids skipping")
	}
	t.Skip(why)
}

// ProcStatus returns the fields of /proc/PID/status ("CapBnd",
// "NoNewPrivs", "Groups", ...), values trimmed.
func ProcStatus(t testing.TB, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading the status of pid %d: %v", pid, err)
	}
	return ParseStatus(b)
}

// ParseStatus returns the fields of a /proc/.../status file's content.
func ParseStatus(b []byte) map[string]string {
	out := map[string]string{}
	for l := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// ProcFDs returns what each open descriptor of pid links to, by number
// ("socket:[123]", "/dev/null", ...). Descriptors closed while it reads are
// left out.
func ProcFDs(t testing.TB, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("listing the descriptors of pid %d: %v", pid, err)
	}
	out := map[int]string{}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil {
			continue
		}
		if target, err := os.Readlink(dir + "/" + e.Name()); err == nil {
			out[fd] = target
		}
	}
	return out
}
