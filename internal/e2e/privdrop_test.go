package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// unusedUID returns a uid with no passwd entry, and the one after it also
// without one.
func unusedUID(t *testing.T) int {
	t.Helper()
	var unknown user.UnknownUserIdError
	for uid := 3000000000; uid < 3000000100; uid++ {
		_, err1 := user.LookupId(strconv.Itoa(uid))
		_, err2 := user.LookupId(strconv.Itoa(uid + 1))
		if errors.As(err1, &unknown) && errors.As(err2, &unknown) {
			return uid
		}
	}
	t.Fatal("every uid from 3000000000 to 3000000100 has a passwd entry")
	return 0
}

// loopbackUp brings up lo in the network namespace of pid (one made with
// inNewNetns), so that 127.0.0.1 and ::1 work there.
func loopbackUp(t *testing.T, pid int) {
	t.Helper()
	out, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", pid), "ip", "link", "set", "lo", "up").CombinedOutput()
	if err != nil {
		t.Fatalf("bringing up lo in the namespace of pid %d: %v\n%s (needs nsenter and ip: util-linux, iproute2)", pid, err, out)
	}
}

// childrenOf returns the pids of pid's children, from every thread's
// /proc/PID/task/TID/children (a child is listed under the thread that
// started it).
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	files, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil || len(files) == 0 {
		t.Fatalf("listing the threads of pid %d: %v", pid, err)
	}
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread has ended
		}
		for _, s := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(s)
			if err != nil {
				t.Fatalf("%s: %q", f, b)
			}
			out = append(out, n)
		}
	}
	return out
}

// TestIntegrationPrivilegeDrop: started as root in a network namespace of
// its own, with [daemon] user a uid that has no passwd entry, a rule that
// needs CAP_NET_BIND_SERVICE, and a root-only 0600 file open without
// close-on-exec on fds 3 and 9 (as a careless starting shell would leave
// it), the daemon serves from a child whose /proc/PID/status shows the
// configured uid, gid and supplementary groups (none by default),
// CAP_NET_BIND_SERVICE alone in its bounding, permitted, effective and
// ambient sets, and no_new_privs; whose /proc/PID/fd holds no link to the
// file and no other file but /dev/null (and the Go runtime's cgroup
// files); and that can still bind port 80. The
// root parent keeps its copies of the file, marked close-on-exec.
func TestIntegrationPrivilegeDrop(t *testing.T) {
	requireRoot(t)
	uid := unusedUID(t)
	secret := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte("root:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(secret)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tests := []struct {
		name, daemon string
		gid          int
		groups       string
	}{
		{"numeric uid, no groups", fmt.Sprintf("user = \"%d\"", uid), uid, ""},
		{"group and supplementary groups", fmt.Sprintf("user = \"%d\"\ngroup = \"%d\"\nsupplementary_groups = [%d, \"0\"]", uid, uid+1, uid+1), uid + 1, fmt.Sprintf("0 %d", uid+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := startDaemonWith(t, `
[daemon]
socket = "%SOCKET%"
`+tc.daemon+`

[[rule]]
name = "http"
users = ["root"]
bind = ["tcp:0.0.0.0:80"]
`, func(cmd *exec.Cmd) {
				cmd.ExtraFiles = []*os.File{f, nil, nil, nil, nil, nil, f} // fds 3 and 9
				cmd.SysProcAttr = inNewNetns()
			})

			// Only the serving child answers this, once it has its
			// credentials: binding port 80 needs the kept capability.
			l, err := d.client().Listen(context.Background(), "tcp", "0.0.0.0:80", nil)
			if err != nil {
				t.Fatalf("tcp port 80 from the unprivileged daemon: %v", err)
			}
			defer l.Close()
			if got := l.Addr().(*net.TCPAddr).Port; got != 80 {
				t.Errorf("listener port: got %d; want 80", got)
			}
			kids := childrenOf(t, d.cmd.Process.Pid)
			if len(kids) != 1 {
				t.Fatalf("children of the root daemon (pid %d): %v; want one", d.cmd.Process.Pid, kids)
			}
			child := kids[0]

			st := testnet.ProcStatus(t, child)
			caps := fmt.Sprintf("%016x", 1<<10) // CAP_NET_BIND_SERVICE
			for field, want := range map[string]string{
				"Uid":    fmt.Sprintf("%d\t%d\t%d\t%d", uid, uid, uid, uid),
				"Gid":    fmt.Sprintf("%d\t%d\t%d\t%d", tc.gid, tc.gid, tc.gid, tc.gid),
				"Groups": tc.groups, "NoNewPrivs": "1",
				"CapBnd": caps, "CapPrm": caps, "CapEff": caps, "CapAmb": caps,
			} {
				if got := st[field]; got != want {
					t.Errorf("unprivileged daemon (pid %d) %s: got %q; want %q", child, field, got, want)
				}
			}

			for fd, target := range testnet.ProcFDs(t, child) {
				switch {
				case target == secret:
					t.Errorf("unprivileged daemon (pid %d) fd %d is the root-only file %s its starter left open", child, fd, target)
				case strings.HasPrefix(target, "/sys/fs/cgroup/"):
					// The Go runtime's own: it keeps the cgroup's CPU
					// limit open to set GOMAXPROCS (Go 1.25 and later).
				case strings.HasPrefix(target, "/") && target != "/dev/null":
					t.Errorf("unprivileged daemon (pid %d) fd %d: unexpected file %s", child, fd, target)
				}
			}
			// The root parent marked, not closed, what it was started with.
			parent := d.cmd.Process.Pid
			for _, fd := range []int{3, 9} {
				if target := testnet.ProcFDs(t, parent)[fd]; target != secret {
					t.Errorf("root daemon fd %d: %q; want the file it was started with, %s", fd, target, secret)
					continue
				}
				info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", parent, fd))
				if err != nil {
					t.Fatal(err)
				}
				flags, err := strconv.ParseUint(testnet.ParseStatus(info)["flags"], 8, 64)
				if err != nil || flags&0o2000000 == 0 { // O_CLOEXEC
					t.Errorf("root daemon fd %d: fdinfo %q; want O_CLOEXEC in flags", fd, info)
				}
			}
		})
	}
}

