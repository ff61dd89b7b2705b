package cliflags_test

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/cliflags"
)

var update = flag.Bool("update", false, "rewrite the generated files under contrib/ instead of comparing them")

// repoRoot is the repository, seen from this package.
const repoRoot = "../.."

// generated is each committed file and the command line of the built
// programs that prints it.
var generated = []struct {
	file string
	args []string
}{
	{"contrib/completion/sockfactory.bash", []string{"sockfactory", "completion", "bash"}},
	{"contrib/completion/_sockfactory", []string{"sockfactory", "completion", "zsh"}},
	{"contrib/man/sockfactory.1", []string{"sockfactory", "__man"}},
	{"contrib/man/sockfactoryd.8", []string{"sockfactoryd", "__man"}},
}

// buildPrograms builds sockfactory and sockfactoryd once per test binary
// run, into a directory it returns.
func buildPrograms(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cliflags-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/sockfactory", "./cmd/sockfactoryd")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err, out}
		}
	})
	if buildErr != nil {
		t.Fatalf("building the programs: %v", buildErr)
	}
	return binDir
}

// output runs one of the built programs with a fixed environment: what it
// prints must not depend on who generates it.
func output(t *testing.T, bin string, args []string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, args[0]), args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "LC_ALL=C"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// TestGeneratedFiles checks that the committed completion scripts and
// manual pages are what the programs print now, so that they cannot drift
// from the flags. Regenerate them with:
//
//	go test ./internal/cliflags -run TestGeneratedFiles -update
func TestGeneratedFiles(t *testing.T) {
	bin := buildPrograms(t)
	for _, g := range generated {
		t.Run(filepath.Base(g.file), func(t *testing.T) {
			got := output(t, bin, g.args)
			path := filepath.Join(repoRoot, g.file)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v; generate it: go test ./internal/cliflags -run TestGeneratedFiles -update", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from `%s` (first difference at line %d): run go test ./internal/cliflags -run TestGeneratedFiles -update, and commit it",
					g.file, strings.Join(g.args, " "), firstDiff(got, want))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// TestManPagesRender checks the committed pages: with groff installed, it
// must format them without a warning (-ww); without it, their structure
// is checked in Go (cliflags.Check).
func TestManPagesRender(t *testing.T) {
	for _, page := range []string{"contrib/man/sockfactory.1", "contrib/man/sockfactoryd.8"} {
		t.Run(filepath.Base(page), func(t *testing.T) {
			path := filepath.Join(repoRoot, page)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := cliflags.Check(data); err != nil {
				t.Errorf("%s: %v", page, err)
			}
			groff, err := exec.LookPath("groff")
			if err != nil {
				t.Logf("groff not installed: checked the structure only")
				return
			}
			cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", path)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil || stderr.Len() > 0 {
				t.Errorf("groff -man -ww %s: %v\n%s", page, err, stderr.Bytes())
			}
			// What a reader sees: the page's name and every section.
			cmd = exec.Command(groff, "-man", "-Tutf8", "-P-cbou", path) // no bold, no underline
			cmd.Env = append(os.Environ(), "LC_ALL=C")
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("groff -man %s: %v", page, err)
			}
			for _, want := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS"} {
				if !bytes.Contains(out, []byte(want)) {
					t.Errorf("groff's rendering of %s has no %s", page, want)
				}
			}
		})
	}
}
