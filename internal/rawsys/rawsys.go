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
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errnoErr turns a raw call's errno into its error, nil for 0. (An Errno
// below 256 boxes into an interface without allocating, so no table of
// preallocated values is needed.)
func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Recvmsg and Sendmsg each build their msghdr in place rather than
// through a shared helper: a pointer to the iovec stored through a
// parameter makes escape analysis move it (or the whole message, and the
// caller's buffers with it) to the heap, an allocation per request.

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

// Read is read(2) on a non-blocking descriptor.
func Read(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, errnoErr(e)
	}
	return int(r), nil
}

// Accept4 is accept4(2) on a non-blocking listening socket, not asking
// for the peer's address.
func Accept4(fd, flags int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, uintptr(flags), 0, 0)
	if e != 0 {
		return -1, errnoErr(e)
	}
	return int(r), nil
}

// Socket is socket(2); typ must include SOCK_NONBLOCK for the calls below
// to stay non-blocking.
func Socket(domain, typ, proto int) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(domain), uintptr(typ), uintptr(proto))
	if e != 0 {
		return -1, errnoErr(e)
	}
	return int(r), nil
}

// Connect is connect(2) of a non-blocking socket to ap (IPv4, or IPv6
// with zone, the interface index of a link-local address).
func Connect(fd int, ap netip.AddrPort, zone uint32) error {
	var e unix.Errno
	a := ap.Addr()
	if a.Is4() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
		putPort(&sa.Port, ap.Port())
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16(), Scope_id: zone}
		putPort(&sa.Port, ap.Port())
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	return errnoErr(e)
}

// putPort stores port in network byte order.
func putPort(dst *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(dst))
	b[0], b[1] = byte(port>>8), byte(port)
}

// Getsockname returns the local address of an IPv4 or IPv6 socket.
func Getsockname(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unsafe.Sizeof(rsa))
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)))
	if e != 0 {
		return netip.AddrPort{}, errnoErr(e)
	}
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1])), nil
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(p[0])<<8|uint16(p[1])), nil
	}
	return netip.AddrPort{}, unix.EAFNOSUPPORT
}

// SetBlocking clears O_NONBLOCK (and every other status flag) on fd.
func SetBlocking(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_FCNTL, uintptr(fd), unix.F_SETFL, unix.O_RDWR)
	return errnoErr(e)
}

// PeerCred returns the credentials of a UNIX socket's peer
// (SO_PEERCRED).
func PeerCred(fd int) (unix.Ucred, error) {
	var c unix.Ucred
	n := uint32(unsafe.Sizeof(c))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERCRED,
		uintptr(unsafe.Pointer(&c)), uintptr(unsafe.Pointer(&n)), 0)
	return c, errnoErr(e)
}

// SetSendTimeout sets SO_SNDTIMEO on fd.
func SetSendTimeout(fd int, tv unix.Timeval) error {
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_SNDTIMEO,
		uintptr(unsafe.Pointer(&tv)), unsafe.Sizeof(tv), 0)
	return errnoErr(e)
}
