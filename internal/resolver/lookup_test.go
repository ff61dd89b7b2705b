package resolver

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

func TestLookupAnswers(t *testing.T) {
	www := []string{"192.0.2.1", "192.0.2.2"}
	chain := func(prefix string, n int) answer {
		var a answer
		name := prefix + ".example.test."
		for i := 1; i <= n; i++ {
			next := prefix + "-" + string(rune('a'+i)) + ".example.test."
			a.records = append(a.records, CNAME(name, next))
			name = next
		}
		a.records = append(a.records, A(name, "192.0.2.8"))
		return a
	}
	z := zone{
		"www.example.test. A":       {records: []dnsmessage.Resource{A("www.example.test.", www[0]), A("www.example.test.", www[1])}},
		"www.example.test. AAAA":    {records: []dnsmessage.Resource{AAAA("www.example.test.", "2001:db8::1")}},
		"v4only.example.test. A":    {records: []dnsmessage.Resource{A("v4only.example.test.", "192.0.2.3")}},
		"v4only.example.test. AAAA": {},
		"alias.example.test. A": {records: []dnsmessage.Resource{
			A("unrelated.example.test.", "192.0.2.9"),
			CNAME("alias.example.test.", "mid.example.test."),
			CNAME("mid.example.test.", "www.example.test."),
			A("www.example.test.", www[0]),
		}},
		"chain8.example.test. A": chain("chain8", 8),
		"chain9.example.test. A": chain("chain9", 9),
		"loop.example.test. A": {records: []dnsmessage.Resource{
			CNAME("loop.example.test.", "loop2.example.test."),
			CNAME("loop2.example.test.", "loop.example.test."),
		}},
		"dup.example.test. A":          {records: []dnsmessage.Resource{A("dup.example.test.", "192.0.2.1"), A("DUP.Example.test.", "192.0.2.1")}},
		"nodata.example.test. A":       {},
		"nodata.example.test. AAAA":    {},
		"wrongtype.example.test. AAAA": {records: []dnsmessage.Resource{A("wrongtype.example.test.", "192.0.2.1")}},
		"other.example.test. A":        {records: []dnsmessage.Resource{A("someone-else.example.test.", "192.0.2.1")}},
	}
	e := newEnv(t, map[string]string{"resolv.conf": oneNS}, newFake(t, z, nxdomain))
	notFound := wantErr{kind: "notfound", server: server1, contains: []string{"no such host", server1}}
	tests := []struct {
		name, network, host string
		want                []string
		err                 wantErr
	}{
		{"A", "ip4", "www.example.test", www, wantErr{}},
		{"AAAA", "ip6", "www.example.test", []string{"2001:db8::1"}, wantErr{}},
		{"both, IPv4 first", "ip", "www.example.test", append(slices.Clone(www), "2001:db8::1"), wantErr{}},
		{"case and trailing dot", "ip4", "WWW.Example.TEST.", www, wantErr{}},
		{"IPv4 only, NODATA for AAAA", "ip", "v4only.example.test", []string{"192.0.2.3"}, wantErr{}},
		{"CNAME chain, unrelated record ignored", "ip4", "alias.example.test", www[:1], wantErr{}},
		{"8 CNAMEs followed", "ip4", "chain8.example.test", []string{"192.0.2.8"}, wantErr{}},
		{"9th CNAME not followed", "ip4", "chain9.example.test", nil, notFound},
		{"CNAME loop", "ip4", "loop.example.test", nil, notFound},
		{"duplicates removed", "ip4", "dup.example.test", []string{"192.0.2.1"}, wantErr{}},
		{"NODATA for both", "ip", "nodata.example.test", nil, notFound},
		{"record of the wrong type ignored", "ip6", "wrongtype.example.test", nil, notFound},
		{"record of another name ignored", "ip4", "other.example.test", nil, notFound},
		{"NXDOMAIN", "ip", "missing.example.test", nil, wantErr{kind: "notfound", server: server1, contains: []string{"missing.example.test", server1, "no such host"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.lookup(t, tt.network, tt.host)
			check(t, got, err, tt.want, tt.err)
			if err != nil {
				if de := asDNSError(t, err); de.Err != "no such host" || de.Name != tt.host {
					t.Errorf("error Err %q, Name %q; want %q, %q", de.Err, de.Name, "no such host", tt.host)
				}
			}
		})
	}
}

func TestLookupFailover(t *testing.T) {
	good := zone{"www.example.test. A": {records: []dnsmessage.Resource{A("www.example.test.", "192.0.2.1")}}}
	tests := []struct {
		name          string
		conf          string
		first, second answer // how each server answers everything
		want          []string
		err           wantErr
		wantFirst     int // queries the first server gets
		wantSecond    int
	}{
		{"SERVFAIL, then the second server", twoNS, servfail, answer{}, []string{"192.0.2.1"}, wantErr{}, 1, 1},
		{"REFUSED, then the second server", twoNS, refused, answer{}, []string{"192.0.2.1"}, wantErr{}, 1, 1},
		{"lame, then the second server", twoNS, answer{lame: true}, answer{}, []string{"192.0.2.1"}, wantErr{}, 1, 1},
		{"no reply, then the second server", twoNS, drop, answer{}, []string{"192.0.2.1"}, wantErr{}, 1, 1},
		{"NXDOMAIN is an answer: no second server", twoNS, nxdomain, answer{}, nil, wantErr{kind: "notfound", server: server1}, 1, 0},
		{"SERVFAIL everywhere", twoNS + "options attempts:1\n", servfail, servfail, nil,
			wantErr{kind: "temporary", server: server2, contains: []string{"SERVFAIL", "www.example.test", server2}}, 1, 1},
		{"REFUSED everywhere, two attempts", twoNS, refused, refused, nil,
			wantErr{kind: "temporary", server: server2, contains: []string{"REFUSED"}}, 2, 2},
		{"no reply anywhere", twoNS + "options attempts:1\n", drop, drop, nil,
			wantErr{kind: "timeout", contains: []string{"www.example.test", server1, server2, "timeout"}}, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			firstZone, secondZone := zone{}, zone{}
			if tt.second.rcode == 0 && !tt.second.drop && !tt.second.lame {
				secondZone = good
			}
			f1 := newFake(t, firstZone, tt.first)
			f2 := newFake(t, secondZone, tt.second)
			e := newEnv(t, map[string]string{"resolv.conf": tt.conf}, f1, f2)
			got, err := e.lookup(t, "ip4", "www.example.test")
			check(t, got, err, tt.want, tt.err)
			if n1, n2 := len(f1.queries()), len(f2.queries()); n1 != tt.wantFirst || n2 != tt.wantSecond {
				t.Errorf("servers got %d and %d queries, want %d and %d", n1, n2, tt.wantFirst, tt.wantSecond)
			}
		})
	}
}

