package server

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/broker"
	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/netns"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// hello records the client's application name.
func (ss *session) hello(r *wire.HelloRequest) error {
	if err := checkName("app", r.App); err != nil {
		return err
	}
	ss.mu.Lock()
	ss.app = r.App
	ss.mu.Unlock()
	ss.s.registry.SetApp(ss.holder, r.App)
	return nil
}

// checkName accepts 1 to 64 printable ASCII characters.
func checkName(what, s string) error {
	if s == "" || len(s) > 64 {
		return wire.Errorf(wire.CodeInvalidRequest, "%s name must be 1 to 64 characters", what)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return wire.Errorf(wire.CodeInvalidRequest, "%s name %q: only printable ASCII without spaces is allowed", what, s)
		}
	}
	return nil
}

// bindTarget is a parsed bind request.
type bindTarget struct {
	proto string
	ap    netip.AddrPort
	share registry.Share
	name  string
	opts  binder.Options
	used  []string // option names the request sets, for the policy
}

// parseBind validates a bind request. An empty host means all addresses:
// 0.0.0.0 for tcp4/udp4, :: for tcp6/udp6, and :: with v6only off (both
// families) for tcp/udp unless v6only is given.
func (ss *session) parseBind(r *wire.BindRequest) (*bindTarget, error) {
	invalid := func(format string, args ...any) (*bindTarget, error) {
		return nil, wire.Errorf(wire.CodeInvalidRequest, format, args...)
	}
	n, err := connector.ParseNetwork(r.Network)
	if err != nil {
		return invalid("%v", err)
	}
	host, p, err := net.SplitHostPort(r.Address)
	if err != nil {
		return invalid("address %q: want host:port (host may be empty for all addresses; IPv6 in brackets)", r.Address)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || p[0] == '+' || (len(p) > 1 && p[0] == '0') {
		return invalid("address %q: port must be a number from 0 to 65535", r.Address)
	}
	t := &bindTarget{proto: n.Proto, opts: binder.Defaults(n.Proto)}
	var addr netip.Addr
	dual := false
	switch {
	case host == "" && n.Family == 4:
		addr = netip.IPv4Unspecified()
	case host == "":
		addr, dual = netip.IPv6Unspecified(), n.Family == 0
	default:
		a, err := netip.ParseAddr(host)
		if err != nil || a.Zone() != "" {
			return invalid("address %q: the host must be a numeric IP address without a zone, or empty for all", r.Address)
		}
		addr = a.Unmap()
		if !n.Allows(addr) {
			return invalid("address %s is not in network %s", addr, n)
		}
	}
	t.ap = netip.AddrPortFrom(addr, uint16(port))
	if t.share, err = registry.ParseShare(r.Share); err != nil {
		return invalid("%v", err)
	}
	t.name = r.Name
	if t.name == "" {
		ss.mu.Lock()
		t.name = ss.app
		ss.mu.Unlock()
	} else if err := checkName("share", t.name); err != nil {
		return nil, err
	}
	if dual {
		t.opts.V6Only = false
	}
	if o := r.Options; o != nil {
		t.used = applyOptions(&t.opts, o)
	}
	t.opts.Normalize(t.ap)
	if err := t.opts.Validate(t.proto); err != nil {
		return invalid("options: %v", err)
	}
	return t, nil
}

// applyOptions copies the options a request sets and returns their names,
// for the policy. reuseaddr's default follows listen, and it is named only
// where it exposes the port to other users (binder.Options.ExposesPort):
// turning it off, or on for a listening socket, needs no grant.
func applyOptions(dst *binder.Options, o *wire.SocketOptions) []string {
	var used []string
	setBool := func(name string, src *bool, d *bool) {
		if src != nil {
			*d = *src
			used = append(used, name)
		}
	}
	setInt := func(name string, src *int, d *int) {
		if src != nil {
			*d = *src
			used = append(used, name)
		}
	}
	setBool("reuseport", o.ReusePort, &dst.ReusePort)
	setBool("v6only", o.V6Only, &dst.V6Only)
	setBool("freebind", o.FreeBind, &dst.FreeBind)
	setBool("transparent", o.Transparent, &dst.Transparent)
	setInt("rcvbuf", o.RcvBuf, &dst.RcvBuf)
	setInt("sndbuf", o.SndBuf, &dst.SndBuf)
	if o.BindToDevice != nil {
		dst.BindToDevice = *o.BindToDevice
		used = append(used, "bind_to_device")
	}
	setBool("pmtud_off", o.PMTUDiscOff, &dst.PMTUDiscOff)
	setInt("fastopen", o.FastOpen, &dst.FastOpen)
	setInt("defer_accept", o.DeferAccept, &dst.DeferAccept)
	setInt("backlog", o.Backlog, &dst.Backlog)
	setBool("listen", o.Listen, &dst.Listen)
	dst.ReuseAddr = binder.DefaultReuseAddr(dst.Listen)
	if o.ReuseAddr != nil {
		dst.ReuseAddr = *o.ReuseAddr
	}
	if dst.ExposesPort() {
		used = append(used, "reuseaddr")
	}
	return used
}

// bindOutcome is what the audit line of a bind says beyond the request.
type bindOutcome struct {
	rule  string
	netns netns.Target
}

// bind serves OpBind: parse, namespace, policy, then the cache.
func (ss *session) bind(r *wire.BindRequest) (*wire.BindResult, handout, bindOutcome, error) {
	var out bindOutcome
	t, err := ss.parseBind(r)
	if err != nil {
		return nil, handout{}, out, err
	}
	pol := ss.s.policy.Load()
	sc, err := ss.s.namespaces.Scope(pol, &ss.caller, r.Netns, ss.raw)
	if err != nil {
		return nil, handout{}, out, err
	}
	out.netns = sc.Target
	c := &sc.Caller
	dec, why := pol.Bind(c, &policy.BindQuery{Proto: t.proto, Addr: t.ap.Addr(), Port: t.ap.Port(), Share: t.share.String(), Options: t.used})
	if !dec.Allowed {
		return nil, handout{}, out, wire.Errorf(wire.CodeDenied, "policy grants uid %d no bind to %s %s%s: %s", c.UID, t.proto, t.ap, inNetns(r.Netns), why)
	}
	out.rule = dec.Rule
	var socket func(domain, typ, proto int) (int, error)
	var nsID string
	if !sc.Target.Own() {
		socket, nsID = sc.Target.Socket, sc.Target.Key()
	}
	g, err := ss.s.registry.Acquire(&registry.Request{
		Key:       registry.Key{Proto: t.proto, Addr: t.ap, Netns: nsID},
		NetnsName: sc.Caller.Netns,
		Share:     t.share,
		Name:      t.name,
		Options:   t.opts,
		Linger:    dec.Linger,
		Holder:    ss.holder,
		Pending:   r.TokenOnly,
		Lend:      true,
		Create:    func() (*os.File, netip.AddrPort, error) { return binder.CreateWith(socket, t.proto, t.ap, t.opts) },
	})
	if err != nil {
		return nil, handout{}, out, registryError(err)
	}
	res := &wire.BindResult{Token: g.Token, Local: g.Key.Addr.String(), Network: g.Key.Proto, Shared: g.Shared, Reclaim: g.Reclaim}
	if r.TokenOnly {
		res.ExpiresMS = time.Until(g.Expires).Milliseconds()
	}
	return res, lent(g), out, nil
}

// inNetns says " in network namespace NAME" for a request that names one.
func inNetns(name string) string {
	if name == "" {
		return ""
	}
	return " in network namespace " + strconv.Quote(name)
}

// pickup serves OpPickup: the caller must be granted the socket's address.
func (ss *session) pickup(r *wire.TokenRequest) (*wire.BindResult, handout, error) {
	pol := ss.s.policy.Load()
	g, err := ss.s.registry.PickupLentIn(r.Token, ss.holder, func(k registry.Key, netnsName string) bool {
		c := ss.caller
		c.Netns = netnsName
		return pol.BindAddr(&c, k.Proto, k.Addr.Addr(), k.Addr.Port()).Allowed
	})
	if err != nil {
		return nil, handout{}, registryError(err)
	}
	return &wire.BindResult{Token: g.Token, Local: g.Key.Addr.String(), Network: g.Key.Proto, Shared: g.Shared, Reclaim: g.Reclaim}, lent(g), nil
}

// reclaim serves OpReclaim: a reference kept from before a daemon crash
// moves to this connection (registry.Reclaim checks the secret and uid).
// No descriptor goes with the reply: the holder still has its socket.
func (ss *session) reclaim(r *wire.ReclaimRequest) (*wire.BindResult, error) {
	g, err := ss.s.registry.Reclaim(r.Token, r.Secret, ss.holder)
	if err != nil {
		return nil, registryError(err)
	}
	return &wire.BindResult{Token: g.Token, Local: g.Key.Addr.String(), Network: g.Key.Proto, Shared: g.Shared, Reclaim: g.Reclaim}, nil
}

// release serves OpRelease.
func (ss *session) release(r *wire.TokenRequest) (registry.Key, error) {
	k, err := ss.s.registry.Release(r.Token, ss.holder, ss.s.policy.Load().Admin(&ss.caller))
	if err != nil {
		return k, registryError(err)
	}
	return k, nil
}

// status serves OpStatus. A caller no rule applies to gets an empty list
// without the registry being asked: it can have been granted nothing (but
// see docs/protocol.md, 7.8, on reloads). Others' listings cost what their
// uid has; an admin's walks the cache in chunks (registry.Status).
func (ss *session) status() *wire.StatusResult {
	pol := ss.s.policy.Load()
	if !pol.Known(&ss.caller) {
		return &wire.StatusResult{Sockets: []wire.SocketStatus{}}
	}
	admin := pol.Admin(&ss.caller)
	infos := ss.s.registry.Status(ss.holder, admin)
	now := time.Now()
	res := &wire.StatusResult{Sockets: make([]wire.SocketStatus, 0, len(infos))}
	if admin {
		res.Daemon = ss.stats()
	}
	for _, in := range infos {
		if len(in.Refs) < in.NRefs {
			res.Truncated = true
		}
		st := wire.SocketStatus{
			Network:  in.Key.Proto,
			Local:    in.Key.Addr.String(),
			Refs:     in.NRefs,
			AgeMS:    now.Sub(in.Created).Milliseconds(),
			LingerMS: in.Linger.Milliseconds(),
			NetnsID:  in.Key.Netns,
			Holders:  make([]wire.HolderStatus, 0, len(in.Refs)),
		}
		if in.Key.Netns != "" {
			st.Netns = in.NetnsName
			if st.Netns == "" {
				st.Netns = netns.Caller
			}
		}
		if !in.IdleSince.IsZero() {
			st.LingeringMS = max(now.Sub(in.IdleSince).Milliseconds(), 1)
		}
		for _, r := range in.Refs {
			st.Holders = append(st.Holders, wire.HolderStatus{
				Share: r.Share.String(), Name: r.Name, UID: r.Holder.UID, PID: r.Holder.PID, App: r.Holder.App,
				Pending: r.Pending, Token: r.Token,
			})
		}
		res.Sockets = append(res.Sockets, st)
	}
	fitStatus(res)
	return res
}

// maxStatusHolders is the most holders listed for one socket; Refs still
// counts them all.
const maxStatusHolders = 64

// fitStatus cuts a status listing so that its reply fits in one packet.
func fitStatus(res *wire.StatusResult) {
	total := len(res.Sockets)
	for i := range res.Sockets {
		if h := res.Sockets[i].Holders; len(h) > maxStatusHolders {
			res.Sockets[i].Holders = h[:maxStatusHolders]
			res.Truncated = true
		}
	}
	for len(res.Sockets) > 0 {
		b, err := wire.Encode(&wire.Reply{V: wire.Version, ID: math.MaxUint64, Status: res})
		if err == nil && len(b) < wire.MaxMessageSize-256 {
			break
		}
		res.Sockets = res.Sockets[:len(res.Sockets)/2]
		res.Truncated = true
	}
	if res.Truncated {
		res.Total = total
	}
}

// reload serves OpReload: admins only.
func (ss *session) reload() error {
	if !ss.s.policy.Load().Admin(&ss.caller) {
		ss.log.Warn("deny", "op", wire.OpReload, "err", "not an admin")
		return wire.Errorf(wire.CodeDenied, "uid %d is not an admin: reload needs a rule with admin = true (or send SIGHUP)", ss.caller.UID)
	}
	if ss.s.reload == nil {
		return wire.Errorf(wire.CodeInvalidRequest, "this daemon cannot reload")
	}
	if err := ss.s.reload(); err != nil {
		return wire.Errorf(wire.CodeInvalidRequest, "reload failed, the running configuration is kept: %v", err)
	}
	ss.log.Info("grant", "op", wire.OpReload)
	return nil
}

// stats describes the daemon's own resources.
func (ss *session) stats() *wire.DaemonStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds := -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = len(ents) - 1 // less the directory being read
	}
	socks, refs := ss.s.registry.Counts()
	return &wire.DaemonStats{
		PID: os.Getpid(), Goroutines: runtime.NumGoroutine(), FDs: fds, HeapBytes: ms.HeapAlloc,
		Sessions: ss.s.Sessions(), Sockets: socks, Refs: refs,
	}
}

// registryError maps cache and socket errors to wire errors.
func registryError(err error) error {
	switch {
	case errors.Is(err, registry.ErrShareConflict), errors.Is(err, registry.ErrOptionsDiffer):
		return wire.Errorf(wire.CodeShareConflict, "%v", err)
	case errors.Is(err, registry.ErrNoToken):
		// Every token the caller cannot use gets this very message: it
		// names no address and no reason (docs/protocol.md, 7.5).
		return wire.Errorf(wire.CodeNotFound, "%v for this caller: a token is single-use, expires, may be picked up only by a caller granted its address and released only by its holder; ask for a new one", err)
	case errors.Is(err, registry.ErrLimit):
		return wire.Errorf(wire.CodeLimitExceeded, "%v; release sockets or ask the administrator to raise [limits]", err)
	case errors.Is(err, registry.ErrClosed):
		return wire.Errorf(wire.CodeInternal, "the daemon is shutting down")
	}
	if e := broker.Exhausted(err); e != nil {
		return e
	}
	e := wire.Errorf(wire.CodeBindFailed, "%v", err)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		e.Errno = int(errno)
	}
	return e
}
