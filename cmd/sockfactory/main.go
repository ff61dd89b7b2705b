// Command sockfactory is the command-line client of sockfactoryd.
//
//	sockfactory connect [-socket PATH] HOST:PORT   relay stdin/stdout over a brokered connection
//	sockfactory exec --listen URL... -- CMD ARGS  run CMD with sockets from the daemon
//	sockfactory status [--json]                   list held sockets
//	sockfactory release TOKEN                     drop a reference
//	sockfactory version                           print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/version"
)

const usage = `Usage: sockfactory COMMAND [flags] [args]

Commands:
  connect HOST:PORT   connect through the daemon and relay stdin/stdout (like nc)
  exec --listen NETWORK://HOST:PORT -- CMD ARGS
                      run CMD with sockets from the daemon (systemd LISTEN_FDS convention)
  status [--json]     list the sockets the daemon holds for you
  release TOKEN       drop a reference (admins)
  reload              make the daemon re-read its configuration (admins)
  version             print the version

Run 'sockfactory COMMAND -h' for a command's flags.
The daemon's socket is $SOCKFACTORY_SOCKET, or -socket, or %s.
`

func main() {
	if os.Getenv(execChildEnv) != "" {
		os.Exit(execChild(os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, usage, sockfactory.DefaultSocketPath())
		return 2
	}
	switch args[0] {
	case "connect":
		return cmdConnect(args[1:], stdin, stdout, stderr)
	case "exec":
		return cmdExec(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "release":
		return cmdRelease(args[1:], stdout, stderr)
	case "reload":
		return cmdReload(args[1:], stdout, stderr)
	case "version":
		fs := flag.NewFlagSet("sockfactory version", flag.ContinueOnError)
		fs.SetOutput(stderr)
		if err := fs.Parse(args[1:]); err != nil {
			return exitParse(err)
		}
		fmt.Fprintln(stdout, "sockfactory", version.Version)
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(stdout, usage, sockfactory.DefaultSocketPath())
		return 0
	}
	fmt.Fprintf(stderr, "sockfactory: unknown command %q\n\n"+usage, args[0], sockfactory.DefaultSocketPath())
	return 2
}

func exitParse(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func cmdConnect(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sockfactory connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "daemon socket `path` (default $SOCKFACTORY_SOCKET or "+sockfactory.DefaultSocketPath()+")")
	network := fs.String("network", "tcp", "network: tcp, tcp4, tcp6, udp, udp4 or udp6")
	timeout := fs.Duration("timeout", 0, "bound on the daemon's resolution and connect (0: the daemon's default)")
	linger := fs.Duration("q", time.Second, "udp only: after stdin ends, keep printing replies this long")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sockfactory connect [flags] HOST:PORT\n\n"+
			"Asks the daemon for a connection to HOST:PORT (IPv6 in brackets; HOST may be a DNS name),\n"+
			"then copies stdin to it and its data to stdout until the peer closes.\n"+
			"Exits 1 with the daemon's error if the connection is refused.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &sockfactory.Dialer{Socket: *socket, Timeout: *timeout}
	defer d.Close()
	conn, err := d.DialContext(ctx, *network, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "sockfactory:", err)
		return 1
	}
	d.Close() // the daemon connection is no longer needed
	defer conn.Close()
	if err := relay(ctx, conn, stdin, stdout, *linger); err != nil {
		fmt.Fprintln(stderr, "sockfactory:", err)
		return 1
	}
	return 0
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
