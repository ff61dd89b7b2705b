package registry

import (
	"testing"
	"time"
)

// TestPickupAnswersAlike: every token a caller cannot use gets the very
// same error, ErrNoToken unwrapped, whatever the reason: unknown,
// malformed, expired, released, already picked up, a held reference's,
// or one for an address the caller is not granted, even while the caller
// is at its limit (which it would otherwise learn the token exists from).
// Before, a token the policy refused named its address, and one tried at
// the limit got ErrLimit.
func TestPickupAnswersAlike(t *testing.T) {
	fs := newFakeSockets(t)
	g := New(time.Minute)
	defer g.Close()
	owner, prober := &Holder{UID: 1}, &Holder{UID: 2}
	yes := func(Key) bool { return true }
	no := func(Key) bool { return false }
	pending := func(i int) string { return fs.acquire(g, i, owner, true).Token }

	expired := pending(1)
	g.mu.Lock()
	ref := g.ref(expired)
	p := g.pending[ref]
	p.expires = 1 // long past; its timer has not run
	g.pending[ref] = p
	g.mu.Unlock()
	released := pending(2)
	if _, err := g.Release(released, owner, false); err != nil {
		t.Fatal(err)
	}
	picked := pending(3)
	if gr, err := g.Pickup(picked, owner, yes); err != nil {
		t.Fatal(err)
	} else {
		gr.File.Close()
	}
	held := fs.acquire(g, 4, owner, false).Token
	refused := pending(5)

	type probe struct {
		name, token string
		allowed     func(Key) bool
	}
	probes := []probe{
		{"unknown", "0123456789abcdef0123456789abcdef", yes},
		{"malformed", "not a token", yes},
		{"expired", expired, yes},
		{"released", released, yes},
		{"picked up", picked, yes},
		{"held", held, yes},
		{"not granted", refused, no},
	}
	try := func(limit string) {
		for _, pr := range probes {
			g.mu.Lock()
			_, refs := g.sockets.n, g.tokens.n
			g.mu.Unlock()
			gr, err := g.Pickup(pr.token, prober, pr.allowed)
			if gr != nil && gr.File != nil {
				gr.File.Close()
			}
			if err != ErrNoToken { // the very value, unwrapped
				t.Errorf("%s: pickup of a token %s: got %v, want ErrNoToken itself", limit, pr.name, err)
			}
			g.mu.Lock()
			after := g.tokens.n
			g.mu.Unlock()
			if after != refs {
				t.Errorf("%s: pickup of a token %s changed the references: %d, then %d", limit, pr.name, refs, after)
			}
		}
	}
	try("under the limit")
	fs.acquire(g, 6, prober, false)
	g.SetLimits(Limits{RefsPerUID: 1})
	try("at the limit")
	// A token the prober may use, at its limit, is refused for the limit.
	if gr, err := g.Pickup(pending(7), prober, yes); err == nil || err == ErrNoToken {
		if gr != nil && gr.File != nil {
			gr.File.Close()
		}
		t.Errorf("pickup of a usable token at the limit: got %v, want ErrLimit", err)
	}
}
