package resolver

import (
	"bytes"
	"net/netip"
	"strings"
	"time"
)

// Limits and defaults of resolv.conf, as glibc's resolv.h has them.
const (
	maxServers  = 3  // MAXNS
	maxSearch   = 6  // MAXDNSRCH
	maxNdots    = 15 // RES_MAXNDOTS
	maxTimeout  = 30 // RES_MAXRETRANS, seconds
	maxAttempts = 5  // RES_MAXRETRY

	defaultNdots    = 1
	defaultTimeout  = 5 * time.Second
	defaultAttempts = 2
)

// Conf is a parsed resolv.conf. ParseConf fills every field with a value
// in the documented range.
type Conf struct {
	// Servers are the nameserver lines, port 53, in file order, at most 3.
	// A file with none gives [127.0.0.1:53 [::1]:53], as glibc does. An
	// IPv6 zone ("fe80::1%eth0") is kept: it names an interface of the
	// namespace.
	Servers []netip.AddrPort
	// Search is the search list, without trailing dots, at most 6: from
	// the last search or domain line (a domain line is a list of one).
	// Empty means names are only tried as given.
	Search []string
	// Ndots is options ndots:N, 0 to 15, default 1: a name with at least
	// this many dots is tried as given before the search list.
	Ndots int
	// Timeout is options timeout:N (whole seconds, 1 to 30, default 5 s):
	// how long one query waits for one server's reply.
	Timeout time.Duration
	// Attempts is options attempts:N (1 to 5, default 2): how many rounds
	// over all servers a query makes.
	Attempts int
	// Rotate is options rotate: each lookup starts at the next server
	// rather than the first.
	Rotate bool
	// UseTCP is options use-vc (or usevc, tcp): queries go over TCP only.
	UseTCP bool
}

// defaultServers are glibc's name servers for a resolv.conf without any.
func defaultServers() []netip.AddrPort {
	return []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:53"),
		netip.MustParseAddrPort("[::1]:53"),
	}
}

// ParseConf parses resolv.conf contents. It is lenient like glibc: a line
// it does not know (or one whose keyword does not start the line), an
// address that is not a plain IPv4 or IPv6 address, a search domain that is
// not a valid name and a bad option value are ignored; lines starting with
// '#' or ';' are comments. It never fails: nil or garbage gives the
// defaults.
func ParseConf(b []byte) *Conf {
	c := &Conf{Ndots: defaultNdots, Timeout: defaultTimeout, Attempts: defaultAttempts}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\n"))
		keyword, rest, ok := cutKeyword(string(line))
		if !ok {
			continue
		}
		switch keyword {
		case "nameserver":
			f := fields(rest)
			if len(f) == 0 || len(c.Servers) == maxServers {
				continue
			}
			// glibc ends the address at a comment character.
			addr, _, _ := strings.Cut(f[0], "#")
			addr, _, _ = strings.Cut(addr, ";")
			if a, err := netip.ParseAddr(addr); err == nil {
				c.Servers = append(c.Servers, netip.AddrPortFrom(a, 53))
			}
		case "domain":
			if f := fields(rest); len(f) > 0 {
				c.Search = searchList(f[:1])
			}
		case "search":
			c.Search = searchList(fields(rest))
		case "options":
			for _, o := range fields(rest) {
				c.option(o)
			}
		}
	}
	if len(c.Servers) == 0 {
		c.Servers = defaultServers()
	}
	return c
}

// cutKeyword splits a line into its keyword and the rest, which must be
// separated by a space or tab (glibc's MATCH). Comments give ok false.
func cutKeyword(line string) (keyword, rest string, ok bool) {
	i := strings.IndexAny(line, " \t")
	if i <= 0 || line[0] == '#' || line[0] == ';' {
		return "", "", false
	}
	return line[:i], line[i+1:], true
}

// option applies one word of an options line.
func (c *Conf) option(o string) {
	switch {
	case strings.HasPrefix(o, "ndots:"):
		if n, ok := leadingUint(o[len("ndots:"):], maxNdots); ok {
			c.Ndots = n
		}
	case strings.HasPrefix(o, "timeout:"):
		if n, ok := leadingUint(o[len("timeout:"):], maxTimeout); ok {
			c.Timeout = time.Duration(max(n, 1)) * time.Second
		}
	case strings.HasPrefix(o, "attempts:"):
		if n, ok := leadingUint(o[len("attempts:"):], maxAttempts); ok {
			c.Attempts = max(n, 1)
		}
	case o == "rotate":
		c.Rotate = true
	case o == "use-vc", o == "usevc", o == "tcp":
		c.UseTCP = true
	}
}

// leadingUint reads the decimal digits s starts with, as atoi does, capped
// at limit; ok is false when s does not start with a digit.
func leadingUint(s string, limit int) (n int, ok bool) {
	for i := 0; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
		n = min(n*10+int(s[i]-'0'), limit)
		ok = true
	}
	return n, ok
}

// searchList turns search words into domains without trailing dots,
// dropping the root and invalid names, at most maxSearch.
func searchList(words []string) []string {
	out := []string{}
	for _, w := range words {
		w = strings.TrimSuffix(w, ".")
		if !isDomainName(w) || strings.HasSuffix(w, ".") || len(out) == maxSearch {
			continue
		}
		out = append(out, w)
	}
	return out
}

// fields splits s at runs of ASCII white space.
func fields(s string) []string {
	return strings.FieldsFunc(s, isSpace)
}

func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\r', '\v', '\f':
		return true
	}
	return false
}
