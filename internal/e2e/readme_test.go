package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlock is one fenced shell block of README.md, with what the
// README says about how to run it.
type readmeBlock struct {
	line   int      // line of the opening fence
	code   string   // the commands, as a reader pastes them
	skip   string   // why the test does not run it ("" runs it)
	bg     bool     // runs in the background (a reader leaves it running in its own terminal)
	wait   []string // readiness checks after the block: "socket PATH" or "tcp HOST:PORT"
	output []string // lines its standard output must contain (the ```text block after it)
}

// parseReadme finds the ```sh blocks of a README. An HTML comment line
// just before a block, `<!-- readme-test: ... -->`, says how to run it, as
// semicolon-separated words: "skip: REASON", "background", "wait socket
// PATH", "wait tcp HOST:PORT". A ```text block right after a ```sh block
// (only blank lines between) is output the commands print: each of its
// lines must appear in their standard output.
func parseReadme(text string) ([]readmeBlock, error) {
	var blocks []readmeBlock
	var directive string
	directiveLine := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	n := 0
	lastShEnd := -1 // line of the previous sh block's closing fence
	var cur *readmeBlock
	var body strings.Builder
	kind := ""
	for sc.Scan() {
		n++
		line := sc.Text()
		if kind != "" {
			if strings.TrimSpace(line) == "```" {
				switch kind {
				case "sh":
					cur.code = body.String()
					blocks = append(blocks, *cur)
					lastShEnd = n
				case "text-output":
					for l := range strings.SplitSeq(strings.TrimRight(body.String(), "\n"), "\n") {
						blocks[len(blocks)-1].output = append(blocks[len(blocks)-1].output, l)
					}
				}
				kind, cur = "", nil
				body.Reset()
				continue
			}
			body.WriteString(line + "\n")
			continue
		}
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "<!-- readme-test:"):
			directive = strings.TrimSuffix(strings.TrimPrefix(trimmed, "<!-- readme-test:"), "-->")
			directiveLine = n
		case trimmed == "```sh" || trimmed == "```bash" || trimmed == "```shell":
			kind = "sh"
			cur = &readmeBlock{line: n}
			if directive != "" && directiveLine == n-1 {
				if err := cur.apply(directive); err != nil {
					return nil, fmt.Errorf("README.md:%d: %w", directiveLine, err)
				}
			}
			directive = ""
		case trimmed == "```text" && lastShEnd >= 0 && blankSince(text, lastShEnd, n):
			kind = "text-output"
		case strings.HasPrefix(trimmed, "```"):
			kind = "other"
		}
	}
	if kind != "" {
		return nil, fmt.Errorf("README.md: block opened at line %d is not closed", cur.lineOr(n))
	}
	return blocks, sc.Err()
}

func (b *readmeBlock) lineOr(n int) int {
	if b == nil {
		return n
	}
	return b.line
}

// blankSince reports whether lines after..before-1 (1-based) are blank.
func blankSince(text string, after, before int) bool {
	lines := strings.Split(text, "\n")
	for i := after; i < before-1 && i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "" {
			return false
		}
	}
	return true
}

func (b *readmeBlock) apply(directive string) error {
	for d := range strings.SplitSeq(directive, ";") {
		d = strings.TrimSpace(d)
		switch {
		case d == "":
		case strings.HasPrefix(d, "skip:"):
			b.skip = strings.TrimSpace(strings.TrimPrefix(d, "skip:"))
			if b.skip == "" {
				return fmt.Errorf("skip needs a reason")
			}
		case d == "background":
			b.bg = true
		case strings.HasPrefix(d, "wait socket "), strings.HasPrefix(d, "wait tcp "):
			b.wait = append(b.wait, strings.TrimPrefix(d, "wait "))
		default:
			return fmt.Errorf("unknown readme-test directive %q (want skip: REASON, background, wait socket PATH, wait tcp HOST:PORT)", d)
		}
	}
	return nil
}

