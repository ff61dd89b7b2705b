package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sockfactory/sockfactory"
)

// execChildEnv marks the re-executed CLI that becomes the program: it sets
// LISTEN_PID to its own pid (only known after fork) and execs the program.
const execChildEnv = "SOCKFACTORY_EXEC_CHILD"

// listenFlag collects --listen URLs.
type listenFlag []listenSpec

type listenSpec struct{ network, address string }

func (l *listenFlag) String() string {
	urls := make([]string, len(*l))
	for i, s := range *l {
		urls[i] = s.String()
	}
	return strings.Join(urls, ",")
}

func (s listenSpec) String() string { return s.network + "://" + s.address }

// Type names the value in help: NETWORK://HOST:PORT.
func (l *listenFlag) Type() string { return "url" }

// Set parses NETWORK://HOST:PORT, e.g. tcp://0.0.0.0:80, udp://[::]:53,
// tcp://:8080 (all addresses).
func (l *listenFlag) Set(s string) error {
	network, address, ok := strings.Cut(s, "://")
	if !ok {
		return fmt.Errorf("%q: want NETWORK://HOST:PORT, e.g. tcp://0.0.0.0:80 or udp://[::]:53", s)
	}
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return fmt.Errorf("unknown network %q: want tcp, tcp4, tcp6, udp, udp4 or udp6", network)
	}
	*l = append(*l, listenSpec{network, address})
	return nil
}

// optBool is a boolean flag that may be left unset: --flag, --flag=true,
// --flag=false, or absent (the daemon's default).
type optBool struct{ set, value bool }

func (b *optBool) String() string {
	if !b.set {
		return ""
	}
	return strconv.FormatBool(b.value)
}

func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	b.set, b.value = true, v
	return nil
}

func (b *optBool) Type() string { return "bool" }

// execOptions are exec's flags.
type execOptions struct {
	listens   listenFlag
	share     string
	netns     string
	name      string
	reusePort bool
	reuseAddr optBool
	backlog   int
}

// listenOptions maps the flags onto the client library's options.
func (o *execOptions) listenOptions() *sockfactory.ListenOptions {
	opts := &sockfactory.ListenOptions{Share: o.share, Name: o.name, ReusePort: o.reusePort, Backlog: o.backlog, Netns: o.netns}
	if o.reuseAddr.set {
		opts.ReuseAddr, opts.NoReuseAddr = o.reuseAddr.value, !o.reuseAddr.value
	}
	return opts
}

func (c *cli) execCmd() *cobra.Command {
	o := &c.exec
	cmd := &cobra.Command{
		Use:   "exec --listen NETWORK://HOST:PORT [--listen ...] [flags] [--] CMD [ARGS...]",
		Short: "Run CMD with sockets from the daemon (systemd LISTEN_FDS convention)",
		Long: "Gets the sockets from the daemon and runs CMD with them as fds 3, 4, ... in the systemd\n" +
			"convention (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES). The daemon's references are held until\n" +
			"CMD exits or is killed; SIGINT, SIGTERM and SIGHUP are passed on to it. Exits with CMD's status.\n" +
			"sockfactory's flags end at \"--\" or at CMD: CMD's own flags are passed on untouched.",
		Example:     "  sockfactory exec --listen tcp://0.0.0.0:80 --listen udp://[::]:53 -- mydaemon -v",
		Annotations: map[string]string{flagsStopAtArgs: "true"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(o.listens) == 0 {
				return usageError("exec: missing --listen NETWORK://HOST:PORT")
			}
			if len(args) == 0 {
				return usageError("exec: missing CMD to run")
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error { return c.runExec(o, args) },
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false)
	fs.Var(&o.listens, "listen", "socket to get, as `NETWORK://HOST:PORT` (repeatable; tcp://0.0.0.0:80, udp://[::]:53, tcp://:8080 for all addresses)")
	fs.StringVar(&o.netns, "netns", "", "bind the sockets in network namespace `NAME` (under /run/netns; caller: this process's own, e.g. a container's); the daemon's rule must grant it")
	fs.StringVar(&o.share, "share", "", "share `MODE`: none (default), same-name or any")
	fs.StringVar(&o.name, "name", "", "application and share `NAME` (default: CMD's base name)")
	fs.BoolVar(&o.reusePort, "reuseport", false, "set SO_REUSEPORT")
	fs.Var(&o.reuseAddr, "reuseaddr", "SO_REUSEADDR on (--reuseaddr; on UDP the daemon's rule must grant it) or off (--reuseaddr=false); unset: the daemon's default, on for TCP, off for UDP")
	fs.Lookup("reuseaddr").NoOptDefVal = "true"
	fs.IntVar(&o.backlog, "backlog", 0, "`LENGTH` of the TCP listen backlog (default: the system's maximum)")
	return cmd
}

func (c *cli) runExec(o *execOptions, argv []string) error {
	app := o.name
	if app == "" {
		app = filepath.Base(argv[0])
	}
	client := c.client(app)
	defer client.Close() // releases every reference
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := o.listenOptions()
	var (
		files []*os.File
		names []string
	)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, l := range o.listens {
		f, b, err := client.BindFile(ctx, l.network, l.address, opts)
		if errors.Is(err, sockfactory.ErrUnavailable) {
			return c.daemonErr(err)
		} else if err != nil {
			return failure(fmt.Errorf("%w (--listen %s)", err, l))
		}
		files = append(files, f)
		names = append(names, fdName(b))
	}
	self, err := os.Executable()
	if err != nil {
		return failure(fmt.Errorf("finding this program to run CMD: %w", err))
	}
	cmd := exec.Command(self, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.stdout, c.stderr
	cmd.ExtraFiles = files
	cmd.Env = append(withoutListenEnv(os.Environ()),
		execChildEnv+"=1",
		"LISTEN_FDS="+strconv.Itoa(len(files)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"))
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return failure(fmt.Errorf("starting %s: %w", argv[0], err))
	}
	// The program has its copies now; ours would keep sockets open.
	for _, f := range files {
		f.Close()
	}
	files = nil
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return &exitError{code: 128 + int(ws.Signal())}
				}
				return &exitError{code: ee.ExitCode()}
			}
			if err != nil {
				return failure(fmt.Errorf("waiting for %s: %w", argv[0], err))
			}
			return nil
		}
	}
}

// fdName names a socket in LISTEN_FDNAMES: network-port, e.g. tcp-80.
func fdName(b *sockfactory.Binding) string {
	port := b.Addr[strings.LastIndexByte(b.Addr, ':')+1:]
	return b.Network + "-" + port
}

func withoutListenEnv(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if strings.HasPrefix(e, "LISTEN_") || strings.HasPrefix(e, execChildEnv+"=") {
			continue
		}
		out = append(out, e)
	}
	return out
}

// execChild runs in the re-executed CLI: it becomes the program with
// LISTEN_PID set to its own pid. It returns only on failure.
func execChild(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "sockfactory exec: no program")
		return 127
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		fmt.Fprintln(stderr, "sockfactory exec:", err)
		return 127
	}
	env := make([]string, 0, len(os.Environ())+1)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, execChildEnv+"=") {
			env = append(env, e)
		}
	}
	env = append(env, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	err = syscall.Exec(path, args, env)
	fmt.Fprintln(stderr, "sockfactory exec:", err)
	return 126
}
