package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace other than the test's own, held open by a
// descriptor: a test reaches ports there (its daemon's, its servers')
// without touching the host's, so a test may use port 53 while something
// on the machine holds it. Sockets are created inside the namespace (only
// the socket() call runs there, on a locked OS thread that then returns);
// everything else on them happens from the caller's thread, and acts in
// the namespace the socket was created in.
type Netns struct {
	f *os.File
}

// OpenNetns opens the network namespace of process pid. It is closed when
// the test ends; the namespace lives on as long as a process or socket
// uses it.
func OpenNetns(t testing.TB, pid int) *Netns {
	t.Helper()
	n, err := OpenNetnsPath(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatalf("opening the network namespace of pid %d: %v", pid, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// OpenNetnsPath opens the network namespace at path (/proc/PID/ns/net, or
// one bound under /run/netns), for helper processes that are no test. The
// caller closes it.
func OpenNetnsPath(path string) (*Netns, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &Netns{f: f}, nil
}

// Close closes n's descriptor; sockets made in n keep it alive.
func (n *Netns) Close() error { return n.f.Close() }

// Path is a path that names the namespace for as long as n is open, in
// any process: this process's descriptor of it under /proc. Unlike
// /proc/PID/ns/net it outlives the process that made the namespace.
func (n *Netns) Path() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.f.Fd())
}

// NewNetns makes a fresh network namespace, with lo up and nothing else,
// held until the test ends. Only the unshare(2) that makes it runs on a
// locked OS thread, which then goes back to the test's namespace.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		fd, err := inNetns(nil, func() (int, error) {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return -1, os.NewSyscallError("unshare", err)
			}
			fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			return fd, os.NewSyscallError("open", err)
		})
		done <- result{fd, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("making a network namespace: %v (needs root: CAP_SYS_ADMIN)", r.err)
	}
	f := os.NewFile(uintptr(r.fd), "netns")
	n := &Netns{f: f}
	t.Cleanup(func() { n.Close() })
	if err := n.LoopbackUp(); err != nil {
		t.Fatalf("bringing lo up in a new network namespace: %v", err)
	}
	return n
}

// Socket is socket(2) inside n: the descriptor is close-on-exec and the
// caller's to close. It runs on a locked OS thread of its own, which enters
// n, creates the socket and goes back to the test's namespace; a thread
// that cannot go back is never unlocked, so the runtime ends it.
func (n *Netns) Socket(domain, typ, proto int) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		fd, err := inNetns(n.f, func() (int, error) {
			fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
			return fd, os.NewSyscallError("socket", err)
		})
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}

// inNetns runs create, which makes one descriptor, with the calling
// goroutine's thread locked and in the namespace ns (the thread's own if
// ns is nil, for create to unshare), then returns the thread to its
// namespace. It closes everything it opened before it returns, so that
// callers counting descriptors see only create's. If the thread cannot
// return, it stays locked and the descriptor is closed: the caller's
// goroutine must then end, which ends the thread.
func inNetns(ns *os.File, create func() (int, error)) (int, error) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("opening this thread's network namespace: %w", os.NewSyscallError("open", err))
	}
	if ns != nil {
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			unix.Close(orig)
			runtime.UnlockOSThread()
			return -1, os.NewSyscallError("setns", err)
		}
	}
	fd, cerr := create()
	rerr := unix.Setns(orig, unix.CLONE_NEWNET)
	unix.Close(orig)
	if rerr != nil {
		if cerr == nil {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("returning from the namespace: %w", os.NewSyscallError("setns", rerr))
	}
	runtime.UnlockOSThread()
	if cerr != nil {
		return -1, cerr
	}
	return fd, nil
}

// LoopbackUp brings lo up in n (a fresh namespace has it down), so that
// 127.0.0.0/8 and ::1 work there. It is harmless when lo is up already.
func (n *Netns) LoopbackUp() error {
	fd, err := n.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return os.NewSyscallError("ioctl SIOCGIFFLAGS lo", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return os.NewSyscallError("ioctl SIOCSIFFLAGS lo", err)
	}
	return nil
}

