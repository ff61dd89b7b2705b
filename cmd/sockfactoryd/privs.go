package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/privdrop"
)

// neededCaps returns the capabilities the configured rules need, each with
// the rules that need it: binding below the first unprivileged port and the
// transparent option (IP_TRANSPARENT). bind_to_device needs none on the
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
		for _, o := range r.BindOptions {
			switch o {
			case "transparent":
				need[privdrop.CapNetAdmin] = append(need[privdrop.CapNetAdmin], fmt.Sprintf("rule %q allows the transparent option", r.Name))
			}
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
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	// The socket path is fixed here: the default depends on the uid, and
	// the child must name the socket it was given. The configuration file
	// must be readable by c.User: the child reads it (and again on reload).
	cmd.Env = append(os.Environ(), privdrop.InheritEnv+"="+strconv.Itoa(len(files)), "SOCKFACTORY_SOCKET="+c.Socket)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	done, err := privdrop.Start(cmd, t)
	closeFiles() // the child has its own copies
	if err != nil {
		log.Error("cannot start the unprivileged daemon", "user", c.User, "err", err)
		return 1
	}
	for _, l := range lns {
		l.SetUnlinkOnClose(false)
		l.Close()
	}
	log.Info("dropped privileges", "user", c.User, "uid", c.UID, "gid", c.GID, "groups", c.Groups, "capabilities", names, "pid", cmd.Process.Pid)
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err := <-done:
			os.Remove(c.Socket)
			for _, cw := range c.Clearwater {
				os.Remove(cw.Socket)
			}
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode()
			}
			if err != nil {
				log.Error("unprivileged daemon", "err", err)
				return 1
			}
			return 0
		}
	}
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
