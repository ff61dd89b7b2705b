package privdrop

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// InheritEnv tells a re-executed daemon how many listeners it inherits
// from its root parent (fds 3, 4, ...: the native one, then each
// Clearwater one in order).
const InheritEnv = "SOCKFACTORY_INHERITED_LISTENERS"

// Handed returns how many descriptors from 3 up this process was handed on
// purpose: the listeners of InheritEnv, or those of socket activation
// (LISTEN_FDS, when LISTEN_PID is this process), whichever is more. A value
// that does not parse counts as none: the code that takes the descriptors
// reports it.
func Handed() int {
	n := 0
	if v, err := strconv.Atoi(os.Getenv(InheritEnv)); err == nil && v > 0 {
		n = v
	}
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err == nil && pid == os.Getpid() {
		if v, err := strconv.Atoi(os.Getenv("LISTEN_FDS")); err == nil && v > n {
			n = v
		}
	}
	return n
}

// SealInherited marks close-on-exec every descriptor from 3+Handed() up,
// so that no descriptor the daemon was started with but not handed on
// purpose reaches a process it starts (an open /etc/shadow of the starting
// shell, say). Call it first thing: descriptors the daemon opens itself
// are close-on-exec already.
func SealInherited() error {
	return cloexecFrom(3 + Handed())
}

// cloexecFrom marks every descriptor from first up close-on-exec, with
// close_range(2) where the kernel has CLOSE_RANGE_CLOEXEC (Linux 5.11),
// else one by one from /proc/self/fd.
func cloexecFrom(first int) error {
	err := unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("marking inherited descriptors close-on-exec: %w", os.NewSyscallError("close_range", err))
	}
	return cloexecWalk(first)
}

// cloexecWalk is cloexecFrom for kernels without CLOSE_RANGE_CLOEXEC.
func cloexecWalk(first int) error {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("marking inherited descriptors close-on-exec: %w (mount /proc)", err)
	}
	names, err := dir.Readdirnames(-1)
	dir.Close() // its own descriptor is listed too; it is gone (EBADF) below
	if err != nil {
		return fmt.Errorf("marking inherited descriptors close-on-exec: reading /proc/self/fd: %w", err)
	}
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd < first {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if errors.Is(err, unix.EBADF) {
			continue
		}
		if err == nil && flags&unix.FD_CLOEXEC == 0 {
			_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC)
		}
		if err != nil {
			return fmt.Errorf("marking descriptor %d close-on-exec: %w", fd, os.NewSyscallError("fcntl", err))
		}
	}
	return nil
}

// Listeners returns the n listeners a root parent handed down (see
// InheritEnv), or nil when it handed none; it unsets InheritEnv. The
// caller owns and closes them; they do not remove their socket files when
// closed (the root parent does).
func Listeners(n int) ([]*net.UnixListener, error) {
	v := os.Getenv(InheritEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(InheritEnv)
	got, err := strconv.Atoi(v)
	if err != nil || got != n {
		return nil, fmt.Errorf("%s=%q does not match the configuration's %d listeners: the configuration changed while the daemon started; start it again", InheritEnv, v, n)
	}
	var out []*net.UnixListener
	fail := func(err error) ([]*net.UnixListener, error) {
		for _, l := range out {
			l.Close()
		}
		// The failed one is closed already; close those not reached.
		for i := len(out) + 1; i < n; i++ {
			unix.Close(3 + i)
		}
		return nil, err
	}
	for i := range n {
		f := os.NewFile(uintptr(3+i), "inherited-listener")
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("inherited listener %d: %w", i, err))
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return fail(fmt.Errorf("inherited listener %d is not a UNIX socket", i))
		}
		ul.SetUnlinkOnClose(false) // the parent removes the files
		out = append(out, ul)
	}
	return out, nil
}
