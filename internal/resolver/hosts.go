package resolver

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
)

// Hosts is a parsed hosts file: the addresses of each name. The zero value
// and nil are an empty file. It is not changed after ParseHosts, so it is
// safe for concurrent use.
type Hosts struct {
	byName map[string][]netip.Addr
}

// ParseHosts parses /etc/hosts contents: lines of an address and one or
// more names, '#' starting a comment anywhere. Names are compared without
// regard to ASCII case or one trailing dot; an IPv6 zone is dropped; a line
// whose address does not parse is ignored, as is a name with more than one
// trailing dot and everything else it cannot read. It never fails.
func ParseHosts(b []byte) *Hosts {
	h := &Hosts{byName: map[string][]netip.Addr{}}
	type entry struct {
		name string
		addr netip.Addr
	}
	seen := map[entry]bool{}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\n"))
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := fields(string(line))
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		a = a.WithZone("")
		for _, name := range f[1:] {
			name = canonical(name)
			if name == "" || strings.HasSuffix(name, ".") || seen[entry{name, a}] {
				continue
			}
			seen[entry{name, a}] = true
			h.byName[name] = append(h.byName[name], a)
		}
	}
	return h
}

// Lookup returns the addresses of name in file order, or nil when the file
// does not list it. The caller may change the slice.
func (h *Hosts) Lookup(name string) []netip.Addr {
	if h == nil {
		return nil
	}
	return slices.Clone(h.byName[canonical(name)])
}

// Len returns how many names the file lists.
func (h *Hosts) Len() int {
	if h == nil {
		return 0
	}
	return len(h.byName)
}

// family is what a lookup's network asks for: 0 for both, 4 or 6.
type family int

// parseFamily parses LookupNetIP's network.
func parseFamily(network string) (family, bool) {
	switch network {
	case "ip":
		return 0, true
	case "ip4":
		return 4, true
	case "ip6":
		return 6, true
	}
	return 0, false
}

// allows reports whether a is of the family; an IPv4-mapped IPv6 address
// counts as IPv4, as Go's resolver counts it.
func (f family) allows(a netip.Addr) bool {
	switch f {
	case 4:
		return a.Unmap().Is4()
	case 6:
		return !a.Unmap().Is4()
	}
	return true
}

// String names the family for messages.
func (f family) String() string {
	switch f {
	case 4:
		return "IPv4"
	case 6:
		return "IPv6"
	}
	return "IP"
}

// arrange returns the addresses of the family without duplicates, IPv4
// (including IPv4-mapped) first, then IPv6, each in the order given.
func arrange(addrs []netip.Addr, f family) []netip.Addr {
	var v4, v6 []netip.Addr
	seen := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if !f.allows(a) || seen[a] {
			continue
		}
		seen[a] = true
		if a.Unmap().Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return append(v4, v6...)
}
