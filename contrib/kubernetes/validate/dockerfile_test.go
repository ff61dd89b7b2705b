package validate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/config"
)

// dockerfile is the repository's Dockerfile, seen from this package.
var dockerfile = filepath.Join("..", "..", "..", "Dockerfile")

// instruction is one Dockerfile instruction: its keyword, upper case, and
// the rest of it with continuation lines joined; a heredoc's body is in
// heredoc.
type instruction struct {
	line    int
	keyword string
	args    string
	heredoc string
}

var heredocRE = regexp.MustCompile(`<<-?["']?([A-Za-z_][A-Za-z0-9_]*)["']?`)

// parseDockerfile splits a Dockerfile into instructions: comments and
// blank lines dropped, "\" continuations joined, and a heredoc (<<WORD,
// one per instruction) taken whole. It is not BuildKit's parser, but it
// reads everything this repository's Dockerfile uses.
func parseDockerfile(text string) ([]instruction, error) {
	lines := strings.Split(text, "\n")
	var out []instruction
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		in := instruction{line: i + 1}
		full := l
		for strings.HasSuffix(full, "\\") && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") {
				continue
			}
			full = strings.TrimSuffix(full, "\\") + " " + next
		}
		in.keyword, in.args, _ = strings.Cut(full, " ")
		in.keyword = strings.ToUpper(in.keyword)
		in.args = strings.TrimSpace(in.args)
		if m := heredocRE.FindStringSubmatch(in.args); m != nil {
			var body []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != m[1]; i++ {
				body = append(body, lines[i])
			}
			if i == len(lines) {
				return nil, &strconv.NumError{Func: "heredoc", Num: m[1], Err: os.ErrNotExist}
			}
			in.heredoc = strings.Join(body, "\n") + "\n"
		}
		out = append(out, in)
	}
	return out, nil
}

// finalStage returns the instructions from the last FROM on.
func finalStage(ins []instruction) []instruction {
	last := 0
	for i, in := range ins {
		if in.keyword == "FROM" {
			last = i
		}
	}
	return ins[last:]
}

func readDockerfile(t *testing.T) []instruction {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	ins, err := parseDockerfile(string(data))
	if err != nil {
		t.Fatalf("%s: %v", dockerfile, err)
	}
	return ins
}

// execForm decodes an instruction's JSON (exec) form; ok is false for the
// shell form, which needs a shell the image does not have.
func execForm(args string) ([]string, bool) {
	var v []string
	if err := json.Unmarshal([]byte(args), &v); err != nil {
		return nil, false
	}
	return v, true
}

// TestDockerfileFinalStage checks what the image runs as: a numeric,
// non-root user, with no capability but CAP_NET_BIND_SERVICE set on any
// file, exec forms only (there is no shell), a health check and the
// socket directory as a volume.
func TestDockerfileFinalStage(t *testing.T) {
	ins := readDockerfile(t)
	final := finalStage(ins)
	if len(final) == 0 || final[0].keyword != "FROM" {
		t.Fatalf("%s: no FROM", dockerfile)
	}
	if base := strings.Fields(final[0].args)[0]; base != "scratch" && !strings.Contains(base, "distroless/static") {
		t.Errorf("%s:%d: final stage FROM %s, want scratch or a distroless static image", dockerfile, final[0].line, base)
	}

	var user string
	var volumes []string
	var health, entrypoint bool
	for _, in := range final {
		switch in.keyword {
		case "USER":
			user = in.args
		case "RUN":
			t.Errorf("%s:%d: RUN in the final stage: it has no shell", dockerfile, in.line)
		case "ENTRYPOINT", "CMD":
			if _, ok := execForm(in.args); !ok {
				t.Errorf("%s:%d: %s %s is in shell form; the image has no shell: use [\"...\"]", dockerfile, in.line, in.keyword, in.args)
			}
			if in.keyword == "ENTRYPOINT" {
				v, _ := execForm(in.args)
				entrypoint = len(v) > 0 && filepath.Base(v[0]) == "sockfactoryd"
			}
		case "HEALTHCHECK":
			i := strings.Index(in.args, "CMD ")
			if i < 0 {
				t.Errorf("%s:%d: HEALTHCHECK without CMD", dockerfile, in.line)
				break
			}
			v, ok := execForm(strings.TrimSpace(in.args[i+4:]))
			if !ok || len(v) < 2 || filepath.Base(v[0]) != "sockfactory" || v[len(v)-1] != "status" {
				t.Errorf("%s:%d: HEALTHCHECK %s, want the exec form of sockfactory status", dockerfile, in.line, in.args)
			}
			health = true
		case "VOLUME":
			if v, ok := execForm(in.args); ok {
				volumes = append(volumes, v...)
			} else {
				volumes = append(volumes, strings.Fields(in.args)...)
			}
		}
	}
	uid, gid, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("%s: final stage USER %q, want a numeric non-zero uid (Kubernetes' runAsNonRoot can check only a number)", dockerfile, user)
	}
	if gid != "" {
		if _, err := strconv.Atoi(gid); err != nil {
			t.Errorf("%s: final stage USER %q: the group is not numeric", dockerfile, user)
		}
	}
	if !entrypoint {
		t.Errorf("%s: the final stage's ENTRYPOINT does not run sockfactoryd", dockerfile)
	}
	if !health {
		t.Errorf("%s: the final stage has no HEALTHCHECK", dockerfile)
	}
	if !slices.Contains(volumes, socketDir) {
		t.Errorf("%s: VOLUME %q, want %s among them", dockerfile, volumes, socketDir)
	}
}

