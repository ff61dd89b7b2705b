// Command sockfactoryd is the sockfactory daemon: it creates sockets for
// processes that may not create them themselves and hands them over a UNIX
// socket. See README.md and docs/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sockfactory/sockfactory/internal/cliflags"
	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/daemon"
	"github.com/sockfactory/sockfactory/internal/logbuf"
	"github.com/sockfactory/sockfactory/internal/paths"
	"github.com/sockfactory/sockfactory/internal/privdrop"
	"github.com/sockfactory/sockfactory/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// flags holds the command line.
type flags struct {
	configPath, checkConfig, socketPath, logFormat, logLevel string
	showVersion                                              bool
	logFlush                                                 time.Duration
	// clearwater holds listeners given with -clearwater-socket; the
	// -allowed-hosts* flags that follow one apply to it.
	clearwater []config.Clearwater
}

// parseFlags reads the command line. Help (-h, --help) goes to stdout;
// a bad command line is one error line, then usage, on stderr. A nil
// result means exit with the code.
func parseFlags(args []string, stdout, stderr io.Writer) (*flags, int) {
	f := &flags{}
	fs := f.flagSet()
	fs.Usage = func() {} // written below, to the right stream
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: sockfactoryd [flags]\n\nCreates sockets for other processes and hands them over a UNIX socket.\n"+
			"Its socket is -socket, else the configuration's socket, else $%s,\n"+
			"else %s as root, else $XDG_RUNTIME_DIR/sockfactory/sockfactory.sock\n"+
			"or, without XDG_RUNTIME_DIR, /tmp/sockfactory-UID/sockfactory.sock.\n"+
			"Default socket for this user now: %s\n\n"+
			"Drop-in for the Clearwater socket factory:\n  sockfactoryd -clearwater-socket /tmp/clearwater_management_namespace_socket -allowed-hosts sas.example.net\n\n"+
			"Flags (-flag and --flag are the same):\n",
			paths.EnvSocket, paths.SystemSocket, paths.DaemonSocket())
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return nil, 0
	} else if err != nil {
		fmt.Fprintf(stderr, "sockfactoryd: %v\n\n", err)
		usage(stderr)
		return nil, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sockfactoryd: unexpected argument %q: sockfactoryd takes only flags\n\n", fs.Arg(0))
		usage(stderr)
		return nil, 2
	}
	return f, -1
}

// flagSet returns the command line's flags, which write into f: the set
// parseFlags parses, and the one the manual page lists (sockfactoryd
// __man, contrib/man/sockfactoryd.8).
func (f *flags) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("sockfactoryd", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and help are written below, each to its stream
	fs.StringVar(&f.configPath, "config", "", "TOML configuration `file` (default: built-in: root and this user may connect to loopback)")
	fs.StringVar(&f.checkConfig, "check-config", "", "validate the configuration `file`, print the result and exit")
	fs.StringVar(&f.socketPath, "socket", "", "native socket `path` (overrides the configuration; see above for the default)")
	fs.StringVar(&f.logFormat, "log-format", "", "log format: text or json (overrides the configuration)")
	fs.StringVar(&f.logLevel, "log-level", "", "least log level: debug, info, warn or error (overrides the configuration)")
	fs.DurationVar(&f.logFlush, "log-flush", defaultLogFlush, "how long info and debug log lines may wait to be written together; warnings and errors, and what waits before them, are written at once (0: every line at once)")
	fs.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	last := func(name string) (*config.Clearwater, error) {
		if len(f.clearwater) == 0 {
			return nil, fmt.Errorf("-%s must follow the -clearwater-socket it applies to", name)
		}
		return &f.clearwater[len(f.clearwater)-1], nil
	}
	fs.Func("clearwater-socket", "start a Clearwater-compatible listener at `path` (repeatable; the -allowed-hosts flags after it apply to it)", func(s string) error {
		f.clearwater = append(f.clearwater, config.NewClearwater(s))
		return nil
	})
	fs.Func("allowed-hosts", "comma-separated `hosts` (host or host:port) the preceding -clearwater-socket may reach", func(s string) error {
		cw, err := last("allowed-hosts")
		if err != nil {
			return err
		}
		for h := range strings.SplitSeq(s, ",") {
			if h = strings.TrimSpace(h); h != "" {
				cw.AllowedHosts = append(cw.AllowedHosts, h)
			}
		}
		return nil
	})
	fs.Func("allowed-hosts-dir", "`directory` of files listing hosts, one per line, for the preceding -clearwater-socket (repeatable)", func(s string) error {
		cw, err := last("allowed-hosts-dir")
		if err != nil {
			return err
		}
		cw.AllowedHostsDirs = append(cw.AllowedHostsDirs, s)
		return nil
	})
	fs.Func("clearwater-mode", "octal permission `bits` of the preceding -clearwater-socket (default 0660; the original used 0777)", func(s string) error {
		cw, err := last("clearwater-mode")
		if err != nil {
			return err
		}
		var m uint32
		if _, err := fmt.Sscanf(s, "%o", &m); err != nil || m > 0o777 {
			return fmt.Errorf("bad mode %q: want octal bits such as 0660", s)
		}
		cw.SocketMode = os.FileMode(m)
		return nil
	})
	return fs
}

