// Package binder creates bound (and, for TCP, listening) sockets with
// validated options: it owns the syscalls of the bound-socket broker.
//
// It knows nothing of callers, policy or sharing. Every socket it creates is
// close-on-exec and blocking, owned by the caller as an *os.File.
package binder

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Options are resolved socket options: every field holds the value to use.
// The zero value is not the default; see Defaults. Options are comparable,
// so that a shared socket's options can be checked for equality.
type Options struct {
	ReuseAddr    bool
	ReusePort    bool
	V6Only       bool
	FreeBind     bool
	Transparent  bool
	RcvBuf       int // 0: kernel default
	SndBuf       int // 0: kernel default
	BindToDevice string
	PMTUDiscOff  bool
	FastOpen     int // 0: off
	DeferAccept  int // seconds; 0: off
	Backlog      int // 0: the system's maximum
	Listen       bool
}

// Defaults returns the default options for proto ("tcp" or "udp"): v6only
// on (the caller turns it off for an all-families bind); for TCP listening
// with the system's maximum backlog, and SO_REUSEADDR on (see
// DefaultReuseAddr); for UDP SO_REUSEADDR off.
func Defaults(proto string) Options {
	listen := proto == "tcp"
	return Options{ReuseAddr: DefaultReuseAddr(listen), V6Only: true, Listen: listen}
}

// DefaultReuseAddr is SO_REUSEADDR's default for a socket that listens or
// does not: on only for a listening (TCP) socket. There the kernel refuses
// any other socket the port while it listens, and SO_REUSEADDR only lets a
// restarted listener bind past connections in TIME_WAIT. On a UDP socket,
// or a TCP socket delivered bound but not listening, it would let any
// process of any user bind the same address and port with SO_REUSEADDR
// too and take the traffic (see ExposesPort). BIND 10's creator set it on
// every socket; this is where we depart from it.
func DefaultReuseAddr(listen bool) bool { return listen }

// ExposesPort reports whether o leaves the socket's address and port open
// to other sockets of any user: SO_REUSEADDR on a socket that does not
// listen. Linux then lets any socket with SO_REUSEADDR bind the same
// address and port, or a more specific address on that port, whoever
// owns it: for UDP it receives the datagrams, for TCP it may listen and
// take the connections (and the holder's own listen then fails).
// SO_REUSEPORT alone exposes nothing to other users: the kernel lets only
// sockets of the same owner (the daemon's uid) join it.
func (o *Options) ExposesPort() bool { return o.ReuseAddr && !o.Listen }

// Normalize sets what the kernel decides for a bind to ap, so that two
// requests for the same socket have equal Options: IPV6_V6ONLY means
// something only on the IPv6 unspecified address (::) and on IPv4-mapped
// addresses. Linux turns it on when a socket binds any other IPv6
// address, and IPv4 sockets have no such option, so there V6Only becomes
// true whatever was asked.
func (o *Options) Normalize(ap netip.AddrPort) {
	a := ap.Addr()
	if a != netip.IPv6Unspecified() && !a.Is4In6() {
		o.V6Only = true
	}
}

// Validate checks option values and that they fit proto.
func (o *Options) Validate(proto string) error {
	if o.RcvBuf < 0 || o.SndBuf < 0 || o.RcvBuf > 1<<30 || o.SndBuf > 1<<30 {
		return errors.New("rcvbuf and sndbuf must be 0 to 1 GiB")
	}
	if o.BindToDevice != "" {
		if len(o.BindToDevice) >= unix.IFNAMSIZ || strings.ContainsAny(o.BindToDevice, "/\x00 ") {
			return fmt.Errorf("bind_to_device %q is not an interface name", o.BindToDevice)
		}
	}
	if proto != "tcp" && (o.FastOpen != 0 || o.DeferAccept != 0 || o.Backlog != 0 || o.Listen) {
		return errors.New("fastopen, defer_accept, backlog and listen are TCP options")
	}
	if o.FastOpen < 0 || o.FastOpen > 1<<16 {
		return errors.New("fastopen must be a queue length from 0 to 65536")
	}
	if o.DeferAccept < 0 || o.DeferAccept > 3600 {
		return errors.New("defer_accept must be 0 to 3600 seconds")
	}
	if o.Backlog < 0 || o.Backlog > 1<<20 {
		return errors.New("backlog must be 0 to 1048576")
	}
	if !o.Listen && (o.Backlog != 0 || o.FastOpen != 0 || o.DeferAccept != 0) && proto == "tcp" {
		return errors.New("backlog, fastopen and defer_accept need a listening socket")
	}
	return nil
}

// Create makes a socket of proto ("tcp" or "udp") bound to ap with o
// applied, listening if o.Listen. It returns the socket and its bound
// address (with the real port when ap's port is 0). Errors keep their
// errno (errors.Is(err, syscall.EADDRINUSE)) and say what to do.
func Create(proto string, ap netip.AddrPort, o Options) (*os.File, netip.AddrPort, error) {
	return CreateWith(nil, proto, ap, o)
}

