package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrAddressInUse reports a socket path on which a live daemon answers.
var ErrAddressInUse = errors.New("socket path in use by a running daemon")

// ErrSocketReplaced reports a socket file that was replaced (by a symbolic
// link, say) between its creation and the setting of its mode and group.
var ErrSocketReplaced = errors.New("socket file replaced while it was being set up")

// Listen creates a UNIX listener ("unixpacket" for the native protocol,
// "unix" for stream front doors) at path, creating the directory (0755) if
// needed. A stale socket file left by a daemon that died is replaced; a path
// where a daemon still answers, or that is not a socket, is left alone and
// reported. The socket file gets mode and, when gid >= 0, that group. The
// listener removes the file when closed.
//
// The directory must be one nobody but root and the daemon's user can
// change (see checkDir), and the mode and group are set on the socket file
// itself, never through its path: see setOwnership.
func Listen(network, path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	dir, base := filepath.Split(path)
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	// The directory is opened once; the checks and the final lookup of the
	// socket file go through this descriptor, so that they are about the
	// same directory even if something on the way to it is renamed.
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("socket directory %s is not a directory (a symbolic link is refused too): give the path of a real directory", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("checking socket directory: %w", os.NewSyscallError("open", err))
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return nil, fmt.Errorf("checking socket directory: %w", os.NewSyscallError("fstat", err))
	}
	if err := checkDir(dir, &st); err != nil {
		return nil, err
	}
	if err := removeStale(network, path); err != nil {
		return nil, err
	}
	// Until setOwnership has run, only the owner may use the socket: the
	// file is created with the socket's own inode mode (minus the umask),
	// so set that before bind.
	var ctlErr error
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		if err := c.Control(func(fd uintptr) {
			ctlErr = os.NewSyscallError("fchmod", unix.Fchmod(int(fd), uint32(mode.Perm()&0o700)))
		}); err != nil {
			return err
		}
		return ctlErr
	}}
	ln, err := lc.Listen(context.Background(), network, path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	l := ln.(*net.UnixListener)
	if err := setOwnership(dfd, dir, base, mode, gid); err != nil {
		// Close unlinks path: whatever is there now (our socket, or a link
		// put in its place) is only a name in a directory we may write.
		l.Close()
		return nil, err
	}
	return l, nil
}

// setOwnership gives the socket file base in the directory dfd its group
// and mode. It must not act on anything else: chmod and chown on the path
// follow symbolic links, and whoever can write the directory could rename a
// link to any file over the socket after bind and have this daemon (often
// root) change that file's mode. So the file is opened with O_PATH and
// O_NOFOLLOW (a link is opened as itself), checked to be a socket owned by
// this user with one name, and changed through that descriptor, which keeps
// naming the same inode whatever happens to the path afterwards.
//
// Binding in a private directory and renaming the socket into place would
// also avoid the race, but a listener's address (and the file its Close
// removes) is the path given to bind, so the listener would name the
// private path. fchmodat2 takes AT_EMPTY_PATH since Linux 6.6; before, the
// mode is set through /proc/self/fd, as glibc does for fchmodat with
// AT_SYMLINK_NOFOLLOW.
func setOwnership(dfd int, dir, base string, mode os.FileMode, gid int) error {
	path := filepath.Join(dir, base)
	fd, err := unix.Openat(dfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the new socket %s: %w", path, os.NewSyscallError("openat", err))
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("checking the new socket %s: %w", path, os.NewSyscallError("fstat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || int(st.Uid) != os.Geteuid() || st.Nlink != 1 {
		return fmt.Errorf("%s: %w (found mode %o, uid %d, %d links): someone else can write %s; choose a directory only root and the daemon's user can write", path, ErrSocketReplaced, st.Mode, st.Uid, st.Nlink, dir)
	}
	if gid >= 0 {
		if err := unix.Fchownat(fd, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("setting group of %s to %d: %w", path, gid, os.NewSyscallError("fchownat", err))
		}
	}
	err = os.NewSyscallError("fchmodat2", unix.Fchmodat(fd, "", uint32(mode.Perm()), unix.AT_EMPTY_PATH))
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = os.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode.Perm())
	}
	if err != nil {
		return fmt.Errorf("setting mode of %s: %w", path, err)
	}
	return nil
}

// checkDir refuses a socket directory that someone other than root and the
// daemon's user could change. Such a directory could have been planted
// (say /tmp/sockfactory-UID made by someone else first), and whoever can
// rename files in it can put their own socket, or a link, at the socket's
// path. It must be owned by this user or root and writable by no one else,
// unless sticky (like /tmp), where others cannot rename or remove the
// daemon's files.
func checkDir(dir string, st *unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("socket directory %s is owned by uid %d, not by this user or root; refusing to use it", dir, st.Uid)
	}
	if st.Mode&unix.S_ISVTX != 0 {
		return nil
	}
	if st.Mode&0o002 != 0 {
		return fmt.Errorf("socket directory %s is writable by everyone and not sticky; refusing to use it: run chmod o-w %s, or choose a directory only root and the daemon's user can write", dir, dir)
	}
	if st.Mode&0o020 != 0 {
		return fmt.Errorf("socket directory %s is writable by its group (gid %d) and not sticky; refusing to use it, as a member could replace the socket: run chmod g-w %s, or choose a directory only root and the daemon's user can write", dir, st.Gid, dir)
	}
	return nil
}

// removeStale removes path if it is a socket nobody listens on.
func removeStale(network, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialUnix(network, nil, &net.UnixAddr{Name: path, Net: network})
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("%s: %w; stop it first or choose another path", path, ErrAddressInUse)
	case errors.Is(err, syscall.ECONNREFUSED):
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing stale socket %s: %w", path, err)
		}
		return nil
	case errors.Is(err, syscall.EPROTOTYPE):
		return fmt.Errorf("%s: a socket of another type is listening there; choose another path", path)
	default:
		return fmt.Errorf("checking whether %s is in use: %w", path, err)
	}
}
