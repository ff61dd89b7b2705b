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
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sockfactory/sockfactory/internal/clearwater"
	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/logbuf"
	"github.com/sockfactory/sockfactory/internal/paths"
	"github.com/sockfactory/sockfactory/internal/privdrop"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/server"
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
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
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
	wasInherited := lns != nil
	if lns == nil {
		if lns, err = openListeners(cfg); err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
	}
	if cfg.User != "" && os.Geteuid() == 0 && !wasInherited {
		return dropPrivileges(log, cfg, lns)
	}
	raiseNoFile(log)
	reportCaps(log, cfg)
	d := start(log, cfg, f, lns)
	lw.Flush() // the start-up lines are not held back with the audit lines

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload()
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			d.close()
			return 0
		case err := <-d.failed:
			log.Error("listener failed; shutting down", "err", err)
			d.close()
			return 1
		}
	}
}

// daemon is the running set of front doors.
type daemon struct {
	log    *slog.Logger
	cfg    *config.Config
	srv    *server.Server
	cw     []*clearwater.Listener
	flags  *flags
	failed chan error

	reloadMu sync.Mutex
}

// openListeners opens the native listener and every Clearwater one, all or
// none.
func openListeners(cfg *config.Config) ([]*net.UnixListener, error) {
	var opened []*net.UnixListener
	fail := func(err error) ([]*net.UnixListener, error) {
		for _, l := range opened {
			l.Close()
		}
		return nil, err
	}
	ln, err := server.Listen("unixpacket", cfg.Socket, cfg.SocketMode, cfg.SocketGID)
	if err != nil {
		return fail(err)
	}
	opened = append(opened, ln)
	for _, c := range cfg.Clearwater {
		l, err := server.Listen("unix", c.Socket, c.SocketMode, c.SocketGID)
		if err != nil {
			return fail(fmt.Errorf("clearwater listener: %w", err))
		}
		opened = append(opened, l)
	}
	return opened, nil
}

// start serves the listeners: lns[0] the native one, then the Clearwater
// ones in configuration order.
func start(log *slog.Logger, cfg *config.Config, f *flags, lns []*net.UnixListener) *daemon {
	conn := &connector.Connector{Resolver: connector.NewResolver(cfg.ResolverServers), MinAttempt: cfg.MinAttempt}
	ln, cwLns := lns[0], lns[1:]
	d := &daemon{log: log, cfg: cfg, flags: f, failed: make(chan error, len(lns))}
	d.srv = server.New(server.Options{
		Logger:         log,
		Policy:         cfg.Policy,
		Connector:      conn,
		ConnectTimeout: cfg.ConnectTimeout,
		MaxInFlight:    cfg.MaxInFlight,
		TokenTTL:       cfg.TokenTTL,
		Reload:         d.reload,
		Limits:         serverLimits(cfg),
	})
	d.serve(func() error { return d.srv.Serve(ln) }, server.ErrServerClosed)
	log.Info("listening", "socket", cfg.Socket, "mode", fmt.Sprintf("%04o", cfg.SocketMode), "config", cfg.Source, "rules", len(cfg.Policy.Rules), "version", version.Version, "pid", os.Getpid())
	for i, c := range cfg.Clearwater {
		l := clearwater.New(clearwater.Options{
			Name:           c.Socket,
			Allowed:        clearwater.AllowList{Hosts: c.AllowedHosts, Dirs: c.AllowedHostsDirs},
			IPv6:           c.IPv6,
			ConnectTimeout: c.ConnectTimeout,
			ReadTimeout:    c.ReadTimeout,
			UIDs:           c.UIDs,
			GIDs:           c.GIDs,
			Deny:           cfg.Policy.Deny,
			MaxConns:       cfg.Limits.Connections,
			MaxConnsPerUID: cfg.Limits.ConnectionsPerUID,
			Logger:         log,
			Connector:      conn,
		})
		d.cw = append(d.cw, l)
		lnI := cwLns[i]
		d.serve(func() error { return l.Serve(lnI) }, clearwater.ErrClosed)
		log.Info("listening (clearwater)", "socket", c.Socket, "mode", fmt.Sprintf("%04o", c.SocketMode), "allowed_hosts", len(c.AllowedHosts), "allowed_hosts_dirs", c.AllowedHostsDirs, "ipv6", c.IPv6)
	}
	return d
}

