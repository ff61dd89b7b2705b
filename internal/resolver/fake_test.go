package resolver

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// answer is how a fake server replies to one question.
type answer struct {
	rcode   dnsmessage.RCode
	records []dnsmessage.Resource // the answer section
	// truncate sets TC (and sends no records) over UDP; TCP gets the
	// records.
	truncate bool
	// drop sends no reply at all.
	drop bool
	// lame replies NOERROR with no records and recursion not available,
	// as a server that does not serve the name does.
	lame bool
	// junk sends, over UDP, replies to other queries before the real one:
	// another ID, another question, and the query itself (not a response).
	junk bool
}

var (
	nxdomain = answer{rcode: dnsmessage.RCodeNameError}
	servfail = answer{rcode: dnsmessage.RCodeServerFailure}
	refused  = answer{rcode: dnsmessage.RCodeRefused}
	drop     = answer{drop: true}
)

// zone is a fake server's table: "name. TYPE" (TYPE A or AAAA) to answer;
// a question not in it gets other.
type zone map[string]answer

// seenQuery is a query a fake server received.
type seenQuery struct {
	proto string // "udp" or "tcp"
	q     string // "name. TYPE"
	rd    bool   // recursion desired
	edns  int    // the OPT record's UDP size, 0 without one
}

// fakeServer is a DNS server on 127.0.0.1 (UDP and TCP, each on a port of
// its own) answering from a zone.
type fakeServer struct {
	t     testing.TB
	udp   net.PacketConn
	tcp   net.Listener
	zone  zone
	other answer

	mu     sync.Mutex
	seen   []seenQuery
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

// newFake starts a fake server that answers from z, and other for the
// rest. It stops when the test ends.
func newFake(t testing.TB, z zone, other answer) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t, zone: z, other: other}
	var err error
	if f.udp, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if f.tcp, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		f.udp.Close()
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	f.wg.Go(f.serveUDP)
	f.wg.Go(f.serveTCP)
	return f
}

func (f *fakeServer) close() {
	f.udp.Close()
	f.tcp.Close()
	f.mu.Lock()
	f.closed = true
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// queries returns what the server received, in order.
func (f *fakeServer) queries() []seenQuery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.seen)
}

// names returns the "name. TYPE" of each query received, in order.
func (f *fakeServer) names() []string {
	var out []string
	for _, q := range f.queries() {
		out = append(out, q.q)
	}
	return out
}

func (f *fakeServer) serveUDP() {
	buf := make([]byte, 65536)
	for {
		n, from, err := f.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		for _, out := range f.respond("udp", buf[:n]) {
			f.udp.WriteTo(out, from)
		}
	}
}

func (f *fakeServer) serveTCP() {
	for {
		c, err := f.tcp.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		if f.closed {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Go(func() {
			defer c.Close()
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				msg := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, msg); err != nil {
					return
				}
				for _, out := range f.respond("tcp", msg) {
					c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(out))))
					c.Write(out)
				}
			}
		})
	}
}

// respond records a query and returns the messages to send back.
func (f *fakeServer) respond(proto string, msg []byte) [][]byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	p.SkipAllQuestions()
	p.SkipAllAnswers()
	p.SkipAllAuthorities()
	sq := seenQuery{proto: proto, q: q.Name.String() + " " + typeName(q.Type), rd: h.RecursionDesired}
	for {
		rh, err := p.AdditionalHeader()
		if err != nil {
			break
		}
		if rh.Type == dnsmessage.TypeOPT {
			sq.edns = int(rh.Class)
		}
		p.SkipAdditional()
	}
	f.mu.Lock()
	f.seen = append(f.seen, sq)
	f.mu.Unlock()

	a, ok := f.zone[lowerASCII(q.Name.String())+" "+typeName(q.Type)]
	if !ok {
		a = f.other
	}
	if a.drop {
		return nil
	}
	var out [][]byte
	if a.junk && proto == "udp" {
		other := q
		other.Name = dnsmessage.MustNewName("other.test.")
		out = append(out,
			f.build(dnsmessage.Header{ID: h.ID + 1, Response: true}, q, a.records),
			f.build(dnsmessage.Header{ID: h.ID, Response: true}, other, nil),
			msg)
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true, RCode: a.rcode}
	records := a.records
	if a.lame {
		rh.RecursionAvailable, records = false, nil
	}
	if a.truncate && proto == "udp" {
		rh.Truncated, records = true, nil
	}
	return append(out, f.build(rh, q, records))
}

func (f *fakeServer) build(h dnsmessage.Header, q dnsmessage.Question, records []dnsmessage.Resource) []byte {
	// Pack writes record lengths into the slice: give it a copy.
	m := dnsmessage.Message{Header: h, Questions: []dnsmessage.Question{q}, Answers: slices.Clone(records)}
	b, err := m.Pack()
	if err != nil {
		f.t.Errorf("fake server: packing reply: %v", err)
	}
	return b
}

// A, AAAA and CNAME make answer records.
func A(name, ip string) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
		Body:   &dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()},
	}
}

func AAAA(name, ip string) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: 60},
		Body:   &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr(ip).As16()},
	}
}

func CNAME(name, target string) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET, TTL: 60},
		Body:   &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target)},
	}
}
