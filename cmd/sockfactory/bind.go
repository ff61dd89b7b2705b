package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sockfactory/sockfactory"
)

// execChildEnv marks the re-executed CLI that becomes the program: it sets
// LISTEN_PID to its own pid (only known after fork) and execs the program.
const execChildEnv = "SOCKFACTORY_EXEC_CHILD"

// listenFlag collects --listen URLs.
type listenFlag []listenSpec

type listenSpec struct{ network, address string }

func (l *listenFlag) String() string { return fmt.Sprint(*l) }

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
		return fmt.Errorf("%q: unknown network %q", s, network)
	}
	*l = append(*l, listenSpec{network, address})
	return nil
}

func cmdExec(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sockfactory exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var listens listenFlag
	fs.Var(&listens, "listen", "socket to get, as `NETWORK://HOST:PORT` (repeatable; tcp://0.0.0.0:80, udp://[::]:53, tcp://:8080 for all addresses)")
	socket := fs.String("socket", "", "daemon socket `path`")
	share := fs.String("share", "", "share mode: none (default), same-name or any")
	name := fs.String("name", "", "application and share `name` (default: the program's base name)")
	reusePort := fs.Bool("reuseport", false, "set SO_REUSEPORT")
	backlog := fs.Int("backlog", 0, "TCP listen backlog (default: the system's maximum)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sockfactory exec --listen NETWORK://HOST:PORT [--listen ...] [flags] -- CMD [ARGS...]\n\n"+
			"Gets the sockets from the daemon and runs CMD with them as fds 3, 4, ... in the systemd\n"+
			"convention (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES). The daemon's references are held until\n"+
			"CMD exits or is killed; SIGINT, SIGTERM and SIGHUP are passed on to it. Exits with CMD's status.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if len(listens) == 0 || fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	argv := fs.Args()
	app := *name
	if app == "" {
		app = filepath.Base(argv[0])
	}
	c := &sockfactory.Client{Socket: *socket, App: app}
	defer c.Close() // releases every reference
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := &sockfactory.ListenOptions{Share: *share, Name: *name, ReusePort: *reusePort, Backlog: *backlog}
	var (
		files []*os.File
		names []string
	)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, l := range listens {
		f, b, err := c.BindFile(ctx, l.network, l.address, opts)
		if err != nil {
			fmt.Fprintf(stderr, "sockfactory: %s://%s: %v\n", l.network, l.address, err)
			return 1
		}
		files = append(files, f)
		names = append(names, fdName(b))
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "sockfactory:", err)
		return 1
	}
	cmd := exec.Command(self, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	cmd.ExtraFiles = files
	cmd.Env = append(withoutListenEnv(os.Environ()),
		execChildEnv+"=1",
		"LISTEN_FDS="+strconv.Itoa(len(files)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"))
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(stderr, "sockfactory:", err)
		return 1
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
					return 128 + int(ws.Signal())
				}
				return ee.ExitCode()
			}
			if err != nil {
				fmt.Fprintln(stderr, "sockfactory:", err)
				return 1
			}
			return 0
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

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sockfactory status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "daemon socket `path`")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sockfactory status [--json] [--socket PATH]\n\n"+
			"Lists the sockets the daemon holds for this user (all of them for an admin).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	c := &sockfactory.Client{Socket: *socket}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if errors.Is(err, sockfactory.ErrTruncated) {
		fmt.Fprintln(stderr, "sockfactory:", err)
	} else if err != nil {
		fmt.Fprintln(stderr, "sockfactory:", err)
		return 1
	}
	stats, err := c.Stats(ctx)
	if err != nil && !errors.Is(err, sockfactory.ErrDenied) && !errors.Is(err, sockfactory.ErrTruncated) {
		fmt.Fprintln(stderr, "sockfactory:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		out := struct {
			Sockets []sockfactory.SocketStatus `json:"sockets"`
			Daemon  *sockfactory.DaemonStats   `json:"daemon,omitempty"`
		}{st, stats}
		if out.Sockets == nil {
			out.Sockets = []sockfactory.SocketStatus{}
		}
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(stderr, "sockfactory:", err)
			return 1
		}
		return 0
	}
	if stats != nil {
		fmt.Fprintf(stdout, "daemon pid %d: %d connections, %d sockets, %d references, %d fds, %d goroutines, %d KiB heap\n\n",
			stats.PID, stats.Sessions, stats.Sockets, stats.Refs, stats.FDs, stats.Goroutines, stats.HeapBytes/1024)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tADDRESS\tREFS\tAGE\tLINGER\tSHARE\tNAME\tUID\tPID\tAPP\tSTATE\tTOKEN")
	for _, s := range st {
		linger := "-"
		if s.Linger > 0 {
			linger = s.Linger.String()
		}
		if len(s.Holders) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t0\t%s\t%s\t-\t-\t-\t-\t-\tlingering %s\t-\n", s.Network, s.Addr, s.Age.Round(time.Second), linger, s.Lingering.Round(time.Millisecond))
		}
		for _, h := range s.Holders {
			state := "held"
			if h.Pending {
				state = "pending"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n",
				s.Network, s.Addr, s.Refs, s.Age.Round(time.Second), linger, h.Share, dash(h.Name), h.UID, h.PID, dash(h.App), state, dash(h.Token))
		}
	}
	tw.Flush()
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// simpleCommand runs a command that takes only -socket and nargs
// arguments, and makes one call on the daemon; ok is printed on success.
func simpleCommand(name, usage string, nargs int, args []string, stdout, stderr io.Writer, ok string, call func(ctx context.Context, c *sockfactory.Client, args []string) error) int {
	fs := flag.NewFlagSet("sockfactory "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "daemon socket `path`")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage+"\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitParse(err)
	}
	if fs.NArg() != nargs {
		fs.Usage()
		return 2
	}
	c := &sockfactory.Client{Socket: *socket}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := call(ctx, c, fs.Args()); err != nil {
		fmt.Fprintln(stderr, "sockfactory:", err)
		return 1
	}
	fmt.Fprintln(stdout, ok)
	return 0
}

func cmdReload(args []string, stdout, stderr io.Writer) int {
	return simpleCommand("reload", "Usage: sockfactory reload [--socket PATH]\n\n"+
		"Makes the daemon re-read its configuration, as SIGHUP does (admins only). A broken file is\n"+
		"refused with its error and the running configuration kept.", 0, args, stdout, stderr, "reloaded",
		func(ctx context.Context, c *sockfactory.Client, _ []string) error { return c.Reload(ctx) })
}

func cmdRelease(args []string, stdout, stderr io.Writer) int {
	return simpleCommand("release", "Usage: sockfactory release [--socket PATH] TOKEN\n\n"+
		"Drops the daemon's reference for TOKEN. A reference belongs to the connection that holds it,\n"+
		"so from the command line this works for admins (any token; see 'sockfactory status').", 1, args, stdout, stderr, "released",
		func(ctx context.Context, c *sockfactory.Client, a []string) error { return c.Release(ctx, a[0]) })
}
