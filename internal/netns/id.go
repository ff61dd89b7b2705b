// Package netns names, identifies and enters network namespaces for the
// daemon's socket creation: a request may ask for a socket made inside a
// namespace named under /run/netns, or inside the calling process's own.
//
// It owns the syscalls of namespaces: opening and identifying namespace
// files (by the device and inode of the nsfs file, never by name alone),
// finding a caller's namespace through its pidfd, and the threads that sit
// inside each namespace in use to run socket(2) there. Only socket(2) runs
// inside a namespace; the caller does everything else (bind, connect,
// setsockopt) on the descriptor from its own thread, and a socket acts in
// the namespace it was created in. It decides nothing: the policy says who
// may use which namespace, and the caller asks it before creating.
package netns

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ID identifies a network namespace: the device and inode of its nsfs file,
// the same for every path (/run/netns/NAME, /proc/PID/ns/net) that names it
// while it exists. The zero ID names none.
type ID struct {
	Dev, Ino uint64
}

// String returns "dev:ino", the form audit lines, status and the handover
// record use; ParseID reads it back.
func (id ID) String() string {
	if id == (ID{}) {
		return ""
	}
	return strconv.FormatUint(id.Dev, 10) + ":" + strconv.FormatUint(id.Ino, 10)
}

// IsZero reports whether id names no namespace.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses String's form; "" is the zero ID.
func ParseID(s string) (ID, error) {
	if s == "" {
		return ID{}, nil
	}
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			dev, err1 := strconv.ParseUint(s[:i], 10, 64)
			ino, err2 := strconv.ParseUint(s[i+1:], 10, 64)
			if err1 == nil && err2 == nil && ino != 0 {
				return ID{Dev: dev, Ino: ino}, nil
			}
			break
		}
	}
	return ID{}, fmt.Errorf("namespace identity %q: want dev:ino", s)
}

// Caller and Daemon are the reserved namespace names: the namespace of the
// process on the other end of the request's connection, and the daemon's
// own. A namespace under /run/netns with either name cannot be asked for.
const (
	Caller = "caller"
	Daemon = "daemon"
)

// CheckName accepts a namespace name as a request or rule may give it: a
// single file name under the namespace directory (as `ip netns add` makes
// them), 1 to 64 characters of letters, digits, '.', '_' and '-', not
// starting with '.' or '-'. The reserved names pass too.
func CheckName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("network namespace name %q: must be 1 to 64 characters", name)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("network namespace name %q: must not start with %q", name, name[0])
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("network namespace name %q: only letters, digits, '.', '_' and '-' are allowed (a name under /run/netns, or %q)", name, Caller)
		}
	}
	return nil
}

// identify checks that fd is a network namespace file and returns its ID.
func identify(fd int) (ID, error) {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return ID{}, os.NewSyscallError("fstatfs", err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return ID{}, errors.New("not a namespace file (nsfs): a name under /run/netns is made by `ip netns add`")
	}
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return ID{}, os.NewSyscallError("ioctl NS_GET_NSTYPE", err)
	}
	if t != unix.CLONE_NEWNET {
		return ID{}, errors.New("a namespace, but not a network namespace")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return ID{}, os.NewSyscallError("fstat", err)
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// statID returns the ID of the file at path without opening it: for a path
// known to name an nsfs file, one statx. Callers compare it with an ID
// identify checked, so that what they trust was checked once. A link is
// not followed (a name under the namespace directory is a bind mount, and
// mounts are crossed), so it never matches a namespace.
func statID(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return ID{}, err
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// openNamespace opens path (O_PATH would do for setns, but not for the
// ioctl that tells the namespace's type) and checks it is a network
// namespace. A name under the namespace directory is a bind mount, never a
// link, so a link there is refused (O_NOFOLLOW); /proc's are links, and
// followed. The caller closes the descriptor.
func openNamespace(path string) (int, ID, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC
	if !strings.HasPrefix(path, "/proc/") {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		return -1, ID{}, os.NewSyscallError("open", err)
	}
	id, err := identify(fd)
	if err != nil {
		unix.Close(fd)
		return -1, ID{}, err
	}
	return fd, id, nil
}

// pidfdGetNetNamespace is PIDFD_GET_NET_NAMESPACE, _IO(0xFF, 4) of
// linux/pidfd.h (Linux 6.11), not yet in golang.org/x/sys.
const pidfdGetNetNamespace = 0xFF04

// peerNamespace opens the network namespace that the process on the other
// end of the UNIX socket conn is in now. The process is the one that
// connected (SO_PEERPIDFD, Linux 6.5: a pidfd of that very process, so a
// pid reused after it exited names nothing), and its namespace comes from
// the pidfd (PIDFD_GET_NET_NAMESPACE, Linux 6.11) or, on kernels between,
// from /proc/PID/ns/net checked against the pidfd afterwards: the process
// was alive after the open, so the pid was still its own. Without
// SO_PEERPIDFD it refuses: a pid alone can be reused.
func peerNamespace(conn int) (int, ID, error) {
	pidfd, err := unix.GetsockoptInt(conn, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if err != nil {
		if errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EINVAL) {
			return -1, ID{}, errors.New("this kernel has no SO_PEERPIDFD (Linux 6.5): the caller's namespace cannot be found without a pid-reuse race, so netns = \"caller\" is refused")
		}
		if errors.Is(err, unix.ESRCH) {
			return -1, ID{}, errors.New("the calling process has exited")
		}
		return -1, ID{}, os.NewSyscallError("getsockopt SO_PEERPIDFD", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.IoctlRetInt(pidfd, pidfdGetNetNamespace)
	if err == nil {
		id, err := identify(fd)
		if err != nil {
			unix.Close(fd)
			return -1, ID{}, err
		}
		return fd, id, nil
	}
	if errors.Is(err, unix.ESRCH) {
		return -1, ID{}, errors.New("the calling process has exited")
	}
	if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
		return -1, ID{}, os.NewSyscallError("ioctl PIDFD_GET_NET_NAMESPACE", err)
	}
	// Linux 6.5 to 6.10: the pid of the pidfd, its /proc file, then
	// proof that the process lived on past the open.
	pid, err := pidfdPID(pidfd)
	if err != nil {
		return -1, ID{}, err
	}
	fd, id, err := openNamespace("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil {
		return -1, ID{}, fmt.Errorf("the calling process's namespace: %w", err)
	}
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		unix.Close(fd)
		return -1, ID{}, errors.New("the calling process exited while its namespace was looked up")
	}
	return fd, id, nil
}

// pidfdPID reads the pid a pidfd refers to from its fdinfo.
func pidfdPID(pidfd int) (int, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return 0, fmt.Errorf("reading the caller's pidfd: %w", err)
	}
	const key = "\nPid:\t"
	for i := 0; i+len(key) <= len(b); i++ {
		if string(b[i:i+len(key)]) == key {
			j := i + len(key)
			k := j
			for k < len(b) && b[k] != '\n' {
				k++
			}
			pid, err := strconv.Atoi(string(b[j:k]))
			if err != nil || pid <= 0 {
				return 0, errors.New("the calling process has exited")
			}
			return pid, nil
		}
	}
	return 0, errors.New("the caller's pidfd names no pid")
}
