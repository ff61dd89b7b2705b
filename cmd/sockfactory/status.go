package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sockfactory/sockfactory"
)

func (c *cli) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "List the sockets the daemon holds for you",
		Long:  "Lists the sockets the daemon holds for this user (all of them for an admin).",
		Args:  nArgs(0, ""),
		RunE:  func(*cobra.Command, []string) error { return c.status(asJSON) },
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func (c *cli) status(asJSON bool) error {
	client := c.client("")
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := client.Status(ctx)
	if errors.Is(err, sockfactory.ErrTruncated) {
		fmt.Fprintln(c.stderr, errorLine(err)) // a warning: the rest is listed
	} else if err != nil {
		return c.daemonErr(err)
	}
	stats, err := client.Stats(ctx)
	if err != nil && !errors.Is(err, sockfactory.ErrDenied) && !errors.Is(err, sockfactory.ErrTruncated) {
		return c.daemonErr(err)
	}
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		out := struct {
			Sockets []sockfactory.SocketStatus `json:"sockets"`
			Daemon  *sockfactory.DaemonStats   `json:"daemon,omitempty"`
		}{st, stats}
		if out.Sockets == nil {
			out.Sockets = []sockfactory.SocketStatus{}
		}
		if err := enc.Encode(out); err != nil {
			return failure(fmt.Errorf("writing the status: %w", err))
		}
		return nil
	}
	if stats != nil {
		fmt.Fprintf(c.stdout, "daemon pid %d: %d connections, %d sockets, %d references, %d fds, %d goroutines, %d KiB heap\n\n",
			stats.PID, stats.Sessions, stats.Sockets, stats.Refs, stats.FDs, stats.Goroutines, stats.HeapBytes/1024)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tADDRESS\tREFS\tAGE\tLINGER\tSHARE\tNAME\tUID\tPID\tAPP\tSTATE\tTOKEN\tNETNS")
	for _, s := range st {
		// The namespace as asked for and, names being re-pointable, its
		// identity: signalling/4:4026532281; "-" for the daemon's own.
		ns := "-"
		if s.NetnsID != "" {
			ns = s.Netns + "/" + s.NetnsID
		}
		linger := "-"
		if s.Linger > 0 {
			linger = s.Linger.String()
		}
		if len(s.Holders) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t0\t%s\t%s\t-\t-\t-\t-\t-\tlingering %s\t-\t%s\n", s.Network, s.Addr, s.Age.Round(time.Second), linger, s.Lingering.Round(time.Millisecond), ns)
		}
		for _, h := range s.Holders {
			state := "held"
			if h.Pending {
				state = "pending"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n",
				s.Network, s.Addr, s.Refs, s.Age.Round(time.Second), linger, h.Share, dash(h.Name), h.UID, h.PID, dash(h.App), state, dash(h.Token), ns)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) releaseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "release TOKEN",
		Short: "Drop a reference (admins)",
		Long: "Drops the daemon's reference for TOKEN. A reference belongs to the connection that holds it,\n" +
			"so from the command line this works for admins (any token; see 'sockfactory status').",
		Args: nArgs(1, "TOKEN"),
		RunE: func(_ *cobra.Command, args []string) error {
			return c.call("released", func(ctx context.Context, client *sockfactory.Client) error {
				return client.Release(ctx, args[0])
			})
		},
	}
}

func (c *cli) reloadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the daemon re-read its configuration (admins)",
		Long: "Makes the daemon re-read its configuration, as SIGHUP does (admins only). A broken file is\n" +
			"refused with its error and the running configuration kept.",
		Args: nArgs(0, ""),
		RunE: func(*cobra.Command, []string) error {
			return c.call("reloaded", func(ctx context.Context, client *sockfactory.Client) error {
				return client.Reload(ctx)
			})
		},
	}
}

func (c *cli) upgradeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "upgrade",
		Short: "Replace the daemon with the executable now on disk, keeping every socket (admins)",
		Long: "Makes the daemon start the executable now at its own path and hand it every listener,\n" +
			"held socket, reference, pending token and client connection, as SIGUSR2 does (admins only).\n" +
			"Clients notice nothing. Prints the old and new pid once the new daemon serves; if the new\n" +
			"one fails to start, to take the state or to become ready in time, the old one keeps serving\n" +
			"with nothing lost, and this prints why and exits 1. See docs/operations.md.",
		Args: nArgs(0, ""),
		RunE: func(*cobra.Command, []string) error {
			client := c.client("")
			defer client.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r, err := client.Upgrade(ctx)
			if err != nil {
				return c.daemonErr(err)
			}
			fmt.Fprintf(c.stdout, "upgraded: pid %d -> %d, version %s, took %s\n", r.OldPID, r.NewPID, r.Version, r.Took)
			return nil
		},
	}
}

// call makes one call on the daemon and prints ok on success.
func (c *cli) call(ok string, f func(context.Context, *sockfactory.Client) error) error {
	client := c.client("")
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f(ctx, client); err != nil {
		return c.daemonErr(err)
	}
	fmt.Fprintln(c.stdout, ok)
	return nil
}
