package registry

// table is an open-addressing hash set (linear probing, backward-shift
// deletion) of entries that carry their own keys, such as *socket: it
// spends 8 bytes a slot where a Go map would hold the key and a pointer
// (56 bytes for a socket's key). It keeps its load between 1/8 and 3/4,
// and gives memory back as it empties. Growing or shrinking rehashes
// every entry at once.
type table[E comparable] struct {
	slots []E // len is 0 or a power of two
	n     int
	hash  func(E) uint64
	// walks are the walks in progress (see walk).
	walks []*walk
}

// walk is a visit of every slot that may be spread over several calls,
// with entries inserted and removed in between. It starts next to an empty
// slot, start, and goes down from there, around to start again. A removal
// moves entries only down (towards their home slot), so into the part not
// visited yet, unless the move crosses start; such a move, or a resize, sets
// moved: the caller should then begin again (see beginWalk).
type walk struct {
	start, done int // done: how many slots were visited
	moved       bool
}

// beginWalk starts a walk of t; endWalk must end it.
func (t *table[E]) beginWalk() *walk {
	w := &walk{}
	t.restartWalk(w)
	t.walks = append(t.walks, w)
	return w
}

// restartWalk starts w again, next to an empty slot.
func (t *table[E]) restartWalk(w *walk) {
	var zero E
	w.start, w.done, w.moved = 0, 0, false
	for i, e := range t.slots {
		if e == zero {
			w.start = i
			break
		}
	}
}

// next returns the next at most n slots' entries that are set, and reports
// whether the walk has visited every slot. visited counts the slots looked at.
func (t *table[E]) next(w *walk, n int, out []E) (_ []E, visited int, finished bool) {
	var zero E
	size := len(t.slots)
	for ; visited < n && w.done < size; visited, w.done = visited+1, w.done+1 {
		if e := t.slots[(w.start-1-w.done)&(size-1)]; e != zero {
			out = append(out, e)
		}
	}
	return out, visited, w.done >= size
}

func (t *table[E]) endWalk(w *walk) {
	for i, x := range t.walks {
		if x == w {
			t.walks = append(t.walks[:i], t.walks[i+1:]...)
			return
		}
	}
}

func newTable[E comparable](hash func(E) uint64) table[E] {
	return table[E]{hash: hash}
}

// find returns the entry whose hash is h and for which match is true, or
// the zero E.
func (t *table[E]) find(h uint64, match func(E) bool) E {
	var zero E
	if t.n == 0 {
		return zero
	}
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if e := t.slots[i]; e == zero || match(e) {
			return e
		}
	}
}

// insert adds e, which must not be in t yet.
func (t *table[E]) insert(e E) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.resize(max(8, 2*len(t.slots)))
	}
	t.put(e)
	t.n++
}

func (t *table[E]) put(e E) {
	var zero E
	mask := uint64(len(t.slots) - 1)
	i := t.hash(e) & mask
	for t.slots[i] != zero {
		i = (i + 1) & mask
	}
	t.slots[i] = e
}

func (t *table[E]) resize(size int) {
	var zero E
	for _, w := range t.walks {
		w.moved = true
	}
	old := t.slots
	t.slots = make([]E, size)
	for _, e := range old {
		if e != zero {
			t.put(e)
		}
	}
}

// remove deletes e and reports whether it was there.
func (t *table[E]) remove(e E) bool {
	var zero E
	if t.n == 0 || e == zero {
		return false
	}
	mask := uint64(len(t.slots) - 1)
	i := t.hash(e) & mask
	for ; t.slots[i] != e; i = (i + 1) & mask {
		if t.slots[i] == zero {
			return false
		}
	}
	// Close the hole at i: move back every later entry of the run whose
	// probe path, from its home slot to where it is, passes through i.
	for j := (i + 1) & mask; t.slots[j] != zero; j = (j + 1) & mask {
		home := t.hash(t.slots[j]) & mask
		if (j-home)&mask >= (j-i)&mask {
			for _, w := range t.walks {
				// The move from j down to i crosses w.start.
				if d := (uint64(w.start) - i) & mask; d != 0 && d <= (j-i)&mask {
					w.moved = true
				}
			}
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = zero
	t.n--
	if len(t.slots) > 8 && t.n*8 < len(t.slots) {
		t.resize(len(t.slots) / 2)
	}
	return true
}

// all returns the entries, in no particular order.
func (t *table[E]) all() []E {
	var zero E
	out := make([]E, 0, t.n)
	for _, e := range t.slots {
		if e != zero {
			out = append(out, e)
		}
	}
	return out
}
