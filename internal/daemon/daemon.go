// Package daemon runs sockfactoryd: its front doors (the native server
// and the Clearwater listeners), reloads, its conversation with systemd
// (readiness, reload, stop, status, watchdog, socket activation) and its
// live upgrade, in which it hands every socket, reference, token and
// client connection to the next daemon (upgrade.go).
//
// It wires the request-path packages together and decides nothing about
// requests itself; the command's main parses flags and drops privileges,
// then calls Run.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/broker"
	"github.com/sockfactory/sockfactory/internal/clearwater"
	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/handover"
	"github.com/sockfactory/sockfactory/internal/metrics"
	"github.com/sockfactory/sockfactory/internal/netns"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/server"
	"github.com/sockfactory/sockfactory/internal/version"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// Options configure Run.
type Options struct {
	// Config is the configuration to start with.
	Config *config.Config
	// Load reads the configuration again, for a reload.
	Load func() (*config.Config, error)
	// Logger receives every log line; Flush writes out what it holds.
	Logger *slog.Logger
	Flush  func()
	// Doors are the front doors, already open (by a root parent that
	// dropped privileges, or OpenFrontDoors); nil: Run opens them, or
	// takes them from the previous daemon in a live upgrade.
	Doors *FrontDoors
	// Inherited is true when a root parent dropped privileges and
	// started this process: it removes the socket files itself, and a
	// live upgrade is refused (the parent would take this process's
	// exit for the daemon's).
	Inherited bool
	// Signals delivers SIGTERM, SIGINT (stop), SIGHUP (reload) and
	// SIGUSR2 (upgrade).
	Signals <-chan os.Signal
	// Parent, with Inherited, is the pipe on which this process tells
	// its root parent the pid of the daemon it hands over to in a live
	// upgrade (see ParentEnv); nil: a live upgrade is refused.
	Parent *os.File
}

// ParentEnv names the descriptor of the pipe a root parent that dropped
// privileges gives the daemon: after a live upgrade has committed, the old
// daemon writes "upgraded PID\n" there before it exits, and the parent, a
// child subreaper, serves on with the new daemon it has adopted.
const ParentEnv = "SOCKFACTORY_PARENT_FD"

