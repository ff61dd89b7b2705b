package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/handover"
	"github.com/sockfactory/sockfactory/internal/server"
	"github.com/sockfactory/sockfactory/internal/version"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// payload is what the running daemon hands the next one, in handover
// format version 1 (docs/operations.md, "The handover format"). Every FD
// indexes the descriptors sent with it.
type payload struct {
	// OldPID and Daemon are the sender's pid and version.
	OldPID int    `json:"old_pid"`
	Daemon string `json:"daemon"`
	// ElapsedMS is how long the upgrade had taken when the state was sent.
	ElapsedMS int64 `json:"elapsed_ms"`
	// Listeners are the front doors.
	Listeners []listenerState `json:"listeners"`
	// Server is the native server: client connections and the cache.
	Server *server.State `json:"server"`
	// StoreRecords are the names of the sender's crash records in
	// systemd's fd store, if it keeps one: the next daemon removes them
	// once its own are in.
	StoreRecords []string `json:"store_records,omitempty"`
}

// listenerState is one front door.
type listenerState struct {
	// Kind is "native" or "clearwater".
	Kind string `json:"kind"`
	Path string `json:"path"`
	FD   int    `json:"fd"`
	// Owned is true when the daemon made the socket file (and removes it
	// when it stops for good); false for systemd's.
	Owned     bool `json:"owned"`
	Activated bool `json:"activated,omitempty"`
}

// ErrUpgradeBusy is returned while another upgrade runs.
var ErrUpgradeBusy = errors.New("an upgrade is already in progress")

// upgradeRequest serves an admin's upgrade request: see upgrade.
func (d *Daemon) upgradeRequest(ctx context.Context) error {
	if err := d.upgrade(ctx); err != nil {
		return wire.Errorf(wire.CodeInternal, "upgrade failed, this daemon (pid %d) keeps serving with nothing lost: %v", os.Getpid(), err)
	}
	return nil
}

// upgrade replaces this daemon with the executable now on disk at its
// own path (docs/operations.md, "Live upgrade"). It starts it, agrees on
// a handover version, brings every front door and session to rest between
// requests, sends the state and every descriptor, waits until the new
// daemon has taken it all, then commits: from there the new daemon
// serves and this one exits (Run returns). Any failure before the commit
// kills the new process and resumes this one as it was; the error says
// why.
func (d *Daemon) upgrade(ctx context.Context) error {
	if d.o.Inherited && d.o.Parent == nil {
		return errors.New("this daemon runs under a root parent that dropped its privileges and cannot adopt a new daemon (an older sockfactoryd): restart it instead (docs/operations.md)")
	}
	// One at a time (the server decides "busy" before the request is
	// recorded: Server.BeginUpgrade), and never beside a stop.
	d.upgradeMu.Lock()
	defer d.upgradeMu.Unlock()
	if d.stopping {
		return errors.New("the daemon is stopping")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, max(d.cfg.UpgradeTimeout, time.Second))
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the daemon's own executable: %w", err)
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = childEnv()
	if d.o.Parent != nil {
		cmd.ExtraFiles = []*os.File{d.o.Parent}
		cmd.Env = append(cmd.Env, ParentEnv+"=3")
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	p, err := handover.Spawn(cmd)
	if err != nil {
		return err
	}
	d.log.Info("upgrade: new daemon started", "exe", exe, "new_pid", p.PID())
	hello, err := p.Hello(ctx)
	if err != nil {
		p.Abort()
		return err
	}
	v, err := p.Choose(hello)
	if err != nil {
		p.Abort()
		return err
	}
	d.log.Info("upgrade: handing over", "new_pid", p.PID(), "new_version", hello.Daemon, "format", v)

	for _, l := range d.cw {
		l.Pause()
	}
	resume := func(err error) error {
		p.Abort()
		d.srv.Resume()
		for _, l := range d.cw {
			l.Resume()
		}
		d.log.Warn("upgrade: resumed serving", "err", err)
		return err
	}
	t0 := time.Now()
	if err := d.srv.Pause(ctx); err != nil {
		return resume(err)
	}
	t1 := time.Now()
	body, fds, sent, err := d.export(start)
	if err != nil {
		return resume(err)
	}
	t2 := time.Now()
	err = p.Send(ctx, v, body, fds)
	sent()
	if err != nil {
		return resume(err)
	}
	t3 := time.Now()
	if err := p.Prepared(ctx); err != nil {
		return resume(err)
	}
	d.log.Debug("upgrade: phases", "start", t0.Sub(start), "pause", t1.Sub(t0), "export", t2.Sub(t1), "send", t3.Sub(t2),
		"take", time.Since(t3), "bytes", len(body), "fds", len(fds))
	// Detached before the commit: a linger timer of this registry must
	// not take out of the store a socket the new daemon now keeps there.
	reg := d.srv.Registry()
	if d.store != nil {
		reg.SetStore(nil)
	}
	if err := p.Commit(); err != nil {
		if d.store != nil {
			reg.SetStore(d.store)
			d.store.Changed()
		}
		return resume(err)
	}
	// The new daemon serves from here on.
	d.committed.Store(true)
	if d.store != nil {
		d.store.detach() // the new daemon keeps the store
		d.store = nil
	}
	if !d.o.Inherited {
		// Under a root parent, the parent stays the main process.
		d.notify.mainPID(p.PID())
	}
	if d.o.Parent != nil {
		// Before this process exits: the parent reads it then.
		if _, err := fmt.Fprintf(d.o.Parent, "upgraded %d\n", p.PID()); err != nil {
			d.log.Error("upgrade: cannot tell the root parent the new daemon's pid; it will think the daemon stopped", "err", err)
		}
	}
	d.cancel() // the watchdog and status reports are the new daemon's
	d.srv.Commit()
	// The new daemon serves the metrics, at the same address.
	d.closeMetrics(false)
	close(d.handed) // signals are the new daemon's from here on
	drain, stop := context.WithTimeout(context.Background(), d.drainTimeout())
	defer stop()
	for _, l := range d.cw {
		l.Handoff(drain)
	}
	d.log.Info("upgrade: handed over; exiting", "new_pid", p.PID(), "took", time.Since(start).Round(time.Millisecond))
	close(d.drained)
	return nil
}

// drainTimeout bounds how long the old daemon finishes the Clearwater
// requests it was serving: the longest connect timeout of them.
func (d *Daemon) drainTimeout() time.Duration {
	t := 5 * time.Second
	for _, c := range d.cfg.Clearwater {
		t = max(t, c.ConnectTimeout+time.Second)
	}
	return t
}

// childEnv is the next daemon's environment: this one's, less what
// described this process alone (its watchdog pid, sockets passed to it).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", handover.EnvFD, ParentEnv:
			continue
		}
		env = append(env, kv)
	}
	return env
}

