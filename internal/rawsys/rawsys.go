// Package rawsys makes the system calls of the request path that never
// block (non-blocking socket I/O, close, dup, socket, connect, getsockname)
// without telling the Go scheduler about them, as a C server makes them.
//
// Why by hand: golang.org/x/sys/unix and syscall wrap every call in
// entersyscall/exitsyscall, so that a call that blocks does not hold up
// the goroutines behind it. That bookkeeping has a price on a machine that
// goes idle between requests: the runtime's monitor thread (sysmon) sleeps
// deeply while nothing runs, and the first system call of the next
// request wakes it (entersyscallWakeSysmon), after which it polls every
// 20 µs for a while. On the 2-CPU machines of docs/benchmarks.md that was
// a third of the daemon's wake-ups per request and a tenth of its CPU.
// A call that cannot block gains nothing from the bookkeeping: made with
// RawSyscall, it runs on the goroutine's P like any other instruction.
//
// Only calls that return at once belong here: reads and writes with
// MSG_DONTWAIT on sockets, close of a socket without SO_LINGER, fcntl,
// socket, a non-blocking connect, getsockname. Anything that may wait
// (a blocking read, a connect on a blocking socket, a file on disk) must
// go through unix as before.
package rawsys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func errnoErr(e unix.Errno) error {
	switch e {
	case 0:
		return nil
	case unix.EAGAIN:
		return unix.EAGAIN
	case unix.EINVAL:
		return unix.EINVAL
	case unix.ENOENT:
		return unix.ENOENT
	}
	return e
}

// Recvmsg is recvmsg(2) of one buffer and its control data; flags must
// include MSG_DONTWAIT unless fd is non-blocking.
func Recvmsg(fd int, p, oob []byte, flags int) (n, oobn, recvflags int, err error) {
	var iov unix.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	var msg unix.Msghdr
	msg.Iov = &iov
	msg.Iovlen = 1
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, 0, 0, errnoErr(e)
	}
	return int(r), int(msg.Controllen), int(msg.Flags), nil
}

// Sendmsg is sendmsg(2) of one buffer and its control data to a connected
// socket; flags must include MSG_DONTWAIT unless fd is non-blocking.
func Sendmsg(fd int, p, oob []byte, flags int) (int, error) {
	var iov unix.Iovec
	if len(p) > 0 {
		iov.Base = &p[0]
		iov.SetLen(len(p))
	}
	var msg unix.Msghdr
	msg.Iov = &iov
	msg.Iovlen = 1
	if len(oob) > 0 {
		msg.Control = &oob[0]
		msg.SetControllen(len(oob))
	}
	r, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), uintptr(flags))
	if e != 0 {
		return 0, errnoErr(e)
	}
	return int(r), nil
}

// Close is close(2) of a socket without a lingering close.
func Close(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errnoErr(e)
}

// DupCloexec is fcntl(fd, F_DUPFD_CLOEXEC, 0).
func DupCloexec(fd int) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_FCNTL, uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, errnoErr(e)
	}
	return int(r), nil
}
