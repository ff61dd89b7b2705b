package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// notifier speaks sd_notify(3) to the service manager, when NOTIFY_SOCKET
// is set; every method does nothing otherwise. Plain messages go through
// go-systemd's SdNotify; messages that carry descriptors (the fd store)
// through sendFDs, which go-systemd lacks (it has no
// sd_pid_notify_with_fds).
type notifier struct {
	addr string
	log  *slog.Logger
}

func newNotifier(log *slog.Logger) *notifier {
	return &notifier{addr: os.Getenv("NOTIFY_SOCKET"), log: log}
}

func (n *notifier) enabled() bool { return n != nil && n.addr != "" }

// send sends state; a failure is logged once per call, never fatal: the
// daemon serves with or without its manager listening.
func (n *notifier) send(state string) {
	if !n.enabled() {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

func (n *notifier) ready() { n.send(daemon.SdNotifyReady) }
func (n *notifier) status(s string) {
	n.send("STATUS=" + s)
}

// reloading tells the manager a reload began, with the CLOCK_MONOTONIC
// time Type=notify-reload needs; ready must follow.
func (n *notifier) reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec())
}

func (n *notifier) stopping() { n.send(daemon.SdNotifyStopping) }

// mainPID tells the manager that pid is the service's main process now
// (after a live upgrade, sent by the old main process, which is the only
// one NotifyAccess=main lets speak).
func (n *notifier) mainPID(pid int) { n.send("MAINPID=" + strconv.Itoa(pid)) }

// sendFDs sends state with fds as SCM_RIGHTS, as sd_pid_notify_with_fds
// does: one datagram on a socket of its own, to the manager's address
// (a path, or an abstract name when it begins with @), without waiting
// when the manager's queue is full.
func (n *notifier) sendFDs(state string, fds []int) error {
	if !n.enabled() {
		return nil
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// Never wait for the manager: the registry calls this with its lock
	// held (a full queue is an error the caller reports).
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: n.addr}, unix.MSG_DONTWAIT); err != nil {
		return os.NewSyscallError("sendmsg", err)
	}
	return nil
}

// watchdog proves the request path works and tells the manager so, every
// half of WATCHDOG_USEC, for as long as ctx lives: it connects to the
// native socket as a client would, sends a hello and waits for the reply
// (which takes the cache's lock). A daemon whose accept loop, sessions or
// cache are stuck sends nothing, and the manager restarts it. When the
// daemon's own user may not connect to its socket (a socket_group it is
// not in), the probe runs over a socketpair served like an accepted
// connection instead (serve).
func watchdog(ctx context.Context, n *notifier, log *slog.Logger, path string, serve func(*net.UnixConn)) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("watchdog settings unreadable; not sending WATCHDOG=1", "err", err)
		return
	}
	if interval <= 0 || !n.enabled() {
		return
	}
	viaPath := true
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		c, err := probeConn(ctx, path, viaPath, serve)
		if err == nil {
			err = probe(c, interval/2)
		}
		if errors.Is(err, os.ErrPermission) && viaPath {
			log.Info("watchdog: the daemon's own user may not connect to its socket; probing over a socketpair", "socket", path)
			viaPath = false
			continue
		}
		if err == nil {
			n.send(daemon.SdNotifyWatchdog)
		} else if ctx.Err() == nil {
			log.Error("watchdog probe failed; not telling the manager all is well", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeConn opens a connection for one probe.
func probeConn(ctx context.Context, path string, viaPath bool, serve func(*net.UnixConn)) (*net.UnixConn, error) {
	if viaPath {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unixpacket", path)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "watchdog")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			for _, c := range conns {
				if c != nil {
					c.Close()
				}
			}
			return nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	serve(conns[1])
	return conns[0], nil
}

// probe sends a hello on c and reads the reply, within d; it closes c.
func probe(c *net.UnixConn, d time.Duration) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	b, err := wire.Encode(&wire.Request{V: wire.Version, ID: 1, Op: wire.OpHello, Hello: &wire.HelloRequest{App: "sockfactoryd-watchdog"}})
	if err != nil {
		return err
	}
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("watchdog probe: %w", err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("watchdog probe: no reply: %w", err)
	}
	rep, err := wire.DecodeReply(buf[:n])
	if err != nil {
		return fmt.Errorf("watchdog probe: %w", err)
	}
	if rep.Error != nil || !rep.OK {
		return fmt.Errorf("watchdog probe: the daemon answered %+v", rep.Error)
	}
	return nil
}
