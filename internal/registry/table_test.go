package registry

import (
	"math/rand/v2"
	"testing"
)

type entry struct{ k int }

// TestTable checks table against a Go map through random inserts and
// removes, with hashes that collide a lot (so that runs wrap around the
// end and deletions shift entries back), growing and shrinking.
func TestTable(t *testing.T) {
	hashes := map[string]func(*entry) uint64{
		"spread":   func(e *entry) uint64 { return uint64(e.k) * 0x9e3779b97f4a7c15 },
		"clusters": func(e *entry) uint64 { return uint64(e.k % 7) },
		"top":      func(e *entry) uint64 { return ^uint64(0) - uint64(e.k%3) }, // runs wrap around
		"one":      func(*entry) uint64 { return 5 },
	}
	for name, hash := range hashes {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			tb := newTable(hash)
			model := map[int]*entry{}
			find := func(k int) *entry {
				return tb.find(hash(&entry{k}), func(e *entry) bool { return e.k == k })
			}
			for step := range 20000 {
				k := rng.IntN(300)
				// Phases: mostly inserts, then mostly removes, so that
				// the table grows and shrinks.
				insert := rng.IntN(10) < 7
				if step/4000%2 == 1 {
					insert = !insert
				}
				if e := model[k]; e != nil && !insert {
					if !tb.remove(e) {
						t.Fatalf("step %d: remove(%d): got false, want true", step, k)
					}
					delete(model, k)
				} else if e == nil && insert {
					e = &entry{k}
					tb.insert(e)
					model[k] = e
				}
				if tb.n != len(model) {
					t.Fatalf("step %d: n: got %d, want %d", step, tb.n, len(model))
				}
				if l := len(tb.slots); l > 0 && (tb.n*4 > l*3 || (l > 8 && tb.n*8 < l)) {
					t.Fatalf("step %d: %d entries in %d slots: load out of bounds", step, tb.n, l)
				}
			}
			for k := range 300 {
				if got, want := find(k), model[k]; got != want {
					t.Fatalf("find(%d): got %v, want %v", k, got, want)
				}
			}
			if got := len(tb.all()); got != len(model) {
				t.Errorf("all: got %d entries, want %d", got, len(model))
			}
			if tb.remove(&entry{1000}) {
				t.Errorf("remove of an entry never inserted: got true, want false")
			}
			for _, e := range model {
				tb.remove(e)
			}
			if tb.n != 0 || len(tb.slots) > 8 {
				t.Errorf("emptied: got %d entries in %d slots, want 0 in at most 8", tb.n, len(tb.slots))
			}
		})
	}
}