// TestIntegrationPrivilegeDropUpgrade upgrades a daemon that a root parent
// started unprivileged, by `sockfactory upgrade` and by SIGUSR2 to the
// parent: the root parent adopts each new daemon, which runs with the same
// uid, no_new_privs and capabilities, holds the same sockets, and is
// stopped with the parent, which removes the socket file as before.
func TestIntegrationPrivilegeDropUpgrade(t *testing.T) {
	requireRoot(t)
	uid := unusedUID(t)
	d := startDaemonWith(t, fmt.Sprintf(`
[daemon]
socket = "%%SOCKET%%"
user = "%d"

[[rule]]
name = "root"
users = ["root"]
admin = true
bind = ["tcp:127.0.0.1:*"]
`, uid), func(cmd *exec.Cmd) { cmd.SysProcAttr = inNewNetns() })
	d.netns()
	ctx := context.Background()
	holder := d.client()
	l, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	parent := d.cmd.Process.Pid
	kids := childrenOf(t, parent)
	if len(kids) != 1 {
		t.Fatalf("children of the root daemon: %v; want one", kids)
	}
	first := testnet.ProcStatus(t, kids[0])
	status := func() string {
		t.Helper()
		c := &sockfactory.Client{Socket: d.socket}
		defer c.Close()
		ss, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return statusKey(ss)
	}
	before := status()
	for i, how := range []string{"sockfactory upgrade", "SIGUSR2 to the root parent"} {
		old := childrenOf(t, parent)[0]
		if how == "sockfactory upgrade" {
			if out, errOut, code := runCLI(t, "", nil, "--socket", d.socket, "upgrade"); code != 0 {
				t.Fatalf("upgrade: exit %d, %q %q\n%s", code, out, errOut, d.log)
			}
		} else {
			syscall.Kill(parent, syscall.SIGUSR2)
		}
		var kids []int
		waitFor(t, "the root parent to adopt the new daemon", func() bool {
			kids = childrenOf(t, parent)
			return gone(old) && len(kids) == 1 && kids[0] != old
		})
		st := testnet.ProcStatus(t, kids[0])
		for _, field := range []string{"Uid", "Gid", "Groups", "NoNewPrivs", "CapBnd", "CapPrm", "CapEff", "CapAmb"} {
			if st[field] != first[field] {
				t.Errorf("%s: new daemon %s %q; the first had %q", how, field, st[field], first[field])
			}
		}
		if got := status(); got != before {
			t.Errorf("%s: status\n%s\nwant\n%s", how, got, before)
		}
		if n := strings.Count(d.log.String(), "the unprivileged daemon was upgraded"); n != i+1 {
			t.Errorf("%s: the root parent logged %d adoptions, want %d", how, n, i+1)
		}
	}
	// d.stop (at cleanup) checks the parent stops the adopted daemon,
	// exits 0 and removes the socket file.
}
