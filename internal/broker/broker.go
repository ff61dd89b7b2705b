// Package broker is the outbound connect broker shared by every front door
// (the native protocol and the Clearwater-compatible listener): given a
// caller, a policy and a destination, it decides, resolves, checks every
// resolved address and connects.
//
// It holds the order of those steps in one place so that no front door can
// skip one. It does not read requests or write replies; errors are
// *wire.Error values whose code says what failed.
package broker

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/netns"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// Target is a parsed destination.
type Target struct {
	// Host is the host as requested: an address or a checked DNS name.
	Host string
	// Port is 1-65535.
	Port uint16
	// IP is set when Host is a canonical IP address (IPv4-mapped IPv6
	// unmapped); otherwise Host is a DNS name.
	IP netip.Addr
}

// String returns host:port, bracketing IPv6 addresses.
func (t Target) String() string {
	if t.IP.IsValid() {
		return netip.AddrPortFrom(t.IP, t.Port).String()
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
}

// ParseTarget parses host:port with IPv6 hosts in brackets. The host must be
// a canonical IP address or a DNS name that policy.CheckHostname accepts;
// the port a decimal number from 1 to 65535.
func ParseTarget(address string) (Target, error) {
	invalid := func(format string, args ...any) (Target, error) {
		return Target{}, wire.Errorf(wire.CodeInvalidRequest, format, args...)
	}
	if len(address) > 300 { // 253 for a name, brackets, a colon, 5 digits
		return invalid("address of %d bytes is too long for host:port", len(address))
	}
	h, p, err := net.SplitHostPort(address)
	if err != nil {
		return invalid("address %q: want host:port, with IPv6 addresses in brackets", address)
	}
	pn, err := strconv.ParseUint(p, 10, 16)
	if err != nil || pn == 0 || p[0] == '+' || (len(p) > 1 && p[0] == '0') {
		return invalid("address %q: port must be a number from 1 to 65535", address)
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Is4() && strings.HasPrefix(address, "[") {
			return invalid("address %q: brackets are for IPv6 addresses", address)
		}
		if a.Zone() != "" {
			return invalid("address %q: IPv6 zones are not supported", address)
		}
		return Target{Host: h, Port: uint16(pn), IP: a.Unmap()}, nil
	}
	if strings.HasPrefix(address, "[") {
		return invalid("address %q: brackets are for IPv6 addresses", address)
	}
	if err := policy.CheckHostname(h); err != nil {
		return invalid("address %q: %v", address, err)
	}
	return Target{Host: h, Port: uint16(pn)}, nil
}

// Outcome describes a granted request.
type Outcome struct {
	// Rule names the policy rule that granted the request.
	Rule string
	// Local and Remote are the connected socket's addresses.
	Local, Remote netip.AddrPort
	// Netns is the namespace the connection was made from, once found
	// (for the audit line).
	Netns netns.Target
}

// Connect decides whether caller may reach t on network n under pol and, if
// so, connects within ctx. A request naming an address is decided by IP
// patterns only. A request naming a DNS name is granted by a matching name
// pattern (then any address it resolves to is used), or else only its
// resolved addresses that IP patterns grant are tried; when no rule could
// grant it at all the name is not resolved. The caller owns the returned
// file. The returned Outcome names the granting rule even on a connect
// failure, for the audit log.
func Connect(ctx context.Context, pol *policy.Policy, caller *policy.Caller, conn *connector.Connector, n connector.Network, t Target, opts connector.Options) (connector.Sock, Outcome, error) {
	var out Outcome
	if t.IP.IsValid() && !n.Allows(t.IP) {
		return connector.Sock{}, out, wire.Errorf(wire.CodeInvalidRequest, "address %s is not in network %s", t.IP, n)
	}
	if !pol.Known(caller) {
		return connector.Sock{}, out, wire.Errorf(wire.CodeDenied, "uid %d (gid %d) is granted nothing by this daemon's policy", caller.UID, caller.GID)
	}
	var addrs []netip.Addr
	if t.IP.IsValid() {
		d := pol.ConnectIP(caller, t.IP, t.Port)
		if !d.Allowed {
			return connector.Sock{}, out, wire.Errorf(wire.CodeDenied, "policy grants uid %d no connect to %s", caller.UID, t)
		}
		out.Rule = d.Rule
		addrs = []netip.Addr{t.IP}
	} else {
		d := pol.ConnectName(caller, t.Host, t.Port)
		if !d.Allowed && !pol.ConnectAnyIP(caller, t.Port) {
			return connector.Sock{}, out, wire.Errorf(wire.CodeDenied, "policy grants uid %d no connect to %s", caller.UID, t)
		}
		if opts.Wait != nil {
			opts.Wait()
		}
		resolved, err := conn.ResolveWith(ctx, opts.Resolver, n, t.Host)
		if err != nil {
			return connector.Sock{}, out, resolveError(t.Host, err)
		}
		out.Rule = d.Rule
		addrs = resolved
		if !d.Allowed {
			// Only the addresses IP patterns grant may be used.
			addrs = nil
			for _, a := range resolved {
				if d := pol.ConnectIP(caller, a, t.Port); d.Allowed {
					addrs = append(addrs, a)
					out.Rule = d.Rule
				}
			}
			if len(addrs) == 0 {
				return connector.Sock{}, out, wire.Errorf(wire.CodeDenied, "policy grants uid %d no connect to %s: none of its addresses %v is granted", caller.UID, t, resolved)
			}
		}
	}
	// Whatever granted it, no address on the deny list is tried: a name
	// grant trusts DNS, the deny list does not.
	aps := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		if !pol.Denied(a, t.Port) {
			aps = append(aps, netip.AddrPortFrom(a, t.Port))
		}
	}
	if len(aps) == 0 {
		return connector.Sock{}, out, wire.Errorf(wire.CodeDenied, "every address of %s %v is on the daemon's deny list", t, addrs)
	}
	f, res, err := conn.Connect(ctx, n, aps, opts)
	if err != nil {
		return connector.Sock{}, out, connectError(t, err)
	}
	out.Local, out.Remote = res.Local, res.Remote
	return f, out, nil
}

