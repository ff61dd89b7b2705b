package registry

import "math"

// holding is what one holder (a client connection) has: the references it
// holds and the pending tokens it asked for, each a list linked through
// Ref.hnext and Ref.hprev. The holdings of one uid are linked too
// (Registry.uids), so that a status listing for a uid walks what that
// uid's connections have, and nothing else. A holding exists while it has
// something; a pending token whose Holder is nil is in none.
type holding struct {
	who *Holder
	uid uint32 // who.UID when the holding was made
	// head lists the held references, phead the pending tokens.
	head, phead *Ref
	n, pn       int
	// unext and uprev link the holdings of uid.
	unext, uprev *holding
}

// hold makes ref h's: a held reference on h's list.
func (g *Registry) hold(ref *Ref, h *Holder) {
	g.count(ref, h.UID, false, 1)
	ref.who = h
	ref.pending = false
	g.link(ref)
}

// link puts ref on the list of its holder (ref.who) that ref.pending
// names; a ref without a holder goes on none.
func (g *Registry) link(ref *Ref) {
	if ref.who == nil {
		return
	}
	hl := g.held[ref.who]
	if hl == nil {
		hl = &holding{who: ref.who, uid: ref.who.UID, unext: g.uids[ref.who.UID]}
		if hl.unext != nil {
			hl.unext.uprev = hl
		}
		g.uids[hl.uid] = hl
		g.held[ref.who] = hl
	}
	head, n := &hl.head, &hl.n
	if ref.pending {
		head, n = &hl.phead, &hl.pn
	}
	ref.hprev, ref.hnext = nil, *head
	if *head != nil {
		(*head).hprev = ref
	}
	*head = ref
	*n++
}

// unlink takes ref off the list link put it on, and drops a holding left
// with nothing.
func (g *Registry) unlink(ref *Ref) {
	if ref.who == nil {
		return
	}
	hl := g.held[ref.who]
	if hl == nil {
		return
	}
	head, n := &hl.head, &hl.n
	if ref.pending {
		head, n = &hl.phead, &hl.pn
	}
	if ref.hprev != nil {
		ref.hprev.hnext = ref.hnext
	} else if *head == ref {
		*head = ref.hnext
	}
	if ref.hnext != nil {
		ref.hnext.hprev = ref.hprev
	}
	ref.hprev, ref.hnext = nil, nil
	*n--
	if hl.n+hl.pn > 0 {
		return
	}
	delete(g.held, hl.who)
	if hl.uprev != nil {
		hl.uprev.unext = hl.unext
	} else if g.uids[hl.uid] == hl {
		if hl.unext != nil {
			g.uids[hl.uid] = hl.unext
		} else {
			delete(g.uids, hl.uid)
		}
	}
	if hl.unext != nil {
		hl.unext.uprev = hl.uprev
	}
	hl.unext, hl.uprev = nil, nil
}

// countRef counts d (1 or -1) references more of s. Up to math.MaxUint16
// they are counted in s itself; the rest, for a socket shared that widely,
// in g.extraRefs, so that the common socket stays small.
func (g *Registry) countRef(s *socket, d int) {
	switch {
	case d > 0 && s.nref < math.MaxUint16:
		s.nref++
	case d > 0:
		g.extraRefs[s]++
	case g.extraRefs[s] > 0:
		if g.extraRefs[s]--; g.extraRefs[s] == 0 {
			delete(g.extraRefs, s)
		}
	default:
		s.nref--
	}
}

// refCount is the number of s's references.
func (g *Registry) refCount(s *socket) int {
	n := int(s.nref)
	if s.nref == math.MaxUint16 {
		n += g.extraRefs[s]
	}
	return n
}
