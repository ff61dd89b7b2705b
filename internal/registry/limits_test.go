package registry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/registry"
)

// TestLimits: each limit refuses the next reference with ErrLimit, changes
// nothing, and frees up when references go.
func TestLimits(t *testing.T) {
	cases := []struct {
		name    string
		limits  registry.Limits
		pending bool
		sameUID bool // whether the second request comes from the same uid
		refused bool
	}{
		{"held per uid", registry.Limits{RefsPerUID: 1}, false, true, true},
		{"held per uid, other uid", registry.Limits{RefsPerUID: 1}, false, false, false},
		{"held in all", registry.Limits{Refs: 1}, false, false, true},
		{"pending per uid", registry.Limits{PendingPerUID: 1}, true, true, true},
		{"pending per uid, other uid", registry.Limits{PendingPerUID: 1}, true, false, false},
		{"pending in all", registry.Limits{Pending: 1}, true, false, true},
		{"held limit does not count pending", registry.Limits{RefsPerUID: 1}, true, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			f.g.SetLimits(tc.limits)
			a := &registry.Holder{UID: 1000}
			b := a
			if !tc.sameUID {
				b = &registry.Holder{UID: 1001}
			}
			mk := f.req
			if tc.pending {
				mk = f.pending
			}
			first := f.acquire(mk(tcp0, a, registry.ShareNone, ""))
			before := f.state()
			g, err := f.g.Acquire(mk(tcp0, b, registry.ShareNone, ""))
			f.closeLater(g)
			if tc.refused {
				if !errors.Is(err, registry.ErrLimit) {
					t.Fatalf("second Acquire: got %v; want ErrLimit", err)
				}
				f.wantUnchanged(before)
				// Releasing the first frees the slot.
				if _, err := f.g.Release(first.Token, a, false); err != nil {
					t.Fatalf("Release: %v", err)
				}
				g, err := f.g.Acquire(mk(tcp0, b, registry.ShareNone, ""))
				f.closeLater(g)
				if err != nil {
					t.Fatalf("Acquire after the release: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("second Acquire: got %v; want a grant", err)
			}
		})
	}
}

// TestLimitsPickup: picking a token up counts against the picker's held
// references and frees the owner's pending slot.
func TestLimitsPickup(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.g.SetLimits(registry.Limits{RefsPerUID: 1, PendingPerUID: 1})
	owner, picker := &registry.Holder{UID: 1000}, &registry.Holder{UID: 2000}
	tok := f.acquire(f.pending(tcp0, owner, registry.ShareNone, ""))
	f.acquire(f.req(tcp0, picker, registry.ShareNone, "")) // picker's one held slot
	if _, err := f.g.Pickup(tok.Token, picker, allow); !errors.Is(err, registry.ErrLimit) {
		t.Fatalf("Pickup over the held limit: got %v; want ErrLimit", err)
	}
	g, err := f.g.Pickup(tok.Token, owner, allow)
	f.closeLater(g)
	if err != nil {
		t.Fatalf("Pickup by the owner: %v", err)
	}
	// The owner's pending slot is free again.
	f.acquire(f.pending(tcp0, owner, registry.ShareNone, ""))
}
