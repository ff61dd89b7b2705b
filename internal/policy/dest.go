package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports. The zero value contains only
// port 0; AllPorts contains every port.
type PortRange struct {
	Lo, Hi uint16
}

// AllPorts is the range a "*" port pattern stands for.
var AllPorts = PortRange{0, 65535}

// Contains reports whether p is in the range.
func (r PortRange) Contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

func (r PortRange) String() string {
	switch {
	case r == AllPorts:
		return "*"
	case r.Lo == r.Hi:
		return strconv.Itoa(int(r.Lo))
	default:
		return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
	}
}

// ParsePortRange parses "*", "N" or "N-M" with 0 <= N <= M <= 65535.
func ParsePortRange(s string) (PortRange, error) {
	if s == "*" {
		return AllPorts, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	l, err := parsePort(lo)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{l, l}, nil
	}
	h, err := parsePort(hi)
	if err != nil {
		return PortRange{}, err
	}
	if l > h {
		return PortRange{}, fmt.Errorf("port range %q is empty: %d > %d", s, l, h)
	}
	return PortRange{l, h}, nil
}

// parsePort accepts a decimal port with no sign, no leading zeros beyond
// "0" itself, and no surrounding space.
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("missing port")
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("port %q has a leading zero", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("port %q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q is out of range 0-65535", s)
	}
	return uint16(n), nil
}

type destKind uint8

const (
	destPrefix   destKind = iota + 1 // an IP or CIDR
	destName                         // an exact DNS name
	destWildcard                     // *.suffix
)

// Dest is a destination pattern: an IP address, a CIDR or a DNS name (exact,
// or "*.suffix" for any name below suffix), with a port, port range or "*".
// Build one with ParseDest.
type Dest struct {
	kind   destKind
	prefix netip.Prefix
	name   string // lower case, no trailing dot; for wildcards the ".suffix"
	// Ports is the port range the pattern grants.
	Ports PortRange
}

// IsIP reports whether the pattern is an IP address or CIDR (not a name).
func (d Dest) IsIP() bool { return d.kind == destPrefix }

// String returns the pattern in the form ParseDest accepts.
func (d Dest) String() string {
	var host string
	switch d.kind {
	case destPrefix:
		if d.prefix.IsSingleIP() {
			host = d.prefix.Addr().String()
		} else {
			host = d.prefix.String()
		}
		if d.prefix.Addr().Is6() {
			host = "[" + host + "]"
		}
	case destName:
		host = d.name
	case destWildcard:
		host = "*" + d.name
	}
	return host + ":" + d.Ports.String()
}

func (d *Dest) matchName(host string) bool {
	switch d.kind {
	case destName:
		return strings.EqualFold(host, d.name)
	case destWildcard:
		// "*.example.net" matches "a.example.net" and "a.b.example.net",
		// not "example.net" itself.
		return len(host) > len(d.name) && strings.EqualFold(host[len(host)-len(d.name):], d.name)
	}
	return false
}

