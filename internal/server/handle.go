package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sockfactory/internal/connector"
	"sockfactory/internal/policy"
	"sockfactory/internal/wire"
)

// handle serves one decoded request and returns its reply and, on success,
// the file whose fd goes with it (the caller sends and closes it).
func (ss *session) handle(req *wire.Request) (*wire.Reply, *os.File) {
	rep := &wire.Reply{V: wire.Version, ID: req.ID}
	switch req.Op {
	case wire.OpConnect:
		start := time.Now()
		res, f, rule, err := ss.connect(req.Connect)
		ss.audit(req, rule, res, err, time.Since(start))
		if err != nil {
			rep.Error = toWire(err)
			return rep, nil
		}
		rep.Connect = res
		return rep, f
	}
	rep.Error = wire.Errorf(wire.CodeInvalidRequest, "unknown op %q", req.Op)
	return rep, nil
}

// connect decides and performs a connect request: parse, policy on the name
// or address, resolve, policy on every resolved address, connect. It returns
// the rule that granted the request, for the audit log.
func (ss *session) connect(r *wire.ConnectRequest) (*wire.ConnectResult, *os.File, string, error) {
	n, err := connector.ParseNetwork(r.Network)
	if err != nil {
		return nil, nil, "", wire.Errorf(wire.CodeInvalidRequest, "%v", err)
	}
	host, port, ip, err := parseTarget(r.Address)
	if err != nil {
		return nil, nil, "", err
	}
	if ip.IsValid() && !n.Allows(ip) {
		return nil, nil, "", wire.Errorf(wire.CodeInvalidRequest, "address %s is not in network %s", ip, n)
	}

	pol := ss.s.policy.Load()
	c := &ss.caller
	if !pol.Known(c) {
		return nil, nil, "", wire.Errorf(wire.CodeDenied, "uid %d (gid %d) is granted nothing by this daemon's policy", c.UID, c.GID)
	}

	timeout := ss.s.timeout
	if t := time.Duration(r.TimeoutMS) * time.Millisecond; t > 0 && t < timeout {
		timeout = t
	}
	ctx, cancel := context.WithTimeout(ss.ctx, timeout)
	defer cancel()

	var (
		addrs []netip.Addr
		dec   policy.Decision
	)
	if ip.IsValid() {
		// A request naming an address is decided by IP patterns only.
		if dec = pol.ConnectIP(c, ip, port); !dec.Allowed {
			return nil, nil, "", wire.Errorf(wire.CodeDenied, "policy grants uid %d no connect to %s", c.UID, netip.AddrPortFrom(ip, port))
		}
		addrs = []netip.Addr{ip}
	} else {
		dec = pol.ConnectName(c, host, port)
		if !dec.Allowed && !pol.ConnectAnyIP(c, port) {
			// Nothing could allow it: do not even resolve the name.
			return nil, nil, "", wire.Errorf(wire.CodeDenied, "policy grants uid %d no connect to %s", c.UID, r.Address)
		}
		addrs, err = ss.s.connector.Resolve(ctx, n, host)
		if err != nil {
			return nil, nil, "", resolveError(host, err)
		}
		if !dec.Allowed {
			// Allowed only if every address we connect to is: keep the
			// allowed ones, in order.
			allowed := addrs[:0:0]
			for _, a := range addrs {
				if d := pol.ConnectIP(c, a, port); d.Allowed {
					allowed = append(allowed, a)
					dec = d
				}
			}
			if len(allowed) == 0 {
				return nil, nil, "", wire.Errorf(wire.CodeDenied, "policy grants uid %d no connect to %s: none of its addresses %v is allowed", c.UID, r.Address, addrs)
			}
			addrs = allowed
		}
	}

	aps := make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		aps[i] = netip.AddrPortFrom(a, port)
	}
	f, res, err := ss.s.connector.Connect(ctx, n, aps, connector.Options{})
	if err != nil {
		return nil, nil, dec.Rule, connectError(r.Address, err)
	}
	return &wire.ConnectResult{Local: res.Local.String(), Remote: res.Remote.String()}, f, dec.Rule, nil
}

// parseTarget splits host:port (the host bracketed if IPv6) and checks both.
// ip is valid when host is a canonical IP address; otherwise host is a
// checked DNS name.
func parseTarget(address string) (host string, port uint16, ip netip.Addr, err error) {
	invalid := func(format string, args ...any) (string, uint16, netip.Addr, error) {
		return "", 0, netip.Addr{}, wire.Errorf(wire.CodeInvalidRequest, format, args...)
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
		if a.Zone() != "" {
			return invalid("address %q: IPv6 zones are not supported", address)
		}
		return h, uint16(pn), a.Unmap(), nil
	}
	if strings.HasPrefix(address, "[") {
		return invalid("address %q: brackets are for IPv6 addresses", address)
	}
	if err := policy.CheckHostname(h); err != nil {
		return invalid("address %q: %v", address, err)
	}
	return h, uint16(pn), netip.Addr{}, nil
}

func resolveError(host string, err error) error {
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

func connectError(address string, err error) error {
	if errors.Is(err, context.Canceled) {
		return wire.Errorf(wire.CodeInternal, "connect to %s cancelled: the daemon is shutting down or the client left", address)
	}
	if connector.IsTimeout(err) {
		return wire.Errorf(wire.CodeTimeout, "connect to %s timed out", address)
	}
	// Name the address that failed and the OS's reason, without the
	// layers of "dial tcp ...: connect:" prefixes.
	target := address
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Addr != nil {
		target = oe.Addr.String()
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		e := wire.Errorf(wire.CodeConnectFailed, "connect to %s: %v", target, errno)
		e.Errno = int(errno)
		return e
	}
	return wire.Errorf(wire.CodeConnectFailed, "connect to %s: %v", address, err)
}

// audit writes the one log line every connect request gets.
func (ss *session) audit(req *wire.Request, rule string, res *wire.ConnectResult, err error, took time.Duration) {
	args := []any{"op", req.Op, "id", req.ID, "network", req.Connect.Network, "address", req.Connect.Address, "ms", took.Milliseconds()}
	if err == nil {
		ss.log.Info("grant", append(args, "rule", rule, "remote", res.Remote, "local", res.Local)...)
		return
	}
	we := toWire(err)
	args = append(args, "code", we.Code, "err", we.Message)
	if we.Errno != 0 {
		args = append(args, "errno", syscall.Errno(we.Errno).Error())
	}
	if we.Code == wire.CodeDenied {
		ss.log.Warn("deny", args...)
		return
	}
	if rule != "" {
		args = append(args, "rule", rule)
	}
	ss.log.Info("fail", args...)
}
