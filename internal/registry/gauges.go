package registry

import "sync/atomic"

// Protocol classes of the gauges: the registry's counts by protocol, kept
// in atomics so that a metrics scrape reads them without the registry's
// lock (see Gauges).
const (
	ProtoTCP = iota
	ProtoUDP
	NumProtos
)

// ProtoNames are the protocol classes' names, indexed like Gauges' arrays.
var ProtoNames = [NumProtos]string{ProtoTCP: "tcp", ProtoUDP: "udp"}

// protoClass is a Key.Proto's class.
func protoClass(proto string) uint8 {
	if proto == "udp" {
		return ProtoUDP
	}
	return ProtoTCP
}

// Gauges are what the registry holds, by protocol class.
type Gauges struct {
	// Sockets counts cached sockets, lingering ones included; Held the
	// references held; Pending the tokens not yet picked up.
	Sockets, Held, Pending [NumProtos]int64
}

// LimitHits count the requests refused by each of the registry's limits
// since it was created.
type LimitHits struct {
	Refs, RefsPerUID, Pending, PendingPerUID uint64
}

// live is the registry's atomic mirror of its counts, written with g.mu
// held and read without it.
type live struct {
	sockets, held, pending [NumProtos]atomic.Int64
	hits                   [4]atomic.Uint64 // LimitHits' fields, in order
}

// Indexes of live.hits.
const (
	hitRefs = iota
	hitRefsPerUID
	hitPending
	hitPendingPerUID
)

// zero empties the counts (not the limit hits, which count for the
// registry's life).
func (l *live) zero() {
	for i := range NumProtos {
		l.sockets[i].Store(0)
		l.held[i].Store(0)
		l.pending[i].Store(0)
	}
}

// count adds n references like ref (held, or pending) of uid to the
// counts. Called with g.mu held.
func (g *Registry) count(ref *Ref, uid uint32, pending bool, n int) {
	g.n.add(uid, pending, n)
	c := g.protos[ref.sock.proto].class
	if pending {
		g.live.pending[c].Add(int64(n))
	} else {
		g.live.held[c].Add(int64(n))
	}
}

// Gauges returns what the registry holds, by protocol. It takes no lock:
// each number is exact, the set is not a snapshot (a request may fall
// between two reads). A metrics scrape calls it.
func (g *Registry) Gauges() Gauges {
	var out Gauges
	for i := range NumProtos {
		out.Sockets[i] = g.live.sockets[i].Load()
		out.Held[i] = g.live.held[i].Load()
		out.Pending[i] = g.live.pending[i].Load()
	}
	return out
}

// LimitHits returns how many requests each limit refused. It takes no
// lock.
func (g *Registry) LimitHits() LimitHits {
	return LimitHits{
		Refs: g.live.hits[hitRefs].Load(), RefsPerUID: g.live.hits[hitRefsPerUID].Load(),
		Pending: g.live.hits[hitPending].Load(), PendingPerUID: g.live.hits[hitPendingPerUID].Load(),
	}
}