// ParentFromEnv returns the pipe ParentEnv names, or nil; it unsets
// ParentEnv.
func ParentFromEnv() *os.File {
	v, ok := os.LookupEnv(ParentEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(ParentEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "parent")
}

// Daemon is the running set of front doors.
type Daemon struct {
	o      Options
	log    *slog.Logger
	cfg    *config.Config
	srv    *server.Server
	cw     []*clearwater.Listener
	doors  *FrontDoors
	notify *notifier
	store  *fdStore // nil unless systemd's fd store is used
	netns  *netns.Manager
	// metrics and msrv count and serve Prometheus metrics; nil when
	// [metrics] listen is not set.
	metrics *metrics.Metrics
	msrv    *metrics.Server
	failed  chan error
	// handed is closed once a live upgrade has committed: the next
	// daemon serves, and Run returns.
	handed chan struct{}

	reloadMu  sync.Mutex
	upgradeMu sync.Mutex // held by an upgrade, and by stop
	stopping  bool       // guarded by upgradeMu
	// committed is set once an upgrade has committed; drained is closed
	// once this process has finished what it still served after it.
	committed atomic.Bool
	drained   chan struct{}
	ctx       context.Context // ends with Run
	cancel    context.CancelFunc
	loops     sync.WaitGroup
}

// Run serves until a signal stops it, a listener fails, or a live
// upgrade hands everything to the next daemon. It returns the exit code.
func Run(o Options) int {
	d := &Daemon{o: o, log: o.Logger, cfg: o.Config, notify: newNotifier(o.Logger), handed: make(chan struct{}), drained: make(chan struct{})}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	defer d.cancel()

	child, err := handover.FromEnv()
	if err != nil {
		d.log.Error("cannot start", "err", err)
		return 1
	}
	if child != nil {
		return d.runChild(child)
	}
	if d.o.Doors == nil {
		doors, err := OpenFrontDoors(d.cfg)
		if err != nil {
			d.log.Error("cannot start", "err", err)
			return 1
		}
		d.o.Doors = doors
	}
	d.doors = d.o.Doors
	d.build()
	stale := d.recover()
	if err := d.openStore(stale); err != nil {
		d.log.Error("cannot start", "err", err)
		return 1
	}
	d.serve()
	d.ready()
	return d.loop()
}

// recover restores the cache from what systemd's fd store passed back
// after a crash or a restart: every reference becomes an orphan its
// holder may reclaim for reclaim_grace. It returns the names of the
// previous daemon's crash records.
func (d *Daemon) recover() []string {
	if len(d.doors.Stored) == 0 {
		return nil
	}
	stored := d.doors.Stored
	d.doors.Stored = nil
	rec := recoverStore(d.notify, d.log, stored)
	if rec.state == nil {
		return rec.records
	}
	reg := d.srv.Registry()
	holders, err := reg.Restore(rec.state, rec.fds)
	if err != nil {
		d.log.Error("crash record rejected; starting with an empty cache", "err", err)
		for _, s := range rec.state.Sockets {
			d.notify.send("FDSTOREREMOVE=1\nFDNAME=" + storeName(registry.Key{Proto: s.Proto, Addr: s.Addr, Netns: s.Netns}))
		}
		return rec.records
	}
	reg.OnOrphansReleased(func(n int) {
		d.log.Info("reclaim grace over: released the references not reclaimed", "refs", n)
	})
	reg.Orphan(holders, d.cfg.ReclaimGrace)
	socks, refs, pending := reg.Summary()
	d.log.Info("restored from the fd store", "sockets", socks, "refs", refs, "pending", pending, "reclaim_grace", d.cfg.ReclaimGrace)
	return rec.records
}

// openStore starts keeping the fd store, when it is on; stale are a
// previous daemon's record names, removed once this one's are in.
func (d *Daemon) openStore(stale []string) error {
	return d.openStoreAfter(stale, true)
}

// openStoreAfter is openStore; stored says whether the cached sockets
// (restored, or taken in a live upgrade) are in the store already: after
// an upgrade from a daemon without the store they are pushed now, and
// when the store is off they are taken out of it.
func (d *Daemon) openStoreAfter(stale []string, stored bool) error {
	defer func() {
		if d.store == nil && len(stale) > 0 {
			// The previous daemon kept the store, this one does not:
			// take its sockets out too, or systemd would keep them.
			d.srv.Registry().EachSocket(func(k registry.Key, _ int) {
				d.notify.send("FDSTOREREMOVE=1\nFDNAME=" + storeName(k))
			})
		}
	}()
	enabled := fdStoreEnabled(d.notify, d.cfg.FDStore)
	if enabled && d.o.Inherited {
		// The root parent would not pass the stored sockets back to an
		// unprivileged daemon after a restart.
		d.log.Warn("not keeping sockets in systemd's fd store: the daemon was started by a root parent ([daemon] user); use systemd's User= and AmbientCapabilities= instead")
		enabled = false
	}
	if !enabled {
		for _, name := range stale {
			d.notify.send("FDSTOREREMOVE=1\nFDNAME=" + name)
		}
		return nil
	}
	st, err := newFDStore(d.notify, d.log, d.srv.Registry(), stale)
	if err != nil {
		return err
	}
	d.srv.Registry().SetStore(st)
	if !stored {
		st.addAll()
	}
	if err := st.start(); err != nil {
		d.srv.Registry().SetStore(nil)
		st.closeMemfds()
		return err
	}
	// Sockets cached before the store was on (restored ones are in it
	// already) would be missing: there are none, the daemon serves
	// nothing yet.
	d.store = st
	d.log.Info("keeping sockets in systemd's fd store", "records", []string{recordName(0), recordName(1)})
	return nil
}

// build makes the server and the Clearwater listeners for the
// configuration, serving nothing yet.
func (d *Daemon) build() {
	cfg := d.cfg
	conn := &connector.Connector{Resolver: connector.NewResolver(cfg.ResolverServers), MinAttempt: cfg.MinAttempt}
	var observe func(wire.Code, time.Duration) // the Clearwater listeners'
	if cfg.MetricsListen != "" {
		d.metrics = metrics.New(metrics.Options{Version: version.Version})
		d.metrics.SetRules(ruleNames(cfg.Policy))
		conn.ObserveLookup = d.metrics.ObserveLookup
		observe = d.metrics.Clearwater
	}
	d.failed = make(chan error, 1+len(cfg.Clearwater))
	var reg atomic.Pointer[registry.Registry] // set below, read by the namespaces' janitor
	namespaces := d.namespaces(&reg)
	d.srv = server.New(server.Options{
		Logger:         d.log,
		Policy:         cfg.Policy,
		Connector:      conn,
		Namespaces:     namespaces,
		ConnectTimeout: cfg.ConnectTimeout,
		MaxInFlight:    cfg.MaxInFlight,
		TokenTTL:       cfg.TokenTTL,
		Reload:         d.reload,
		Upgrade:        d.upgradeRequest,
		Limits:         serverLimits(cfg),
		Metrics:        d.metrics,
	})
	reg.Store(d.srv.Registry())
	for _, c := range cfg.Clearwater {
		d.cw = append(d.cw, clearwater.New(clearwater.Options{
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
			Logger:         d.log,
			Connector:      conn,
			Netns:          c.Netns,
			Namespaces:     namespaces,
			Observe:        observe,
		}))
	}
	if d.metrics != nil {
		cw := d.cw
		d.metrics.SetConns(metrics.Clearwater, func() int {
			n := 0
			for _, l := range cw {
				n += l.Conns()
			}
			return n
		})
	}
}

// watchNamespaces has the namespace manager watch the names of the
// namespaces the registry holds sockets in (taken over in an upgrade, or
// restored from the fd store), which no request has named since: their
// removal drops those sockets as it would have in the previous daemon.
func (d *Daemon) watchNamespaces() {
	if d.netns == nil {
		return
	}
	for _, in := range d.srv.Registry().Status(nil, true) {
		if in.Key.Netns == "" {
			continue
		}
		if id, err := netns.ParseID(in.Key.Netns); err == nil {
			d.netns.Watch(in.NetnsName, id)
		}
	}
}

// namespaces makes the namespace step of connect and bind: a manager of
// the namespaces under [netns] dir, whose removed names drop what the
// registry cached in them. Without one (no /proc), requests naming a
// namespace are refused and the rest served.
func (d *Daemon) namespaces(reg *atomic.Pointer[registry.Registry]) *broker.Namespaces {
	cfg := d.cfg
	var ns atomic.Pointer[broker.Namespaces]
	m, err := netns.New(netns.Options{Dir: cfg.NetnsDir, Gone: func(id netns.ID, name string) {
		ns.Load().Forget(name)
		n := reg.Load().DropNetns(id.String())
		d.log.Info("network namespace gone: dropped its cached sockets; sockets held keep working", "netns", name, "netns_id", id.String(), "closed", n)
	}})
	if err != nil {
		d.log.Warn("serving the daemon's own network namespace only", "err", err)
		return nil
	}
	d.netns = m
	servers := map[string][]netip.AddrPort{}
	for name, list := range cfg.ResolverNetns {
		for _, s := range list {
			servers[name] = append(servers[name], netip.MustParseAddrPort(s)) // checked by config
		}
	}
	ns.Store(broker.NewNamespaces(m, cfg.NetnsEtcDir, servers))
	return ns.Load()
}

// serve starts the accept loops on the front doors.
func (d *Daemon) serve() {
	cfg := d.cfg
	native := d.doors.Native
	d.run(func() error { return d.srv.Serve(native) }, server.ErrServerClosed)
	mode := fmt.Sprintf("%04o", cfg.SocketMode)
	if d.doors.Activated {
		mode = "systemd's" // SocketMode= of the .socket unit; socket_mode does not apply
	}
	d.log.Info("listening", "socket", cfg.Socket, "mode", mode, "activated", d.doors.Activated,
		"config", cfg.Source, "rules", len(cfg.Policy.Rules), "version", version.Version, "pid", os.Getpid())
	for i, c := range cfg.Clearwater {
		l, ln := d.cw[i], d.doors.Clearwater[i]
		d.run(func() error { return l.Serve(ln) }, clearwater.ErrClosed)
		d.log.Info("listening (clearwater)", "socket", c.Socket, "mode", fmt.Sprintf("%04o", c.SocketMode), "allowed_hosts", len(c.AllowedHosts), "allowed_hosts_dirs", c.AllowedHostsDirs, "ipv6", c.IPv6)
	}
}

// ready tells the service manager the daemon serves, and starts the
// watchdog and status reports.
func (d *Daemon) ready() {
	d.watchNamespaces()
	if d.metrics != nil {
		d.msrv = metrics.NewServer(d.metrics, d.cfg.MetricsListen, d.log)
		// In a live upgrade the previous daemon holds a TCP address
		// until it has committed: retried until it is free.
		d.msrv.Start(d.ctx, 100*time.Millisecond)
	}
	d.notify.ready()
	d.statusNow()
	d.loops.Add(2)
	go func() {
		defer d.loops.Done()
		watchdog(d.ctx, d.notify, d.log, d.cfg.Socket, d.serveProbe)
	}()
	go func() {
		defer d.loops.Done()
		d.statusLoop()
	}()
	if d.o.Flush != nil {
		d.o.Flush() // the start-up lines are not held back with the audit lines
	}
}

// serveProbe serves one watchdog probe connection as if accepted.
func (d *Daemon) serveProbe(c *net.UnixConn) { d.srv.ServeConn(c) }

// statusLoop sends STATUS= when what it says has changed, checking every
// 2 s.
func (d *Daemon) statusLoop() {
	if !d.notify.enabled() {
		return
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			if s := d.statusLine(); s != last {
				last = s
				d.notify.status(s)
			}
		}
	}
}

