package cliflags_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/testnet"
)

const bashScript = "contrib/completion/sockfactory.bash"

func bash(t *testing.T) string {
	t.Helper()
	b, err := exec.LookPath("bash")
	if err != nil {
		testnet.SkipOrFail(t, "bash not installed: apt-get install bash")
	}
	return b
}

// TestBashCompletionSyntax checks that bash parses the committed script.
func TestBashCompletionSyntax(t *testing.T) {
	out, err := exec.Command(bash(t), "-n", filepath.Join(repoRoot, bashScript)).CombinedOutput()
	if err != nil {
		t.Errorf("bash -n %s: %v\n%s", bashScript, err, out)
	}
}

// complete runs the committed bash completion for the words of line, the
// cursor at its end (a trailing space starts a new, empty word), as bash
// would on TAB, with the built sockfactory first on PATH, and returns
// COMPREPLY.
func complete(t *testing.T, line string) []string {
	t.Helper()
	bin := buildPrograms(t)
	words := strings.Fields(line)
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + w + "'"
	}
	script := `
# cobra's script takes the words from bash-completion's
# _get_comp_words_by_ref. Without that package, a stand-in that does what
# it does for words with no = or : in them, as in the cases below.
if [[ -r /usr/share/bash-completion/bash_completion ]]; then
	source /usr/share/bash-completion/bash_completion
else
	_get_comp_words_by_ref() {
		while [[ $1 == -* ]]; do
			[[ $1 == -n ]] && shift
			shift
		done
		local v
		for v in "$@"; do
			case $v in
			cur) cur=${COMP_WORDS[COMP_CWORD]} ;;
			prev) prev=${COMP_WORDS[COMP_CWORD-1]} ;;
			words) words=("${COMP_WORDS[@]}") ;;
			cword) cword=$COMP_CWORD ;;
			esac
		done
	}
fi
source "$1"
COMP_WORDS=(` + strings.Join(quoted, " ") + `)
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE="$2"
COMP_POINT=${#COMP_LINE}
COMP_TYPE=9
__start_sockfactory sockfactory "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`
	cmd := exec.Command(bash(t), "--norc", "--noprofile", "-c", script, "bash", filepath.Join(repoRoot, bashScript), line)
	cmd.Env = []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + t.TempDir(), "COLUMNS=200"}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("completing %q: %v\n%s", line, err, stderr.String())
	}
	if stderr.Len() > 0 {
		// compopt, outside a real completion, says so; nothing else may.
		for l := range strings.Lines(stderr.String()) {
			if !strings.Contains(l, "compopt: not currently executing completion function") {
				t.Errorf("completing %q: stderr %q", line, l)
			}
		}
	}
	var reply []string
	for l := range strings.Lines(string(out)) {
		if l = strings.TrimRight(l, "\n"); l != "" {
			reply = append(reply, strings.TrimSpace(l))
		}
	}
	return reply
}

// TestBashCompletionCompletes checks that the script, sourced into bash,
// really completes: commands, flags and flag values, by asking the built
// program.
func TestBashCompletionCompletes(t *testing.T) {
	cases := []struct {
		line string
		want []string // each must be in COMPREPLY
		not  []string // none may be
	}{
		{"sockfactory con", []string{"connect"}, nil},
		{"sockfactory ", []string{"connect", "exec", "status", "release", "reload", "upgrade", "version"}, []string{"__man", "__complete"}},
		{"sockfactory connect --netw", []string{"--network"}, nil},
		{"sockfactory connect --network ", []string{"tcp", "udp6"}, nil},
		{"sockfactory exec --share ", []string{"none", "same-name", "any"}, nil},
		{"sockfactory --socket /x st", []string{"status"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.line, func(t *testing.T) {
			got := complete(t, tc.line)
			// With several candidates, bash shows each with its
			// description: "connect  (Connect through ...)".
			names := make([]string, len(got))
			for i, g := range got {
				names[i], _, _ = strings.Cut(g, " ")
			}
			for _, w := range tc.want {
				if !slices.Contains(names, w) {
					t.Errorf("completing %q: COMPREPLY %q, want %q in it", tc.line, got, w)
				}
			}
			for _, w := range tc.not {
				if slices.Contains(names, w) {
					t.Errorf("completing %q: COMPREPLY %q has %q", tc.line, got, w)
				}
			}
		})
	}
}