// setcapRE finds setcap's capability argument: setcap CAPS=FLAGS FILE.
var setcapRE = regexp.MustCompile(`setcap\s+(\S+)`)

// TestDockerfileCapabilities checks that no stage gives any file a
// capability other than CAP_NET_BIND_SERVICE, and that sockfactoryd gets
// that one: a non-root container process has no other way to it.
func TestDockerfileCapabilities(t *testing.T) {
	var found bool
	for _, in := range readDockerfile(t) {
		if in.keyword != "RUN" {
			continue
		}
		for _, m := range setcapRE.FindAllStringSubmatch(in.args, -1) {
			if m[1] == "-r" || m[1] == "-v" {
				continue
			}
			caps, _, _ := strings.Cut(m[1], "=")
			for _, c := range strings.Split(strings.ToLower(caps), ",") {
				if c != "cap_net_bind_service" {
					t.Errorf("%s:%d: setcap grants %s; the image may carry CAP_NET_BIND_SERVICE only", dockerfile, in.line, c)
				}
			}
			if strings.Contains(in.args, "sockfactoryd") {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("%s: no setcap cap_net_bind_service on sockfactoryd: as non-root it could bind no port below 1024", dockerfile)
	}
	for _, in := range finalStage(readDockerfile(t)) {
		if in.keyword == "COPY" && strings.Contains(in.args, "--chown") && strings.Contains(in.args, "sockfactoryd") {
			t.Errorf("%s:%d: COPY --chown of sockfactoryd: a chown clears its file capability", dockerfile, in.line)
		}
	}
}

// TestDockerfileConfig checks the configuration baked into the image: the
// daemon accepts it, it needs no capability but CAP_NET_BIND_SERVICE, and
// the image starts the daemon with it.
func TestDockerfileConfig(t *testing.T) {
	final := finalStage(readDockerfile(t))
	var file, body string
	for _, in := range final {
		if in.keyword == "COPY" && in.heredoc != "" {
			f := strings.Fields(in.args)
			file, body = f[len(f)-1], in.heredoc
		}
	}
	if file == "" {
		t.Fatalf("%s: the final stage writes no configuration file (COPY <<EOT FILE)", dockerfile)
	}
	cfg, err := config.Parse(dockerfile+":"+file, []byte(body))
	if err != nil {
		t.Fatalf("the image's configuration is refused by the daemon: %v", err)
	}
	checkUnprivilegedConfig(t, "the image's configuration", cfg)
	var cmd []string
	var socketEnv string
	for _, in := range final {
		switch in.keyword {
		case "ENTRYPOINT", "CMD":
			v, _ := execForm(in.args)
			cmd = append(cmd, v...)
		case "ENV":
			if v, ok := strings.CutPrefix(in.args, "SOCKFACTORY_SOCKET="); ok {
				socketEnv = v
			}
		}
	}
	if i := slices.Index(cmd, "-config"); i < 0 || i+1 == len(cmd) || cmd[i+1] != file {
		t.Errorf("%s: the image runs %q, want -config %s", dockerfile, cmd, file)
	}
	if socketEnv != cfg.Socket {
		t.Errorf("%s: ENV SOCKFACTORY_SOCKET=%s, want the configuration's socket %s (the health check's CLI uses it)", dockerfile, socketEnv, cfg.Socket)
	}
}

// TestParseDockerfile checks the parser on the forms it must read.
func TestParseDockerfile(t *testing.T) {
	text := "# c\nFROM a AS b\nRUN x \\\n  # inner\n  y\nFROM scratch\nCOPY <<EOT /f\n[t]\nk = 1\nEOT\nUSER 1:2\n"
	ins, err := parseDockerfile(text)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range ins {
		got = append(got, in.keyword+"|"+in.args+"|"+in.heredoc)
	}
	want := []string{"FROM|a AS b|", "RUN|x  y|", "FROM|scratch|", "COPY|<<EOT /f|[t]\nk = 1\n", "USER|1:2|"}
	if !slices.Equal(got, want) {
		t.Errorf("parseDockerfile = %q, want %q", got, want)
	}
	if _, err := parseDockerfile("COPY <<EOT /f\nno end\n"); err == nil {
		t.Errorf("an unterminated heredoc parsed")
	}
}
