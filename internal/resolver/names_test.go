package resolver

import (
	"slices"
	"strings"
	"testing"
)

func TestIsDomainName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"example.test", true},
		{"example.test.", true},
		{"a", true},
		{"_srv._tcp.example.test", true},
		{"x-y.test", true},
		{strings.Repeat("a", 63) + ".test", true},
		{strings.Repeat("a", 64) + ".test", false},
		{strings.Repeat("a.", 126) + "a", true},   // 253 characters
		{strings.Repeat("a.", 126) + "ab", false}, // 254
		{"", false},
		{".", false},
		{"a..b", false},
		{"a..", false},
		{"a.b..", false},
		{".a", false},
		{"-a.test", false},
		{"a-.test", false},
		{"a.-b", false},
		{"127.1", false},
		{"192.0.2.1", false},
		{"a b", false},
		{"a\x00b", false},
		{"ünï.test", false},
	}
	for _, tt := range tests {
		if got := isDomainName(tt.name); got != tt.want {
			t.Errorf("isDomainName(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCandidates(t *testing.T) {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63)
	tests := []struct {
		name, host string
		search     []string
		ndots      int
		want       []string
	}{
		{"absolute", "a.b.", []string{"s.test"}, 1, []string{"a.b."}},
		{"enough dots", "a.b", []string{"s.test", "t.test"}, 1, []string{"a.b.", "a.b.s.test.", "a.b.t.test."}},
		{"too few dots", "a", []string{"s.test", "t.test"}, 1, []string{"a.s.test.", "a.t.test.", "a."}},
		{"ndots 0", "a", []string{"s.test"}, 0, []string{"a.", "a.s.test."}},
		{"no search list", "a", nil, 1, []string{"a."}},
		{"too long with a suffix", long, []string{strings.Repeat("d", 63) + ".test"}, 5, []string{long + "."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := candidates(tt.host, &Conf{Search: tt.search, Ndots: tt.ndots})
			if !slices.Equal(got, tt.want) {
				t.Errorf("candidates(%q) = %q, want %q", tt.host, got, tt.want)
			}
		})
	}
}
