package main

import (
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// netnsDir is where named network namespaces live (ip netns add), the
// daemon's default [netns] dir: --netns completes with the names there.
const netnsDir = "/run/netns"

// completions tells `sockfactory completion SHELL`'s scripts what the
// flags' values and the arguments can be: cobra's scripts ask the program
// itself (sockfactory __complete ARGS), so they always complete the flags
// this binary has.
func completions(root *cobra.Command) {
	networks := fixed("tcp", "tcp4", "tcp6", "udp", "udp4", "udp6")
	for _, cmd := range root.Commands() {
		switch cmd.Name() {
		case "connect":
			cmd.ValidArgsFunction = noFiles // HOST:PORT
			cmd.RegisterFlagCompletionFunc("network", networks)
			cmd.RegisterFlagCompletionFunc("netns", netnsNames)
			cmd.RegisterFlagCompletionFunc("timeout", noFiles)
			cmd.RegisterFlagCompletionFunc("linger", noFiles)
		case "exec":
			// CMD and its arguments: the shell's own completion.
			cmd.RegisterFlagCompletionFunc("listen", listenURLs)
			cmd.RegisterFlagCompletionFunc("netns", netnsNames)
			cmd.RegisterFlagCompletionFunc("share", fixed("none", "same-name", "any"))
			cmd.RegisterFlagCompletionFunc("name", noFiles)
			cmd.RegisterFlagCompletionFunc("backlog", noFiles)
		case "status", "release", "reload", "upgrade", "version":
			cmd.ValidArgsFunction = noFiles
		}
	}
}

func noFiles(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return nil, cobra.ShellCompDirectiveNoFileComp
}

func fixed(values ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// netnsNames completes --netns: the namespaces named in /run/netns, and
// caller and daemon.
func netnsNames(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	names := []string{"caller", "daemon"}
	entries, _ := os.ReadDir(netnsDir) // none: only the two above
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// listenURLs completes --listen's NETWORK:// part; the address is the
// user's.
func listenURLs(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if strings.Contains(toComplete, "://") {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var urls []string
	for _, n := range []string{"tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"} {
		urls = append(urls, n+"://")
	}
	return urls, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
}
