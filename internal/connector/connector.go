// Package connector resolves destinations and makes the outbound connections
// the daemon hands over: it owns the syscalls of the connect broker.
//
// It knows nothing of callers or policy; the server checks every address with
// the policy before passing it here. Sockets leave this package as *os.File in
// blocking mode (as socket(2) would create them), close-on-exec, owned by the
// caller.
package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Network is a parsed network name.
type Network struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Family is 4 or 6 to restrict to one address family, 0 for either.
	Family int
}

// ParseNetwork parses tcp, tcp4, tcp6, udp, udp4 or udp6.
func ParseNetwork(s string) (Network, error) {
	switch s {
	case "tcp", "udp":
		return Network{Proto: s}, nil
	case "tcp4", "udp4":
		return Network{Proto: s[:3], Family: 4}, nil
	case "tcp6", "udp6":
		return Network{Proto: s[:3], Family: 6}, nil
	}
	return Network{}, fmt.Errorf("unknown network %q: want tcp, tcp4, tcp6, udp, udp4 or udp6", s)
}

// String returns the network's name as ParseNetwork accepts it.
func (n Network) String() string {
	if n.Family == 0 {
		return n.Proto
	}
	return fmt.Sprintf("%s%d", n.Proto, n.Family)
}

// Allows reports whether an address belongs to the network's family.
func (n Network) Allows(a netip.Addr) bool {
	switch n.Family {
	case 4:
		return a.Unmap().Is4()
	case 6:
		return !a.Unmap().Is4()
	}
	return true
}

// Connector resolves and connects. The zero value uses the system resolver.
// It is safe for concurrent use.
type Connector struct {
	// Resolver resolves DNS names; nil means net.DefaultResolver.
	Resolver *net.Resolver
	// MinAttempt is the least time one connect attempt gets when several
	// addresses share the request's time budget; zero means 2 s.
	MinAttempt time.Duration
}

// Options adjust the delivered socket.
type Options struct {
	// SendTimeout, when positive, is set as SO_SNDTIMEO on the socket.
	SendTimeout time.Duration
}

// Result describes a connected socket.
type Result struct {
	// Local and Remote are the socket's addresses.
	Local, Remote netip.AddrPort
}

// Resolve returns the addresses of host in the network's family, IPv4-mapped
// addresses unmapped and duplicates removed, in the resolver's order. A
// lookup failure is returned as a *net.DNSError.
func (c *Connector) Resolve(ctx context.Context, n Network, host string) ([]netip.Addr, error) {
	r := c.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	family := "ip"
	if n.Family != 0 {
		family = fmt.Sprintf("ip%d", n.Family)
	}
	addrs, err := r.LookupNetIP(ctx, family, host)
	if err != nil {
		return nil, err
	}
	out := addrs[:0]
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if !n.Allows(a) || contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no addresses of the requested family", Name: host, IsNotFound: true}
	}
	return out, nil
}

func contains(s []netip.Addr, a netip.Addr) bool {
	for _, b := range s {
		if a == b {
			return true
		}
	}
	return false
}

// Connect tries each address in order until one connects, within ctx. Each
// attempt gets an equal share of the time left (at least MinAttempt, never
// past ctx's deadline). On success the caller owns the returned file. When
// every attempt fails, the error is the first one that was not a timeout, or
// a timeout error if all timed out; errno stays reachable with errors.Is.
func (c *Connector) Connect(ctx context.Context, n Network, addrs []netip.AddrPort, opts Options) (*os.File, Result, error) {
	if len(addrs) == 0 {
		return nil, Result{}, errors.New("no addresses to connect to")
	}
	minAttempt := c.MinAttempt
	if minAttempt <= 0 {
		minAttempt = 2 * time.Second
	}
	var firstErr, timeoutErr error
	for i, ap := range addrs {
		if err := ctx.Err(); err != nil {
			if timeoutErr == nil {
				timeoutErr = err
			}
			break
		}
		actx, cancel := attemptContext(ctx, len(addrs)-i, minAttempt)
		f, res, err := dialOne(actx, n.Proto, ap, opts)
		cancel()
		if err == nil {
			return f, res, nil
		}
		if IsTimeout(err) {
			if timeoutErr == nil {
				timeoutErr = err
			}
		} else if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, Result{}, firstErr
	}
	return nil, Result{}, timeoutErr
}

// attemptContext gives one of n remaining attempts its share of ctx's time.
func attemptContext(ctx context.Context, n int, minAttempt time.Duration) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok || n <= 1 {
		return context.WithCancel(ctx)
	}
	share := time.Until(dl) / time.Duration(n)
	if share < minAttempt {
		share = minAttempt
	}
	return context.WithTimeout(ctx, share)
}

// IsTimeout reports whether err is a deadline expiring, of the request or of
// one attempt.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// dialOne connects to one address and detaches the socket from Go's poller:
// the fd is duplicated close-on-exec, set blocking, optionally given a send
// timeout, and the original closed.
func dialOne(ctx context.Context, proto string, ap netip.AddrPort, opts Options) (*os.File, Result, error) {
	// Deliver plain socket(2) defaults: no keep-alive (Go turns it on).
	d := net.Dialer{KeepAlive: -1}
	conn, err := d.DialContext(ctx, proto, ap.String())
	if err != nil {
		return nil, Result{}, err
	}
	defer conn.Close()
	res := Result{Local: addrPort(conn.LocalAddr()), Remote: addrPort(conn.RemoteAddr())}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, Result{}, fmt.Errorf("connection of type %T has no file descriptor", conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, Result{}, err
	}
	fd := -1
	var opErr error
	if err := raw.Control(func(s uintptr) {
		fd, opErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
		if opErr != nil {
			opErr = os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", opErr)
		}
	}); err != nil {
		return nil, Result{}, err
	}
	if opErr != nil {
		return nil, Result{}, opErr
	}
	if err := prepare(fd, proto, opts); err != nil {
		unix.Close(fd)
		return nil, Result{}, err
	}
	return os.NewFile(uintptr(fd), "sockfactory:"+proto+":"+ap.String()), res, nil
}

// prepare clears O_NONBLOCK (the duplicate shares the flag with the original,
// which is closed right after) and applies the options.
func prepare(fd int, proto string, opts Options) error {
	if err := unix.SetNonblock(fd, false); err != nil {
		return os.NewSyscallError("fcntl F_SETFL", err)
	}
	// Undo the options Go's dialer sets, so that the receiver gets what
	// socket(2) gives: Nagle on for TCP, no broadcast for UDP.
	if proto == "tcp" {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 0); err != nil {
			return os.NewSyscallError("setsockopt TCP_NODELAY", err)
		}
	} else if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 0); err != nil {
		return os.NewSyscallError("setsockopt SO_BROADCAST", err)
	}
	if opts.SendTimeout > 0 {
		tv := unix.NsecToTimeval(opts.SendTimeout.Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
			return os.NewSyscallError("setsockopt SO_SNDTIMEO", err)
		}
	}
	return nil
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// NewResolver returns a resolver that sends every DNS query to one of
// servers (ip:port, tried in turn), still reading /etc/hosts first as the
// system's nsswitch order says. An empty list returns nil: the system
// resolver.
func NewResolver(servers []string) *net.Resolver {
	if len(servers) == 0 {
		return nil
	}
	var next atomic.Uint32
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			s := servers[int(next.Add(1)-1)%len(servers)]
			return d.DialContext(ctx, network, s)
		},
	}
}