func TestLookupAttempts(t *testing.T) {
	for _, tt := range []struct {
		conf string
		want int
	}{
		{oneNS, 2},
		{oneNS + "options attempts:1\n", 1},
		{oneNS + "options attempts:3\n", 3},
	} {
		t.Run(strings.TrimSpace(tt.conf), func(t *testing.T) {
			f := newFake(t, zone{}, drop)
			e := newEnv(t, map[string]string{"resolv.conf": tt.conf}, f)
			got, err := e.lookup(t, "ip4", "www.example.test")
			check(t, got, err, nil, wantErr{kind: "timeout", server: server1})
			if n := len(f.queries()); n != tt.want {
				t.Errorf("server got %d queries, want %d", n, tt.want)
			}
		})
	}
}

func TestLookupTransport(t *testing.T) {
	rec := []dnsmessage.Resource{A("www.example.test.", "192.0.2.1")}
	tests := []struct {
		name      string
		conf      string
		a         answer
		wantProto []string
	}{
		{"UDP", oneNS, answer{records: rec}, []string{"udp"}},
		{"truncated over UDP, retried over TCP", oneNS, answer{records: rec, truncate: true}, []string{"udp", "tcp"}},
		{"use-vc: TCP only", oneNS + "options use-vc\n", answer{records: rec}, []string{"tcp"}},
		{"replies to other queries ignored", oneNS, answer{records: rec, junk: true}, []string{"udp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, zone{"www.example.test. A": tt.a}, nxdomain)
			e := newEnv(t, map[string]string{"resolv.conf": tt.conf}, f)
			got, err := e.lookup(t, "ip4", "www.example.test")
			check(t, got, err, []string{"192.0.2.1"}, wantErr{})
			var protos []string
			for _, q := range f.queries() {
				protos = append(protos, q.proto)
				if !q.rd || q.edns != udpSize {
					t.Errorf("query %+v: want recursion desired and an EDNS0 UDP size of %d", q, udpSize)
				}
			}
			if !slices.Equal(protos, tt.wantProto) {
				t.Errorf("queries over %v, want %v", protos, tt.wantProto)
			}
		})
	}
}

