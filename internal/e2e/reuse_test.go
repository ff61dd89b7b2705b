package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
)

// Security review issue 10.2: a socket the daemon hands out must not let
// another local user bind its address and port with SO_REUSEADDR and take
// its traffic. The thief is this test binary run as uid 65534 in helper
// mode "reuse-take": it never talks to the daemon.

func init() {
	helperModes["reuse-take"] = reuseHelperTake
}

// TestIntegrationReuseAddrOtherUser: the daemon hands out sockets bound to
// 127.0.0.1 on a port the kernel picks; a process of uid 65534 that never
// talked to the daemon then binds the same address and port with
// SO_REUSEADDR (and SO_REUSEPORT where the socket has it). With the
// defaults (UDP, TCP bound only, TCP listening) and with reuseport it gets
// EADDRINUSE. Only a request that asks for reuseaddr on a socket that does
// not listen, which the rule must grant, lets it in, and then it receives
// the datagrams: what docs/configuration.md says reuseaddr exposes.
func TestIntegrationReuseAddrOtherUser(t *testing.T) {
	requireRoot(t)
	d, base := startBindDaemon(t, bindBase+bindRootAdmin+`
[[rule]]
name = "root-default-options"
users = [0]
bind = ["*:127.0.0.2:*"]
`)
	thief := bindPublicBinary(t)
	c := bindClient(t, d, "holder")
	cases := []struct {
		name, network string
		opts          *sockfactory.ListenOptions
		reusePort     bool // the thief also sets SO_REUSEPORT
		taken         bool // the thief's bind succeeds
	}{
		{"udp-defaults", "udp4", nil, false, false},
		{"tcp-bound-only-defaults", "tcp4", &sockfactory.ListenOptions{NoListen: true}, false, false},
		{"tcp-listening-defaults", "tcp4", nil, false, false},
		{"udp-reuseport", "udp4", &sockfactory.ListenOptions{ReusePort: true}, true, false},
		{"tcp-reuseport", "tcp4", &sockfactory.ListenOptions{ReusePort: true}, true, false},
		{"udp-reuseaddr-granted", "udp4", &sockfactory.ListenOptions{ReuseAddr: true}, false, true},
		{"tcp-bound-only-reuseaddr-granted", "tcp4", &sockfactory.ListenOptions{NoListen: true, ReuseAddr: true}, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := bindCtx(t)
			f, b, err := c.BindFile(ctx, tc.network, "127.0.0.1:0", tc.opts)
			if err != nil {
				t.Fatalf("bind %s 127.0.0.1:0 with %+v: %v", tc.network, tc.opts, err)
			}
			defer func() {
				f.Close()
				if err := c.Release(ctx, b.Token); err != nil {
					t.Errorf("release: %v", err)
				}
			}()
			arg := fmt.Sprintf("%s %s %v", tc.network[:3], b.Addr, tc.reusePort)
			p := bindStartProc(t, thief, append(os.Environ(), helperEnv+"=reuse-take"), asUser(65534, 65534), "-test.run=^$", arg)
			if !tc.taken {
				p.expect(t, "EADDRINUSE")
				if code := p.wait(t); code != 0 {
					t.Fatalf("thief exited %d\nstderr:\n%s", code, p.stderr)
				}
				return
			}
			p.expect(t, "BOUND")
			if tc.network == "udp4" {
				// The thief, bound last, gets the datagrams sent to the port.
				conn, err := net.Dial("udp4", b.Addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := conn.Write([]byte("meant for the holder")); err != nil {
					t.Fatal(err)
				}
				p.expect(t, "GOT meant for the holder")
			}
			if code := p.wait(t); code != 0 {
				t.Fatalf("thief exited %d\nstderr:\n%s", code, p.stderr)
			}
		})
	}

	// Under a rule without bind_options, reuseaddr that would expose the
	// port is denied; turning it off, or on where the socket listens, is not.
	t.Run("not-granted", func(t *testing.T) {
		ctx := bindCtx(t)
		for _, o := range []*sockfactory.ListenOptions{{ReuseAddr: true}, {ReuseAddr: true, NoListen: true}} {
			network := "udp"
			if o.NoListen {
				network = "tcp"
			}
			f, _, err := c.BindFile(ctx, network, "127.0.0.2:0", o)
			if err == nil {
				f.Close()
				t.Fatalf("bind %s 127.0.0.2:0 with %+v under a rule without bind_options: granted; want denied", network, o)
			}
			if !errors.Is(err, sockfactory.ErrDenied) || !strings.Contains(err.Error(), `socket option "reuseaddr"`) {
				t.Fatalf("bind %s 127.0.0.2:0 with %+v: got %v; want ErrDenied naming reuseaddr", network, o, err)
			}
		}
		for _, k := range []struct {
			network string
			o       *sockfactory.ListenOptions
		}{{"udp", &sockfactory.ListenOptions{NoReuseAddr: true}}, {"tcp", &sockfactory.ListenOptions{ReuseAddr: true}}} {
			f, b, err := c.BindFile(ctx, k.network, "127.0.0.2:0", k.o)
			if err != nil {
				t.Fatalf("bind %s 127.0.0.2:0 with %+v under a rule without bind_options: %v; want granted", k.network, k.o, err)
			}
			f.Close()
			if err := c.Release(ctx, b.Token); err != nil {
				t.Errorf("release: %v", err)
			}
		}
	})
	c.Close()
	bindWaitFDs(t, d, base)
}

// reuseHelperTake, run as a user other than the daemon's, binds
// "PROTO ADDRESS REUSEPORT" (tcp or udp, ip:port, true or false) with
// SO_REUSEADDR, and SO_REUSEPORT if asked, as a program out to take the
// port would. It prints EADDRINUSE, or BOUND and then, for UDP, GOT and
// the first datagram that arrives within 20 s.
func reuseHelperTake(arg string) int {
	if os.Getuid() == 0 {
		fmt.Println("FAIL: the thief runs as root; want another user")
		return 2
	}
	f := strings.Fields(arg)
	if len(f) != 3 {
		fmt.Printf("FAIL: argument %q: want PROTO ADDRESS REUSEPORT\n", arg)
		return 2
	}
	ap, err := netip.ParseAddrPort(f[1])
	if err != nil || !ap.Addr().Is4() {
		fmt.Printf("FAIL: address %q: want an IPv4 ip:port\n", f[1])
		return 2
	}
	typ := unix.SOCK_STREAM
	if f[0] == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println("FAIL: socket:", err)
		return 3
	}
	defer unix.Close(fd)
	opts := []int{unix.SO_REUSEADDR}
	if f[2] == "true" {
		opts = append(opts, unix.SO_REUSEPORT)
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, 1); err != nil {
			fmt.Println("FAIL: setsockopt:", err)
			return 3
		}
	}
	err = unix.Bind(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	if errors.Is(err, syscall.EADDRINUSE) {
		fmt.Println("EADDRINUSE")
		return 0
	}
	if err != nil {
		fmt.Println("FAIL: bind:", err)
		return 4
	}
	fmt.Println("BOUND")
	if typ != unix.SOCK_DGRAM {
		return 0
	}
	tv := unix.NsecToTimeval((20 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		fmt.Println("FAIL: setsockopt SO_RCVTIMEO:", err)
		return 3
	}
	buf := make([]byte, 512)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			fmt.Println("FAIL: no datagram reached the thief:", err)
			return 5
		}
		fmt.Println("GOT", string(buf[:n]))
		return 0
	}
}