// Exhausted returns the limit_exceeded error for a failure caused by the
// daemon's own resources running out (EMFILE, ENFILE, ENOBUFS, ENOMEM),
// whatever syscall failed, or nil for any other failure: the caller's
// destination or address is not at fault then, and a retry may succeed.
func Exhausted(err error) *wire.Error {
	var errno syscall.Errno
	if !errors.As(err, &errno) || (errno != syscall.EMFILE && errno != syscall.ENFILE && errno != syscall.ENOBUFS && errno != syscall.ENOMEM) {
		return nil
	}
	e := wire.Errorf(wire.CodeLimitExceeded, "the daemon is out of resources (%v); retry later, or raise its descriptor limit (LimitNOFILE=, ulimit -n)", errno)
	e.Errno = int(errno)
	return e
}

func resolveError(host string, err error) error {
	if errors.Is(err, context.Canceled) {
		return wire.Errorf(wire.CodeInternal, "resolving %s cancelled: the daemon is shutting down or the client left", host)
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		if de.IsTimeout || errors.Is(err, context.DeadlineExceeded) {
			return wire.Errorf(wire.CodeTimeout, "resolving %s timed out", host)
		}
		// The resolver's own words ("no such host"), not an errno.
		return wire.Errorf(wire.CodeResolveFailed, "resolving %s: %s", host, de.Err)
	}
	if connector.IsTimeout(err) {
		return wire.Errorf(wire.CodeTimeout, "resolving %s timed out", host)
	}
	return wire.Errorf(wire.CodeResolveFailed, "resolving %s: %v", host, err)
}

func connectError(t Target, err error) error {
	if errors.Is(err, context.Canceled) {
		return wire.Errorf(wire.CodeInternal, "connect to %s cancelled: the daemon is shutting down or the client left", t)
	}
	if connector.IsTimeout(err) {
		return wire.Errorf(wire.CodeTimeout, "connect to %s timed out", t)
	}
	var ee *netns.EnterError
	if errors.As(err, &ee) {
		e := wire.Errorf(wire.CodeInternal, "connect to %s: %v", t, ee)
		var errno syscall.Errno
		if errors.As(err, &errno) {
			e.Errno = int(errno)
		}
		return e
	}
	// Name the address that failed and the OS's reason, without the
	// layers of "dial tcp ...: connect:" prefixes.
	target := t.String()
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Addr != nil {
		target = oe.Addr.String()
	}
	if e := Exhausted(err); e != nil {
		return e
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		e := wire.Errorf(wire.CodeConnectFailed, "connect to %s: %v", target, errno)
		e.Errno = int(errno)
		return e
	}
	return wire.Errorf(wire.CodeConnectFailed, "connect to %s: %v", target, err)
}
