package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/daemon"
	"github.com/sockfactory/sockfactory/internal/privdrop"
)

// neededCaps returns the capabilities the configured rules need, each with
// the rules that need it: binding below the first unprivileged port and the
// transparent option (IP_TRANSPARENT), and entering other network
// namespaces (setns needs CAP_SYS_ADMIN). bind_to_device needs none on the
// socket before it is bound (Linux 5.7 and later).
func neededCaps(c *config.Config) map[uintptr][]string {
	need := map[uintptr][]string{}
	low := unprivilegedPortStart()
	for _, r := range c.Policy.Rules {
		for _, g := range r.Bind {
			if int(g.Ports.Lo) < low && g.Ports.Hi != 0 {
				need[privdrop.CapNetBindService] = append(need[privdrop.CapNetBindService], fmt.Sprintf("rule %q grants %s (ports below %d)", r.Name, g, low))
				break
			}
		}
		for _, n := range r.Netns {
			if n != "daemon" {
				need[privdrop.CapSysAdmin] = append(need[privdrop.CapSysAdmin], fmt.Sprintf("rule %q covers network namespace %q", r.Name, n))
				break
			}
		}
		if slices.Contains(r.Netns, "caller") {
			// Another uid's namespace, from its pidfd: the kernel asks
			// for ptrace read access (and on Linux 6.5-6.10, where the
			// pidfd is signalled to prove the process lived on, kill).
			why := fmt.Sprintf("rule %q covers the caller's network namespace", r.Name)
			need[privdrop.CapSysPtrace] = append(need[privdrop.CapSysPtrace], why)
			need[privdrop.CapKill] = append(need[privdrop.CapKill], why)
		}
		for _, o := range r.BindOptions {
			switch o {
			case "transparent":
				need[privdrop.CapNetAdmin] = append(need[privdrop.CapNetAdmin], fmt.Sprintf("rule %q allows the transparent option", r.Name))
			}
		}
	}
	for _, cw := range c.Clearwater {
		if cw.Netns != "" {
			need[privdrop.CapSysAdmin] = append(need[privdrop.CapSysAdmin], fmt.Sprintf("clearwater %s connects from network namespace %q", cw.Socket, cw.Netns))
		}
	}
	return need
}

// unprivilegedPortStart is net.ipv4.ip_unprivileged_port_start (1024 when
// it cannot be read).
func unprivilegedPortStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return n
		}
	}
	return 1024
}

// reportCaps logs, at start, which configured rules the daemon cannot
// honour with the capabilities it has, and how to give them.
func reportCaps(log *slog.Logger, c *config.Config) {
	have, err := privdrop.Effective()
	if err != nil {
		log.Warn("cannot read capabilities", "err", err)
		return
	}
	var names []string
	for cp, why := range neededCaps(c) {
		name := privdrop.CapName(cp)
		if have&(1<<cp) != 0 {
			names = append(names, name)
			continue
		}
		for _, w := range why {
			log.Warn("cannot honour rule without "+name+"; requests it grants will fail",
				"reason", w, "fix", "run as root, or setcap/AmbientCapabilities= with "+name+" (docs/security.md)")
		}
	}
	sort.Strings(names)
	log.Info("privileges", "uid", os.Geteuid(), "gid", os.Getegid(), "needed_capabilities_held", names)
}