// ParseDest parses a destination pattern:
//
//	192.0.2.10:443        one IPv4 address, one port
//	10.0.0.0/8:8000-8099  a CIDR and a port range
//	[2001:db8::/32]:*     an IPv6 CIDR, any port
//	sas.example.net:443   one DNS name (case-insensitive)
//	*.example.net:*       any name below example.net
//
// IPv4-mapped IPv6 patterns are stored as IPv4. A CIDR with host bits set is
// an error, so that a typo cannot widen a grant silently.
func ParseDest(s string) (Dest, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Dest{}, fmt.Errorf("destination %q has no port: write host:port, host:lo-hi or host:*", s)
	}
	host, port := s[:i], s[i+1:]
	ports, err := ParsePortRange(port)
	if err != nil {
		return Dest{}, fmt.Errorf("destination %q: %w", s, err)
	}
	d := Dest{Ports: ports}
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return Dest{}, fmt.Errorf("destination %q: unclosed '['", s)
		}
		inner := host[1 : len(host)-1]
		p, err := parsePrefix(inner)
		if err != nil || !p.Addr().Is6() {
			if err == nil {
				err = errors.New("brackets are for IPv6 addresses")
			}
			return Dest{}, fmt.Errorf("destination %q: %w", s, err)
		}
		d.kind, d.prefix = destPrefix, canonPrefix(p)
		return d, nil
	}
	if strings.ContainsAny(host, ":") {
		return Dest{}, fmt.Errorf("destination %q: write IPv6 addresses in brackets, e.g. [::1]:443", s)
	}
	if p, err := parsePrefix(host); err == nil {
		d.kind, d.prefix = destPrefix, canonPrefix(p)
		return d, nil
	} else if looksNumeric(host) {
		return Dest{}, fmt.Errorf("destination %q: %w", s, err)
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		if err := CheckHostname(rest); err != nil {
			return Dest{}, fmt.Errorf("destination %q: %w", s, err)
		}
		d.kind, d.name = destWildcard, "."+strings.ToLower(strings.TrimSuffix(rest, "."))
		return d, nil
	}
	if err := CheckHostname(host); err != nil {
		return Dest{}, fmt.Errorf("destination %q: %w", s, err)
	}
	d.kind, d.name = destName, strings.ToLower(strings.TrimSuffix(host, "."))
	return d, nil
}

// parsePrefix parses an address or a CIDR, refusing host bits in a CIDR and
// IPv6 zones.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("address %q: zones are not allowed", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("CIDR %q has host bits set; did you mean %s?", s, p.Masked())
	}
	return p, nil
}

// canonPrefix turns an IPv4-mapped IPv6 prefix of /96 or longer into the
// IPv4 prefix, since requests are matched unmapped.
func canonPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// looksNumeric reports whether s is made only of digits, dots, slashes and
// hex-ish characters that suggest a mistyped address (so that "10.0.0.0/33"
// gets the address parser's error, not a hostname error).
func looksNumeric(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c == '.' || c == '/') {
			return false
		}
	}
	return true
}

// CheckHostname reports whether s is a DNS name the daemon will resolve: one
// or more dot-separated labels of letters, digits, '-' and '_', each 1 to 63
// bytes, not starting or ending with '-', 253 bytes at most, with an optional
// trailing dot. Forms that some resolvers read as numbers ("127.1",
// "0x7f000001", "10.0.0.1." ) are refused: the last label must not be
// numeric, so that only canonical addresses name addresses.
func CheckHostname(s string) error {
	name := strings.TrimSuffix(s, ".")
	if name == "" {
		return errors.New("empty host name")
	}
	if len(name) > 253 {
		return fmt.Errorf("host name is %d bytes long; at most 253 allowed", len(name))
	}
	last := ""
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return fmt.Errorf("host name %q has an empty label", s)
		}
		if len(label) > 63 {
			return fmt.Errorf("host name %q has a label of %d bytes; at most 63 allowed", s, len(label))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host name %q has a label starting or ending with '-'", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				what := fmt.Sprintf("%q", rune(c))
				if c >= 0x80 {
					what = fmt.Sprintf("byte %#02x", c) // part of a multi-byte character
				}
				return fmt.Errorf("host name %q contains %s: only letters, digits, '-', '_' and '.' are allowed", s, what)
			}
		}
		last = label
	}
	if isNumericLabel(last) {
		return fmt.Errorf("host %q is neither a canonical IP address nor a DNS name (its last label is numeric)", s)
	}
	return nil
}

// isNumericLabel reports whether a label is a decimal, octal or hex number
// as inet_aton would read it.
func isNumericLabel(l string) bool {
	if len(l) > 2 && (l[:2] == "0x" || l[:2] == "0X") {
		for i := 2; i < len(l); i++ {
			c := l[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}