// load builds the configuration: the file (or the built-in default) with
// the command line's overrides and listeners applied.
func (f *flags) load() (*config.Config, error) {
	var c *config.Config
	if f.configPath == "" {
		c = config.Default()
	} else {
		var err error
		if c, err = config.Load(f.configPath); err != nil {
			return nil, err
		}
	}
	if f.socketPath != "" {
		c.Socket = f.socketPath
	}
	switch f.logFormat {
	case "":
	case "text":
		c.LogJSON = false
	case "json":
		c.LogJSON = true
	default:
		return nil, fmt.Errorf("-log-format %q: want text or json", f.logFormat)
	}
	if f.logLevel != "" {
		if err := c.LogLevel.UnmarshalText([]byte(f.logLevel)); err != nil {
			return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", f.logLevel)
		}
	}
	for _, cw := range f.clearwater {
		if len(cw.AllowedHosts) == 0 && len(cw.AllowedHostsDirs) == 0 {
			return nil, fmt.Errorf("-clearwater-socket %s: give -allowed-hosts or -allowed-hosts-dir after it", cw.Socket)
		}
		if err := c.AddClearwater(cw); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && args[0] == manArg {
		if err := manPage((&flags{}).flagSet()).WriteRoff(stdout); err != nil {
			fmt.Fprintln(stderr, "sockfactoryd:", err)
			return 1
		}
		return 0
	}
	f, code := parseFlags(args, stdout, stderr)
	if f == nil {
		return code
	}
	if f.showVersion {
		fmt.Fprintln(stdout, "sockfactoryd", version.Version)
		return 0
	}
	if f.checkConfig != "" {
		c, err := config.Load(f.checkConfig)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: OK (%d rules, %d clearwater listeners, socket %s)\n", f.checkConfig, len(c.Policy.Rules), len(c.Clearwater), c.Socket)
		return 0
	}
	// Catch signals before any socket exists: a SIGTERM that arrives
	// while starting must still end in a clean exit that removes them.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	cfg, err := f.load()
	if err != nil {
		fmt.Fprintln(stderr, "sockfactoryd:", err)
		return 1
	}
	lw := logbuf.New(stderr, f.logFlush)
	defer lw.Close()
	log := newLogger(lw, cfg)
	if err := privdrop.SealInherited(); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	lns, err := privdrop.Listeners(1 + len(cfg.Clearwater))
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	var doors *daemon.FrontDoors
	if lns != nil {
		doors = &daemon.FrontDoors{Native: lns[0], Clearwater: lns[1:]}
	} else if cfg.User != "" && os.Geteuid() == 0 && !daemon.Upgrading() {
		if doors, err = daemon.OpenFrontDoors(cfg); err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
		for _, f := range doors.Stored {
			f.Close() // see daemon.openStore: no fd store under a root parent
		}
		return dropPrivileges(log, cfg, doors.All())
	}
	raiseNoFile(log)
	reportCaps(log, cfg)
	parent := daemon.ParentFromEnv()
	return daemon.Run(daemon.Options{
		Config:    cfg,
		Load:      f.load,
		Logger:    log,
		Flush:     func() { lw.Flush() },
		Doors:     doors,
		Inherited: lns != nil || parent != nil,
		Parent:    parent,
		Signals:   sigs,
	})
}

// defaultLogFlush is how long an info or debug line may wait to be written
// with others by default; warnings and errors are written at once, with what
// waits before them. An audit line per request otherwise costs a write(2)
// each: about a third of the daemon's CPU time per request under load.
const defaultLogFlush = 100 * time.Millisecond

func newLogger(w *logbuf.Writer, c *config.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.LogJSON {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(logbuf.NewHandler(h, w, slog.LevelWarn))
}

// manArg, as the only argument, prints the manual page (roff) instead of
// running: contrib/man/sockfactoryd.8 is its output. Hidden, and no
// command line can mean anything else by it: the daemon takes no
// arguments.
const manArg = "__man"

// manPage is sockfactoryd(8), its options the flags of fs.
func manPage(fs *flag.FlagSet) *cliflags.Page {
	return &cliflags.Page{
		Name:    "sockfactoryd",
		Section: "8",
		Manual:  "System Administration",
		Source:  "sockfactory",
		Summary: "create sockets for other processes and hand them over a UNIX socket",
		Synopsis: []string{
			"sockfactoryd [-config FILE] [-socket PATH] [flags]",
			"sockfactoryd -check-config FILE",
		},
		Description: "sockfactoryd creates sockets on behalf of processes that may not create them themselves " +
			"(a process in the wrong network namespace, or without privilege) and hands them over its UNIX " +
			"socket as file descriptors. Every request is checked against a policy keyed by the caller's " +
			"kernel-reported uid and groups: the rules of the TOML file given with -config (docs/configuration.md " +
			"in the source), or a built-in default that lets root and the daemon's own user connect to and bind " +
			"loopback addresses.\n\n" +
			"Its socket is -socket, else the configuration's socket, else $" + paths.EnvSocket + ", else " +
			paths.SystemSocket + " as root, else $XDG_RUNTIME_DIR/sockfactory/sockfactory.sock or " +
			"/tmp/sockfactory-UID/sockfactory.sock. sockfactoryd -h prints the one it would use.\n\n" +
			"A drop-in for the Clearwater socket factory:\n\n" +
			"  sockfactoryd -clearwater-socket /tmp/clearwater_management_namespace_socket -allowed-hosts sas.example.net",
		OptionsTitle: "OPTIONS",
		Options:      cliflags.GoFlags(fs),
		Sections: []cliflags.Section{
			{Title: "FLAG SYNTAX", Text: "-flag and --flag are the same; a value follows as -flag VALUE or -flag=VALUE. " +
				"-h or --help prints usage on standard output and exits 0."},
			{Title: "SIGNALS", Items: []cliflags.Item{
				{Tag: "SIGHUP", Text: "reload the configuration, as sockfactory reload does; a broken file is refused and the running configuration kept"},
				{Tag: "SIGUSR2", Text: "live upgrade to the executable now at the daemon's path, keeping every socket, reference and client connection"},
				{Tag: "SIGTERM, SIGINT", Text: "stop: requests in flight are answered first, for at most [daemon] stop_timeout; exit 0"},
			}},
			{Title: "EXIT STATUS", Items: []cliflags.Item{
				{Tag: "0", Text: "stopped by a signal, or -check-config found the file valid"},
				{Tag: "1", Text: "a configuration or start-up failure (the error names the file and line)"},
				{Tag: "2", Text: "a usage error: an unknown flag, a bad value or a stray argument"},
			}},
			{Title: "ENVIRONMENT", Items: []cliflags.Item{
				{Tag: paths.EnvSocket, Text: "the socket, when neither -socket nor the configuration names one"},
				{Tag: "NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID", Text: "sd_notify readiness, reload and stop, and the watchdog, under systemd"},
				{Tag: "LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, FDSTORE", Text: "socket activation, and systemd's fd store, which keeps held sockets across a crash or restart"},
			}},
			{Title: "FILES", Items: []cliflags.Item{
				{Tag: paths.SystemSocket, Text: "the socket of a daemon started as root"},
				{Tag: "contrib/systemd/sockfactoryd.service", Text: "a systemd unit running the daemon with CAP_NET_BIND_SERVICE only"},
			}},
			{Title: "SEE ALSO", Text: "sockfactory(1); docs/configuration.md, docs/operations.md and docs/security.md in the source."},
		},
	}
}
