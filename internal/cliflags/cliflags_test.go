package cliflags_test

import (
	"bytes"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/sockfactory/sockfactory/internal/cliflags"
)

func TestGoFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("config", "", "configuration `file`")
	fs.Bool("version", false, "print the version")
	fs.Duration("wait", time.Second, "how long")
	got := cliflags.GoFlags(fs)
	want := []cliflags.Option{
		{Names: []string{"-config"}, Arg: "FILE", Usage: "configuration file"},
		{Names: []string{"-version"}, Usage: "print the version"},
		{Names: []string{"-wait"}, Arg: "DURATION", Usage: "how long", Default: "1s"},
	}
	if !slices.EqualFunc(got, want, optionEqual) {
		t.Errorf("GoFlags = %+v, want %+v", got, want)
	}
}

func TestPFlags(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.StringP("network", "n", "tcp", "over `NETWORK`")
	fs.Bool("json", false, "JSON")
	fs.Bool("help", false, "help")
	fs.String("secret", "", "hidden")
	fs.MarkHidden("secret")
	fs.String("opt", "", "optional value")
	fs.Lookup("opt").NoOptDefVal = "yes"
	got := cliflags.PFlags(fs, "help")
	want := []cliflags.Option{
		{Names: []string{"--json"}, Usage: "JSON"},
		{Names: []string{"-n", "--network"}, Arg: "NETWORK", Usage: "over NETWORK", Default: "tcp"},
		{Names: []string{"--opt"}, Usage: "optional value"},
	}
	if !slices.EqualFunc(got, want, optionEqual) {
		t.Errorf("PFlags = %+v, want %+v", got, want)
	}
}

func optionEqual(a, b cliflags.Option) bool {
	return slices.Equal(a.Names, b.Names) && a.Arg == b.Arg && a.Usage == b.Usage && a.Default == b.Default
}

// TestWriteRoffEscapes checks that text cannot become roff: backslashes,
// hyphens, and lines that start with a control character.
func TestWriteRoffEscapes(t *testing.T) {
	p := &cliflags.Page{
		Name: "prog", Section: "1", Manual: "User Commands", Source: "src", Summary: "does `x`",
		Synopsis:    []string{"prog --flag PATH"},
		Description: "A path C:\\dir.\n.SH NOT A SECTION\n'also not a request\n\n  example -x\n\tmore",
		Options:     []cliflags.Option{{Names: []string{"-q", "--quiet"}, Arg: "D", Usage: "quiet", Default: "1s"}},
		Sections:    []cliflags.Section{{Title: "EXIT STATUS", Items: []cliflags.Item{{Tag: "0", Text: "ok"}}}},
	}
	var b bytes.Buffer
	if err := p.WriteRoff(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		".TH \"PROG\" 1 \"\" \"src\" \"User Commands\"\n",
		"\\fBprog\\fR \\-\\-flag PATH\n",
		"C:\\edir.\n",
		"\\&.SH NOT A SECTION\n",
		"\\&'also not a request\n",
		".RS 4\n.nf\nexample \\-x\nmore\n.fi\n.RE\n",
		".TP\n\\fB\\-q\\fR, \\fB\\-\\-quiet\\fR \\fID\\fR\nquiet (default 1s)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("WriteRoff output lacks %q:\n%s", want, out)
		}
	}
	if err := cliflags.Check(b.Bytes()); err != nil {
		t.Errorf("Check(WriteRoff output) = %v", err)
	}
}

func TestCheckRefuses(t *testing.T) {
	good := ".TH \"X\" 1\n.SH \"NAME\"\nx\n.SH \"SYNOPSIS\"\nx\n.SH \"DESCRIPTION\"\n.PP\nx\n"
	if err := cliflags.Check([]byte(good)); err != nil {
		t.Fatalf("Check(good) = %v", err)
	}
	cases := []struct{ name, page string }{
		{"no .TH", strings.TrimPrefix(good, ".TH \"X\" 1\n")},
		{"blank line", good + "\n"},
		{"unknown request", good + ".XX\n"},
		{"apostrophe request", good + "'br\n"},
		{"unbalanced .nf", good + ".nf\nx\n"},
		{"sections out of order", ".TH \"X\" 1\n.SH \"SYNOPSIS\"\n.SH \"NAME\"\n.SH \"DESCRIPTION\"\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := cliflags.Check([]byte(tc.page)); err == nil {
				t.Errorf("Check(%q) = nil, want an error", tc.page)
			}
		})
	}
}
