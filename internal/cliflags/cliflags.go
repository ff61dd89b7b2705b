// Package cliflags turns the flag sets sockfactory and sockfactoryd parse
// into manual pages (roff, for man(1)): the option lists are read from the
// very *flag.FlagSet, *pflag.FlagSet and *cobra.Command values the programs
// use, so a page cannot describe a flag a program does not have, or miss
// one it has. It defines no flags and parses no command line itself; the
// prose around the options (exit status, environment, files) is the
// caller's.
package cliflags

import (
	"flag"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Option is one flag as a manual page lists it.
type Option struct {
	// Names are the spellings, short first: "-q", "--linger".
	Names []string
	// Arg names the flag's value ("PATH", "DURATION"); empty for a flag
	// that takes none.
	Arg string
	// Usage is the flag's help text.
	Usage string
	// Default is the default value when it is worth saying; empty
	// otherwise.
	Default string
}

// GoFlags lists the flags of fs, a standard library flag set, in the
// order fs.VisitAll gives (by name), each as -name (the flag package reads
// --name the same).
func GoFlags(fs *flag.FlagSet) []Option {
	var opts []Option
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if isBool(f.Value) {
			arg = ""
		}
		opts = append(opts, Option{Names: []string{"-" + f.Name}, Arg: strings.ToUpper(arg), Usage: usage, Default: worthSaying(f.DefValue)})
	})
	return opts
}

func isBool(v flag.Value) bool {
	b, ok := v.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// PFlags lists the flags of fs (pflag, as cobra commands have) but hidden
// ones and those named in skip, sorted by name.
func PFlags(fs *pflag.FlagSet, skip ...string) []Option {
	var opts []Option
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || slices.Contains(skip, f.Name) {
			return
		}
		arg, usage := pflag.UnquoteUsage(f)
		o := Option{Names: []string{"--" + f.Name}, Arg: arg, Usage: usage, Default: worthSaying(f.DefValue)}
		if f.Shorthand != "" {
			o.Names = []string{"-" + f.Shorthand, "--" + f.Name}
		}
		if f.NoOptDefVal != "" {
			// --reuseaddr alone means true; a value is optional.
			o.Arg, o.Default = "", ""
		}
		opts = append(opts, o)
	})
	return opts
}

// worthSaying returns a default value to print, or "" for the zero values
// that go without saying.
func worthSaying(def string) string {
	switch def {
	case "", "false", "0", "0s", "[]":
		return ""
	}
	return def
}

// Command is one subcommand as a manual page describes it.
type Command struct {
	// Usage is the command line: "sockfactory connect [flags] HOST:PORT".
	Usage string
	// Description is what it does, in paragraphs (see Page.Description).
	Description string
	// Options are its own flags, not the global ones.
	Options []Option
	// Subcommands names its subcommands, if it has any.
	Subcommands []string
}

// CobraCommands describes root's available subcommands (not hidden, not
// help), in cobra's order (by name), with their local flags but help.
// Subcommands of subcommands are only named.
func CobraCommands(root *cobra.Command) []Command {
	var cmds []Command
	for _, c := range root.Commands() {
		if !c.IsAvailableCommand() || c.Name() == "help" {
			continue
		}
		desc := c.Long
		if desc == "" {
			desc = c.Short
		}
		if c.Example != "" {
			desc += "\n\nExample:\n\n" + c.Example
		}
		cmd := Command{
			Usage:       root.Name() + " " + c.Use,
			Description: desc,
			Options:     PFlags(c.LocalNonPersistentFlags(), "help"),
		}
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				cmd.Subcommands = append(cmd.Subcommands, sub.Name())
			}
		}
		cmds = append(cmds, cmd)
	}
	return cmds
}
