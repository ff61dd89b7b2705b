package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// BindGrant is a pattern of sockets a rule lets its callers bind: a
// protocol (tcp, udp or both), an address (IP, CIDR, or any) and a port
// range. Build one with ParseBindGrant.
type BindGrant struct {
	// Proto is "tcp", "udp", or "" for both.
	Proto string
	// Prefix is the granted addresses; invalid means any address,
	// the unspecified ones (0.0.0.0, ::) included.
	Prefix netip.Prefix
	// Ports is the granted port range. Port 0 (any free port) is granted
	// only by a range that starts at 0.
	Ports PortRange
}

// ParseBindGrant parses PROTO:ADDRESS:PORTS, where PROTO is tcp, udp or *,
// ADDRESS an IP, a CIDR ([...] for IPv6) or *, and PORTS N, N-M or *:
//
//	udp:0.0.0.0:53     UDP port 53 on all IPv4 addresses
//	tcp:[::]:53        TCP port 53 on all IPv6 addresses
//	*:*:53             port 53, both protocols, any address
//	tcp:10.1.0.0/16:8000-8999
func ParseBindGrant(s string) (BindGrant, error) {
	proto, rest, ok := strings.Cut(s, ":")
	if !ok {
		return BindGrant{}, fmt.Errorf("bind grant %q: want proto:address:ports, e.g. udp:0.0.0.0:53", s)
	}
	var g BindGrant
	switch proto {
	case "tcp", "udp":
		g.Proto = proto
	case "*":
	default:
		return BindGrant{}, fmt.Errorf("bind grant %q: protocol %q: want tcp, udp or *", s, proto)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return BindGrant{}, fmt.Errorf("bind grant %q has no port: write proto:address:ports", s)
	}
	host, port := rest[:i], rest[i+1:]
	ports, err := ParsePortRange(port)
	if err != nil {
		return BindGrant{}, fmt.Errorf("bind grant %q: %w", s, err)
	}
	g.Ports = ports
	if host == "*" {
		return g, nil
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return BindGrant{}, fmt.Errorf("bind grant %q: write IPv6 addresses in brackets", s)
	}
	p, err := parsePrefix(host)
	if err != nil {
		return BindGrant{}, fmt.Errorf("bind grant %q: %w", s, err)
	}
	g.Prefix = canonPrefix(p)
	return g, nil
}

// String returns the grant in the form ParseBindGrant accepts.
func (g BindGrant) String() string {
	proto := g.Proto
	if proto == "" {
		proto = "*"
	}
	host := "*"
	if g.Prefix.IsValid() {
		if g.Prefix.IsSingleIP() {
			host = g.Prefix.Addr().String()
		} else {
			host = g.Prefix.String()
		}
		if g.Prefix.Addr().Is6() {
			host = "[" + host + "]"
		}
	}
	return proto + ":" + host + ":" + g.Ports.String()
}

func (g *BindGrant) matches(proto string, addr netip.Addr, port uint16) bool {
	return (g.Proto == "" || g.Proto == proto) && g.Ports.Contains(port) &&
		(!g.Prefix.IsValid() || g.Prefix.Contains(addr))
}

// DefaultBindOptions are the socket options a bind rule allows when it
// lists none: the ones that give no other user a way into the socket's
// address and port. reuseaddr (named in a query only where it turns
// SO_REUSEADDR on for a socket that does not listen: then any local user
// can bind the same port and take its traffic), reuseport, freebind,
// transparent and bind_to_device must be granted explicitly. What each
// exposes is in docs/configuration.md (Bind grants).
var DefaultBindOptions = []string{"v6only", "rcvbuf", "sndbuf", "pmtud_off", "fastopen", "defer_accept", "backlog", "listen"}

// DefaultBindShares are the share modes a bind rule allows when it lists
// none: all of them.
var DefaultBindShares = []string{"none", "same-name", "any"}

// BindQuery is a bind request as the policy sees it.
type BindQuery struct {
	// Proto is "tcp" or "udp".
	Proto string
	// Addr is the address to bind (unspecified for all), unmapped.
	Addr netip.Addr
	// Port is the port, 0 for any free port.
	Port uint16
	// Share is the requested share mode: none, same-name or any.
	Share string
	// Options are the names of the socket options the request sets;
	// "reuseaddr" only where it turns SO_REUSEADDR on for a socket that
	// does not listen (UDP, or TCP bound only), the one value that exposes
	// the port to other users.
	Options []string
}

// BindDecision is the outcome of a bind check.
type BindDecision struct {
	Decision
	// Linger is how long the granting rule keeps a socket after its last
	// reference is released.
	Linger time.Duration
}

// Bind decides whether the caller may bind as q asks: the first rule that
// matches the caller, grants the address, and allows the share mode and
// every option decides. The denial says what was missing, for the audit log
// and the caller.
func (p *Policy) Bind(c *Caller, q *BindQuery) (BindDecision, string) {
	addr := q.Addr.Unmap()
	why := "no rule grants this address and port"
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.matches(c) {
			continue
		}
		granted := false
		for j := range r.Bind {
			if r.Bind[j].matches(q.Proto, addr, q.Port) {
				granted = true
				break
			}
		}
		if !granted {
			continue
		}
		if !allowedIn(q.Share, r.BindShares, DefaultBindShares) {
			why = fmt.Sprintf("rule %q does not allow share mode %q", r.Name, q.Share)
			continue
		}
		if o, ok := firstNotAllowed(q.Options, r.BindOptions); !ok {
			why = fmt.Sprintf("rule %q does not allow socket option %q", r.Name, o)
			continue
		}
		return BindDecision{Decision: Decision{Allowed: true, Rule: r.Name}, Linger: r.Linger}, ""
	}
	return BindDecision{}, why
}

// Admin reports whether an admin rule matches the caller: it may see and
// release every reference.
func (p *Policy) Admin(c *Caller) bool {
	for i := range p.Rules {
		if p.Rules[i].Admin && p.Rules[i].names(c) {
			return true
		}
	}
	return false
}

func allowedIn(v string, list, def []string) bool {
	if list == nil {
		list = def
	}
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

func firstNotAllowed(opts, allowed []string) (string, bool) {
	for _, o := range opts {
		if !allowedIn(o, allowed, DefaultBindOptions) {
			return o, false
		}
	}
	return "", true
}

// BindAddr decides whether some rule grants the caller proto addr:port at
// all, whatever the share mode and options: the check for picking up a
// token someone else asked for.
func (p *Policy) BindAddr(c *Caller, proto string, addr netip.Addr, port uint16) Decision {
	addr = addr.Unmap()
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.matches(c) {
			continue
		}
		for j := range r.Bind {
			if r.Bind[j].matches(proto, addr, port) {
				return Decision{Allowed: true, Rule: r.Name}
			}
		}
	}
	return Decision{}
}