// CreateWith is Create with socket (when not nil) as socket(2): the
// namespace the socket is made in decides it. socket returns a
// close-on-exec descriptor CreateWith owns; options, bind and listen are
// applied from this thread, and act in the socket's namespace.
func CreateWith(socket func(domain, typ, proto int) (int, error), proto string, ap netip.AddrPort, o Options) (*os.File, netip.AddrPort, error) {
	family := unix.AF_INET6
	if ap.Addr().Is4() {
		family = unix.AF_INET
	}
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	var fd int
	var err error
	if socket != nil {
		fd, err = socket(family, typ, 0)
	} else if fd, err = unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0); err != nil {
		err = os.NewSyscallError("socket", err)
	}
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	if err := setup(fd, family, proto, ap, o); err != nil {
		unix.Close(fd)
		return nil, netip.AddrPort{}, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	local := fromSockaddr(sa)
	return os.NewFile(uintptr(fd), proto+":"+local.String()), local, nil
}

func setup(fd, family int, proto string, ap netip.AddrPort, o Options) error {
	type opt struct {
		name       string
		level, key int
		val        int
		on         bool
	}
	opts := []opt{
		// For port 0, SO_REUSEADDR is set after bind: see below.
		{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, o.ReuseAddr && ap.Port() != 0},
		{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, 1, o.ReusePort},
		{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, o.RcvBuf, o.RcvBuf > 0},
		{"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, o.SndBuf, o.SndBuf > 0},
	}
	if family == unix.AF_INET6 {
		v6only := 0
		if o.V6Only {
			v6only = 1
		}
		opts = append(opts,
			opt{"IPV6_V6ONLY", unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only, true},
			opt{"IPV6_FREEBIND", unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1, o.FreeBind},
			opt{"IPV6_TRANSPARENT", unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, 1, o.Transparent},
			opt{"IPV6_MTU_DISCOVER", unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_OMIT, o.PMTUDiscOff},
		)
	} else {
		opts = append(opts,
			opt{"IP_FREEBIND", unix.IPPROTO_IP, unix.IP_FREEBIND, 1, o.FreeBind},
			opt{"IP_TRANSPARENT", unix.IPPROTO_IP, unix.IP_TRANSPARENT, 1, o.Transparent},
			opt{"IP_MTU_DISCOVER", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_OMIT, o.PMTUDiscOff},
		)
	}
	if proto == "tcp" {
		opts = append(opts,
			opt{"TCP_FASTOPEN", unix.IPPROTO_TCP, unix.TCP_FASTOPEN, o.FastOpen, o.FastOpen > 0},
			opt{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, o.DeferAccept, o.DeferAccept > 0},
		)
	}
	for _, s := range opts {
		if !s.on {
			continue
		}
		if err := unix.SetsockoptInt(fd, s.level, s.key, s.val); err != nil {
			return hint(os.NewSyscallError("setsockopt "+s.name, err), s.name)
		}
	}
	if o.BindToDevice != "" {
		if err := unix.BindToDevice(fd, o.BindToDevice); err != nil {
			return hint(os.NewSyscallError("setsockopt SO_BINDTODEVICE", err), "SO_BINDTODEVICE")
		}
	}
	if err := unix.Bind(fd, toSockaddr(ap)); err != nil {
		return hint(os.NewSyscallError("bind "+proto+" "+ap.String(), err), "bind")
	}
	if o.ReuseAddr && ap.Port() == 0 {
		// Set only now: when choosing a free UDP port for a socket with
		// SO_REUSEADDR, the kernel counts ports that other SO_REUSEADDR
		// sockets hold as free, so a "free" port could be a busy one.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
	}
	if o.Listen {
		backlog := o.Backlog
		if backlog == 0 {
			backlog = maxBacklog()
		}
		if err := unix.Listen(fd, backlog); err != nil {
			return os.NewSyscallError("listen", err)
		}
	}
	return nil
}

// hintError adds advice to a syscall error while keeping its errno.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + ": " + e.hint }
func (e *hintError) Unwrap() error { return e.err }

func hint(err error, what string) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return &hintError{err, "another socket holds this address and port; stop it, or share a socket through the daemon (share modes), or set reuseport on both (the kernel allows that only between sockets of one user)"}
	case errors.Is(err, syscall.EACCES) && what == "bind":
		return &hintError{err, "binding ports below 1024 needs CAP_NET_BIND_SERVICE: run sockfactoryd as root or give it that capability (see docs/security.md)"}
	case errors.Is(err, syscall.EPERM):
		return &hintError{err, what + " needs CAP_NET_ADMIN (or CAP_NET_RAW) in the daemon"}
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return &hintError{err, "the address is not configured on this host; use the freebind option if it will be"}
	case errors.Is(err, syscall.ENODEV):
		return &hintError{err, "no such network interface"}
	}
	return err
}

func toSockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func fromSockaddr(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// maxBacklog is net.core.somaxconn, or 4096 when it cannot be read.
func maxBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return 4096
}
