package sockfactory_test

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
)

// TestUnavailableSaysWhatToDo checks that a Client that cannot reach its
// daemon says what is wrong with the socket and what to do, in the caller's
// terms, and keeps ErrUnavailable and the errno reachable.
func TestUnavailableSaysWhatToDo(t *testing.T) {
	checkFDs(t)
	dir := t.TempDir()
	tests := []struct {
		name  string
		path  func(t *testing.T) string
		errno syscall.Errno
		want  []string // %s is the socket's path
	}{
		{"no socket", func(t *testing.T) string { return filepath.Join(dir, "none.sock") }, syscall.ENOENT,
			[]string{"no daemon socket at %s", "start sockfactoryd", "set SOCKFACTORY_SOCKET (or Client.Socket)"}},
		{"nobody listening", func(t *testing.T) string { return staleSocket(t, filepath.Join(dir, "stale.sock")) }, syscall.ECONNREFUSED,
			[]string{"nothing listens on %s", "start sockfactoryd", "set SOCKFACTORY_SOCKET (or Client.Socket)"}},
		{"not this user's", func(t *testing.T) string { return closedSocket(t, filepath.Join(dir, "closed.sock")) }, syscall.EACCES,
			[]string{"%s exists but this user (uid " + strconv.Itoa(os.Getuid()) + ") may not open it", "ls -l %s", "set SOCKFACTORY_SOCKET (or Client.Socket) to a daemon of your own"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t)
			err := statusWithoutDACOverride(t, path)
			checkErrIs(t, err, sockfactory.ErrUnavailable, tt.errno)
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "%s", path); !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "sockfactory: sockfactory:") {
				t.Errorf("error %q repeats its prefix", err)
			}
		})
	}
}

// staleSocket leaves a socket file at path that nothing listens on, as a
// daemon killed with SIGKILL does.
func staleSocket(t *testing.T, path string) string {
	t.Helper()
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	return path
}

// closedSocket listens at path with no permission bits for anyone; it is
// closed at cleanup.
func closedSocket(t *testing.T, path string) string {
	t.Helper()
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	return path
}

// statusWithoutDACOverride asks the daemon at path for its status from a
// thread without CAP_DAC_OVERRIDE, so that file permissions apply to it as
// to an ordinary user even when the tests run as root. The thread is never
// handed back to the runtime: it ends with its goroutine.
func statusWithoutDACOverride(t *testing.T, path string) error {
	t.Helper()
	type result struct{ err, capErr error }
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- result{capErr: err}
			return
		}
		for _, c := range []uint{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH} {
			data[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- result{capErr: err}
			return
		}
		c := &sockfactory.Client{Socket: path}
		defer c.Close()
		_, err := c.Status(t.Context())
		done <- result{err: err}
	}()
	r := <-done
	if r.capErr != nil {
		t.Fatalf("dropping CAP_DAC_OVERRIDE on a thread: %v", r.capErr)
	}
	return r.err
}
