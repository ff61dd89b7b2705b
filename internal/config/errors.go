package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
)

// This file holds the wording of configuration errors that would otherwise
// come from a library: go-toml's (a leading zero, a wrong type) or netip's,
// which name Go functions and say nothing of what to write instead.

// socketModeHint is the error for a socket_mode written as a TOML number.
const socketModeHint = `socket_mode must be a quoted octal string: socket_mode = "0660"`

// unquotedSocketMode reports whether line (1-based) of data assigns
// socket_mode a value that is not a quoted string: 0660 (which TOML refuses,
// "leading zeroes"), 660 or 0o660 (integers, which the string field
// refuses).
func unquotedSocketMode(data []byte, line int) bool {
	lines := strings.Split(string(data), "\n")
	if line < 1 || line > len(lines) {
		return false
	}
	k, v, ok := strings.Cut(lines[line-1], "=")
	if !ok {
		return false
	}
	k = strings.Trim(strings.TrimSpace(k), `"'`)
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		k = k[i+1:]
	}
	v = strings.TrimSpace(v)
	return k == "socket_mode" && v != "" && v[0] >= '0' && v[0] <= '9'
}

// suggestKey returns the known key nearest to the last part of an unknown
// key path (as go-toml reports it: ["daemon", "sockt_mode"]), or "" when
// none is close. The known keys are the toml tags of the struct the path
// leads to in file.
func suggestKey(path []string) string {
	if len(path) == 0 {
		return ""
	}
	t := reflect.TypeOf(file{})
	for _, part := range path[:len(path)-1] {
		f, ok := fieldByTag(t, part)
		if !ok {
			return ""
		}
		t = f.Type
		for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return ""
		}
	}
	unknown := path[len(path)-1]
	best, bestD := "", len(unknown)
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if d := levenshtein(unknown, tag); d < bestD {
			best, bestD = tag, d
		}
	}
	// Close: at most two edits, and fewer than half the key's length (so
	// that "x" does not suggest "ipv6").
	if bestD > 2 || 2*bestD >= len(unknown) {
		return ""
	}
	return best
}

func fieldByTag(t reflect.Type, tag string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := 0; i < t.NumField(); i++ {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); name == tag {
			return t.Field(i), true
		}
	}
	return reflect.StructField{}, false
}

// levenshtein is the edit distance between a and b (insertions, deletions,
// substitutions of bytes). Written here because it is a dozen lines and
// keys are short ASCII; a module for it would cost more than it saves.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// patternHost returns the host part of a destination pattern (host:ports)
// or, when bind is set, of a bind grant (proto:address:ports), without
// brackets.
func patternHost(s string, bind bool) string {
	if bind {
		_, s, _ = strings.Cut(s, ":")
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
}

// allowedHost returns the host part of a Clearwater allowed-hosts entry:
// host, host:port, [IPv6], [IPv6]:port or a bare IPv6 address.
func allowedHost(s string) string {
	if !strings.HasPrefix(s, "[") && strings.Count(s, ":") >= 2 {
		return s
	}
	if !strings.HasPrefix(s, "[") && !strings.Contains(s, ":") {
		return s
	}
	return patternHost(s, false)
}

// addrProblem explains, in words a person can act on, why host (an IP
// address or a CIDR) does not parse. ok is false when host parses or does
// not look like an address or CIDR at all (a name): the pattern parser's
// own message is better then.
func addrProblem(host string) (what, why string, ok bool) {
	addr, bits, isCIDR := strings.Cut(host, "/")
	what = "address"
	if isCIDR {
		what = "CIDR"
	}
	numeric := addr != "" && strings.Trim(addr, "0123456789.") == ""
	if !isCIDR && !numeric && !strings.Contains(addr, ":") {
		return "", "", false
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		switch {
		case numeric && strings.Count(addr, ".") != 3:
			return what, "an IPv4 address has four numbers, such as 10.0.0.1", true
		case numeric:
			return what, "each of the four numbers of an IPv4 address must be 0-255, without leading zeros", true
		default:
			return what, "not an IPv4 or IPv6 address", true
		}
	}
	if !isCIDR {
		return "", "", false
	}
	n, err := strconv.Atoi(bits)
	if err != nil || n < 0 || n > a.BitLen() || bits != strconv.Itoa(n) {
		family := "IPv4"
		if a.Is6() {
			family = "IPv6"
		}
		return what, fmt.Sprintf("prefix length must be 0-%d for %s", a.BitLen(), family), true
	}
	return "", "", false
}
