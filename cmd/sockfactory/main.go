// Command sockfactory is the command-line client of sockfactoryd.
//
//	sockfactory [--socket PATH] connect [--network NET] [--netns NAME] [--timeout D] [-q D] HOST:PORT
//	sockfactory [--socket PATH] exec --listen URL [--listen URL...] [--netns NAME] [flags] [--] CMD [ARGS...]
//	sockfactory [--socket PATH] status [--json]
//	sockfactory [--socket PATH] release TOKEN
//	sockfactory [--socket PATH] reload
//	sockfactory [--socket PATH] upgrade
//	sockfactory version | --version
//	sockfactory completion bash|zsh|fish|powershell
//
// Flags go anywhere on the line before a program's arguments; -flag is read
// as --flag. Help (-h, --help, help COMMAND) goes to stdout. An error is one
// line on stderr, then usage for a usage error. Exit status: 0 success, 1 the
// daemon or the system refused, 2 a usage error; exec exits with its
// program's status. See docs/cli.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/version"
)

func main() {
	if os.Getenv(execChildEnv) != "" {
		os.Exit(execChild(os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Exit statuses other than a program's own (exec).
const (
	exitFailure = 1 // the daemon or the system refused
	exitUsage   = 2 // the command line is wrong
)

// exitError ends the command with code; err, when not nil, is printed as
// one line on stderr (and usage follows it for exitUsage).
type exitError struct {
	code  int
	err   error
	usage bool // print the command's usage after err
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError is a wrong command line: exit 2, the error, then usage.
func usageError(format string, a ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, a...), true}
}

// failure is a refusal by the daemon or the system: exit 1 and the error.
func failure(err error) error { return &exitError{code: exitFailure, err: err} }

// flagsStopAtArgs marks a command whose flags end at its first argument, so
// that a program's own flags pass through untouched (exec).
const flagsStopAtArgs = "sockfactory/flags-stop-at-args"

// cli is one run of the command line: its streams, the global flags and
// exec's flags.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	socket         string
	exec           execOptions
	// helpSocket is the default socket help names; empty:
	// sockfactory.DefaultSocketPath(), which depends on the user and on
	// what exists. The manual page names the system daemon's.
	helpSocket string
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	root := c.root()
	root.SetArgs(compatArgs(root, args))
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		// cobra's own: an unknown command or flag, a bad flag value.
		ee = &exitError{exitUsage, err, true}
	}
	if ee.err != nil {
		fmt.Fprintln(stderr, errorLine(ee.err))
	}
	if ee.usage {
		fmt.Fprint(stderr, "\n"+cmd.UsageString())
	}
	return ee.code
}

// errorLine prefixes err with the program's name, once: the client
// library's errors already start with it.
func errorLine(err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, "sockfactory:") || strings.HasPrefix(msg, "sockfactory ") {
		return msg
	}
	return "sockfactory: " + msg
}

func (c *cli) root() *cobra.Command {
	defaultSocket := c.helpSocket
	if defaultSocket == "" {
		defaultSocket = sockfactory.DefaultSocketPath()
	}
	root := &cobra.Command{
		Use:   "sockfactory",
		Short: "Get sockets from sockfactoryd",
		Long: "sockfactory asks sockfactoryd for sockets this user may not create itself: a connection\n" +
			"relayed on stdin/stdout (connect), or bound sockets handed to a program (exec).\n\n" +
			"The daemon's socket is --socket, else $SOCKFACTORY_SOCKET, else " + defaultSocket + ".\n" +
			"Exit status: 0 success, 1 the daemon or the system refused, 2 a usage error;\n" +
			"exec exits with its program's status.",
		Version: version.Version,
		// Without a command: a usage error, not help on stdout.
		RunE: func(*cobra.Command, []string) error {
			return usageError("no command given")
		},
		SilenceErrors:     true,
		SilenceUsage:      true,
		DisableAutoGenTag: true,
	}
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetVersionTemplate("sockfactory {{.Version}}\n")
	// The root runs only to refuse a missing command: its usage shows
	// commands, not "sockfactory [flags]".
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable .HasParent}}", 1))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{exitUsage, err, true}
	})
	root.PersistentFlags().StringVar(&c.socket, "socket", "",
		"daemon socket `PATH` (default $SOCKFACTORY_SOCKET, else "+defaultSocket+")")
	root.AddCommand(c.connectCmd(), c.execCmd(), c.statusCmd(), c.releaseCmd(), c.reloadCmd(), c.upgradeCmd(), c.versionCmd(), c.manCmd())
	root.InitDefaultVersionFlag()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	completions(root)
	var initHelp func(*cobra.Command)
	initHelp = func(cmd *cobra.Command) {
		cmd.InitDefaultHelpFlag()
		for _, sub := range cmd.Commands() {
			initHelp(sub)
		}
	}
	initHelp(root)
	return root
}

