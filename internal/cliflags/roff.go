package cliflags

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Page is a manual page.
//
// Text fields hold plain text, never roff: paragraphs are separated by a
// blank line, lines within one are joined (filled), and a line starting
// with a space or a tab is shown as it is (an example). Escaping is
// WriteRoff's job.
type Page struct {
	// Name is the program's name; Section its manual section ("1", "8").
	Name, Section string
	// Manual names the manual ("User Commands", "System Administration").
	Manual string
	// Source is the page's footer, the package it belongs to.
	Source string
	// Summary is the NAME line after "name - ".
	Summary string
	// Synopsis lists the command lines the program takes.
	Synopsis []string
	// Description is the DESCRIPTION section.
	Description string
	// OptionsTitle heads the options' section ("OPTIONS" when empty).
	OptionsTitle string
	// Options are the program's (global) flags.
	Options []Option
	// Commands are its subcommands, in a COMMANDS section when not empty.
	Commands []Command
	// Sections follow, in order: EXIT STATUS, ENVIRONMENT, SEE ALSO...
	Sections []Section
}

// Section is a section of prose, or of tagged items, or both.
type Section struct {
	// Title is the section's heading, upper case by convention.
	Title string
	// Text is its prose (see Page), before its items.
	Text string
	// Items are tagged paragraphs: an exit status, a variable, a signal.
	Items []Item
}

// Item is a tagged paragraph.
type Item struct {
	Tag, Text string
}

// WriteRoff writes p as a man(7) page.
func (p *Page) WriteRoff(w io.Writer) error {
	b := &bytes.Buffer{}
	fmt.Fprintf(b, ".TH %s %s \"\" %s %s\n", quote(strings.ToUpper(p.Name)), p.Section, quote(p.Source), quote(p.Manual))
	b.WriteString(".SH NAME\n")
	fmt.Fprintf(b, "%s \\- %s\n", escape(p.Name), escape(p.Summary))
	b.WriteString(".SH SYNOPSIS\n")
	for i, s := range p.Synopsis {
		if i > 0 {
			b.WriteString(".br\n")
		}
		name, rest, _ := strings.Cut(s, " ")
		fmt.Fprintf(b, "\\fB%s\\fR %s\n", escape(name), escape(rest))
	}
	b.WriteString(".SH DESCRIPTION\n")
	text(b, p.Description)
	title := p.OptionsTitle
	if title == "" {
		title = "OPTIONS"
	}
	if len(p.Options) > 0 {
		fmt.Fprintf(b, ".SH %s\n", quote(title))
		options(b, p.Options)
	}
	if len(p.Commands) > 0 {
		b.WriteString(".SH COMMANDS\n")
		for _, c := range p.Commands {
			fmt.Fprintf(b, ".SS %s\n", quote(c.Usage))
			text(b, c.Description)
			if len(c.Subcommands) > 0 {
				b.WriteString(".PP\n")
				fmt.Fprintf(b, "Subcommands: %s.\n", escape(strings.Join(c.Subcommands, ", ")))
			}
			options(b, c.Options)
		}
	}
	for _, s := range p.Sections {
		fmt.Fprintf(b, ".SH %s\n", quote(s.Title))
		if s.Text != "" {
			text(b, s.Text)
		}
		for _, it := range s.Items {
			fmt.Fprintf(b, ".TP\n\\fB%s\\fR\n", escape(it.Tag))
			inline(b, it.Text)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func options(b *bytes.Buffer, opts []Option) {
	for _, o := range opts {
		names := make([]string, len(o.Names))
		for i, n := range o.Names {
			names[i] = `\fB` + escape(n) + `\fR`
		}
		b.WriteString(".TP\n")
		b.WriteString(strings.Join(names, ", "))
		if o.Arg != "" {
			b.WriteString(` \fI` + escape(o.Arg) + `\fR`)
		}
		b.WriteString("\n")
		u := o.Usage
		if o.Default != "" {
			u += " (default " + o.Default + ")"
		}
		inline(b, u)
	}
}

// text writes paragraphs: .PP before each, examples in no-fill mode.
func text(b *bytes.Buffer, s string) {
	for _, para := range strings.Split(strings.TrimSpace(s), "\n\n") {
		b.WriteString(".PP\n")
		inline(b, para)
	}
}

// inline writes one paragraph's lines, examples (indented lines) in
// no-fill mode, without starting a paragraph.
func inline(b *bytes.Buffer, para string) {
	literal := false
	for _, line := range strings.Split(para, "\n") {
		isLit := strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")
		if isLit && !literal {
			b.WriteString(".RS 4\n.nf\n")
		} else if !isLit && literal {
			b.WriteString(".fi\n.RE\n")
		}
		literal = isLit
		if isLit {
			line = strings.TrimSpace(line)
		}
		b.WriteString(escapeLine(line) + "\n")
	}
	if literal {
		b.WriteString(".fi\n.RE\n")
	}
}

// escape makes s safe as text within a line: a backslash is roff's escape
// character, and a hyphen-minus must be \- to stay one (in options, in
// commands to copy).
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// escapeLine escapes a whole line: also a leading . or ', which would make
// it a request.
func escapeLine(s string) string {
	s = escape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// quote makes s one argument of a request.
func quote(s string) string {
	return `"` + strings.ReplaceAll(escape(s), `"`, `\(dq`) + `"`
}

// Check checks the structure of a page WriteRoff made, for where no roff
// formatter is installed to render it: a .TH first, NAME, SYNOPSIS and
// DESCRIPTION sections in that order, only the requests WriteRoff uses,
// no unescaped line that a formatter would read as a request, and
// balanced no-fill blocks.
func Check(page []byte) error {
	known := map[string]bool{".TH": true, ".SH": true, ".SS": true, ".PP": true, ".TP": true, ".RS": true, ".RE": true, ".nf": true, ".fi": true, ".br": true}
	var sections []string
	nf, rs := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(page))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n == 1 && !strings.HasPrefix(line, ".TH ") {
			return errors.New("line 1: no .TH")
		}
		if line == "" {
			return fmt.Errorf("line %d: blank line (a blank line is a paragraph break with extra space in roff)", n)
		}
		if !strings.HasPrefix(line, ".") && !strings.HasPrefix(line, "'") {
			if strings.ContainsAny(line, "\t") {
				return fmt.Errorf("line %d: a tab", n)
			}
			continue
		}
		if strings.HasPrefix(line, "'") {
			return fmt.Errorf("line %d: starts with ', a request with no break", n)
		}
		req, arg, _ := strings.Cut(line, " ")
		if !known[req] {
			return fmt.Errorf("line %d: unknown request %s", n, req)
		}
		switch req {
		case ".SH":
			sections = append(sections, strings.Trim(arg, `"`))
		case ".nf":
			nf++
		case ".fi":
			nf--
		case ".RS":
			rs++
		case ".RE":
			rs--
		}
		if nf < 0 || nf > 1 || rs < 0 || rs > 1 {
			return fmt.Errorf("line %d: unbalanced %s", n, req)
		}
	}
	if nf != 0 || rs != 0 {
		return errors.New("unterminated .nf or .RS at the end")
	}
	want := []string{"NAME", "SYNOPSIS", "DESCRIPTION"}
	if len(sections) < len(want) || !slices.Equal(sections[:len(want)], want) {
		return fmt.Errorf("sections %q, want %q first", sections, want)
	}
	return sc.Err()
}
