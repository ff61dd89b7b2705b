package binder_test

import (
	"errors"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/binder"
)

// bindBeside binds a fresh socket of tg's kind to ap with SO_REUSEADDR (and
// SO_REUSEPORT if reusePort), as another program would to take the port;
// it returns bind's error and closes the socket.
func bindBeside(t *testing.T, tg target, ap netip.AddrPort, reusePort bool) error {
	t.Helper()
	family, typ := unix.AF_INET, unix.SOCK_STREAM
	if tg.v6() {
		family = unix.AF_INET6
	}
	if tg.proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		t.Fatalf("setsockopt SO_REUSEADDR: %v", err)
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatalf("setsockopt SO_REUSEPORT: %v", err)
		}
	}
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if !tg.v6() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return os.NewSyscallError("bind", unix.Bind(fd, sa))
}

// TestExposesPort checks ExposesPort against the kernel: a second socket
// with SO_REUSEADDR binds the address and port of a socket made with the
// options exactly when ExposesPort says so. (The second socket has the
// test's uid; SO_REUSEADDR does not look at uids, which the e2e test
// TestIntegrationReuseAddrOtherUser shows with uid 65534.)
func TestExposesPort(t *testing.T) {
	tests := []struct {
		name string
		only string // "tcp", "udp", or "" for both
		set  func(*binder.Options)
		want bool
	}{
		{"defaults", "", func(o *binder.Options) {}, false},
		{"reuseaddr on", "udp", func(o *binder.Options) { o.ReuseAddr = true }, true},
		{"reuseaddr off", "", func(o *binder.Options) { o.ReuseAddr = false }, false},
		{"bound only", "tcp", func(o *binder.Options) { o.Listen, o.ReuseAddr = false, binder.DefaultReuseAddr(false) }, false},
		{"bound only with reuseaddr", "tcp", func(o *binder.Options) { o.Listen, o.ReuseAddr = false, true }, true},
		{"listening with reuseaddr", "tcp", func(o *binder.Options) { o.ReuseAddr = true }, false},
		{"reuseport", "", func(o *binder.Options) { o.ReusePort = true }, false},
	}
	for _, tt := range tests {
		for _, tg := range targets {
			if tt.only != "" && tt.only != tg.proto {
				continue
			}
			t.Run(tt.name+"/"+tg.String(), func(t *testing.T) {
				checkFDs(t)
				o := binder.Defaults(tg.proto)
				tt.set(&o)
				if got := o.ExposesPort(); got != tt.want {
					t.Fatalf("ExposesPort of %+v: got %v, want %v", o, got, tt.want)
				}
				_, local := create(t, tg, 0, o)
				err := bindBeside(t, tg, local, false)
				if tt.want && err != nil {
					t.Errorf("second bind of %s with SO_REUSEADDR beside %+v: got %v; want it bound, as ExposesPort says", local, o, err)
				}
				if !tt.want && !errors.Is(err, syscall.EADDRINUSE) {
					t.Errorf("second bind of %s with SO_REUSEADDR beside %+v: got %v; want EADDRINUSE", local, o, err)
				}
			})
		}
	}
}

// TestNormalize: v6only means something only on :: and IPv4-mapped
// addresses; elsewhere Normalize sets it on, as Linux does for a specific
// IPv6 address (read back from a socket created with it off).
func TestNormalize(t *testing.T) {
	tests := []struct {
		addr       string
		v6only     bool
		want       bool
		kernelSays bool // create a socket with v6only as asked and read it back
	}{
		{"::1", false, true, true},
		{"::1", true, true, false},
		{"2001:db8::1", false, true, false},
		{"fe80::1", false, true, false},
		{"::", false, false, true},
		{"::", true, true, false},
		{"::ffff:127.0.0.1", false, false, false},
		{"127.0.0.1", false, true, false},
		{"0.0.0.0", false, true, false},
	}
	for _, tt := range tests {
		for _, proto := range []string{"tcp", "udp"} {
			t.Run(proto+"/"+tt.addr, func(t *testing.T) {
				checkFDs(t)
				ap := netip.AddrPortFrom(netip.MustParseAddr(tt.addr), 0)
				o := binder.Defaults(proto)
				o.V6Only = tt.v6only
				n := o
				n.Normalize(ap)
				if n.V6Only != tt.want {
					t.Fatalf("Normalize(%s) of v6only=%v: got v6only=%v, want %v", ap, tt.v6only, n.V6Only, tt.want)
				}
				want := o
				want.V6Only = n.V6Only
				if n != want {
					t.Errorf("Normalize(%s) changed more than v6only: got %+v, want %+v", ap, n, want)
				}
				if !tt.kernelSays {
					return
				}
				o.Listen, o.ReuseAddr = false, false // nothing reachable on ::
				f, _ := create(t, target{proto, ap.Addr()}, 0, o)
				wantOpt(t, sysfd(t, f), ipv6V6Only, map[bool]int{false: 0, true: 1}[n.V6Only])
			})
		}
	}
}
