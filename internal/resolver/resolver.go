package resolver

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Resolver resolves names as a process in one network namespace would. It
// is safe for concurrent use; do not copy it after first use. Set its
// fields before the first lookup and do not change them after.
type Resolver struct {
	// Dir is the directory with the namespace's resolv.conf and hosts,
	// such as /etc/netns/NAME. A file missing there (or Dir itself
	// missing) means the system's (SystemResolvConf, SystemHosts); ""
	// means the system's files only.
	Dir string
	// Servers, when not empty, replace resolv.conf's name servers (the
	// daemon's [resolver] servers setting); search, ndots and options
	// still come from resolv.conf.
	Servers []netip.AddrPort
	// Dial opens a connection to a name server: network is "udp" or
	// "tcp", address is ip:port. It is required, and it is how the
	// resolver reaches the namespace: the daemon's Dial makes the socket
	// inside it. The resolver closes every connection Dial returns before
	// the lookup that asked for it returns.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Timeout, when positive, replaces resolv.conf's timeout (whole
	// seconds there) as the time one query waits for one server: tests
	// use it for sub-second timeouts. Zero means resolv.conf's.
	Timeout time.Duration
	// CheckInterval is how long the parsed files are used before they are
	// checked for changes again; zero means 5 s, as Go's resolver does,
	// and a negative value means at every lookup (for tests).
	CheckInterval time.Duration

	mu    sync.Mutex
	files files         // guarded by mu
	next  atomic.Uint32 // rotate: the server the next lookup starts at
}

var _ interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
} = (*Resolver)(nil)

// snapshot is what one lookup uses of the files.
type snapshot struct {
	conf      *Conf
	confErr   error
	hosts     *Hosts
	hostsPath string
}

// snapshot checks the files (at most once per CheckInterval) and returns
// what they say now.
func (r *Resolver) snapshot() snapshot {
	interval := r.CheckInterval
	if interval == 0 {
		interval = defaultCheckInterval
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.files.check(time.Now(), interval, r.Dir)
	return snapshot{
		conf:      r.files.conf,
		confErr:   r.files.confErr,
		hosts:     r.files.hosts,
		hostsPath: r.files.hostState.path,
	}
}

// Problems checks the files as a lookup would and returns what is wrong
// with them now, for the daemon to log: a file that exists but cannot be
// read, is not a regular file or is larger than 1 MiB. Each error names its
// file. Nil means none. Of these only an unreadable resolv.conf in Dir
// makes lookups fail; an unreadable system resolv.conf gives glibc's
// defaults and an unreadable hosts file counts as empty.
func (r *Resolver) Problems() []error {
	r.snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.files.problems)
}

// LookupNetIP returns the addresses of host, as net.Resolver.LookupNetIP
// does: network is "ip" (both families), "ip4" or "ip6". It returns either
// addresses (at least one) or an error, never both; a failed lookup is a
// *net.DNSError naming host and the server or file involved, with
// IsNotFound, IsTimeout or IsTemporary set as Go's resolver sets them.
//
// An IP address literal is returned as it is (if of the family). Otherwise
// the hosts file answers a name it lists, and only it; then localhost and
// names under .localhost are 127.0.0.1 and ::1; then DNS. Addresses come
// without duplicates, IPv4 first, then IPv6, each in the order the hosts
// file or the answers gave them (no RFC 6724 sort: that would need the
// namespace's routes).
func (r *Resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	fam, ok := parseFamily(network)
	if !ok {
		return nil, net.UnknownNetworkError(network)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !fam.allows(a) {
			return nil, &net.DNSError{Err: "the address is not an " + fam.String() + " address", Name: host, IsNotFound: true}
		}
		return []netip.Addr{a}, nil
	}
	if r.Dial == nil {
		return nil, &net.DNSError{Err: "the resolver has no Dial function (a bug in the daemon)", Name: host}
	}
	snap := r.snapshot()
	if snap.confErr != nil {
		return nil, &net.DNSError{Err: snap.confErr.Error(), Name: host, UnwrapErr: snap.confErr}
	}
	if addrs := snap.hosts.Lookup(host); len(addrs) > 0 {
		if addrs = arrange(addrs, fam); len(addrs) > 0 {
			return addrs, nil
		}
		return nil, &net.DNSError{Err: "no " + fam.String() + " address for this name in the hosts file", Name: host, Server: snap.hostsPath, IsNotFound: true}
	}
	if !isDomainName(host) {
		return nil, &net.DNSError{Err: "no such host (not a valid domain name)", Name: host, IsNotFound: true}
	}
	name := canonical(host)
	if isLocalhost(name) {
		return arrange([]netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}, fam), nil
	}
	if isOnion(name) {
		return nil, &net.DNSError{Err: "no such host (.onion names are not resolved with DNS, RFC 7686)", Name: host, IsNotFound: true}
	}
	servers := snap.conf.Servers
	if len(r.Servers) > 0 {
		servers = r.Servers
	}
	l := &lookup{r: r, conf: snap.conf, servers: servers, fam: fam, host: host, timeout: snap.conf.Timeout}
	if r.Timeout > 0 {
		l.timeout = r.Timeout
	}
	if snap.conf.Rotate && len(servers) > 1 {
		l.start = int((r.next.Add(1) - 1) % uint32(len(servers)))
	}
	return l.run(ctx)
}
