package resolver

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// conf is a Conf with the defaults, changed by fn.
func conf(fn func(c *Conf)) *Conf {
	c := &Conf{Servers: defaultServers(), Ndots: 1, Timeout: 5 * time.Second, Attempts: 2}
	if fn != nil {
		fn(c)
	}
	return c
}

func servers(s ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range s {
		out = append(out, netip.AddrPortFrom(netip.MustParseAddr(a), 53))
	}
	return out
}

func confEqual(a, b *Conf) bool {
	return slices.Equal(a.Servers, b.Servers) && slices.Equal(a.Search, b.Search) &&
		a.Ndots == b.Ndots && a.Timeout == b.Timeout && a.Attempts == b.Attempts &&
		a.Rotate == b.Rotate && a.UseTCP == b.UseTCP
}

func TestParseConf(t *testing.T) {
	var many strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&many, "nameserver 192.0.2.%d\n", i%250+1)
	}
	tests := []struct {
		name string
		in   string
		want *Conf
	}{
		{"empty", "", conf(nil)},
		{"full", "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch a.test b.test.\noptions ndots:3 timeout:2 attempts:4 rotate use-vc\n",
			conf(func(c *Conf) {
				c.Servers = servers("192.0.2.53", "2001:db8::53")
				c.Search = []string{"a.test", "b.test"}
				c.Ndots, c.Timeout, c.Attempts, c.Rotate, c.UseTCP = 3, 2*time.Second, 4, true, true
			})},
		{"at most 3 name servers", "nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\nnameserver 192.0.2.4\n",
			conf(func(c *Conf) { c.Servers = servers("192.0.2.1", "192.0.2.2", "192.0.2.3") })},
		{"1000 name servers", many.String(), conf(func(c *Conf) { c.Servers = servers("192.0.2.1", "192.0.2.2", "192.0.2.3") })},
		{"comments", "# nameserver 192.0.2.1\n; nameserver 192.0.2.2\nnameserver 192.0.2.3 # the real one\n",
			conf(func(c *Conf) { c.Servers = servers("192.0.2.3") })},
		{"comment right after the address", "nameserver 192.0.2.1#x\nnameserver 192.0.2.2;y\n",
			conf(func(c *Conf) { c.Servers = servers("192.0.2.1", "192.0.2.2") })},
		{"keyword must start the line, as in glibc", " nameserver 192.0.2.1\n\tsearch a.test\n", conf(nil)},
		{"tabs and CRLF", "nameserver\t192.0.2.1\r\nsearch\ta.test\tb.test\r\n",
			conf(func(c *Conf) { c.Servers = servers("192.0.2.1"); c.Search = []string{"a.test", "b.test"} })},
		{"bad addresses ignored", "nameserver 127.1\nnameserver foo\nnameserver 300.1.1.1\nnameserver 010.0.0.1\nnameserver\nnameserver 192.0.2.9\n",
			conf(func(c *Conf) { c.Servers = servers("192.0.2.9") })},
		{"IPv6 zone kept", "nameserver fe80::1%eth0\n",
			conf(func(c *Conf) { c.Servers = []netip.AddrPort{netip.MustParseAddrPort("[fe80::1%eth0]:53")} })},
		{"domain after search wins", "search a.test b.test\ndomain d.test extra\n", conf(func(c *Conf) { c.Search = []string{"d.test"} })},
		{"search after domain wins", "domain d.test\nsearch a.test\n", conf(func(c *Conf) { c.Search = []string{"a.test"} })},
		{"at most 6 search domains", "search a b c d e f g h\n", conf(func(c *Conf) { c.Search = []string{"a", "b", "c", "d", "e", "f"} })},
		{"bad search domains dropped", "search . bad..name -x.test ok.test " + strings.Repeat("a", 64) + "\n",
			conf(func(c *Conf) { c.Search = []string{"ok.test"} })},
		{"empty search line clears the list", "search a.test\nsearch\t\n", conf(func(c *Conf) { c.Search = []string{} })},
		{"option values capped", "options ndots:99 timeout:99 attempts:99\n",
			conf(func(c *Conf) { c.Ndots, c.Timeout, c.Attempts = 15, 30*time.Second, 5 })},
		{"huge option values capped", "options ndots:99999999999999999999999 timeout:99999999999999999999\n",
			conf(func(c *Conf) { c.Ndots, c.Timeout = 15, 30*time.Second })},
		{"zero timeout and attempts raised to 1, ndots 0 kept", "options timeout:0 attempts:0 ndots:0\n",
			conf(func(c *Conf) { c.Ndots, c.Timeout, c.Attempts = 0, time.Second, 1 })},
		{"bad option values ignored", "options ndots:x timeout:-1 attempts: ndots timeout:\n", conf(nil)},
		{"leading digits read, as atoi does", "options ndots:3x\n", conf(func(c *Conf) { c.Ndots = 3 })},
		{"unknown options and lines ignored", "options edns0 trust-ad single-request\nsortlist 192.0.2.0/24\nlookup file bind\n", conf(nil)},
		{"usevc and tcp", "options usevc\n", conf(func(c *Conf) { c.UseTCP = true })},
		{"binary junk", "\x00\xff\xfe\x01nameserver\x00 192.0.2.1\nnameserver 192.0.2.2\x00\n\xffsearch a\n",
			conf(nil)},
		{"junk, then a good line", "\x00\x01\x02\x03\x04\nnameserver 192.0.2.2\n", conf(func(c *Conf) { c.Servers = servers("192.0.2.2") })},
		{"very long lines", "nameserver " + strings.Repeat("1", 1<<20) + "\nsearch " + strings.Repeat("a.", 1<<19) + "\noptions " + strings.Repeat("ndots:2 ", 1<<16) + "\n",
			conf(func(c *Conf) { c.Ndots = 2; c.Search = []string{} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseConf([]byte(tt.in)); !confEqual(got, tt.want) {
				t.Errorf("ParseConf:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

// checkConf fails t unless c keeps ParseConf's promises.
func checkConf(t *testing.T, c *Conf) {
	t.Helper()
	if len(c.Servers) < 1 || len(c.Servers) > maxServers {
		t.Errorf("%d servers, want 1 to %d", len(c.Servers), maxServers)
	}
	for _, s := range c.Servers {
		if s.Port() != 53 || !s.Addr().IsValid() {
			t.Errorf("server %v, want a valid address, port 53", s)
		}
	}
	if len(c.Search) > maxSearch {
		t.Errorf("%d search domains, want at most %d", len(c.Search), maxSearch)
	}
	for _, s := range c.Search {
		if !isDomainName(s) || strings.HasSuffix(s, ".") {
			t.Errorf("search domain %q, want a valid name without a trailing dot", s)
		}
	}
	if c.Ndots < 0 || c.Ndots > maxNdots {
		t.Errorf("Ndots %d, want 0 to %d", c.Ndots, maxNdots)
	}
	if c.Timeout < time.Second || c.Timeout > maxTimeout*time.Second {
		t.Errorf("Timeout %v, want 1s to 30s", c.Timeout)
	}
	if c.Attempts < 1 || c.Attempts > maxAttempts {
		t.Errorf("Attempts %d, want 1 to %d", c.Attempts, maxAttempts)
	}
}

func FuzzParseConf(f *testing.F) {
	for _, s := range []string{
		"",
		"nameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch a.test b.test\noptions ndots:3 timeout:2 attempts:4 rotate use-vc\n",
		"domain d.test\nnameserver fe80::1%eth0\n# comment\n; comment\n",
		"options ndots:99 timeout:0 attempts:x\nsearch . a..b\n",
		"nameserver\t127.0.0.53\r\noptions edns0 trust-ad\r\nsearch .\r\n",
		"\x00\xff\nsearch " + strings.Repeat("a.", 200) + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkConf(t, ParseConf(b))
	})
}
