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

	"github.com/sockfactory/sockfactory/internal/rawsys"
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

// Lookup resolves names; *net.Resolver is one, and so is the resolver of
// another namespace's files (internal/resolver).
type Lookup interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Connector resolves and connects. The zero value uses the system resolver.
// It is safe for concurrent use.
type Connector struct {
	// Resolver resolves DNS names; nil means net.DefaultResolver.
	Resolver Lookup
	// MinAttempt is the least time one connect attempt gets when several
	// addresses share the request's time budget; zero means 2 s.
	MinAttempt time.Duration
	// ObserveLookup, when set, is called once per name lookup Resolve
	// makes, with its error (nil: addresses found) and how long it took:
	// the metrics hook. It must be cheap and must not block.
	ObserveLookup func(err error, took time.Duration)
}

// Options adjust the delivered socket.
type Options struct {
	// SendTimeout, when positive, is set as SO_SNDTIMEO on the socket.
	SendTimeout time.Duration
	// Wait, when set, is called before a step that may wait: a DNS
	// lookup, or a connect that did not finish at once. A caller that
	// serves other work on the same goroutine can hand that work over to
	// another then. It may be called more than once.
	Wait func()
	// Socket, when set, is socket(2) for the connection (the namespace
	// the connection is made from decides it): it returns a close-on-exec
	// descriptor the connector owns. Nil means unix.Socket here.
	Socket func(domain, typ, proto int) (int, error)
	// Resolver, when set, resolves names instead of the Connector's.
	Resolver Lookup
}

// Result describes a connected socket.
type Result struct {
	// Local and Remote are the socket's addresses.
	Local, Remote netip.AddrPort
}

// Sock is a connected socket's descriptor, owned by whoever holds it: it
// passes it on, then closes it. The zero Sock holds nothing. It is not an
// *os.File because a file costs two system calls more per connection
// (os.NewFile asks the descriptor's flags, and its Close goes through the
// scheduler's syscall bookkeeping, which wakes the runtime's monitor
// thread on an idle daemon: see internal/rawsys).
type Sock struct {
	fd    int32
	valid bool
}

// FD returns the descriptor, or -1 for the zero Sock.
func (s Sock) FD() int {
	if !s.valid {
		return -1
	}
	return int(s.fd)
}

// Close closes the descriptor; the zero Sock closes nothing.
func (s Sock) Close() error {
	if !s.valid {
		return nil
	}
	return rawsys.Close(int(s.fd))
}

// File hands the descriptor to an *os.File named name, which owns it from
// then on; nil for the zero Sock.
func (s Sock) File(name string) *os.File {
	if !s.valid {
		return nil
	}
	return os.NewFile(uintptr(s.fd), name)
}

func sockOf(fd int) Sock { return Sock{fd: int32(fd), valid: true} }

// Resolve returns the addresses of host in the network's family, IPv4-mapped
// addresses unmapped and duplicates removed, in the resolver's order. A
// lookup failure is returned as a *net.DNSError.
func (c *Connector) Resolve(ctx context.Context, n Network, host string) ([]netip.Addr, error) {
	return c.ResolveWith(ctx, nil, n, host)
}

// ResolveWith is Resolve with r (when not nil) as the resolver.
func (c *Connector) ResolveWith(ctx context.Context, r Lookup, n Network, host string) ([]netip.Addr, error) {
	if r == nil {
		r = c.Resolver
	}
	if r == nil {
		r = net.DefaultResolver
	}
	family := "ip"
	if n.Family != 0 {
		family = fmt.Sprintf("ip%d", n.Family)
	}
	var start time.Time
	if c.ObserveLookup != nil {
		start = time.Now()
	}
	out, err := lookup(ctx, r, family, n, host)
	if c.ObserveLookup != nil {
		c.ObserveLookup(err, time.Since(start))
	}
	return out, err
}