// serve runs one accept loop; an unexpected end is reported on d.failed.
func (d *daemon) serve(loop func() error, closed error) {
	go func() {
		if err := loop(); !errors.Is(err, closed) {
			d.failed <- err
		}
	}()
}

func (d *daemon) close() {
	d.srv.Close()
	for _, l := range d.cw {
		l.Close()
	}
}

// reload re-reads the configuration on SIGHUP: the native policy is
// replaced and every Clearwater listener re-reads its allow-list sources. A
// broken file is logged and everything running kept. Changes to sockets,
// listeners, timeouts and logging take effect only on restart.
func (d *daemon) reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	c, err := d.flags.load()
	if err != nil {
		d.log.Error("reload failed; keeping the running configuration", "err", err)
		for _, l := range d.cw {
			l.Reload()
		}
		return err
	}
	d.srv.SetPolicy(c.Policy)
	d.srv.SetLimits(serverLimits(c))
	for i, l := range d.cw {
		old := d.cfg.Clearwater[i]
		for _, nc := range c.Clearwater {
			if nc.Socket == old.Socket {
				l.Update(clearwater.AllowList{Hosts: nc.AllowedHosts, Dirs: nc.AllowedHostsDirs}, nc.UIDs, nc.GIDs, c.Policy.Deny, c.Limits.Connections, c.Limits.ConnectionsPerUID)
			}
		}
		n := l.Reload()
		d.log.Info("reloaded allowed hosts", "socket", old.Socket, "entries", n)
	}
	if diff := restartNeeded(d.cfg, c); len(diff) > 0 {
		d.log.Warn("reload: some changed settings take effect only on restart", "settings", diff)
	}
	d.log.Info("reloaded", "config", c.Source, "rules", len(c.Policy.Rules))
	return nil
}

// serverLimits are the native server's reloadable limits.
func serverLimits(c *config.Config) server.Limits {
	return server.Limits{
		MaxConns: c.Limits.Connections, MaxConnsPerUID: c.Limits.ConnectionsPerUID, IdleTimeout: c.Limits.IdleTimeout,
		Registry: registry.Limits{
			Refs: c.Limits.Sockets, RefsPerUID: c.Limits.SocketsPerUID,
			Pending: c.Limits.Tokens, PendingPerUID: c.Limits.TokensPerUID,
		},
	}
}

// restartNeeded names the settings that differ between the running and the
// reloaded configuration but that a reload cannot apply.
func restartNeeded(old, c *config.Config) []string {
	var out []string
	check := func(name string, changed bool) {
		if changed {
			out = append(out, name)
		}
	}
	check("daemon.socket", old.Socket != c.Socket)
	check("daemon.socket_mode", old.SocketMode != c.SocketMode)
	check("daemon.socket_group", old.SocketGID != c.SocketGID)
	check("daemon.user", old.User != c.User)
	check("daemon.group", old.GID != c.GID)
	check("daemon.supplementary_groups", !slices.Equal(old.Groups, c.Groups))
	check("daemon.log_format", old.LogJSON != c.LogJSON)
	check("daemon.log_level", old.LogLevel != c.LogLevel)
	check("daemon.max_in_flight", old.MaxInFlight != c.MaxInFlight)
	check("connect.timeout", old.ConnectTimeout != c.ConnectTimeout)
	check("connect.min_attempt", old.MinAttempt != c.MinAttempt)
	check("resolver.servers", !slices.Equal(old.ResolverServers, c.ResolverServers))
	check("bind.token_ttl", old.TokenTTL != c.TokenTTL)
	if len(old.Clearwater) != len(c.Clearwater) {
		out = append(out, "clearwater listeners (added or removed)")
		return out
	}
	for i, o := range old.Clearwater {
		n := c.Clearwater[i]
		check("clearwater "+o.Socket, o.Socket != n.Socket || o.SocketMode != n.SocketMode || o.SocketGID != n.SocketGID ||
			o.IPv6 != n.IPv6 || o.ConnectTimeout != n.ConnectTimeout || o.ReadTimeout != n.ReadTimeout)
	}
	return out
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
