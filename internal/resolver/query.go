package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// udpSize is the EDNS0 UDP payload size we announce (and the largest UDP
// reply we read), as DNS Flag Day 2020 recommends.
const udpSize = 1232

// maxCNAMEs is how many CNAMEs of an answer a lookup follows.
const maxCNAMEs = 8

// errMismatch marks a reply to some other query (or no reply at all): over
// UDP it is ignored, and reading goes on.
var errMismatch = errors.New("reply does not match the query")

// reply is what a name server answered to one query.
type reply struct {
	rcode     dnsmessage.RCode
	truncated bool
	// lame is a NOERROR reply without answers, authority or recursion: a
	// server that does not serve the name (Go's errLameReferral).
	lame  bool
	addrs []netip.Addr // A or AAAA records for the name, CNAMEs followed
}

// newQuery builds a query for q with id: recursion desired and an EDNS0
// OPT record. For TCP it starts with the 2-byte length.
func newQuery(id uint16, q dnsmessage.Question, tcp bool) ([]byte, error) {
	buf := make([]byte, 0, 514)
	if tcp {
		buf = buf[:2]
	}
	b := dnsmessage.NewBuilder(buf, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	var rh dnsmessage.ResourceHeader
	if err := rh.SetEDNS0(udpSize, dnsmessage.RCodeSuccess, false); err != nil {
		return nil, err
	}
	if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	msg, err := b.Finish()
	if err != nil {
		return nil, err
	}
	if tcp {
		binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
	}
	return msg, nil
}

// parseReply parses msg as the reply to query id for q. A message that is
// not a response, has another ID or another question gives errMismatch;
// one that matches but does not parse gives another error.
func parseReply(msg []byte, id uint16, q dnsmessage.Question) (reply, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || !h.Response || h.ID != id {
		return reply{}, errMismatch
	}
	q2, err := p.Question()
	if err != nil || q2.Type != q.Type || q2.Class != q.Class || lowerASCII(q2.Name.String()) != lowerASCII(q.Name.String()) {
		return reply{}, errMismatch
	}
	if _, err := p.Question(); !errors.Is(err, dnsmessage.ErrSectionDone) {
		return reply{}, errMismatch
	}
	r := reply{rcode: h.RCode, truncated: h.Truncated}
	if h.Truncated || h.RCode != dnsmessage.RCodeSuccess {
		return r, nil
	}
	type record struct {
		owner string
		addr  netip.Addr
	}
	var records []record
	cnames := map[string]string{}
	answers := 0
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return reply{}, fmt.Errorf("parsing answer: %w", err)
		}
		answers++
		owner := lowerASCII(rh.Name.String())
		switch {
		case rh.Class != dnsmessage.ClassINET:
			err = p.SkipAnswer()
		case rh.Type == dnsmessage.TypeA && q.Type == dnsmessage.TypeA:
			var a dnsmessage.AResource
			if a, err = p.AResource(); err == nil {
				records = append(records, record{owner, netip.AddrFrom4(a.A)})
			}
		case rh.Type == dnsmessage.TypeAAAA && q.Type == dnsmessage.TypeAAAA:
			var a dnsmessage.AAAAResource
			if a, err = p.AAAAResource(); err == nil {
				records = append(records, record{owner, netip.AddrFrom16(a.AAAA)})
			}
		case rh.Type == dnsmessage.TypeCNAME:
			var c dnsmessage.CNAMEResource
			if c, err = p.CNAMEResource(); err == nil {
				if _, dup := cnames[owner]; !dup {
					cnames[owner] = lowerASCII(c.CNAME.String())
				}
			}
		default:
			err = p.SkipAnswer()
		}
		if err != nil {
			return reply{}, fmt.Errorf("parsing answer: %w", err)
		}
	}
	// The names whose records answer q: its own, and the CNAME chain from it.
	names := map[string]bool{}
	name := lowerASCII(q.Name.String())
	names[name] = true
	for range maxCNAMEs {
		next, ok := cnames[name]
		if !ok || names[next] {
			break
		}
		names[next] = true
		name = next
	}
	for _, rec := range records {
		if names[rec.owner] {
			r.addrs = append(r.addrs, rec.addr)
		}
	}
	if answers == 0 && !h.Authoritative && !h.RecursionAvailable {
		r.lame = !hasSOA(&p)
	}
	return r, nil
}

// hasSOA reports whether the authority section holds an SOA record (a
// negative answer, not a referral).
func hasSOA(p *dnsmessage.Parser) bool {
	for {
		rh, err := p.AuthorityHeader()
		if err != nil {
			return false
		}
		if rh.Type == dnsmessage.TypeSOA {
			return true
		}
		if err := p.SkipAuthority(); err != nil {
			return false
		}
	}
}

// exchange sends one query to server and returns its reply: over UDP, and
// again over TCP when the UDP reply is truncated; over TCP only when tcp.
// Each transport gets timeout of its own, within ctx.
func (r *Resolver) exchange(ctx context.Context, server netip.AddrPort, q dnsmessage.Question, timeout time.Duration, tcp bool) (reply, error) {
	if !tcp {
		rep, err := r.roundTrip(ctx, "udp", server, q, timeout)
		if err != nil || !rep.truncated {
			return rep, err
		}
	}
	return r.roundTrip(ctx, "tcp", server, q, timeout)
}

// aLongTimeAgo is a deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip makes one connection with r.Dial, sends the query and reads the
// reply. The connection is closed before it returns.
func (r *Resolver) roundTrip(ctx context.Context, network string, server netip.AddrPort, q dnsmessage.Question, timeout time.Duration) (reply, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := uint16(rand.Uint32())
	msg, err := newQuery(id, q, network == "tcp")
	if err != nil {
		return reply{}, fmt.Errorf("building query: %w", err)
	}
	c, err := r.Dial(ctx, network, server.String())
	if err != nil {
		return reply{}, fmt.Errorf("dialing %s %s: %w", network, server, err)
	}
	if c == nil {
		return reply{}, fmt.Errorf("dialing %s %s: Dial returned no connection and no error", network, server)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(d); err != nil {
			return reply{}, fmt.Errorf("setting deadline on %s connection to %s: %w", network, server, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	defer stop()
	if _, err := c.Write(msg); err != nil {
		return reply{}, fmt.Errorf("sending query over %s: %w", network, err)
	}
	if network == "udp" {
		buf := make([]byte, udpSize)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return reply{}, fmt.Errorf("reading reply over udp: %w", err)
			}
			rep, err := parseReply(buf[:n], id, q)
			if errors.Is(err, errMismatch) {
				continue
			}
			return rep, err
		}
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return reply{}, fmt.Errorf("reading reply length over tcp: %w", err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		return reply{}, fmt.Errorf("reading reply over tcp: %w", err)
	}
	return parseReply(buf, id, q)
}