func (d *Daemon) statusNow() {
	if d.notify.enabled() {
		d.notify.status(d.statusLine())
	}
}

// statusLine is the one-line summary systemctl status shows.
func (d *Daemon) statusLine() string {
	socks, refs, pending := d.srv.Registry().Summary()
	return fmt.Sprintf("serving %d connections; %d held sockets, %d references, %d pending tokens", d.srv.Sessions(), socks, refs, pending)
}

// run starts one accept loop; an unexpected end is reported on d.failed.
func (d *Daemon) run(loop func() error, closed error) {
	go func() {
		if err := loop(); !errors.Is(err, closed) {
			d.failed <- err
		}
	}()
}

// loop waits for signals until the daemon stops or is handed over.
func (d *Daemon) loop() int {
	for {
		select {
		case sig := <-d.o.Signals:
			switch sig {
			case syscall.SIGHUP:
				d.reload()
				continue
			case syscall.SIGUSR2:
				if !d.srv.BeginUpgrade() {
					d.log.Warn("SIGUSR2 ignored: " + ErrUpgradeBusy.Error())
					continue
				}
				d.loops.Add(1)
				go func() {
					defer d.loops.Done()
					defer d.srv.EndUpgrade()
					if err := d.upgrade(d.ctx); err != nil {
						d.log.Error("upgrade failed; this daemon keeps serving", "err", err)
					}
				}()
				continue
			}
			d.log.Info("shutting down", "signal", sig.String())
			d.stop()
			return 0
		case err := <-d.failed:
			d.log.Error("listener failed; shutting down", "err", err)
			d.stop()
			return 1
		case <-d.handed:
			// The new daemon serves, and gets the signals (systemd's,
			// or the root parent's): this process only finishes the
			// Clearwater requests it was serving, then exits.
			<-d.drained
			return 0
		}
	}
}