// nArgs checks a command's argument count; what names them in the error.
func nArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == n:
			return nil
		case len(args) < n:
			return usageError("%s: missing %s", cmd.Name(), what)
		case n == 0:
			return usageError("%s takes no arguments, got %q", cmd.Name(), args)
		}
		return usageError("%s takes %s, got %d arguments %q", cmd.Name(), what, len(args), args)
	}
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  nArgs(0, ""),
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(c.stdout, "sockfactory", version.Version)
			return nil
		},
	}
}

// client returns a Client of the daemon at --socket (or the default).
func (c *cli) client(app string) *sockfactory.Client {
	return &sockfactory.Client{Socket: c.socket, App: app}
}

// daemonErr turns a failure to reach the daemon into what this user can do
// about it, in the command line's terms (--socket); other errors are
// returned as they are. The result is a failure (exit 1).
func (c *cli) daemonErr(err error) error {
	if !errors.Is(err, sockfactory.ErrUnavailable) {
		return failure(err)
	}
	path := c.socket
	if path == "" {
		path = sockfactory.DefaultSocketPath()
	}
	var msg string
	switch {
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		msg = fmt.Sprintf("permission denied on the daemon socket %s: it exists, but this user (uid %d) may not open it; "+
			"ask an admin for the socket's group (ls -l %s shows it), or point --socket or SOCKFACTORY_SOCKET at a daemon of your own",
			path, os.Getuid(), path)
	case errors.Is(err, syscall.ENOENT):
		msg = fmt.Sprintf("no daemon socket at %s: start sockfactoryd, or point --socket or SOCKFACTORY_SOCKET at its socket", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		msg = fmt.Sprintf("nothing listens on the daemon socket %s (left by a daemon that ended?): start sockfactoryd, "+
			"or point --socket or SOCKFACTORY_SOCKET at its socket", path)
	default:
		return failure(err)
	}
	return failure(&cliError{msg, err})
}

// cliError is an error the command line words itself; errors.Is still
// reaches the one it explains.
type cliError struct {
	msg string
	err error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// compatArgs rewrites single-dash long flags (-socket PATH) as double-dash
// ones (--socket PATH), so that command lines written for the earlier,
// flag-package CLI keep working. It stops at "--" and, for exec, at the
// program: what belongs to the program is never touched.
func compatArgs(root *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args)) // never nil: cobra would read os.Args
	cmd := root
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			if sub := subcommand(cmd, a); sub != nil {
				cmd = sub
			} else if cmd.Annotations[flagsStopAtArgs] != "" {
				return append(out, args[i+1:]...)
			}
			continue
		}
		var f *pflag.Flag
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case strings.HasPrefix(a, "--"):
			f = cmd.Flags().Lookup(name)
		case len(name) > 1:
			// -socket, and -bogus so that its error names --bogus; not
			// -q5s, a shorthand with its value.
			f = cmd.Flags().Lookup(name)
			if f != nil || cmd.Flags().ShorthandLookup(name[:1]) == nil {
				a = "-" + a
			}
		default:
			f = cmd.Flags().ShorthandLookup(name)
		}
		out = append(out, a)
		if f != nil && f.NoOptDefVal == "" && !hasValue && i+1 < len(args) {
			i++ // the flag's value, whatever it looks like
			out = append(out, args[i])
		}
	}
	return out
}

func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, sub := range cmd.Commands() {
		if sub.Name() == name || sub.HasAlias(name) {
			return sub
		}
	}
	return nil
}
