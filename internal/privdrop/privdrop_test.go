package privdrop

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/testnet"
)

// openInheritable opens /dev/null without close-on-exec, as a descriptor
// inherited from a careless parent would be, closed at cleanup.
func openInheritable(t *testing.T) int {
	t.Helper()
	fd, err := unix.Open("/dev/null", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func cloexec(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("F_GETFD on %d: %v", fd, err)
	}
	return flags&unix.FD_CLOEXEC != 0
}

// TestCloexecFrom: both ways of marking (close_range and the /proc walk)
// mark every descriptor from the first one up, and none below it.
func TestCloexecFrom(t *testing.T) {
	for name, mark := range map[string]func(int) error{"close_range": cloexecFrom, "proc walk": cloexecWalk} {
		t.Run(name, func(t *testing.T) {
			kept, a, b := openInheritable(t), openInheritable(t), openInheritable(t)
			if kept >= a || a >= b {
				t.Fatalf("descriptors %d, %d, %d not in ascending order", kept, a, b)
			}
			if err := mark(a); err != nil {
				t.Fatal(err)
			}
			for fd, want := range map[int]bool{kept: false, a: true, b: true} {
				if got := cloexec(t, fd); got != want {
					t.Errorf("descriptor %d (marking from %d): close-on-exec %v; want %v", fd, a, got, want)
				}
			}
		})
	}
}

// TestHanded: the descriptors kept open across exec are those announced
// for this process, and only those.
func TestHanded(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name                         string
		inherit, listenPID, listenFD string
		want                         int
	}{
		{"nothing", "", "", "", 0},
		{"listeners from the root parent", "2", "", "", 2},
		{"socket activation for this process", "", self, "3", 3},
		{"socket activation for another process", "", "1", "3", 0},
		{"both: the larger", "1", self, "4", 4},
		{"garbage", "x", self, "-2", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(InheritEnv, tc.inherit)
			t.Setenv("LISTEN_PID", tc.listenPID)
			t.Setenv("LISTEN_FDS", tc.listenFD)
			if got := Handed(); got != tc.want {
				t.Errorf("Handed() = %d; want %d", got, tc.want)
			}
		})
	}
}

// TestIntegrationStart: a child started by Start has, in /proc/PID/status,
// the uid, gid and supplementary groups of its Target, CAP_NET_BIND_SERVICE
// alone in every capability set, the bounding set included, and
// no_new_privs; it outlives the thread juggling (it is not sent its
// parent-death signal while this process lives); and the restriction
// stays on that one thread: a process started afterwards is not affected.
func TestIntegrationStart(t *testing.T) {
	testnet.RequireRoot(t)
	const uid, gid, group = 2000000123, 2000000124, 2000000125
	// This goroutine's thread is not the one Start restricts (that one
	// runs nothing else), so its status is the unrestricted one.
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	before := testnet.ParseStatus(b)
	cmd := exec.Command("/bin/sh", "-c", "read line && echo \"$line\"")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Not StdoutPipe: Start's Wait closes it as soon as the child exits.
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	cmd.Stdout = w
	done, err := Start(cmd, Target{UID: uid, GID: gid, Groups: []uint32{group}, Caps: []uintptr{CapNetBindService}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	w.Close()
	st := testnet.ProcStatus(t, cmd.Process.Pid)
	caps := fmt.Sprintf("%016x", 1<<CapNetBindService)
	for field, want := range map[string]string{
		"Uid": fmt.Sprintf("%d\t%d\t%d\t%d", uid, uid, uid, uid), "Gid": fmt.Sprintf("%d\t%d\t%d\t%d", gid, gid, gid, gid),
		"Groups": strconv.Itoa(group), "NoNewPrivs": "1",
		"CapBnd": caps, "CapEff": caps, "CapPrm": caps, "CapAmb": caps, "CapInh": caps,
	} {
		if got := st[field]; got != want {
			t.Errorf("child's %s: got %q; want %q", field, got, want)
		}
	}
	if _, err := io.WriteString(stdin, "still here\n"); err != nil {
		t.Fatalf("writing to the child: %v", err)
	}
	stdin.Close()
	out, err := io.ReadAll(stdout)
	if err != nil || string(out) != "still here\n" {
		t.Errorf("child's answer: %q, %v; want %q", out, err, "still here\n")
	}
	if err := <-done; err != nil {
		t.Errorf("child's exit: %v; want success (a SIGTERM here is the parent-death signal of an exited thread)", err)
	}

	after, err := exec.Command("/bin/cat", "/proc/self/status").Output()
	if err != nil {
		t.Fatal(err)
	}
	st = testnet.ParseStatus(after)
	if st["CapBnd"] != before["CapBnd"] || st["NoNewPrivs"] != "0" {
		t.Errorf("a process started after Start from another thread: CapBnd %s, NoNewPrivs %s; want CapBnd %s, NoNewPrivs 0 (the restriction leaked to other threads)",
			st["CapBnd"], st["NoNewPrivs"], before["CapBnd"])
	}
}
