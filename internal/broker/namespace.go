package broker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/sockfactory/sockfactory/internal/connector"
	"github.com/sockfactory/sockfactory/internal/netns"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/resolver"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// Namespaces is the step every connect and bind goes through first: which
// network namespace the request names, and whether the caller may use it
// at all. It keeps, for each namespace in use, a resolver that reads that
// namespace's own files and sends its queries from inside it. Safe for
// concurrent use. A nil *Namespaces serves the daemon's own namespace only.
type Namespaces struct {
	m       *netns.Manager
	etcDir  string
	servers map[string][]netip.AddrPort

	mu sync.Mutex
	// resolvers are by name ("caller" for every caller's namespace): a
	// resolver depends on the name's files and servers only, and finds
	// the namespace to send from in each lookup's context.
	resolvers map[string]*resolver.Resolver
}

// NewNamespaces returns the namespace step over m. etcDir holds each named
// namespace's resolv.conf and hosts (etcDir/NAME/, as `ip netns exec` reads
// them); servers, when a name has some, replace its resolv.conf's name
// servers.
func NewNamespaces(m *netns.Manager, etcDir string, servers map[string][]netip.AddrPort) *Namespaces {
	return &Namespaces{m: m, etcDir: etcDir, servers: servers, resolvers: map[string]*resolver.Resolver{}}
}

// Scope is the namespace one request is served in.
type Scope struct {
	// Target is where its sockets are made.
	Target netns.Target
	// Caller is the request's caller with Netns as the policy sees it:
	// "" when the target is the daemon's own namespace, whatever name
	// asked for it.
	Caller policy.Caller
}

// Scope resolves the namespace name (a request's netns: "" or "daemon" for
// the daemon's own, "caller", or a name under the namespace directory) for
// caller c, whose connection is conn. A caller no rule grants anything in
// that namespace is denied before the name is even looked up. A name that
// turns out to be the daemon's own namespace is served, and decided, as
// the daemon's own.
func (n *Namespaces) Scope(pol *policy.Policy, c *policy.Caller, name string, conn syscall.RawConn) (Scope, error) {
	if name == "" || name == netns.Daemon {
		return Scope{Caller: *c}, nil
	}
	if err := netns.CheckName(name); err != nil {
		return Scope{}, wire.Errorf(wire.CodeInvalidRequest, "%v", err)
	}
	cc := *c
	cc.Netns = name
	if !pol.Covers(&cc) {
		return Scope{}, wire.Errorf(wire.CodeDenied, "policy grants uid %d nothing in network namespace %q (a rule's netns lists the namespaces it covers)", c.UID, name)
	}
	if n == nil {
		return Scope{}, wire.Errorf(wire.CodeInvalidRequest, "this daemon serves no network namespace but its own")
	}
	var t netns.Target
	var err error
	if name == netns.Caller {
		t, err = n.m.Peer(conn)
	} else {
		t, err = n.m.Named(name)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Scope{}, wire.Errorf(wire.CodeNotFound, "%v", err)
		}
		return Scope{}, wire.Errorf(wire.CodeInternal, "network namespace %q: %v", name, err)
	}
	if t.Own() {
		cc.Netns = ""
	}
	return Scope{Target: t, Caller: cc}, nil
}

// ConnectOptions returns o with the scope's socket(2) and resolver, for a
// connect made from the scope's namespace.
func (n *Namespaces) ConnectOptions(s *Scope, o connector.Options) connector.Options {
	if s.Target.Own() {
		return o
	}
	t := s.Target
	o.Socket = t.Socket
	o.Resolver = n.resolver(t)
	return o
}

// resolver returns the namespace's resolver: its files, its servers, and
// queries sent from sockets made inside it.
func (n *Namespaces) resolver(t netns.Target) connector.Lookup {
	k := t.Name
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.resolvers[k]; r != nil {
		return inScope{r, t}
	}
	r := &resolver.Resolver{Dial: dialIn}
	if t.Name != netns.Caller {
		// The caller's namespace has no name, so no files of its own
		// here: it gets the system's (docs/configuration.md).
		r.Dir = filepath.Join(n.etcDir, t.Name)
		r.Servers = n.servers[t.Name]
	}
	n.resolvers[k] = r
	return inScope{r, t}
}

// Forget drops what was kept for namespace name (it was removed): its
// resolver's cached files.
func (n *Namespaces) Forget(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.resolvers, name)
}

// inScope runs a namespace's resolver with the request's target in its
// context, where dialIn finds it: the resolver (and the files it caches)
// outlives the target, whose threads may be retired between requests.
type inScope struct {
	r *resolver.Resolver
	t netns.Target
}

type targetKey struct{}

func (s inScope) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return s.r.LookupNetIP(context.WithValue(ctx, targetKey{}, s.t), network, host)
}

// dialIn connects to a name server from a socket made in the target of
// ctx's scope.
func dialIn(ctx context.Context, network, address string) (net.Conn, error) {
	t, ok := ctx.Value(targetKey{}).(netns.Target)
	if !ok {
		return nil, errors.New("resolving outside a request's namespace")
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("name server %q: %w", address, err)
	}
	n, err := connector.ParseNetwork(network)
	if err != nil {
		return nil, err
	}
	var c connector.Connector
	sk, _, err := c.Connect(ctx, n, []netip.AddrPort{ap}, connector.Options{Socket: t.Socket})
	if err != nil {
		return nil, err
	}
	f := sk.File("dns:" + address)
	defer f.Close()
	return net.FileConn(f)
}
