package registry

import (
	"sort"
	"time"
)

// SocketInfo describes a cached socket for status.
type SocketInfo struct {
	Key Key
	// NetnsName is the name the socket's namespace was asked by.
	NetnsName string
	Created   time.Time
	Linger    time.Duration
	IdleSince time.Time
	// NRefs counts the socket's references, pending tokens included; Refs
	// lists at most MaxListedRefs of them.
	NRefs int
	Refs  []RefInfo
}

// RefInfo describes one reference.
type RefInfo struct {
	Token   string
	Share   Share
	Name    string
	Holder  Holder // a copy; for a pending token, the owner
	Pending bool
	Expires time.Time
	// Own is true when the reference belongs to the asking holder.
	Own bool
}

// MaxListedRefs is the most references Status lists for one socket
// (SocketInfo.NRefs counts them all): the asking holder's own first.
const MaxListedRefs = 64

// statusChunk is how many table slots an admin's listing looks at per
// hold of the lock, and maxWalkRestarts how many times it begins again
// when the table moved entries under it.
const (
	statusChunk     = 512
	maxWalkRestarts = 4
)

// Status lists cached sockets, sorted by protocol and address.
//
// With all false, it lists the sockets in which a holder with h's uid has
// a reference (held, or a pending token it asked for), with h's own
// tokens only. It looks at the references of h's uid and, for each
// socket listed, at most MaxListedRefs other references (and h's own): its
// cost follows what the uid has, not the size of the cache. A nil h gets
// nothing.
//
// With all true, it lists every socket with every token. It walks the
// cache in chunks and lets go of the lock between them, so that binds are
// not held up by a large cache: each socket's entry is consistent, but the
// listing as a whole is not a snapshot. A socket created or closed during
// the listing may or may not be in it; no socket is listed twice; a socket
// that exists throughout is listed (the walk begins again, skipping what it
// listed, when the table moves entries under it; after maxWalkRestarts it
// goes on, and such a socket may then be missed).
func (g *Registry) Status(h *Holder, all bool) []SocketInfo {
	var out []SocketInfo
	if all {
		out = g.statusAll(h)
	} else {
		out = g.statusOwn(h)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key.Proto != out[j].Key.Proto {
			return out[i].Key.Proto < out[j].Key.Proto
		}
		return out[i].Key.Addr.Compare(out[j].Key.Addr) < 0
	})
	return out
}

// statusOwn lists what h's uid has, from its holdings.
func (g *Registry) statusOwn(h *Holder) []SocketInfo {
	if h == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	own := make(map[*socket][]*Ref)
	var order []*socket
	for hl := g.uids[h.UID]; hl != nil; hl = hl.unext {
		for _, head := range [2]*Ref{hl.head, hl.phead} {
			for ref := head; ref != nil; ref = ref.hnext {
				g.visits++
				s := ref.sock
				refs, ok := own[s]
				if !ok {
					order = append(order, s)
				}
				if ref.who == h && len(refs) < MaxListedRefs {
					refs = append(refs, ref)
				}
				own[s] = refs
			}
		}
	}
	out := make([]SocketInfo, 0, len(order))
	for _, s := range order {
		out = append(out, g.info(s, h, false, own[s]))
	}
	return out
}

// statusAll lists every socket, in chunks.
func (g *Registry) statusAll(h *Holder) []SocketInfo {
	var out []SocketInfo
	listed := make(map[*socket]bool)
	var batch []*socket
	g.mu.Lock()
	w := g.sockets.beginWalk()
	for restarts := 0; ; {
		var visited int
		var finished bool
		batch, visited, finished = g.sockets.next(w, statusChunk, batch[:0])
		g.visits += uint64(visited)
		for _, s := range batch {
			if !listed[s] {
				listed[s] = true
				out = append(out, g.info(s, h, true, nil))
			}
		}
		if finished {
			break
		}
		g.mu.Unlock()
		if g.statusPause != nil {
			g.statusPause()
		}
		g.mu.Lock()
		if w.moved && restarts < maxWalkRestarts {
			restarts++
			g.sockets.restartWalk(w)
		}
	}
	g.sockets.endWalk(w)
	g.mu.Unlock()
	return out
}

// info describes s to h: first h's own references in own, then others (or,
// with all, any) up to MaxListedRefs. The caller holds g.mu.
func (g *Registry) info(s *socket, h *Holder, all bool, own []*Ref) SocketInfo {
	info := SocketInfo{Key: g.key(s), NetnsName: g.protos[s.proto].name, Created: g.time(s.created), Linger: s.linger, NRefs: g.refCount(s)}
	if s.idle != 0 {
		info.IdleSince = g.time(s.idle)
	}
	add := func(ref *Ref) {
		ri := RefInfo{Share: ref.share, Name: ref.name, Pending: ref.pending, Own: h != nil && ref.who == h}
		if ref.pending {
			ri.Expires = g.time(g.pending[ref].expires)
		}
		if ref.who != nil {
			ri.Holder = *ref.who
		}
		if ri.Own || all {
			ri.Token = ref.token.String()
		}
		info.Refs = append(info.Refs, ri)
	}
	for _, ref := range own {
		add(ref)
	}
	for ref := s.refs; ref != nil && len(info.Refs) < MaxListedRefs; ref = ref.next {
		g.visits++
		if !all && ref.who == h {
			continue // listed from own
		}
		add(ref)
	}
	sort.Slice(info.Refs, func(i, j int) bool { return info.Refs[i].Token < info.Refs[j].Token })
	return info
}