// dropPrivileges runs the daemon again as c.User with only the needed
// capabilities (privdrop.Start), handing it the listeners this root process
// has opened. This process stays only to pass signals on, and to remove the
// socket files when the daemon exits. It returns the exit code.
func dropPrivileges(log *slog.Logger, c *config.Config, lns []*net.UnixListener) int {
	var files []*os.File
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, l := range lns {
		f, err := l.File()
		if err != nil {
			closeFiles()
			log.Error("cannot pass listener", "err", err)
			return 1
		}
		files = append(files, f)
	}
	t := privdrop.Target{UID: uint32(c.UID), GID: uint32(c.GID)}
	for _, g := range c.Groups {
		t.Groups = append(t.Groups, uint32(g))
	}
	var names []string
	for cp := range neededCaps(c) {
		t.Caps = append(t.Caps, cp)
		names = append(names, privdrop.CapName(cp))
	}
	sort.Strings(names)
	self, err := os.Executable()
	if err != nil {
		closeFiles()
		log.Error("cannot find own executable", "err", err)
		return 1
	}
	// A live upgrade starts the next daemon as a child of the serving
	// one, which then exits: as a child subreaper this process adopts it,
	// and the old daemon tells it the new one's pid on this pipe (see
	// daemon.ParentEnv) before it exits.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		closeFiles()
		log.Error("cannot become a child subreaper", "err", os.NewSyscallError("prctl", err))
		return 1
	}
	reports, report, err := os.Pipe()
	if err != nil {
		closeFiles()
		log.Error("cannot make the upgrade pipe", "err", err)
		return 1
	}
	defer reports.Close()
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = append(files, report)
	// The socket path is fixed here: the default depends on the uid, and
	// the child must name the socket it was given. The configuration file
	// must be readable by c.User: the child reads it (and again on reload).
	cmd.Env = append(os.Environ(), privdrop.InheritEnv+"="+strconv.Itoa(len(files)), "SOCKFACTORY_SOCKET="+c.Socket,
		daemon.ParentEnv+"="+strconv.Itoa(3+len(files)))
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	done, err := privdrop.Start(cmd, t)
	closeFiles() // the child has its own copies
	report.Close()
	if err != nil {
		log.Error("cannot start the unprivileged daemon", "user", c.User, "err", err)
		return 1
	}
	for _, l := range lns {
		l.SetUnlinkOnClose(false)
		l.Close()
	}
	pid := cmd.Process.Pid
	log.Info("dropped privileges", "user", c.User, "uid", c.UID, "gid", c.GID, "groups", c.Groups, "capabilities", names, "pid", pid)
	upgraded := readUpgrades(reports)
	// target is the daemon signals go to: the new one as soon as the old
	// one has said it handed over (it only drains, then exits).
	target, next := pid, 0
	for {
		select {
		case s := <-sigs:
			syscall.Kill(target, s.(syscall.Signal))
		case n := <-upgraded:
			next, target = n, n
		case err := <-done:
			if next == 0 {
				// The old daemon wrote before it exited; the reader may
				// not have passed it on yet.
				select {
				case next = <-upgraded:
				case <-time.After(50 * time.Millisecond):
				}
			}
			if next > 0 {
				// The daemon handed over to next, now this process's
				// child: serve on with it.
				log.Info("the unprivileged daemon was upgraded", "old_pid", pid, "pid", next)
				pid, target, done, next = next, next, waitPID(next), 0
				continue
			}
			os.Remove(c.Socket)
			for _, cw := range c.Clearwater {
				os.Remove(cw.Socket)
			}
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			var es exitStatus
			if errors.As(err, &es) {
				return int(es)
			}
			if err != nil {
				log.Error("unprivileged daemon", "err", err)
				return 1
			}
			return 0
		}
	}
}

// readUpgrades passes on the pids the daemons write on the upgrade pipe
// ("upgraded PID" lines), until the pipe closes (every daemon holding it
// has exited).
func readUpgrades(r *os.File) <-chan int {
	out := make(chan int, 4)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "upgraded "); ok {
				if p, err := strconv.Atoi(v); err == nil && p > 0 {
					out <- p
				}
			}
		}
	}()
	return out
}

// waitPID waits for the adopted process pid and reports its end as
// cmd.Wait would.
func waitPID(pid int) <-chan error {
	done := make(chan error, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			switch {
			case err != nil:
				done <- os.NewSyscallError("wait4", err)
			case ws.Exited() && ws.ExitStatus() == 0:
				done <- nil
			case ws.Exited():
				done <- exitStatus(ws.ExitStatus())
			default:
				done <- fmt.Errorf("killed by %v", ws.Signal())
			}
			return
		}
	}()
	return done
}

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit: every held
// socket and client connection is a descriptor.
func raiseNoFile(log *slog.Logger) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		log.Warn("cannot read RLIMIT_NOFILE", "err", err)
		return
	}
	if r.Cur < r.Max {
		old := r.Cur
		r.Cur = r.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
			log.Warn("cannot raise RLIMIT_NOFILE", "err", err)
			return
		}
		log.Debug("raised RLIMIT_NOFILE", "from", old, "to", r.Cur)
	}
}

// exitStatus is an adopted daemon's non-zero exit status.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
