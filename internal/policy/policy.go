// Package policy decides what a caller may ask of the daemon.
//
// It makes pure decisions over values: no syscalls, no DNS, no clock. The
// daemon identifies the caller (SO_PEERCRED), parses the request and resolves
// names elsewhere, then asks this package. The zero Policy denies everything.
//
// Decisions for an IP destination do not allocate: they sit on the request
// path of every connect.
package policy

import (
	"net/netip"
	"strings"
	"time"
)

// Caller identifies the process on the other end of a daemon connection, as
// the kernel reported it when the connection was made.
type Caller struct {
	// UID and GID are the caller's effective user and group IDs.
	UID, GID uint32
	// Groups are the caller's supplementary group IDs; nil when unknown.
	Groups []uint32
	// PID is the caller's process ID, for logs only: it identifies nothing
	// once the process has exited.
	PID int32
	// Netns is the network namespace the request asks for, as the rules
	// name them: "" for the daemon's own (also when a request's name or
	// "caller" turns out to be the daemon's own namespace), "caller" for
	// the calling process's own, or a name under /run/netns. Only rules
	// whose Netns covers it apply to the request.
	Netns string
}

// Rule grants callers who match any of its principals the destinations it
// lists.
type Rule struct {
	// Name identifies the rule in audit logs.
	Name string
	// UIDs and GIDs are the principals. A caller matches when its UID is in
	// UIDs, or its GID or one of its supplementary groups is in GIDs.
	UIDs []uint32
	GIDs []uint32
	// Anyone makes the rule match every caller, whatever its IDs. The
	// daemon uses it for front doors whose socket permissions are the only
	// caller check (Clearwater-compatible listeners without a uid list).
	Anyone bool
	// Connect lists the destinations the rule grants for connect requests.
	Connect []Dest
	// Bind lists the sockets the rule grants for bind requests.
	Bind []BindGrant
	// BindShares are the share modes bind requests may use; nil means
	// DefaultBindShares.
	BindShares []string
	// BindOptions are the socket options bind requests may set; nil means
	// DefaultBindOptions.
	BindOptions []string
	// Linger keeps a socket bound under this rule open this long after its
	// last reference goes, so that a restarting application gets the same
	// socket back with its queued connections.
	Linger time.Duration
	// Admin lets the rule's callers see every held socket and release any
	// reference.
	Admin bool
	// Netns lists the network namespaces the rule's grants cover: names
	// under /run/netns, "caller" (the calling process's own namespace,
	// when it is not the daemon's) and "daemon" (the daemon's own). Nil
	// means the daemon's own only.
	Netns []string
}

// Policy is an ordered set of rules. It is immutable once built; the daemon
// swaps whole policies on reload. The zero value denies everything.
type Policy struct {
	Rules []Rule
	// Deny lists IP and CIDR destinations no connect may reach, whatever
	// the rules grant and whatever a name resolves to: the guard against
	// a hostile DNS answer for a name a rule grants.
	Deny []Dest
}

// DefaultDeny is the deny list when the configuration sets none: the
// unspecified addresses, which connect(2) treats as this host.
var DefaultDeny = []string{"0.0.0.0/8:*", "[::]:*"}

// Denied reports whether addr:port is on the deny list.
func (p *Policy) Denied(addr netip.Addr, port uint16) bool {
	addr = addr.Unmap()
	for i := range p.Deny {
		d := &p.Deny[i]
		if d.kind == destPrefix && d.Ports.Contains(port) && d.prefix.Contains(addr) {
			return true
		}
	}
	return false
}

// Decision is the outcome of a policy check.
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Rule names the rule that allowed it; empty when denied.
	Rule string
}

// matches reports whether the rule applies to the caller's request: the
// caller is one of its principals and the request's namespace is one it
// covers.
func (r *Rule) matches(c *Caller) bool {
	return r.covers(c.Netns) && r.names(c)
}

// covers reports whether the rule's grants cover namespace ns (Caller.Netns).
func (r *Rule) covers(ns string) bool {
	if r.Netns == nil {
		return ns == ""
	}
	if ns == "" {
		ns = "daemon"
	}
	for _, n := range r.Netns {
		if n == ns {
			return true
		}
	}
	return false
}

// names reports whether the caller is one of the rule's principals.
func (r *Rule) names(c *Caller) bool {
	if r.Anyone {
		return true
	}
	for _, u := range r.UIDs {
		if u == c.UID {
			return true
		}
	}
	for _, g := range r.GIDs {
		if g == c.GID {
			return true
		}
		for _, cg := range c.Groups {
			if g == cg {
				return true
			}
		}
	}
	return false
}

// Known reports whether any rule names the caller at all, in any
// namespace. A caller no rule names can be refused without looking at its
// request.
func (p *Policy) Known(c *Caller) bool {
	for i := range p.Rules {
		if p.Rules[i].names(c) {
			return true
		}
	}
	return false
}

// Covers reports whether some rule that names the caller covers the
// namespace of its request (c.Netns): whether anything at all can be
// granted there.
func (p *Policy) Covers(c *Caller) bool {
	for i := range p.Rules {
		if p.Rules[i].matches(c) {
			return true
		}
	}
	return false
}

// ConnectIP decides whether the caller may connect to addr:port. An
// IPv4-mapped IPv6 address is treated as the IPv4 address. Only IP and CIDR
// patterns can allow it: a name pattern never grants an address.
func (p *Policy) ConnectIP(c *Caller, addr netip.Addr, port uint16) Decision {
	addr = addr.Unmap()
	if p.Denied(addr, port) {
		return Decision{}
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.matches(c) {
			continue
		}
		for j := range r.Connect {
			d := &r.Connect[j]
			if d.kind == destPrefix && d.Ports.Contains(port) && d.prefix.Contains(addr) {
				return Decision{Allowed: true, Rule: r.Name}
			}
		}
	}
	return Decision{}
}

// ConnectName decides whether a name pattern lets the caller connect to the
// DNS name host on port. host is compared case-insensitively, without a
// trailing dot. A host that CheckHostname refuses (an IP literal, a zoned
// IPv6 address, a numeric form, non-ASCII) is never allowed here. A false
// result is not a denial of the request: its resolved addresses may still be
// allowed by ConnectIP.
func (p *Policy) ConnectName(c *Caller, host string, port uint16) Decision {
	if CheckHostname(host) != nil {
		return Decision{}
	}
	host = strings.TrimSuffix(host, ".")
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.matches(c) {
			continue
		}
		for j := range r.Connect {
			d := &r.Connect[j]
			if d.Ports.Contains(port) && d.matchName(host) {
				return Decision{Allowed: true, Rule: r.Name}
			}
		}
	}
	return Decision{}
}

// ConnectAnyIP reports whether some IP or CIDR pattern could let the caller
// connect to port on some address. When it is false and no name pattern
// matches, a name need not even be resolved.
func (p *Policy) ConnectAnyIP(c *Caller, port uint16) bool {
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.matches(c) {
			continue
		}
		for j := range r.Connect {
			if d := &r.Connect[j]; d.kind == destPrefix && d.Ports.Contains(port) {
				return true
			}
		}
	}
	return false
}
