package testnet

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is a DNS server for tests, over UDP: it answers A and AAAA
// queries from a fixed table, with NOERROR and no answer for a type a
// listed name lacks, and NXDOMAIN for names not in the table. It counts the
// queries it receives per name, so that a test can tell which server a
// lookup reached. Run it on a socket made in a namespace (Netns.ListenPacket)
// to answer only queries sent from inside that namespace.
type DNSServer struct {
	pc      net.PacketConn
	records map[string][]netip.Addr // canonical name (lower case, no trailing dot)

	mu      sync.Mutex
	queries map[string]int
}

// ServeDNS answers queries on pc from records (names in any case, with or
// without the trailing dot) until the test ends; it owns pc and closes it
// then, and waits for its goroutine. A packet that is not a query gets no
// reply.
func ServeDNS(t testing.TB, pc net.PacketConn, records map[string][]netip.Addr) *DNSServer {
	t.Helper()
	s := &DNSServer{pc: pc, records: map[string][]netip.Addr{}, queries: map[string]int{}}
	for name, addrs := range records {
		s.records[canonicalName(name)] = addrs
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := s.answer(buf[:n]); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return s
}

// Addr returns the server's address, ip:port.
func (s *DNSServer) Addr() string { return s.pc.LocalAddr().String() }

// Queries returns how many queries for name (of any type) the server has
// received so far.
func (s *DNSServer) Queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[canonicalName(name)]
}

// answer builds the reply to the query q, or nil when q is no query.
func (s *DNSServer) answer(q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil
	}
	question, err := p.Question()
	if err != nil {
		return nil
	}
	name := canonicalName(question.Name.String())
	s.mu.Lock()
	s.queries[name]++
	s.mu.Unlock()

	addrs, known := s.records[name]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(question) != nil || b.StartAnswers() != nil {
		return nil
	}
	for _, a := range addrs {
		rr := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 60}
		switch {
		case question.Type == dnsmessage.TypeA && a.Is4():
			rr.Type = dnsmessage.TypeA
			err = b.AResource(rr, dnsmessage.AResource{A: a.As4()})
		case question.Type == dnsmessage.TypeAAAA && a.Is6() && !a.Is4In6():
			rr.Type = dnsmessage.TypeAAAA
			err = b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil
		}
	}
	resp, err := b.Finish()
	if err != nil {
		return nil
	}
	return resp
}

// canonicalName is name in lower case without its trailing dot.
func canonicalName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
