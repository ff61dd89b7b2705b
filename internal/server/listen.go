package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// ErrAddressInUse reports a socket path on which a live daemon answers.
var ErrAddressInUse = errors.New("socket path in use by a running daemon")

// Listen creates a UNIX listener ("unixpacket" for the native protocol,
// "unix" for stream front doors) at path, creating the directory (0755) if
// needed. A stale socket file left by a daemon that died is replaced; a path
// where a daemon still answers, or that is not a socket, is left alone and
// reported. The socket file gets mode and, when gid >= 0, that group. The
// listener removes the file when closed.
func Listen(network, path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	if err := removeStale(network, path); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("setting mode of %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("setting group of %s to %d: %w", path, gid, err)
		}
	}
	return l, nil
}

// checkDir refuses a socket directory that another user could have planted
// (say /tmp/sockfactory-UID made by someone else first): it must be owned by
// this user or root, and not writable by others unless sticky (like /tmp).
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("checking socket directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("socket directory %s is owned by uid %d, not by this user or root; refusing to use it", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o002 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("socket directory %s is writable by everyone and not sticky; refusing to use it", dir)
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
