// Package testnet holds network fixtures for tests: loopback listeners with
// known behaviour. Only tests import it.
package testnet

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// FullQueue returns a loopback TCP address whose accept queue is full: the
// SYN of a further connect is dropped, so that connect stays in progress
// until the queue drains and the SYN is sent again (after about a second).
// drain accepts and closes what is queued. Everything is closed when the
// test ends.
func FullQueue(t testing.TB) (ap netip.AddrPort, drain func()) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	in := sa.(*unix.SockaddrInet4)
	ap = netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port))
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", ap.String(), 300*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Fatal("the accept queue of a listen(fd, 0) socket never filled")
		}
	}
	return ap, func() {
		for {
			nfd, _, err := unix.Accept(fd)
			if err != nil {
				return
			}
			unix.Close(nfd)
		}
	}
}

// Sink returns the address of a loopback TCP listener that accepts every
// connection and closes it at once. It is closed when the test ends.
func Sink(t testing.TB) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// OpenFDs counts this process's open descriptors (from /proc/self/fd), for
// tests that check nothing is left open.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// ClosedPort returns a loopback TCP address (port chosen by the kernel)
// where a connect is refused: a socket is bound there but does not listen,
// and without SO_REUSEADDR it keeps any other socket, and any outgoing
// connection's local port, off that port until the test ends. Unlike a
// port that was free a moment ago, nothing else can start listening on it.
func ClosedPort(t testing.TB) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(os.NewSyscallError("socket", err))
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(os.NewSyscallError("bind", err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(os.NewSyscallError("getsockname", err))
	}
	in := sa.(*unix.SockaddrInet4)
	return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port))
}
