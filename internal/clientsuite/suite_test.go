package clientsuite

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/testnet"
)

// requireClientsEnv, set to 1 (as CI does), turns a driver that is missing
// or cannot be built or run from a skip into a failure.
const requireClientsEnv = "SOCKFACTORY_REQUIRE_CLIENTS"

// raceEnabled is set by race_test.go: the daemon and the Go driver are then
// built with -race too, so that their races fail the suite.
var raceEnabled bool

// bin holds what TestMain builds, and the repository's root.
var bin struct {
	dir, daemon, root string
}

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "clientsuite:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	root, err := repoRoot()
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "sfsuite-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	bin.dir, bin.root, bin.daemon = dir, root, filepath.Join(dir, "sockfactoryd")
	if out, err := goBuild(bin.daemon, "./cmd/sockfactoryd"); err != nil {
		return 0, fmt.Errorf("building sockfactoryd: %v\n%s", err, out)
	}
	return m.Run(), nil
}

// goBuild builds the package pkg (relative to the repository's root) into
// out, with -race when the test runs with it.
func goBuild(out, pkg string) ([]byte, error) {
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = bin.root
	return cmd.CombinedOutput()
}

// repoRoot finds the module's root above the working directory (the
// package's directory when go test runs it).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module github.com/sockfactory/sockfactory\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/sockfactory/sockfactory above the working directory")
		}
		dir = parent
	}
}

// driverSpec says how to get one library's driver (DRIVER.md, "Running a
// driver").
type driverSpec struct {
	name string
	// required drivers fail instead of skipping when they cannot be had.
	required bool
	// prepare builds the driver if needed and returns its command line and
	// the environment it needs beyond the suite's. A non-nil error means
	// the driver is not there or did not build; it says which and why.
	prepare func(t *testing.T) (argv, env []string, err error)
}

var drivers = []driverSpec{
	{name: "go", required: true, prepare: func(t *testing.T) ([]string, []string, error) {
		out := filepath.Join(bin.dir, "sfdriver-go")
		if b, err := goBuild(out, "./internal/clientsuite/godriver"); err != nil {
			return nil, nil, fmt.Errorf("go build ./internal/clientsuite/godriver: %v\n%s", err, b)
		}
		return []string{out}, nil, nil
	}},
	{name: "python", prepare: func(t *testing.T) ([]string, []string, error) {
		script := filepath.Join(bin.root, "python", "tests", "sfdriver.py")
		if _, err := os.Stat(script); err != nil {
			return nil, nil, fmt.Errorf("no Python driver: %w", err)
		}
		py, err := exec.LookPath("python3")
		if err != nil {
			return nil, nil, fmt.Errorf("no python3 to run %s: %w", script, err)
		}
		return []string{py, "-u", script}, []string{"PYTHONPATH=" + filepath.Join(bin.root, "python")}, nil
	}},
	{name: "c", prepare: func(t *testing.T) ([]string, []string, error) {
		src := filepath.Join(bin.root, "clients", "c")
		if _, err := os.Stat(filepath.Join(src, "Makefile")); err != nil {
			return nil, nil, fmt.Errorf("no C driver: %w", err)
		}
		dir := t.TempDir()
		b, err := exec.Command("make", "-C", src, "driver", "BUILDDIR="+dir).CombinedOutput()
		if err != nil {
			return nil, nil, fmt.Errorf("make -C %s driver BUILDDIR=%s: %v\n%s", src, dir, err, b)
		}
		out := filepath.Join(dir, "sfdriver")
		if _, err := os.Stat(out); err != nil {
			return nil, nil, fmt.Errorf("make -C %s driver built no %s: %w\n%s", src, out, err, b)
		}
		return []string{out}, nil, nil
	}},
}

// unavailable skips t because its driver cannot be had, or fails it when
// the driver is required (Go always; every driver with
// SOCKFACTORY_REQUIRE_CLIENTS=1).
func unavailable(t *testing.T, spec driverSpec, why string) {
	t.Helper()
	switch {
	case spec.required:
		t.Fatalf("%s driver: %s", spec.name, why)
	case os.Getenv(requireClientsEnv) == "1":
		t.Fatalf("%s driver: %s; %s=1 forbids skipping it", spec.name, why, requireClientsEnv)
	}
	// SOCKFACTORY_REQUIRE_ROOT=1 (CI, which has every client) fails it too.
	testnet.SkipOrFail(t, fmt.Sprintf("%s driver skipped (set %s=1 to fail instead): %s", spec.name, requireClientsEnv, why))
}

// TestClientSuite runs every case of the table against every client
// library's driver: t.Run(driver+"/"+case).
func TestClientSuite(t *testing.T) {
	for _, spec := range drivers {
		t.Run(spec.name, func(t *testing.T) {
			argv, env, err := spec.prepare(t)
			if err != nil {
				unavailable(t, spec, err.Error())
			}
			s := &suite{t: t, name: spec.name, argv: argv, env: driverEnv(env)}
			if why := s.probe(); why != "" {
				unavailable(t, spec, why)
			}
			s.echoTCP = echoTCP(t, "127.0.0.1:0")
			s.echoUDP = echoUDP(t)
			s.d = startDaemon(t, dnsServer(t))
			s.d.warmUp(s.echoTCP, s.echoUDP)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { s.run(t, c) })
			}
		})
	}
}

// driverEnv is the test's environment without SOCKFACTORY_SOCKET (each
// driver gets its own), with extra added.
func driverEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOCKFACTORY_SOCKET=") && !strings.HasPrefix(kv, "PYTHONPATH=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}