// export writes the state out, with the listeners' descriptors first.
func (d *Daemon) export(start time.Time) ([]byte, []int, func(), error) {
	p := payload{OldPID: os.Getpid(), Daemon: version.Version}
	var fds []int
	add := func(kind, path string, i int, l *net.UnixListener) error {
		fd, err := rawFD(l)
		if err != nil {
			return fmt.Errorf("listener %s: %w", path, err)
		}
		fds = append(fds, fd)
		p.Listeners = append(p.Listeners, listenerState{Kind: kind, Path: path, FD: len(fds) - 1,
			Owned: d.doors.owned(i) && !d.o.Inherited, Activated: d.doors.Activated})
		return nil
	}
	if err := add("native", d.cfg.Socket, 0, d.doors.Native); err != nil {
		return nil, nil, nil, err
	}
	for i, c := range d.cfg.Clearwater {
		if err := add("clearwater", c.Socket, 1+i, d.doors.Clearwater[i]); err != nil {
			return nil, nil, nil, err
		}
	}
	st, sfds, done, err := d.srv.Export()
	if err != nil {
		return nil, nil, nil, err
	}
	off := len(fds)
	for i := range st.Registry.Sockets {
		st.Registry.Sockets[i].FD += off
	}
	for i := range st.Sessions {
		st.Sessions[i].FD += off
	}
	fds = append(fds, sfds...)
	p.Server = st
	if d.store != nil {
		p.StoreRecords = []string{recordName(0), recordName(1)}
	}
	p.ElapsedMS = time.Since(start).Milliseconds()
	b, err := json.Marshal(&p)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return b, fds, done, nil
}

