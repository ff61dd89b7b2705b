package server

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestListenSymlinkRace: while Listen runs again and again, another
// goroutine renames a symbolic link to a secret 0600 file over the socket
// each time it appears (what a user who can write the socket directory could
// do between bind and chmod). The secret's mode must never change: Listen
// sets the mode on the socket it created, not through the path. The old
// code, chmod(path) after bind, turned the secret into 0666 within a few
// hundred tries.
func TestListenSymlinkRace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root only\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")

	var (
		stop    atomic.Bool
		swapped atomic.Int64
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			fi, err := os.Lstat(path)
			if err != nil || fi.Mode().Type() != os.ModeSocket {
				continue
			}
			os.Remove(link)
			if err := os.Symlink(secret, link); err != nil {
				continue
			}
			if os.Rename(link, path) == nil {
				swapped.Add(1)
			}
		}
	}()
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()

	before := countFDs(t)
	const tries = 2000
	var replaced int
	for i := range tries {
		l, err := Listen("unix", path, 0o666, -1)
		switch {
		case err == nil:
			l.Close()
		case errors.Is(err, ErrSocketReplaced):
			replaced++
		}
		os.Remove(path) // the link, when the swap came after Close
		fi, err := os.Stat(secret)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("try %d (%d links swapped in so far): the secret file's mode is %v; want 0600 untouched (Listen changed the file a link points to)", i, swapped.Load(), fi.Mode().Perm())
		}
	}
	stop.Store(true)
	wg.Wait()
	if swapped.Load() == 0 {
		t.Fatalf("no link swapped in over %d tries; the race was not exercised", tries)
	}
	if after := countFDs(t); after != before {
		t.Errorf("open fds: got %d after the tries, want %d as before", after, before)
	}
	t.Logf("%d tries, %d links swapped in, %d caught as ErrSocketReplaced", tries, swapped.Load(), replaced)
}

// TestListenDir: a socket directory that anyone but root and the daemon's
// user can change is refused with a message saying what to do, and no
// socket is left; sticky directories (like /tmp) and private ones are used,
// and the socket gets exactly the mode and group asked for, whatever the
// umask.
func TestListenDir(t *testing.T) {
	gid := os.Getegid()
	if os.Geteuid() == 0 {
		gid = 65534 // root may give the socket any group
	}
	cases := []struct {
		name string
		mode os.FileMode // of the directory
		link bool        // the directory is a symbolic link to one of mode
		want string      // part of the error; "" for success
	}{
		{name: "private", mode: 0o700},
		{name: "0755", mode: 0o755},
		{name: "sticky 1777", mode: 0o777 | os.ModeSticky},
		{name: "sticky 1770", mode: 0o770 | os.ModeSticky},
		{name: "group-writable 0775", mode: 0o775, want: "is writable by its group (gid "},
		{name: "group-writable 0770", mode: 0o770, want: "not sticky; refusing to use it, as a member could replace the socket: run chmod g-w "},
		{name: "everyone 0777", mode: 0o777, want: "is writable by everyone and not sticky; refusing to use it: run chmod o-w "},
		{name: "everyone 0703", mode: 0o703, want: "choose a directory only root and the daemon's user can write"},
		{name: "symlink", mode: 0o755, link: true, want: "is not a directory (a symbolic link is refused too)"},
	}
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			dir := filepath.Join(top, "d")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.link {
				if err := os.Symlink(dir, filepath.Join(top, "l")); err != nil {
					t.Fatal(err)
				}
				dir = filepath.Join(top, "l")
			}
			path := filepath.Join(dir, "s.sock")
			before := countFDs(t)
			l, err := Listen("unixpacket", path, 0o660, gid)
			if tc.want != "" {
				if err == nil {
					l.Close()
					t.Fatalf("Listen in a %v directory: no error; want one containing %q", tc.mode, tc.want)
				}
				if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) {
					t.Fatalf("Listen in a %v directory: %v; want an error naming %s and containing %q", tc.mode, err, dir, tc.want)
				}
				if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind by the refused Listen (err %v)", path, err)
				}
			} else {
				if err != nil {
					t.Fatalf("Listen in a %v directory: %v", tc.mode, err)
				}
				fi, err := os.Lstat(path)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 || int(st.Gid) != gid {
					t.Errorf("socket file: mode %v, gid %d; want a socket, 0660 (umask 077 notwithstanding), gid %d", fi.Mode(), st.Gid, gid)
				}
				c, err := net.Dial("unixpacket", path)
				if err != nil {
					t.Fatalf("dialing the new socket: %v", err)
				}
				c.Close()
				l.Close()
				if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still there after Close (err %v); want it removed", path, err)
				}
			}
			if after := countFDs(t); after != before {
				t.Errorf("open fds: got %d after Listen, want %d as before", after, before)
			}
		})
	}
}
