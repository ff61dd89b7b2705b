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
	"syscall"

	"sockfactory/internal/config"
	"sockfactory/internal/connector"
	"sockfactory/internal/server"
	"sockfactory/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("sockfactoryd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath  = fs.String("config", "", "TOML configuration `file` (default: built-in: root and this user may connect to loopback)")
		checkConfig = fs.String("check-config", "", "validate the configuration `file`, print the result and exit")
		socketPath  = fs.String("socket", "", "native socket `path` (overrides the configuration)")
		logFormat   = fs.String("log-format", "", "log format: text or json (overrides the configuration)")
		logLevel    = fs.String("log-level", "", "least log level: debug, info, warn or error (overrides the configuration)")
		showVersion = fs.Bool("version", false, "print the version and exit")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sockfactoryd [flags]\n\nCreates sockets for other processes and hands them over a UNIX socket.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sockfactoryd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(os.Stdout, "sockfactoryd", version.Version)
		return 0
	}
	if *checkConfig != "" {
		c, err := config.Load(*checkConfig)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stdout, "%s: OK (%d rules, socket %s)\n", *checkConfig, len(c.Policy.Rules), c.Socket)
		return 0
	}

	load := func() (*config.Config, error) {
		var c *config.Config
		if *configPath == "" {
			c = config.Default()
		} else {
			var err error
			if c, err = config.Load(*configPath); err != nil {
				return nil, err
			}
		}
		if *socketPath != "" {
			c.Socket = *socketPath
		}
		switch *logFormat {
		case "":
		case "text":
			c.LogJSON = false
		case "json":
			c.LogJSON = true
		default:
			return nil, fmt.Errorf("-log-format %q: want text or json", *logFormat)
		}
		if *logLevel != "" {
			if err := c.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
				return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", *logLevel)
			}
		}
		return c, nil
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(stderr, "sockfactoryd:", err)
		return 1
	}
	log := newLogger(stderr, cfg)

	ln, err := server.Listen("unixpacket", cfg.Socket, cfg.SocketMode, cfg.SocketGID)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	srv := server.New(server.Options{
		Logger:         log,
		Policy:         cfg.Policy,
		Connector:      &connector.Connector{Resolver: connector.NewResolver(cfg.ResolverServers), MinAttempt: cfg.MinAttempt},
		ConnectTimeout: cfg.ConnectTimeout,
		MaxInFlight:    cfg.MaxInFlight,
	})

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "socket", cfg.Socket, "mode", fmt.Sprintf("%04o", cfg.SocketMode), "config", cfg.Source, "rules", len(cfg.Policy.Rules), "version", version.Version, "pid", os.Getpid())

	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(log, srv, load, cfg)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			srv.Close()
			<-served
			return 0
		case err := <-served:
			log.Error("listener failed", "err", err)
			srv.Close()
			return 1
		}
	}
}

// reload re-reads the configuration on SIGHUP and swaps in its policy. A
// broken file is logged and the running policy kept. Settings that need a
// new listener (socket path, mode) take effect only on restart.
func reload(log *slog.Logger, srv *server.Server, load func() (*config.Config, error), running *config.Config) {
	c, err := load()
	if err != nil {
		log.Error("reload failed; keeping the running configuration", "err", err)
		return
	}
	srv.SetPolicy(c.Policy)
	if c.Socket != running.Socket || c.SocketMode != running.SocketMode || c.SocketGID != running.SocketGID {
		log.Warn("reload: socket settings changed; they take effect on restart", "socket", c.Socket)
	}
	log.Info("reloaded", "config", c.Source, "rules", len(c.Policy.Rules))
}

func newLogger(w io.Writer, c *config.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
