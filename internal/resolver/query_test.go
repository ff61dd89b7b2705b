package resolver

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func TestNewQuery(t *testing.T) {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("www.example.test."), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET}
	for _, tcp := range []bool{false, true} {
		msg, err := newQuery(0x1234, q, tcp)
		if err != nil {
			t.Fatal(err)
		}
		if tcp {
			if l := int(binary.BigEndian.Uint16(msg)); l != len(msg)-2 {
				t.Fatalf("TCP length prefix %d, want %d", l, len(msg)-2)
			}
			msg = msg[2:]
		}
		var m dnsmessage.Message
		if err := m.Unpack(msg); err != nil {
			t.Fatalf("tcp %v: query does not parse: %v", tcp, err)
		}
		if m.ID != 0x1234 || !m.RecursionDesired || m.Response || len(m.Questions) != 1 || m.Questions[0] != q {
			t.Errorf("tcp %v: header %+v, questions %v; want ID 0x1234, RD, one question %v", tcp, m.Header, m.Questions, q)
		}
		if len(m.Additionals) != 1 || m.Additionals[0].Header.Type != dnsmessage.TypeOPT || m.Additionals[0].Header.Class != udpSize {
			t.Errorf("tcp %v: additionals %v, want one OPT with UDP size %d", tcp, m.Additionals, udpSize)
		}
	}
}

func TestParseReplyMismatch(t *testing.T) {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("www.example.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	other := q
	other.Name = dnsmessage.MustNewName("other.test.")
	pack := func(h dnsmessage.Header, qs ...dnsmessage.Question) []byte {
		b, err := (&dnsmessage.Message{Header: h, Questions: qs}).Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	upper := q
	upper.Name = dnsmessage.MustNewName("WWW.Example.TEST.")
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"match", pack(dnsmessage.Header{ID: 7, Response: true}, q), nil},
		{"match in another case", pack(dnsmessage.Header{ID: 7, Response: true}, upper), nil},
		{"another ID", pack(dnsmessage.Header{ID: 8, Response: true}, q), errMismatch},
		{"not a response", pack(dnsmessage.Header{ID: 7}, q), errMismatch},
		{"another question", pack(dnsmessage.Header{ID: 7, Response: true}, other), errMismatch},
		{"two questions", pack(dnsmessage.Header{ID: 7, Response: true}, q, q), errMismatch},
		{"no question", pack(dnsmessage.Header{ID: 7, Response: true}), errMismatch},
		{"garbage", []byte{0, 7, 0x80}, errMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseReply(tt.msg, 7, q); !errors.Is(err, tt.want) {
				t.Errorf("parseReply error %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzParseReply(f *testing.F) {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("www.example.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	fake := &fakeServer{t: f}
	for _, a := range []answer{
		{records: []dnsmessage.Resource{A("www.example.test.", "192.0.2.1")}},
		{records: []dnsmessage.Resource{CNAME("www.example.test.", "x.test."), CNAME("x.test.", "www.example.test."), A("x.test.", "192.0.2.2")}},
		{rcode: dnsmessage.RCodeNameError},
	} {
		f.Add(fake.build(dnsmessage.Header{ID: 7, Response: true, RCode: a.rcode}, q, a.records))
	}
	f.Add([]byte{0, 7, 0x80, 0, 0, 1, 0, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := parseReply(msg, 7, q)
		if err != nil && len(r.addrs) > 0 {
			t.Errorf("parseReply returned %v and error %v", r.addrs, err)
		}
		for _, a := range r.addrs {
			if !a.Is4() {
				t.Errorf("A query answered with %v", a)
			}
		}
	})
}
