package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/testnet"
)

// peerEnv makes the test binary a peer process: it connects to the UNIX
// socket the variable names and waits to be killed.
const peerEnv = "SOCKFACTORY_NETNS_TEST_PEER"

func TestMain(m *testing.M) {
	if path := os.Getenv(peerEnv); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer c.Close()
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCheckName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"signalling", true}, {"ns-1.a_b", true}, {Caller, true}, {Daemon, true},
		{"", false}, {".", false}, {"..", false}, {"-x", false}, {"a/b", false}, {"a b", false},
		{"a\x00", false}, {strings.Repeat("a", 65), false}, {strings.Repeat("a", 64), true}, {"ü", false},
	} {
		if err := CheckName(c.name); (err == nil) != c.ok {
			t.Errorf("CheckName(%q) = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

func TestParseID(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ID
		ok   bool
	}{
		{"", ID{}, true}, {"4:4026531840", ID{4, 4026531840}, true},
		{"4", ID{}, false}, {"4:", ID{}, false}, {":5", ID{}, false}, {"4:0", ID{}, false}, {"a:b", ID{}, false},
	} {
		got, err := ParseID(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseID(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if c.ok && got.String() != c.in {
			t.Errorf("ParseID(%q).String() = %q", c.in, got.String())
		}
	}
}

// addNetns makes a named namespace with `ip netns add` under the manager's
// default directory, removed when the test ends.
func addNetns(t testing.TB) string {
	t.Helper()
	testnet.RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		testnet.SkipOrFail(t, "ip (iproute2) is needed to name namespaces: apt-get install iproute2")
	}
	name := fmt.Sprintf("sftest-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testnet.SkipOrFail(t, fmt.Sprintf("ip netns add: %v: %s", err, out))
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// socketNetns returns the ID of the namespace fd's socket was made in.
func socketNetns(t *testing.T, fd int) ID {
	t.Helper()
	nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		t.Fatalf("SIOCGSKNS: %v", err)
	}
	defer unix.Close(nsfd)
	id, err := identify(nsfd)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// threadsIn counts this process's threads in namespace id.
func threadsIn(t *testing.T, id ID) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/task/"+e.Name()+"/ns/net", &st); err == nil && (ID{st.Dev, st.Ino}) == id {
			n++
		}
	}
	return n
}

func TestIntegrationNamedSocket(t *testing.T) {
	name := addNetns(t)
	gone := make(chan ID, 1)
	m, err := New(Options{Check: 50 * time.Millisecond, Gone: func(id ID, _ string) { gone <- id }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	baseFDs := testnet.OpenFDs(t)

	tg, err := m.Named(name)
	if err != nil {
		t.Fatalf("Named(%q): %v", name, err)
	}
	if tg.Own() || tg.ID == m.Self() || tg.Name != name {
		t.Fatalf("Named(%q) = %+v; want another namespace than the daemon's %v", name, tg, m.Self())
	}
	// Many at once: every socket is made in the namespace, whichever
	// thread makes it, and no thread stays there.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			fd, err := tg.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err != nil {
				errs <- err
				return
			}
			defer unix.Close(fd)
			if got := socketNetns(t, fd); got != tg.ID {
				errs <- fmt.Errorf("socket made in %v, want %v", got, tg.ID)
			}
			if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
				errs <- errors.New("socket is not close-on-exec")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := threadsIn(t, tg.ID); n != 0 {
		t.Errorf("%d threads left in the namespace, want none", n)
	}
	// The same name again is the same namespace and group.
	if tg2, err := m.Named(name); err != nil || tg2.ID != tg.ID || tg2.g != tg.g {
		t.Errorf("Named again = %+v, %v; want the same group", tg2, err)
	}
	// A socket kept across the namespace's removal still works there.
	keep, err := tg.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(keep)

	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	select {
	case id := <-gone:
		if id != tg.ID {
			t.Errorf("Gone(%v), want %v", id, tg.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the removed name was not noticed")
	}
	if n := threadsIn(t, tg.ID); n != 0 {
		t.Errorf("%d threads still in the removed namespace", n)
	}
	if _, err := tg.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0); !errors.Is(err, errGone) {
		t.Errorf("socket in a dropped group: %v, want errGone", err)
	}
	if _, err := m.Named(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Named(removed) = %v, want fs.ErrNotExist", err)
	}
	if err := unix.Bind(keep, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Errorf("binding the kept socket after the removal: %v", err)
	}
	unix.Close(keep)
	keep = -1
	if got := testnet.OpenFDs(t); got != baseFDs {
		t.Errorf("open fds %d, want the baseline %d", got, baseFDs)
	}
}

func TestIntegrationRepointedName(t *testing.T) {
	name := addNetns(t)
	m, err := New(Options{Check: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	first, err := m.Named(name)
	if err != nil {
		t.Fatal(err)
	}
	// Re-point the name at another namespace, as an admin (or an
	// attacker with write access to the directory) could.
	exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	second, err := m.Named(name)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID || second.g == first.g {
		t.Fatalf("a re-pointed name gave the old namespace %v", first.ID)
	}
	fd, err := second.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if got := socketNetns(t, fd); got != second.ID {
		t.Errorf("socket made in %v, want the name's new namespace %v", got, second.ID)
	}
}

func TestIntegrationNotANamespace(t *testing.T) {
	testnet.RequireRoot(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "plain"), []byte("x"), 0o644)
	os.Symlink("/proc/self/ns/net", filepath.Join(dir, "link"))
	os.Symlink("/proc/self/ns/uts", filepath.Join(dir, "uts"))
	m, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct{ name, want string }{
		{"plain", "not a namespace file"},
		{"link", "too many levels of symbolic links"},
		{"missing", "ip netns add missing"},
		{"../x", "must not start"},
		{"a/x", "only letters"},
	} {
		if _, err := m.Named(c.name); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Named(%q) = %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if tg, err := m.Named(Daemon); err != nil || !tg.Own() {
		t.Errorf("Named(daemon) = %+v, %v; want the daemon's own", tg, err)
	}
}

func TestIntegrationPeer(t *testing.T) {
	name := addNetns(t)
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peer := func(t *testing.T, cmd *exec.Cmd) Target {
		t.Helper()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		l.SetDeadline(time.Now().Add(10 * time.Second))
		c, err := l.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, _ := c.SyscallConn()
		tg, err := m.Peer(rc)
		if err != nil {
			t.Fatalf("Peer: %v", err)
		}
		return tg
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	connect := []string{"env", peerEnv + "=" + path, exe}
	own := peer(t, exec.Command(connect[0], connect[1:]...))
	if !own.Own() || own.Name != Caller {
		t.Errorf("a peer in the daemon's namespace: %+v, want the daemon's own", own)
	}
	in := peer(t, exec.Command("ip", append([]string{"netns", "exec", name}, connect...)...))
	want, err := statID(filepath.Join(DefaultDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if in.Own() || in.ID != want {
		t.Errorf("a peer in %s: %+v, want namespace %v", name, in, want)
	}
}

// TestIntegrationStuckThread: a thread that cannot go back to the
// daemon's namespace ends its goroutine (and with it, being locked, the
// thread): nothing else ever runs there.
func TestIntegrationStuckThread(t *testing.T) {
	name := addNetns(t)
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tg, err := m.Named(name)
	if err != nil {
		t.Fatal(err)
	}
	var r [2]int
	if err := unix.Pipe2(r[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(r[0])
	defer unix.Close(r[1])
	called := make(chan error, 1)
	old := goexitInNamespace
	goexitInNamespace = func(err error) { called <- err; old(err) }
	defer func() { goexitInNamespace = old }()
	done := make(chan struct{})
	returned := false
	go func() {
		defer close(done)
		// "Back" to a pipe: setns(2) refuses it, as it would a
		// namespace that could not be re-entered.
		tg.g.mu.RLock()
		defer tg.g.mu.RUnlock()
		inNamespace(tg.g.fd, r[0], unix.AF_INET, unix.SOCK_DGRAM, 0)
		returned = true
	}()
	<-done
	select {
	case <-called:
	default:
		t.Fatal("the goroutine ended without the stuck-thread path")
	}
	if returned {
		t.Error("inNamespace returned on a thread stuck in another namespace")
	}
	// The runtime ends the thread; the main thread, which cannot end,
	// it parks for good instead (it never runs Go code again).
	stuck := func() int {
		n := threadsIn(t, tg.ID)
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", os.Getpid()), &st) == nil && (ID{st.Dev, st.Ino}) == tg.ID {
			n--
		}
		return n
	}
	if !poll(5*time.Second, func() bool { return stuck() == 0 }) {
		t.Errorf("%d threads other than the main one remain in the namespace", stuck())
	}
}

func poll(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
