package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sockfactory/sockfactory"
)

func (c *cli) connectCmd() *cobra.Command {
	var (
		network, ns     string
		timeout, linger time.Duration
	)
	cmd := &cobra.Command{
		Use:   "connect [flags] HOST:PORT",
		Short: "Connect through the daemon and relay stdin/stdout (like nc)",
		Long: "Asks the daemon for a connection to HOST:PORT (IPv6 in brackets; HOST may be a DNS name),\n" +
			"then copies stdin to it and its data to stdout until the peer closes.\n" +
			"Exits 1 with the daemon's error if the connection is refused.",
		Args: nArgs(1, "HOST:PORT"),
		RunE: func(_ *cobra.Command, args []string) error {
			return c.connect(network, ns, args[0], timeout, linger)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&network, "network", "tcp", "connect over `NETWORK`: tcp, tcp4, tcp6, udp, udp4 or udp6")
	fs.StringVar(&ns, "netns", "", "make the connection from network namespace `NAME` (under /run/netns, with its /etc/netns/NAME files; caller: this process's own); the daemon's rule must grant it")
	fs.DurationVar(&timeout, "timeout", 0, "bound the daemon's resolution and connect by `DURATION` (0: the daemon's default)")
	fs.DurationVarP(&linger, "linger", "q", time.Second, "udp only: after stdin ends, keep printing replies for `DURATION`")
	return cmd
}

func (c *cli) connect(network, ns, address string, timeout, linger time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &sockfactory.Dialer{Socket: c.socket, Timeout: timeout, Netns: ns}
	defer d.Close()
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		// The address is on the command line; the daemon's error is the news.
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			err = oe.Err
		}
		return c.daemonErr(err)
	}
	d.Close() // the daemon connection is no longer needed
	defer conn.Close()
	if err := relay(ctx, conn, c.stdin, c.stdout, linger); err != nil {
		return failure(err)
	}
	return nil
}

// relay copies stdin to conn and conn to stdout. For a stream it half-closes
// conn when stdin ends and returns when the peer closes; for datagrams it
// returns linger after stdin ends.
func relay(ctx context.Context, conn net.Conn, stdin io.Reader, stdout io.Writer, linger time.Duration) error {
	inDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stdin)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			if _, isUDP := conn.(*net.UDPConn); !isUDP {
				cw.CloseWrite()
			}
		}
		inDone <- err
	}()
	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(stdout, conn)
		outDone <- err
	}()
	_, datagram := conn.(*net.UDPConn)
	for {
		select {
		case err := <-outDone:
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		case err := <-inDone:
			if err != nil {
				return fmt.Errorf("reading stdin: %w", err)
			}
			if datagram {
				conn.SetReadDeadline(time.Now().Add(linger))
			}
			inDone = nil
		case <-ctx.Done():
			return nil
		}
	}
}
