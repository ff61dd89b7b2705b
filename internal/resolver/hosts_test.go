package resolver

import (
	"slices"
	"strings"
	"testing"
)

func TestParseHosts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string][]string // name looked up to addresses (nil: none)
	}{
		{"several names a line", "192.0.2.1 a b\tc\n",
			map[string][]string{"a": {"192.0.2.1"}, "b": {"192.0.2.1"}, "c": {"192.0.2.1"}, "192.0.2.1": nil}},
		{"case and trailing dots ignored", "192.0.2.1 Foo.Test.\n",
			map[string][]string{"foo.test": {"192.0.2.1"}, "FOO.TEST.": {"192.0.2.1"}, "foo.test..": nil}},
		{"comments", "# 192.0.2.1 x\n192.0.2.2 y # z\n192.0.2.3 w#v\n",
			map[string][]string{"x": nil, "y": {"192.0.2.2"}, "z": nil, "w": {"192.0.2.3"}, "v": nil}},
		{"lines add up in order, duplicates dropped", "192.0.2.2 h\n2001:db8::1 h\n192.0.2.1 h H\n192.0.2.2 h\n",
			map[string][]string{"h": {"192.0.2.2", "2001:db8::1", "192.0.2.1"}}},
		{"IPv6 zone dropped", "fe80::1%eth0 ll\n", map[string][]string{"ll": {"fe80::1"}}},
		{"bad addresses ignored", "192.0.2.300 bad\n127.1 short\nnot-an-ip x\n192.0.2.1\n",
			map[string][]string{"bad": nil, "short": nil, "x": nil, "192.0.2.1": nil}},
		{"CRLF", "192.0.2.1 crlf\r\n", map[string][]string{"crlf": {"192.0.2.1"}}},
		{"binary junk", "\x00\xff 192.0.2.1\n192.0.2.2 ok\x00\n192.0.2.3 good\n",
			map[string][]string{"ok": nil, "ok\x00": {"192.0.2.2"}, "good": {"192.0.2.3"}}},
		{"very long line", "192.0.2.1 " + strings.Repeat("x", 1<<20) + " after\n192.0.2.2 next\n",
			map[string][]string{"after": {"192.0.2.1"}, "next": {"192.0.2.2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := ParseHosts([]byte(tt.in))
			for name, want := range tt.want {
				if got := addrStrings(h.Lookup(name)); !slices.Equal(got, want) {
					t.Errorf("Lookup(%q) = %v, want %v", name, got, want)
				}
			}
		})
	}
	t.Run("nil and empty", func(t *testing.T) {
		for _, h := range []*Hosts{nil, {}, ParseHosts(nil)} {
			if got := h.Lookup("localhost"); got != nil || h.Len() != 0 {
				t.Errorf("Lookup = %v, Len %d; want nil, 0", got, h.Len())
			}
		}
	})
	t.Run("Lookup returns a copy", func(t *testing.T) {
		h := ParseHosts([]byte("192.0.2.1 h\n"))
		h.Lookup("h")[0] = h.Lookup("h")[0].Next()
		if got := addrStrings(h.Lookup("h")); !slices.Equal(got, []string{"192.0.2.1"}) {
			t.Errorf("after changing a result, Lookup = %v, want [192.0.2.1]", got)
		}
	})
}

func FuzzParseHosts(f *testing.F) {
	for _, s := range []string{
		"",
		"127.0.0.1 localhost\n::1 localhost ip6-localhost\n",
		"192.0.2.1 Foo.Test. foo # comment\nfe80::1%eth0 ll\n",
		"\x00\xff\n192.0.2.300 bad\n\t192.0.2.2\tx\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h := ParseHosts(b)
		for name, addrs := range h.byName {
			if name == "" || name != canonical(name) {
				t.Errorf("name %q stored, want non-empty, lower case, without a trailing dot", name)
			}
			seen := map[string]bool{}
			for _, a := range addrs {
				if !a.IsValid() || a.Zone() != "" || seen[a.String()] {
					t.Errorf("name %q: address %v invalid, zoned or repeated", name, a)
				}
				seen[a.String()] = true
			}
			if got := h.Lookup(upperASCII(name) + "."); !slices.Equal(got, addrs) {
				t.Errorf("Lookup of %q in upper case with a dot = %v, want %v", name, got, addrs)
			}
		}
	})
}

// upperASCII raises ASCII letters only.
func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}
