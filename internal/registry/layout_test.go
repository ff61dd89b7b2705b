package registry_test

import (
	"errors"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/registry"
)

// TestTokenSpelling: a token is accepted only exactly as it was issued;
// other spellings of the same bits are unknown tokens and change nothing.
func TestTokenSpelling(t *testing.T) {
	f := newFixture(t, time.Minute)
	a := &registry.Holder{UID: 1}
	held := f.acquire(f.req(tcp0, a, shareAny, ""))
	p := f.acquire(f.pending(held.Key, a, shareAny, ""))
	spellings := func(tok string) map[string]string {
		return map[string]string{
			"upper case":     strings.ToUpper(tok),
			"one digit less": tok[:len(tok)-1],
			"one digit more": tok + "0",
			"0x prefix":      "0x" + tok[2:],
			"space":          " " + tok[1:],
			"empty":          "",
			"half":           tok[:16],
		}
	}
	for name, s := range spellings(held.Token) {
		if s == held.Token {
			t.Fatalf("spelling %q is the token itself", name)
		}
		if _, err := f.g.Release(s, a, true); !errors.Is(err, registry.ErrNoToken) {
			t.Errorf("Release(%s spelling %q): got %v, want ErrNoToken", name, s, err)
		}
	}
	for name, s := range spellings(p.Token) {
		if g, err := f.g.Pickup(s, a, allow); !errors.Is(err, registry.ErrNoToken) {
			f.closeLater(g)
			t.Errorf("Pickup(%s spelling %q): got %+v, %v; want ErrNoToken", name, s, g, err)
		}
	}
	f.wantCounts(1, 2)
	if _, err := f.g.Release(held.Token, a, false); err != nil {
		t.Errorf("Release of the token as issued: got %v, want nil", err)
	}
	g, err := f.g.Pickup(p.Token, a, allow)
	if err != nil {
		t.Fatalf("Pickup of the token as issued: got %v, want a grant", err)
	}
	f.closeLater(g)
	f.wantCounts(1, 1)
}

// TestHeldSocketsFDs holds many sockets for two holders and checks that
// the cache keeps exactly one fd per socket, that releases by token (in
// any order) and by holder give every fd and port back, and that Holds
// follows.
func TestHeldSocketsFDs(t *testing.T) {
	f := newFixture(t, time.Minute)
	base := openFDs(t)
	a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	const n = 100
	var grants []*registry.Grant
	for i := range n {
		h := a
		if i%2 == 1 {
			h = b
		}
		g, err := f.g.Acquire(f.req(tcp0, h, shareNone, ""))
		if err != nil {
			t.Fatalf("Acquire %d: %v", i, err)
		}
		g.File.Close()
		grants = append(grants, g)
	}
	f.wantCounts(n, n)
	if got := openFDs(t) - base; got != n {
		t.Errorf("fds the cache keeps for %d held sockets: got %d, want %d", n, got, n)
	}
	if ga, gb := f.g.Holds(a), f.g.Holds(b); ga != n/2 || gb != n/2 {
		t.Errorf("Holds: got a %d, b %d; want %d each", ga, gb, n/2)
	}
	// Release a's references from the middle out, then b's by holder.
	released := 0
	for _, i := range []int{50, 0, 98, 24, 2, 96} {
		if _, err := f.g.Release(grants[i].Token, a, false); err != nil {
			t.Fatalf("Release of grant %d: %v", i, err)
		}
		released++
		wantPortFree(t, grants[i].Key, true)
	}
	if got := f.g.Holds(a); got != n/2-released {
		t.Errorf("Holds(a) after %d releases: got %d, want %d", released, got, n/2-released)
	}
	if got := f.g.ReleaseHolder(b); got != n/2 {
		t.Errorf("ReleaseHolder(b): got %d, want %d", got, n/2)
	}
	if got := f.g.ReleaseHolder(a); got != n/2-released {
		t.Errorf("ReleaseHolder(a): got %d, want %d", got, n/2-released)
	}
	f.wantCounts(0, 0)
	if got := openFDs(t); got != base {
		t.Errorf("open fds after every release: got %d, want %d", got, base)
	}
	for _, g := range grants {
		wantPortFree(t, g.Key, true)
	}
}