// readmeScript turns the blocks into one bash script, so that what one
// block exports or starts the next one sees, as in a reader's shell. Each
// block's output goes to $O/LINE.out and .err; the first failure prints
// them and exits non-zero.
func readmeScript(blocks []readmeBlock) string {
	var s strings.Builder
	// fd 9 is the script's own output: inside a block, 1 and 2 go to the
	// block's files.
	s.WriteString(`set -Eeuo pipefail
exec 9>&1
show() { echo "--- stdout of the block at README.md:$1"; cat "$O/$1.out" || true; echo "--- stderr"; cat "$O/$1.err" || true; }
fail() { { echo "README.md:$1: $2"; show "$1"; } >&9 2>&9; exit 1; }
trap 'rc=$?; trap - ERR; fail "$BLOCK" "a command failed (exit $rc)"' ERR
ready() {
	case "$1" in
	socket) [ -S "$2" ] ;;
	tcp) (exec 3<>"/dev/tcp/${2%:*}/${2##*:}") 2>/dev/null ;;
	esac
}
await() { # BLOCK KIND ARG PID
	for _ in $(seq 1 1200); do
		ready "$2" "$3" && return 0
		if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then fail "$1" "ended before $2 $3 was ready"; fi
		sleep 0.1
	done
	fail "$1" "$2 $3 not ready after 120 s"
}
`)
	for _, b := range blocks {
		if b.skip != "" {
			fmt.Fprintf(&s, "\n# README.md:%d skipped: %s\n", b.line, b.skip)
			continue
		}
		fmt.Fprintf(&s, "\n# README.md:%d\nBLOCK=%d\necho \"running the block at README.md:%d\" >&9\n", b.line, b.line, b.line)
		if b.bg {
			fmt.Fprintf(&s, "{\n%s} > \"$O/%d.out\" 2> \"$O/%d.err\" &\nPID=$!\n", b.code, b.line, b.line)
		} else {
			fmt.Fprintf(&s, "{\n%s} > \"$O/%d.out\" 2> \"$O/%d.err\"\nPID=\n", b.code, b.line, b.line)
		}
		for _, w := range b.wait {
			kind, arg, _ := strings.Cut(w, " ")
			fmt.Fprintf(&s, "await %d %s %q \"$PID\"\n", b.line, kind, arg)
		}
		for _, o := range b.output {
			fmt.Fprintf(&s, "grep -qF -- %s \"$O/%d.out\" || fail %d %s\n", shellQuote(o), b.line, b.line, shellQuote("output lacks the line "+o))
		}
	}
	s.WriteString("\necho \"every README block ran\" >&9\n")
	return s.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func TestReadmeParse(t *testing.T) {
	text := "intro\n\n<!-- readme-test: background; wait socket /run/x.sock -->\n```sh\ngo run ./cmd/d\n```\n\n" +
		"```sh\necho hi\n```\n\n```text\nhi\n```\n\n<!-- readme-test: skip: needs the network -->\n```sh\ngo get x\n```\n" +
		"```go\nnot shell\n```\n```text\nnot output: a go block came between\n```\n"
	got, err := parseReadme(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []readmeBlock{
		{line: 4, code: "go run ./cmd/d\n", bg: true, wait: []string{"socket /run/x.sock"}},
		{line: 8, code: "echo hi\n", output: []string{"hi"}},
		{line: 17, code: "go get x\n", skip: "needs the network"},
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("parseReadme:\ngot  %+v\nwant %+v", got, want)
	}
	if _, err := parseReadme("<!-- readme-test: sometimes -->\n```sh\ntrue\n```\n"); err == nil {
		t.Error("an unknown directive was accepted")
	}
	if _, err := parseReadme("```sh\ntrue\n"); err == nil {
		t.Error("an unclosed block was accepted")
	}
}

// TestIntegrationReadme runs every shell block of README.md, in order, as
// a reader on a fresh machine would paste them: as root, in a private
// network namespace (so its fixed ports are its own) and a private mount
// namespace with empty /tmp and /run/sockfactory (so it neither sees nor
// disturbs a daemon on this machine), with a fresh HOME and the module
// proxy off (every module is in the cache by now).
func TestIntegrationReadme(t *testing.T) {
	requireRoot(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseReadme(string(text))
	if err != nil {
		t.Fatal(err)
	}
	run := 0
	for _, b := range blocks {
		if b.skip == "" {
			run++
		}
	}
	if run < 5 {
		t.Fatalf("README.md has %d shell blocks to run; the test expects the set-up, connect, exec and clearwater examples", run)
	}
	goEnv := func(name string) string {
		out, err := exec.Command("go", "env", name).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	gocache, gomodcache, gopath := goEnv("GOCACHE"), goEnv("GOMODCACHE"), goEnv("GOPATH")
	for _, p := range []string{gocache, gomodcache, gopath} {
		if strings.HasPrefix(p, "/tmp/") || strings.HasPrefix(p, os.TempDir()+"/") {
			// Not a missing capability: a setting the test cannot run
			// with, so it fails rather than skips, saying what to change.
			t.Fatalf("the Go cache or module path %s is under /tmp, which this test replaces with an empty one; set GOCACHE, GOMODCACHE and GOPATH outside /tmp", p)
		}
	}
	if err := os.MkdirAll("/run/sockfactory", 0o755); err != nil {
		t.Fatal(err)
	}
	prelude := `set -eu
mount --make-rprivate /
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run/sockfactory
ip link set lo up
export HOME=/tmp/readme-home O=/tmp/readme-out
mkdir -p "$HOME" "$O"
cd "$ROOT"
`
	script := prelude + readmeScript(blocks)
	dir := t.TempDir()
	scriptPath := filepath.Join(dir, "readme.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--mount", "bash", scriptPath)
	// A reader has no SOCKFACTORY_SOCKET set: the README relies on the
	// default paths.
	cmd.Env = append(slicesWithout(os.Environ(), "SOCKFACTORY_SOCKET="), "ROOT="+root, "GOCACHE="+gocache,
		"GOMODCACHE="+gomodcache, "GOPATH="+gopath, "GOPROXY=off", "GOFLAGS=-buildvcs=false")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Every background process the README starts is in this group: end
	// them all, however the script ends.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A file, not a pipe: the servers the README leaves running keep the
	// script's output open after it ends, and Wait would wait for them.
	outFile, err := os.Create(filepath.Join(dir, "readme.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	cmd.Stdout, cmd.Stderr = outFile, outFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	// The daemons and servers the README started are in the script's
	// process group (nothing there starts a session of its own).
	if kerr := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); kerr != nil && kerr != syscall.ESRCH {
		t.Errorf("ending what the README started: %v", kerr)
	}
	out, rerr := os.ReadFile(outFile.Name())
	if rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatalf("README.md as a script: %v\n%s\n--- the script:\n%s", err, out, script)
	}
	if !bytes.Contains(out, []byte("every README block ran")) {
		t.Fatalf("README.md as a script ended early:\n%s", out)
	}
	t.Logf("%d README blocks ran:\n%s", run, out)
}

// slicesWithout returns env without entries that start with prefix.
func slicesWithout(env []string, prefix string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}