// stop shuts down: STOPPING=1, then every front door closes; requests in
// flight are answered first, for at most StopTimeout.
func (d *Daemon) stop() {
	// An upgrade under way finishes (or fails) first; once one has
	// committed, the new daemon serves and this one has nothing to stop.
	d.upgradeMu.Lock()
	d.stopping = true
	d.upgradeMu.Unlock()
	if d.committed.Load() {
		<-d.drained
		return
	}
	d.notify.stopping()
	if d.msrv != nil {
		d.msrv.Stopping() // /healthz fails from now on; /metrics serves to the end
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(d.cfg.StopTimeout, time.Millisecond))
	defer cancel()
	// Pausing lets every session finish what it has in flight and send
	// the replies; what is not done by the deadline is cancelled by
	// Close (the server stays paused: nothing new is read meanwhile).
	if err := d.srv.Pause(ctx); err != nil {
		d.log.Warn("stopping with requests still in flight", "err", err)
	}
	if d.store != nil {
		// The sockets stay in the fd store, with a last record: a
		// restart finds them, and their holders reclaim them.
		d.srv.Registry().SetStore(nil)
		d.store.close()
		socks, refs, _ := d.srv.Registry().Summary()
		d.log.Info("leaving the held sockets in the fd store", "sockets", socks, "refs", refs)
	}
	d.srv.Close()
	for _, l := range d.cw {
		l.Close()
	}
	if d.netns != nil {
		d.netns.Close()
	}
	d.closeMetrics(true)
	d.cancel()
	d.loops.Wait()
}

