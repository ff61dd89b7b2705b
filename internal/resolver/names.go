package resolver

import "strings"

// isDomainName reports whether s (with or without a trailing dot) is a
// name we send to a name server: labels of 1 to 63 letters, digits, '_'
// and '-' (not first or last), at most 253 characters without the dot, and
// not all digits (so "127.1" is never sent). It is Go's isDomainName.
func isDomainName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 || s[len(s)-1] == '.' {
		return false
	}
	last := byte('.')
	nonNumeric := false
	partlen := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_':
			nonNumeric = true
			partlen++
		case '0' <= c && c <= '9':
			partlen++
		case c == '-':
			if last == '.' {
				return false
			}
			nonNumeric = true
			partlen++
		case c == '.':
			if last == '.' || last == '-' || partlen > 63 {
				return false
			}
			partlen = 0
		default:
			return false
		}
		last = c
	}
	return last != '-' && partlen <= 63 && nonNumeric
}

// canonical is name as the hosts file and the localhost rule compare it:
// ASCII lower case, one trailing dot removed.
func canonical(name string) string {
	return lowerASCII(strings.TrimSuffix(name, "."))
}

// lowerASCII lowers ASCII letters only, leaving other bytes (which may not
// be UTF-8) as they are.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// isLocalhost reports whether a canonical name is localhost or under
// .localhost, which RFC 6761 section 6.3 keeps out of DNS.
func isLocalhost(name string) bool {
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

// isOnion reports whether a canonical name is under .onion, which RFC 7686
// section 2 keeps out of DNS.
func isOnion(name string) bool {
	return name == "onion" || strings.HasSuffix(name, ".onion")
}

// candidates lists the fully qualified names to query for name, in order,
// as glibc's res_nsearch tries them: a name with a trailing dot is only
// itself; one with at least ndots dots is tried as given, then with each
// search domain; one with fewer, with each search domain, then as given.
// Names longer than DNS allows are left out.
func candidates(name string, c *Conf) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	asIs := strings.Count(name, ".") >= c.Ndots
	out := make([]string, 0, len(c.Search)+1)
	if asIs {
		out = append(out, name+".")
	}
	for _, s := range c.Search {
		if fqdn := name + "." + s + "."; len(fqdn) <= 254 {
			out = append(out, fqdn)
		}
	}
	if !asIs {
		out = append(out, name+".")
	}
	return out
}