// Listen is net.Listen inside n, for "tcp", "tcp4" or "tcp6" and a
// numeric address ("127.0.0.1:53", "[::1]:0"). The caller closes the
// listener.
func (n *Netns) Listen(network, address string) (net.Listener, error) {
	f, err := n.bound(network, address, unix.SOCK_STREAM, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}

// ListenPacket is net.ListenPacket inside n, for "udp", "udp4" or "udp6"
// and a numeric address. The caller closes the socket.
func (n *Netns) ListenPacket(network, address string) (net.PacketConn, error) {
	f, err := n.bound(network, address, unix.SOCK_DGRAM, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FilePacketConn(f)
}

// DialContext is net.Dialer.DialContext inside n, for TCP or UDP and a
// numeric address; it gives up when ctx ends. The caller closes the
// connection. A refused TCP connect's error matches syscall.ECONNREFUSED.
func (n *Netns) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	typ, err := sockType(network)
	if err != nil {
		return nil, err
	}
	ap, err := parseAddr(network, address)
	if err != nil {
		return nil, err
	}
	fd, err := n.Socket(family(ap), typ|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, opError("dial", network, address, err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := connect(ctx, fd, sockaddr(ap)); err != nil {
		return nil, opError("dial", network, address, err)
	}
	f := os.NewFile(uintptr(fd), network+" "+address)
	ok = true // f owns fd now
	defer f.Close()
	return net.FileConn(f)
}

// bound returns a socket of typ bound to address inside n, listening if
// listen is set, as a file the caller closes.
func (n *Netns) bound(network, address string, typ int, listen bool) (*os.File, error) {
	if t, err := sockType(network); err != nil || t != typ {
		return nil, fmt.Errorf("testnet: network %q not supported here", network)
	}
	ap, err := parseAddr(network, address)
	if err != nil {
		return nil, err
	}
	fd, err := n.Socket(family(ap), typ, 0)
	if err != nil {
		return nil, opError("listen", network, address, err)
	}
	f := os.NewFile(uintptr(fd), network+" "+address)
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, opError("listen", network, address, err)
	}
	if ap.Addr().Is6() {
		// As Go's own listeners: an IPv6 address is IPv6 only.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail(os.NewSyscallError("setsockopt", err))
		}
	}
	if listen {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fail(os.NewSyscallError("setsockopt", err))
		}
	}
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		return fail(os.NewSyscallError("bind", err))
	}
	if listen {
		if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
			return fail(os.NewSyscallError("listen", err))
		}
	}
	return f, nil
}

// connect connects the non-blocking socket fd to sa, waiting for a
// connect in progress until it completes or ctx ends.
func connect(ctx context.Context, fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return os.NewSyscallError("connect", err)
	}
	for {
		wait := 100 * time.Millisecond
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		nready, err := unix.Poll(fds, max(int(wait/time.Millisecond), 0))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return os.NewSyscallError("poll", err)
		}
		if nready > 0 {
			soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				return os.NewSyscallError("getsockopt", err)
			}
			if soerr != 0 {
				return os.NewSyscallError("connect", unix.Errno(soerr))
			}
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

func sockType(network string) (int, error) {
	switch strings.TrimRight(network, "46") {
	case "tcp":
		return unix.SOCK_STREAM, nil
	case "udp":
		return unix.SOCK_DGRAM, nil
	}
	return 0, fmt.Errorf("testnet: network %q not supported here", network)
}

// parseAddr parses a numeric host:port and checks it fits network's
// family, if network names one.
func parseAddr(network, address string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return ap, fmt.Errorf("testnet: %s address %q: %w", network, address, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if (strings.HasSuffix(network, "4") && !ap.Addr().Is4()) || (strings.HasSuffix(network, "6") && !ap.Addr().Is6()) {
		return ap, fmt.Errorf("testnet: %s address %q is of the other family", network, address)
	}
	return ap, nil
}

func family(ap netip.AddrPort) int {
	if ap.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

func opError(op, network, address string, err error) error {
	return &net.OpError{Op: op, Net: network, Addr: addrString(address), Err: err}
}

// addrString is a net.Addr for an address string, for errors.
type addrString string

func (a addrString) Network() string { return "" }
func (a addrString) String() string  { return string(a) }