// TestSharedSocketRefs releases the references of one shared socket in an
// order that takes them from the front, the middle and the back of its
// list, and checks Status, Shared and the socket's life after each.
func TestSharedSocketRefs(t *testing.T) {
	f := newFixture(t, time.Minute)
	a, b, c := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}, &registry.Holder{UID: 3}
	g1 := f.acquire(f.req(tcp0, a, shareAny, "1"))
	g2 := f.acquire(f.req(g1.Key, b, shareAny, "2"))
	g3 := f.acquire(f.req(g1.Key, c, shareAny, "3"))
	p := f.acquire(f.pending(g1.Key, a, shareAny, "4"))
	for _, g := range []*registry.Grant{g1, g2, g3} {
		g.File.Close() // the cache's own copy keeps the port
	}
	names := func() string {
		st := f.g.Status(nil, true)
		if len(st) != 1 {
			return "no socket"
		}
		var s []string
		for _, r := range st[0].Refs {
			s = append(s, r.Name)
		}
		sort.Strings(s)
		return strings.Join(s, ",")
	}
	if got := names(); got != "1,2,3,4" {
		t.Fatalf("refs: got %s, want 1,2,3,4", got)
	}
	steps := []struct {
		token string
		by    *registry.Holder
		want  string
	}{
		{g2.Token, b, "1,3,4"},
		{p.Token, a, "1,3"},
		{g1.Token, a, "3"},
	}
	for _, s := range steps {
		if _, err := f.g.Release(s.token, s.by, false); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if got := names(); got != s.want {
			t.Errorf("refs after a release: got %s, want %s", got, s.want)
		}
		wantPortFree(t, g1.Key, false)
	}
	if st := f.g.Status(c, false); len(st) != 1 || len(st[0].Refs) != 1 || st[0].Refs[0].Token != g3.Token {
		t.Errorf("Status(c): got %+v, want c's one reference, token %s", st, g3.Token)
	}
	p2 := f.acquire(f.pending(g1.Key, a, shareAny, "5"))
	g, err := f.g.Pickup(p2.Token, b, allow)
	if err != nil {
		t.Fatalf("Pickup: %v", err)
	}
	g.File.Close()
	if !g.Shared {
		t.Errorf("Pickup next to another holder: got shared false, want true")
	}
	if got := f.g.ReleaseHolder(c); got != 1 {
		t.Errorf("ReleaseHolder(c): got %d, want 1", got)
	}
	if got := names(); got != "5" {
		t.Errorf("refs: got %s, want 5", got)
	}
	if got := f.g.ReleaseHolder(b); got != 1 {
		t.Errorf("ReleaseHolder(b): got %d, want 1", got)
	}
	f.wantCounts(0, 0)
	wantPortFree(t, g1.Key, true)
}

// TestOddOptions: options that cannot be map keys, or are not equal to
// themselves, still make sockets; the NaN ones never match, as with ==.
func TestOddOptions(t *testing.T) {
	type withNaN struct{ F float64 }
	tests := []struct {
		name string
		opts any
	}{
		{"slice", []int{1}},
		{"NaN", withNaN{math.NaN()}},
		{"nil", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			h := &registry.Holder{UID: 1}
			r := f.req(tcp0, h, shareAny, "")
			r.Options = tt.opts
			g := f.acquire(r)
			g.File.Close()
			if tt.name == "NaN" {
				r2 := f.req(g.Key, h, shareAny, "")
				r2.Options = tt.opts
				if g2, err := f.g.Acquire(r2); !errors.Is(err, registry.ErrOptionsDiffer) {
					f.closeLater(g2)
					t.Errorf("Acquire with NaN options over NaN options: got %v, want ErrOptionsDiffer", err)
				}
			}
			if tt.name == "nil" {
				r2 := f.req(g.Key, h, shareAny, "")
				r2.Options = nil
				f.acquire(r2).File.Close()
			}
			f.g.ReleaseHolder(h)
			f.wantCounts(0, 0)
			wantPortFree(t, g.Key, true)
		})
	}
}
