package main

import (
	"github.com/spf13/cobra"

	"github.com/sockfactory/sockfactory/internal/cliflags"
	"github.com/sockfactory/sockfactory/internal/paths"
)

// manCmdName is the hidden command that prints the manual page:
// contrib/man/sockfactory.1 is its output.
const manCmdName = "__man"

func (c *cli) manCmd() *cobra.Command {
	return &cobra.Command{
		Use:    manCmdName,
		Short:  "Print the manual page (roff)",
		Hidden: true,
		Args:   nArgs(0, ""),
		RunE: func(*cobra.Command, []string) error {
			// Help that names the system daemon's socket, not the one
			// this user would get now: the page is the same for all.
			return manPage((&cli{helpSocket: paths.SystemSocket}).root()).WriteRoff(c.stdout)
		},
	}
}

// manPage is sockfactory(1), its commands and options those of root.
func manPage(root *cobra.Command) *cliflags.Page {
	return &cliflags.Page{
		Name:    "sockfactory",
		Section: "1",
		Manual:  "User Commands",
		Source:  "sockfactory",
		Summary: "get sockets from sockfactoryd",
		Synopsis: []string{
			"sockfactory [--socket PATH] connect [flags] HOST:PORT",
			"sockfactory [--socket PATH] exec --listen NETWORK://HOST:PORT [--listen ...] [flags] [--] CMD [ARGS...]",
			"sockfactory [--socket PATH] status|release TOKEN|reload|upgrade",
			"sockfactory version | completion bash|zsh|fish|powershell | help [COMMAND]",
		},
		Description: root.Long + "\n\n" +
			"Flags go anywhere on the line before a program's arguments (exec's CMD): " +
			"sockfactory --socket S status and sockfactory status --socket S are the same. " +
			"--flag VALUE and --flag=VALUE both work, and a single-dash long flag (-socket S) is read as --socket S.",
		OptionsTitle: "GLOBAL OPTIONS",
		Options:      cliflags.PFlags(root.NonInheritedFlags()),
		Commands:     cliflags.CobraCommands(root),
		Sections: []cliflags.Section{
			{Title: "EXIT STATUS", Items: []cliflags.Item{
				{Tag: "0", Text: "success"},
				{Tag: "1", Text: "the daemon or the system refused: no daemon, permission denied, denied by policy, connect or bind failed"},
				{Tag: "2", Text: "a usage error: unknown command or flag, bad flag value, missing or extra arguments"},
				{Tag: "CMD's", Text: "exec: the program's own status, 128+N if killed by signal N"},
			}},
			{Title: "ENVIRONMENT", Items: []cliflags.Item{
				{Tag: paths.EnvSocket, Text: "the daemon's socket, when --socket is not given"},
				{Tag: "XDG_RUNTIME_DIR", Text: "where a per-user daemon's socket is looked for (sockfactory/sockfactory.sock in it) when the system daemon's does not exist"},
			}},
			{Title: "FILES", Items: []cliflags.Item{
				{Tag: paths.SystemSocket, Text: "the system daemon's socket"},
				{Tag: netnsDir, Text: "named network namespaces, which --netns completes"},
			}},
			{Title: "SEE ALSO", Text: "sockfactoryd(8); docs/cli.md in the source, and sockfactory help COMMAND."},
		},
	}
}
