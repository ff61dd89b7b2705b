package broker

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// FuzzParseTarget checks that ParseTarget never panics, refuses with an
// invalid_request error, and accepts only a port from 1 to 65535 with a
// canonical IP address or a name policy.CheckHostname accepts; and that a
// target prints as an address that parses back to it.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:80",
		"[::1]:443",
		"[::ffff:10.0.0.1]:22",
		"[0:0::1]:80",
		"[::FFFF:1.2.3.4]:65535",
		"sas.example.net:9999",
		"SAS.Example.NET.:1",
		"_sip._udp.example.net:5060",
		"[fe80::1%eth0]:80",
		"[1.2.3.4]:80",
		"[host]:80",
		"::1:80",
		"host:0",
		"host:65536",
		"host:080",
		"host:+80",
		"127.1:80",
		"0x7f000001:80",
		"10.0.0.1.:80",
		"a..b:80",
		":80",
		"host:80\x00",
		strings.Repeat("a.", 126) + "a:1",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseTarget(s)
		if err != nil {
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeInvalidRequest {
				t.Fatalf("ParseTarget(%q) error %v; want an %s *wire.Error", s, err, wire.CodeInvalidRequest)
			}
			if tg != (Target{}) {
				t.Fatalf("ParseTarget(%q) = %+v with an error; want the zero Target", s, tg)
			}
			return
		}
		if tg.Port == 0 {
			t.Fatalf("ParseTarget(%q) = %+v: port 0 accepted", s, tg)
		}
		if tg.IP.IsValid() {
			a, perr := netip.ParseAddr(tg.Host)
			if perr != nil || a.Unmap() != tg.IP {
				t.Fatalf("ParseTarget(%q) = %+v: IP is not the host's address (%v, %v)", s, tg, a, perr)
			}
			if tg.IP.Zone() != "" || tg.IP.Is4In6() {
				t.Fatalf("ParseTarget(%q) = %+v: IP has a zone or is IPv4-mapped", s, tg)
			}
		} else {
			if err := policy.CheckHostname(tg.Host); err != nil {
				t.Fatalf("ParseTarget(%q) = %+v, but CheckHostname(%q) = %v", s, tg, tg.Host, err)
			}
			if _, perr := netip.ParseAddr(tg.Host); perr == nil {
				t.Fatalf("ParseTarget(%q) = %+v: an address taken as a name", s, tg)
			}
		}

		// Host keeps an address as it was written ("::ffff:10.0.0.1");
		// String() prints the canonical form, which must name the same
		// destination and be a fixed point.
		printed := tg.String()
		again, err := ParseTarget(printed)
		if err != nil {
			t.Fatalf("ParseTarget(%q) = %+v, but its String() %q does not parse: %v", s, tg, printed, err)
		}
		if again.IP != tg.IP || again.Port != tg.Port || !tg.IP.IsValid() && again != tg {
			t.Fatalf("ParseTarget(%q) = %+v, but ParseTarget(%q) = %+v", s, tg, printed, again)
		}
		if p2 := again.String(); p2 != printed {
			t.Fatalf("String() is not stable: %q, then %q", printed, p2)
		}
		if third, err := ParseTarget(again.String()); err != nil || third != again {
			t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v", again.String(), third, err, again)
		}
	})
}