func TestLookupSearch(t *testing.T) {
	found := answer{records: []dnsmessage.Resource{A("found.b.test.", "192.0.2.1")}}
	tests := []struct {
		name, conf, host string
		z                zone
		want             []string // queries, in order
		wantAddrs        []string
		err              wantErr
	}{
		{"fewer dots than ndots: search first", "search a.test b.test\noptions ndots:2\n", "host", nil,
			[]string{"host.a.test. A", "host.b.test. A", "host. A"}, nil, wantErr{kind: "notfound"}},
		{"one dot, ndots 2: search first", "search a.test b.test\noptions ndots:2\n", "x.y", nil,
			[]string{"x.y.a.test. A", "x.y.b.test. A", "x.y. A"}, nil, wantErr{kind: "notfound"}},
		{"ndots dots: as given first", "search a.test b.test\noptions ndots:2\n", "x.y.z", nil,
			[]string{"x.y.z. A", "x.y.z.a.test. A", "x.y.z.b.test. A"}, nil, wantErr{kind: "notfound"}},
		{"trailing dot: only as given", "search a.test b.test\n", "abs.name.", nil,
			[]string{"abs.name. A"}, nil, wantErr{kind: "notfound"}},
		{"ndots 0: as given first", "search a.test\noptions ndots:0\n", "host", nil,
			[]string{"host. A", "host.a.test. A"}, nil, wantErr{kind: "notfound"}},
		{"default ndots 1", "search a.test\n", "x.y", nil,
			[]string{"x.y. A", "x.y.a.test. A"}, nil, wantErr{kind: "notfound"}},
		{"last of search and domain wins", "search a.test\ndomain d.test\n", "host", nil,
			[]string{"host.d.test. A", "host. A"}, nil, wantErr{kind: "notfound"}},
		{"stops at the first found", "search a.test b.test c.test\n", "found", zone{"found.b.test. A": found},
			[]string{"found.a.test. A", "found.b.test. A"}, []string{"192.0.2.1"}, wantErr{}},
		{"SERVFAIL for one candidate: the next is tried", "search a.test b.test\noptions attempts:1\n", "found",
			zone{"found.a.test. A": servfail, "found.b.test. A": found},
			[]string{"found.a.test. A", "found.b.test. A"}, []string{"192.0.2.1"}, wantErr{}},
		{"SERVFAIL for one, NXDOMAIN for the rest: temporary", "search a.test b.test\noptions attempts:1\n", "host",
			zone{"host.a.test. A": servfail},
			[]string{"host.a.test. A", "host.b.test. A", "host. A"}, nil, wantErr{kind: "temporary", contains: []string{"SERVFAIL", "host.a.test"}}},
		{"no reply for one candidate: the search stops", "search a.test b.test\noptions attempts:1\n", "host",
			zone{"host.a.test. A": drop},
			[]string{"host.a.test. A"}, nil, wantErr{kind: "timeout", contains: []string{"host.a.test"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, tt.z, nxdomain)
			e := newEnv(t, map[string]string{"resolv.conf": oneNS + tt.conf}, f)
			got, err := e.lookup(t, "ip4", tt.host)
			check(t, got, err, tt.wantAddrs, tt.err)
			if q := f.names(); !slices.Equal(q, tt.want) {
				t.Errorf("queries %q, want %q", q, tt.want)
			}
		})
	}
}