// rawFD is l's descriptor, without changing its mode (unlike File).
func rawFD(l *net.UnixListener) (int, error) {
	rc, err := l.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// runChild is Run in a daemon started by an upgrade: it takes the
// previous daemon's state, says it is ready, and serves once committed.
// Until then it serves nothing, and any failure ends it with the previous
// daemon still serving.
func (d *Daemon) runChild(c *handover.Child) int {
	received := time.Now()
	if err := c.Hello(version.Version); err != nil {
		d.log.Error("upgrade: cannot talk to the running daemon", "err", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(d.cfg.UpgradeTimeout, time.Second))
	defer cancel()
	t0 := time.Now()
	_, body, fds, err := c.Receive(ctx)
	t1 := time.Now()
	if err != nil {
		d.log.Error("upgrade: no state received; the running daemon keeps serving", "err", err)
		c.Close()
		return 1
	}
	fail := func(err error) int {
		d.log.Error("upgrade: cannot take over; the running daemon keeps serving", "err", err)
		c.Fail(err.Error())
		return 1
	}
	closeFDs := func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil || p.Server == nil {
		closeFDs()
		if err == nil {
			err = errors.New("no server state")
		}
		return fail(fmt.Errorf("reading the state: %w", err))
	}
	t2 := time.Now()
	owned, err := d.adopt(p.Listeners, fds)
	if err != nil {
		closeFDs()
		return fail(err)
	}
	d.build()
	res := &wire.UpgradeResult{OldPID: p.OldPID, NewPID: os.Getpid(), Version: version.Version}
	if err := d.srv.Import(p.Server, fds, res); err != nil {
		d.doors.Close()
		return fail(fmt.Errorf("taking the sessions and sockets: %w", err))
	}
	res.TookMS = p.ElapsedMS + time.Since(received).Milliseconds()
	d.log.Debug("upgrade: take-over phases", "receive", t1.Sub(t0), "decode", t2.Sub(t1), "restore", time.Since(t2))
	if err := c.Prepared(); err != nil {
		d.log.Error("upgrade: the running daemon is gone; exiting", "err", err)
		return 1
	}
	if err := c.WaitCommit(ctx); err != nil {
		d.log.Error("upgrade: no commit from the running daemon, which keeps serving; exiting without serving", "err", err)
		return 1
	}
	for i, l := range d.doors.All() {
		l.SetUnlinkOnClose(owned[i])
	}
	if err := d.openStoreAfter(p.StoreRecords, len(p.StoreRecords) > 0); err != nil {
		// Serving without it beats not serving: the old daemon is gone.
		d.log.Error("cannot keep the fd store; sockets will not survive a crash", "err", err)
	}
	d.srv.Start()
	d.serve()
	if !d.o.Inherited {
		d.notify.send("MAINPID=" + fmt.Sprint(os.Getpid()))
	}
	if d.cfg.User != "" && os.Geteuid() == 0 {
		d.log.Warn("running as root: [daemon] user applies only when the daemon starts afresh, not to a live upgrade of a daemon that runs as root; restart it to drop privileges", "user", d.cfg.User)
	}
	d.ready()
	socks, refs, pending := d.srv.Registry().Summary()
	d.log.Info("upgrade: took over", "old_pid", p.OldPID, "old_version", p.Daemon, "sessions", len(p.Server.Sessions),
		"sockets", socks, "refs", refs, "pending", pending, "took_ms", res.TookMS)
	return d.loop()
}

// adopt takes the handed listeners as the front doors the configuration
// names: the same native socket and the same Clearwater listeners, by
// path. A configuration that moved, added or removed a front door is
// refused: a live upgrade keeps the front doors (restart to change them).
// It marks the listeners' descriptors in fds taken (-1) and returns, per
// front door in All's order, whether the daemon owns its file.
func (d *Daemon) adopt(ls []listenerState, fds []int) ([]bool, error) {
	cfg := d.cfg
	doors := &FrontDoors{Clearwater: make([]*net.UnixListener, len(cfg.Clearwater))}
	owned := make([]bool, 1+len(cfg.Clearwater))
	fail := func(err error) ([]bool, error) {
		doors.Close()
		return nil, err
	}
	if len(ls) != 1+len(cfg.Clearwater) {
		return fail(fmt.Errorf("the running daemon has %d front doors, the configuration %d: a live upgrade keeps the front doors; restart to change them", len(ls), 1+len(cfg.Clearwater)))
	}
	for _, l := range ls {
		if l.FD < 0 || l.FD >= len(fds) || fds[l.FD] < 0 {
			return fail(fmt.Errorf("listener %s names descriptor %d of %d", l.Path, l.FD, len(fds)))
		}
		i := -1
		switch {
		case l.Kind == "native" && l.Path == cfg.Socket:
			i = 0
		case l.Kind == "clearwater":
			for j, c := range cfg.Clearwater {
				if c.Socket == l.Path {
					i = 1 + j
				}
			}
		}
		if i < 0 {
			return fail(fmt.Errorf("the running daemon's %s listener %s is not in the configuration (native socket %s): a live upgrade keeps the front doors; restart to change them", l.Kind, l.Path, cfg.Socket))
		}
		f := os.NewFile(uintptr(fds[l.FD]), l.Path)
		fds[l.FD] = -1
		ul, err := listener(f)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("listener %s: %w", l.Path, err))
		}
		if i == 0 {
			doors.Native = ul
		} else {
			doors.Clearwater[i-1] = ul
		}
		owned[i] = l.Owned
		if l.Owned {
			doors.own(i)
		}
		doors.Activated = doors.Activated || l.Activated
	}
	for i, l := range doors.All() {
		if l == nil {
			return fail(fmt.Errorf("front door %d was not handed over", i))
		}
	}
	d.doors = doors
	return owned, nil
}

// Upgrading reports whether this process was started by a live upgrade
// (and must take its front doors from the running daemon).
func Upgrading() bool {
	_, ok := os.LookupEnv(handover.EnvFD)
	return ok
}
