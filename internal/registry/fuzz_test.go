package registry_test

import (
	"testing"

	"github.com/sockfactory/sockfactory/internal/registry"
)

// FuzzParseShare checks that ParseShare accepts exactly its three names and
// the empty string, and that a mode prints as a name that parses back to it.
func FuzzParseShare(f *testing.F) {
	for _, s := range []string{"", "none", "same-name", "any", "Any", "same_name", " none", "none\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sh, err := registry.ParseShare(s)
		known := s == "" || s == "none" || s == "same-name" || s == "any"
		if (err == nil) != known {
			t.Fatalf("ParseShare(%q) = %v, %v; want ok=%v", s, sh, err, known)
		}
		if err != nil {
			return
		}
		if s != "" && sh.String() != s {
			t.Fatalf("ParseShare(%q).String() = %q, want %q", s, sh.String(), s)
		}
		if again, err := registry.ParseShare(sh.String()); err != nil || again != sh {
			t.Fatalf("ParseShare(%q) = %v, but ParseShare(%q) = %v, %v", s, sh, sh.String(), again, err)
		}
	})
}