// closeMetrics stops serving metrics; unlink removes a UNIX socket's file,
// which after a live upgrade is the next daemon's.
func (d *Daemon) closeMetrics(unlink bool) {
	if d.msrv != nil {
		d.msrv.Close(unlink)
		d.msrv.Wait()
	}
}

// ruleNames are the names of p's rules, which denials are counted by.
func ruleNames(p *policy.Policy) []string {
	if p == nil {
		return nil
	}
	out := make([]string, len(p.Rules))
	for i := range p.Rules {
		out[i] = p.Rules[i].Name
	}
	return out
}

// reload re-reads the configuration on SIGHUP: the native policy is
// replaced and every Clearwater listener re-reads its allow-list sources. A
// broken file is logged and everything running kept. Changes to sockets,
// listeners, timeouts and logging take effect only on restart.
func (d *Daemon) reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.notify.reloading()
	defer d.notify.ready()
	c, err := d.o.Load()
	if d.metrics != nil {
		d.metrics.Reloaded(err)
	}
	if err != nil {
		d.log.Error("reload failed; keeping the running configuration", "err", err)
		for _, l := range d.cw {
			l.Reload()
		}
		return err
	}
	d.srv.SetPolicy(c.Policy)
	d.srv.SetLimits(serverLimits(c))
	if d.metrics != nil {
		d.metrics.SetRules(ruleNames(c.Policy))
	}
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
	check("resolver.netns", !maps.EqualFunc(old.ResolverNetns, c.ResolverNetns, slices.Equal))
	check("netns.dir", old.NetnsDir != c.NetnsDir)
	check("netns.etc_dir", old.NetnsEtcDir != c.NetnsEtcDir)
	check("bind.token_ttl", old.TokenTTL != c.TokenTTL)
	check("bind.reclaim_grace", old.ReclaimGrace != c.ReclaimGrace)
	check("daemon.upgrade_timeout", old.UpgradeTimeout != c.UpgradeTimeout)
	check("daemon.stop_timeout", old.StopTimeout != c.StopTimeout)
	check("metrics.listen", old.MetricsListen != c.MetricsListen)
	check("daemon.fd_store", (old.FDStore == nil) != (c.FDStore == nil) || (old.FDStore != nil && *old.FDStore != *c.FDStore))
	if len(old.Clearwater) != len(c.Clearwater) {
		out = append(out, "clearwater listeners (added or removed)")
		return out
	}
	for i, o := range old.Clearwater {
		n := c.Clearwater[i]
		check("clearwater "+o.Socket, o.Netns != n.Netns || o.Socket != n.Socket || o.SocketMode != n.SocketMode || o.SocketGID != n.SocketGID ||
			o.IPv6 != n.IPv6 || o.ConnectTimeout != n.ConnectTimeout || o.ReadTimeout != n.ReadTimeout)
	}
	return out
}