// lookup is ResolveWith's lookup and filter.
func lookup(ctx context.Context, r Lookup, family string, n Network, host string) ([]netip.Addr, error) {
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
func (c *Connector) Connect(ctx context.Context, n Network, addrs []netip.AddrPort, opts Options) (Sock, Result, error) {
	if len(addrs) == 0 {
		return Sock{}, Result{}, errors.New("no addresses to connect to")
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
		sk, res, err := dialOne(actx, n.Proto, ap, opts)
		cancel()
		if err == nil {
			return sk, res, nil
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
		return Sock{}, Result{}, firstErr
	}
	return Sock{}, Result{}, timeoutErr
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

// dialOne connects to one address with the system calls a C program would
// make: socket, a non-blocking connect, and for one not finished at once
// (any remote peer) a wait in Go's poller bounded by ctx. The socket is then
// set blocking, with socket(2)'s default options, as the receiver expects.
// A connect to this host has finished by the time connect returns, so that
// case costs a second connect of no time instead of a trip through the
// poller. The calls that cannot block are made through internal/rawsys.
func dialOne(ctx context.Context, proto string, ap netip.AddrPort, opts Options) (Sock, Result, error) {
	sk, res, err := dialOnce(ctx, proto, ap, opts)
	if err == nil && proto == "tcp" && res.Local == res.Remote {
		// A connect to a free local port in the ephemeral range can be
		// given that very port and connect to itself (TCP simultaneous
		// open). No listener answered: try once more, as Go's dialer
		// does, and call a second such outcome a refusal.
		sk.Close()
		if sk, res, err = dialOnce(ctx, proto, ap, opts); err == nil && res.Local == res.Remote {
			sk.Close()
			return Sock{}, Result{}, &net.OpError{Op: "dial", Net: proto, Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
	}
	return sk, res, err
}

// dialOnce makes one connect attempt of dialOne.
func dialOnce(ctx context.Context, proto string, ap netip.AddrPort, opts Options) (Sock, Result, error) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	family, zone, err := familyZone(ap.Addr())
	if err != nil {
		return Sock{}, Result{}, err
	}
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	var fd int
	if opts.Socket != nil {
		fd, err = opts.Socket(family, typ|unix.SOCK_NONBLOCK, 0)
	} else if fd, err = rawsys.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
		err = os.NewSyscallError("socket", err)
	}
	if err != nil {
		return Sock{}, Result{}, err
	}
	err = rawsys.Connect(fd, ap, zone)
	switch err {
	case nil:
	case unix.EINPROGRESS, unix.EINTR: // interrupted, it goes on
		fd, err = waitConnected(ctx, fd, ap, zone, opts.Wait)
	default:
		err = os.NewSyscallError("connect", err)
	}
	if err != nil {
		if fd >= 0 {
			rawsys.Close(fd)
		}
		var addr net.Addr = net.TCPAddrFromAddrPort(ap)
		if proto == "udp" {
			addr = net.UDPAddrFromAddrPort(ap)
		}
		return Sock{}, Result{}, &net.OpError{Op: "dial", Net: proto, Addr: addr, Err: err}
	}
	res := Result{Remote: ap}
	if local, err := rawsys.Getsockname(fd); err == nil {
		res.Local = local
	}
	if err := prepare(fd, opts); err != nil {
		rawsys.Close(fd)
		return Sock{}, Result{}, err
	}
	return sockOf(fd), res, nil
}

// waitConnected waits for fd's connect to finish, within ctx, and returns
// the connect's error. A connect still under way after a poll of no time
// waits in Go's poller; fd then comes back as a duplicate of itself, the
// original closed to leave the poller. wait, if set, is called before
// waiting.
func waitConnected(ctx context.Context, fd int, ap netip.AddrPort, zone uint32, wait func()) (int, error) {
	// A second connect tells at once, in one call, how the first is
	// doing: EISCONN when it has finished (a connect to this host has, by
	// the time the first returns), the connect's own error when it failed,
	// EALREADY while it is under way.
	switch err := rawsys.Connect(fd, ap, zone); err {
	case unix.EISCONN, nil:
		return fd, nil
	case unix.EALREADY, unix.EINPROGRESS, unix.EINTR:
	default:
		return fd, os.NewSyscallError("connect", err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if wait != nil {
		wait()
	}
	f := os.NewFile(uintptr(fd), "connecting") // non-blocking: joins the poller
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	if dl, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	var connErr error
	werr := rc.Write(func(s uintptr) bool {
		if n, err := unix.Poll(pfd, 0); err != nil || n == 0 {
			return false // not yet: wait for the poller
		}
		connErr = soError(int(s))
		return true
	})
	if werr != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return -1, ctx.Err()
		}
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			return -1, fmt.Errorf("connect timed out: %w", os.ErrDeadlineExceeded)
		}
		return -1, werr
	}
	if connErr != nil {
		return -1, connErr
	}
	var dupErr error
	dup := -1
	if err := rc.Control(func(s uintptr) {
		dup, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	return dup, nil
}

// soError returns the outcome of a finished connect on fd.
func soError(fd int) error {
	n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_ERROR", err)
	}
	if n != 0 {
		return os.NewSyscallError("connect", syscall.Errno(n))
	}
	return nil
}

// familyZone returns the socket family for a (unmapped), and for a
// link-local IPv6 address with a zone the index of the zone's interface.
func familyZone(a netip.Addr) (int, uint32, error) {
	if a.Is4() {
		return unix.AF_INET, 0, nil
	}
	if z := a.Zone(); z != "" {
		ifi, err := net.InterfaceByName(z)
		if err != nil {
			return 0, 0, fmt.Errorf("zone of %s: %w", a, err)
		}
		return unix.AF_INET6, uint32(ifi.Index), nil
	}
	return unix.AF_INET6, 0, nil
}

// prepare makes fd blocking and applies the options. The socket has
// socket(2)'s defaults otherwise: nothing else was set on it.
func prepare(fd int, opts Options) error {
	if err := rawsys.SetBlocking(fd); err != nil {
		return os.NewSyscallError("fcntl F_SETFL", err)
	}
	if opts.SendTimeout > 0 {
		tv := unix.NsecToTimeval(opts.SendTimeout.Nanoseconds())
		if err := rawsys.SetSendTimeout(fd, tv); err != nil {
			return os.NewSyscallError("setsockopt SO_SNDTIMEO", err)
		}
	}
	return nil
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
