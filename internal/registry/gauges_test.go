package registry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/registry"
)

// TestGauges: the lock-free gauges follow sockets, held references and
// pending tokens by protocol, through pickup, release and Close, and each
// limit's refusals are counted.
func TestGauges(t *testing.T) {
	f := newFixture(t, time.Minute)
	want := func(step string, g registry.Gauges) {
		t.Helper()
		if got := f.g.Gauges(); got != g {
			t.Fatalf("%s: Gauges() = %+v; want %+v", step, got, g)
		}
	}
	tcp, udp := registry.ProtoTCP, registry.ProtoUDP
	a := &registry.Holder{UID: 1000}
	held := f.acquire(f.req(tcp0, a, registry.ShareNone, ""))
	tok := f.acquire(f.pending(key("udp", lo4, 0), a, registry.ShareNone, ""))
	var g registry.Gauges
	g.Sockets[tcp], g.Held[tcp], g.Sockets[udp], g.Pending[udp] = 1, 1, 1, 1
	want("after a bind and a token", g)

	p, err := f.g.Pickup(tok.Token, a, allow)
	f.closeLater(p)
	if err != nil {
		t.Fatalf("Pickup: %v", err)
	}
	g.Pending[udp], g.Held[udp] = 0, 1
	want("after the pickup", g)

	if _, err := f.g.Release(held.Token, a, false); err != nil {
		t.Fatalf("Release: %v", err)
	}
	g.Sockets[tcp], g.Held[tcp] = 0, 0
	want("after the release", g)

	f.g.SetLimits(registry.Limits{RefsPerUID: 1, Pending: 1})
	if _, err := f.g.Acquire(f.req(tcp0, a, registry.ShareNone, "")); !errors.Is(err, registry.ErrLimit) {
		t.Fatalf("Acquire over refs_per_uid: got %v; want ErrLimit", err)
	}
	f.acquire(f.pending(tcp0, a, registry.ShareNone, ""))
	if _, err := f.g.Acquire(f.pending(tcp0, a, registry.ShareNone, "")); !errors.Is(err, registry.ErrLimit) {
		t.Fatalf("Acquire over pending: got %v; want ErrLimit", err)
	}
	if got, w := f.g.LimitHits(), (registry.LimitHits{RefsPerUID: 1, Pending: 1}); got != w {
		t.Fatalf("LimitHits() = %+v; want %+v", got, w)
	}

	f.g.Close()
	want("after Close", registry.Gauges{})
}
