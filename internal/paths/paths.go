// Package paths holds the default locations of the daemon's sockets, shared
// by the daemon, the client library and the CLI so that they agree.
package paths

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// EnvSocket names the environment variable that overrides the native socket
// path for clients and, when no configuration sets one, for the daemon.
const EnvSocket = "SOCKFACTORY_SOCKET"

// SystemSocket is the native socket of a daemon started as root.
const SystemSocket = "/run/sockfactory/sockfactory.sock"

// UserSocket is the native socket of a daemon started by a non-root user:
// under $XDG_RUNTIME_DIR when set, else under /tmp in a per-uid directory.
func UserSocket() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "sockfactory", "sockfactory.sock")
	}
	return filepath.Join(os.TempDir(), "sockfactory-"+strconv.Itoa(os.Getuid()), "sockfactory.sock")
}

// DaemonSocket is the path a daemon listens on when its configuration names
// none: $SOCKFACTORY_SOCKET, else SystemSocket as root, else UserSocket.
func DaemonSocket() string {
	if p := os.Getenv(EnvSocket); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return SystemSocket
	}
	return UserSocket()
}

// ClientSocket is the path a client connects to when told none:
// $SOCKFACTORY_SOCKET; else the system daemon's socket if it exists, or for a
// non-root user the per-user daemon's socket if that exists; else
// SystemSocket, so that the error names the usual place.
func ClientSocket() string {
	if p := os.Getenv(EnvSocket); p != "" {
		return p
	}
	if _, err := os.Stat(SystemSocket); err == nil || os.Geteuid() == 0 {
		return SystemSocket
	}
	if u := UserSocket(); exists(u) && ownDir(filepath.Dir(u)) {
		return u
	}
	return SystemSocket
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ownDir reports whether dir belongs to this user and only this user may
// write it: under /tmp anyone could have made it first and planted a fake
// daemon's socket there.
func ownDir(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}
