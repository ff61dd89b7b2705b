package binder_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

func TestMain(m *testing.M) {
	// The runtime's poller keeps its fds open for good once started; start
	// it now so that it does not count as a leak in the first test.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	os.Exit(m.Run())
}

// openFDs counts the test process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v", err)
	}
	return len(ents)
}

// poll reports whether cond became true within timeout.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkFDs fails t if, once t and its other cleanups are done, the process
// holds more fds than now. Call it first so that its cleanup runs last.
func checkFDs(t *testing.T) {
	t.Helper()
	base := openFDs(t)
	t.Cleanup(func() {
		got := base
		if !poll(5*time.Second, func() bool { got = openFDs(t); return got <= base }) {
			t.Errorf("open fds after the test: got %d, want %d (the count before it)", got, base)
		}
	})
}

// requireRoot skips t with a reason unless the test runs as root, and
// fails it instead when SOCKFACTORY_REQUIRE_ROOT=1.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	skipOrFail(t, fmt.Sprintf("needs root (running as uid %d): run the tests as root, e.g. sudo -E go test ./internal/binder", os.Geteuid()))
}

// skipOrFail skips t for a condition of this host the test cannot work
// around, and fails it instead under SOCKFACTORY_REQUIRE_ROOT=1 (CI meets
// them all).
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	testnet.SkipOrFail(t, why)
}

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

// target is a protocol and an address to bind.
type target struct {
	proto string
	addr  netip.Addr
}

func (tg target) String() string { return tg.proto + "/" + tg.addr.String() }

func (tg target) v6() bool { return tg.addr.Is6() }

var targets = []target{{"tcp", lo4}, {"tcp", lo6}, {"udp", lo4}, {"udp", lo6}}

// create must succeed; the socket is closed when the test ends.
func create(t *testing.T, tg target, port uint16, o binder.Options) (*os.File, netip.AddrPort) {
	t.Helper()
	ap := netip.AddrPortFrom(tg.addr, port)
	f, local, err := binder.Create(tg.proto, ap, o)
	if err != nil {
		t.Fatalf("Create(%s, %s, %+v): got error %v, want a socket", tg.proto, ap, o, err)
	}
	t.Cleanup(func() { f.Close() })
	return f, local
}

// sysfd is f's descriptor, got without changing its blocking mode (as
// f.Fd would).
func sysfd(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		t.Fatalf("Control: %v", err)
	}
	return fd
}

// opt is a socket option to read back.
type opt struct {
	name       string
	level, key int
}

var (
	soReuseAddr    = opt{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR}
	soReusePort    = opt{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT}
	soRcvBuf       = opt{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF}
	soSndBuf       = opt{"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF}
	soAcceptConn   = opt{"SO_ACCEPTCONN", unix.SOL_SOCKET, unix.SO_ACCEPTCONN}
	soType         = opt{"SO_TYPE", unix.SOL_SOCKET, unix.SO_TYPE}
	soDomain       = opt{"SO_DOMAIN", unix.SOL_SOCKET, unix.SO_DOMAIN}
	ipv6V6Only     = opt{"IPV6_V6ONLY", unix.IPPROTO_IPV6, unix.IPV6_V6ONLY}
	tcpFastOpen    = opt{"TCP_FASTOPEN", unix.IPPROTO_TCP, unix.TCP_FASTOPEN}
	tcpDeferAccept = opt{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT}
)

// freeBind, transparent and mtuDiscover are the options for tg's family.
func freeBind(tg target) opt {
	if tg.v6() {
		return opt{"IPV6_FREEBIND", unix.IPPROTO_IPV6, unix.IPV6_FREEBIND}
	}
	return opt{"IP_FREEBIND", unix.IPPROTO_IP, unix.IP_FREEBIND}
}

func transparent(tg target) opt {
	if tg.v6() {
		return opt{"IPV6_TRANSPARENT", unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT}
	}
	return opt{"IP_TRANSPARENT", unix.IPPROTO_IP, unix.IP_TRANSPARENT}
}

func mtuDiscover(tg target) (opt, int) {
	if tg.v6() {
		return opt{"IPV6_MTU_DISCOVER", unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER}, unix.IPV6_PMTUDISC_OMIT
	}
	return opt{"IP_MTU_DISCOVER", unix.IPPROTO_IP, unix.IP_MTU_DISCOVER}, unix.IP_PMTUDISC_OMIT
}

func getopt(t *testing.T, fd int, o opt) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, o.level, o.key)
	if err != nil {
		t.Fatalf("getsockopt %s: %v", o.name, err)
	}
	return v
}

func wantOpt(t *testing.T, fd int, o opt, want int) {
	t.Helper()
	if got := getopt(t, fd, o); got != want {
		t.Errorf("getsockopt %s: got %d, want %d", o.name, got, want)
	}
}

func somaxconn(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Fatalf("reading somaxconn: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("parsing somaxconn %q: %v", b, err)
	}
	return n
}

// backlog is a listening TCP socket's accept queue limit (TCP_INFO reports
// it in tcpi_sacked for listeners).
func backlog(t *testing.T, fd int) int {
	t.Helper()
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		t.Fatalf("getsockopt TCP_INFO: %v", err)
	}
	if info.State != unix.BPF_TCP_LISTEN {
		t.Fatalf("TCP_INFO state: got %d, want %d (listening)", info.State, unix.BPF_TCP_LISTEN)
	}
	return int(info.Sacked)
}

// wantReachable checks that a client can reach the socket at local: a TCP
// connection is accepted by the kernel (or refused when not listening); a
// datagram arrives.
func wantReachable(t *testing.T, tg target, fd int, local netip.AddrPort, listening bool) {
	t.Helper()
	if tg.proto == "tcp" {
		c, err := net.DialTimeout("tcp", local.String(), 5*time.Second)
		if listening {
			if err != nil {
				t.Errorf("dial %s: got %v, want a connection", local, err)
				return
			}
			c.Close()
			return
		}
		if err == nil {
			c.Close()
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s (not listening): got %v, want ECONNREFUSED", local, err)
		}
		return
	}
	c, err := net.Dial("udp", local.String())
	if err != nil {
		t.Fatalf("dial udp %s: %v", local, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write to %s: %v", local, err)
	}
	buf := make([]byte, 16)
	var n int
	var rerr error
	if !poll(5*time.Second, func() bool {
		n, _, rerr = unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		return rerr == nil
	}) {
		t.Errorf("recvfrom on %s: got %v, want the datagram sent to it", local, rerr)
		return
	}
	if got := string(buf[:n]); got != "ping" {
		t.Errorf("datagram received on %s: got %q, want %q", local, got, "ping")
	}
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		proto string
		want  binder.Options
	}{
		{"tcp", binder.Options{ReuseAddr: true, V6Only: true, Listen: true}},
		// No SO_REUSEADDR on UDP: any user could bind the port next to it.
		{"udp", binder.Options{ReuseAddr: false, V6Only: true}},
	}
	for _, tt := range tests {
		t.Run(tt.proto, func(t *testing.T) {
			got := binder.Defaults(tt.proto)
			if got != tt.want {
				t.Errorf("Defaults(%q): got %+v, want %+v", tt.proto, got, tt.want)
			}
			if err := got.Validate(tt.proto); err != nil {
				t.Errorf("Defaults(%q).Validate: got %v, want nil", tt.proto, err)
			}
		})
	}
}

// TestCreateDefaults checks every option of a socket made with the
// defaults, and that clients can reach it.
func TestCreateDefaults(t *testing.T) {
	for _, tg := range targets {
		t.Run(tg.String(), func(t *testing.T) {
			checkFDs(t)
			f, local := create(t, tg, 0, binder.Defaults(tg.proto))
			fd := sysfd(t, f)
			if local.Addr() != tg.addr || local.Port() == 0 {
				t.Errorf("bound address: got %s, want %s with a real port", local, tg.addr)
			}
			sa, err := unix.Getsockname(fd)
			if err != nil {
				t.Fatalf("getsockname: %v", err)
			}
			var port int
			switch sa := sa.(type) {
			case *unix.SockaddrInet4:
				port = sa.Port
			case *unix.SockaddrInet6:
				port = sa.Port
			}
			if port != int(local.Port()) {
				t.Errorf("getsockname port: got %d, want %d (the port Create returned)", port, local.Port())
			}
			if !strings.Contains(f.Name(), tg.proto) || !strings.Contains(f.Name(), local.String()) {
				t.Errorf("file name: got %q, want it to name %s and %s", f.Name(), tg.proto, local)
			}

			wantType, wantDomain, listening := unix.SOCK_STREAM, unix.AF_INET, tg.proto == "tcp"
			if tg.proto == "udp" {
				wantType = unix.SOCK_DGRAM
			}
			if tg.v6() {
				wantDomain = unix.AF_INET6
				wantOpt(t, fd, ipv6V6Only, 1)
			}
			wantOpt(t, fd, soType, wantType)
			wantOpt(t, fd, soDomain, wantDomain)
			// SO_REUSEADDR only on a socket that listens (TCP).
			wantOpt(t, fd, soReuseAddr, map[bool]int{false: 0, true: 1}[listening])
			wantOpt(t, fd, soReusePort, 0)
			wantOpt(t, fd, freeBind(tg), 0)
			wantOpt(t, fd, transparent(tg), 0)
			wantOpt(t, fd, soAcceptConn, map[bool]int{false: 0, true: 1}[listening])
			mtu, omit := mtuDiscover(tg)
			if got := getopt(t, fd, mtu); got == omit {
				t.Errorf("getsockopt %s: got %d (omit), want the system default", mtu.name, got)
			}
			if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err != nil || dev != "" {
				t.Errorf("getsockopt SO_BINDTODEVICE: got %q, %v; want \"\"", dev, err)
			}
			if tg.proto == "tcp" {
				wantOpt(t, fd, tcpFastOpen, 0)
				wantOpt(t, fd, tcpDeferAccept, 0)
				if got, want := backlog(t, fd), somaxconn(t); got != want {
					t.Errorf("listen backlog: got %d, want %d (net.core.somaxconn)", got, want)
				}
			}

			fdFlags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if err != nil {
				t.Fatalf("fcntl F_GETFD: %v", err)
			}
			if fdFlags&unix.FD_CLOEXEC == 0 {
				t.Errorf("fd flags: got %#x, want FD_CLOEXEC set", fdFlags)
			}
			flFlags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			if err != nil {
				t.Fatalf("fcntl F_GETFL: %v", err)
			}
			if flFlags&unix.O_NONBLOCK != 0 {
				t.Errorf("file status flags: got %#x, want O_NONBLOCK clear (a blocking socket)", flFlags)
			}
			wantReachable(t, tg, fd, local, listening)
		})
	}
}

// TestCreateOptions sets one option at a time and reads it back.
func TestCreateOptions(t *testing.T) {
	const buf = 6000 // the kernel doubles it; below every default, so a change shows
	tests := []struct {
		name  string
		only  string // "tcp", "udp" or "" for every target
		set   func(*binder.Options)
		check func(t *testing.T, tg target, fd int)
	}{
		{"reuseaddr off", "", func(o *binder.Options) { o.ReuseAddr = false },
			func(t *testing.T, tg target, fd int) { wantOpt(t, fd, soReuseAddr, 0) }},
		{"reuseaddr on", "", func(o *binder.Options) { o.ReuseAddr = true },
			func(t *testing.T, tg target, fd int) { wantOpt(t, fd, soReuseAddr, 1) }},
		{"reuseport", "", func(o *binder.Options) { o.ReusePort = true },
			func(t *testing.T, tg target, fd int) { wantOpt(t, fd, soReusePort, 1) }},
		{"freebind", "", func(o *binder.Options) { o.FreeBind = true },
			func(t *testing.T, tg target, fd int) { wantOpt(t, fd, freeBind(tg), 1) }},
		{"rcvbuf", "", func(o *binder.Options) { o.RcvBuf = buf },
			func(t *testing.T, tg target, fd int) {
				if got := getopt(t, fd, soRcvBuf); got < buf || got > 4*buf {
					t.Errorf("getsockopt SO_RCVBUF: got %d, want %d to %d (the kernel doubles it)", got, buf, 4*buf)
				}
			}},
		{"sndbuf", "", func(o *binder.Options) { o.SndBuf = buf },
			func(t *testing.T, tg target, fd int) {
				if got := getopt(t, fd, soSndBuf); got < buf || got > 4*buf {
					t.Errorf("getsockopt SO_SNDBUF: got %d, want %d to %d (the kernel doubles it)", got, buf, 4*buf)
				}
			}},
		{"pmtudisc off", "", func(o *binder.Options) { o.PMTUDiscOff = true },
			func(t *testing.T, tg target, fd int) {
				mtu, omit := mtuDiscover(tg)
				wantOpt(t, fd, mtu, omit)
			}},
		{"bind to lo", "", func(o *binder.Options) { o.BindToDevice = "lo" },
			func(t *testing.T, tg target, fd int) {
				if dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err != nil || dev != "lo" {
					t.Errorf("getsockopt SO_BINDTODEVICE: got %q, %v; want \"lo\"", dev, err)
				}
			}},
		{"fastopen", "tcp", func(o *binder.Options) { o.FastOpen = 16 },
			func(t *testing.T, tg target, fd int) { wantOpt(t, fd, tcpFastOpen, 16) }},
		{"defer accept", "tcp", func(o *binder.Options) { o.DeferAccept = 5 },
			func(t *testing.T, tg target, fd int) {
				if got := getopt(t, fd, tcpDeferAccept); got <= 0 {
					t.Errorf("getsockopt TCP_DEFER_ACCEPT: got %d, want > 0 (about 5s, rounded by the kernel)", got)
				}
			}},
		{"backlog", "tcp", func(o *binder.Options) { o.Backlog = 7 },
			func(t *testing.T, tg target, fd int) {
				if got := backlog(t, fd); got != 7 {
					t.Errorf("listen backlog: got %d, want 7", got)
				}
			}},
		{"not listening", "tcp", func(o *binder.Options) { o.Listen = false },
			func(t *testing.T, tg target, fd int) { wantOpt(t, fd, soAcceptConn, 0) }},
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
				if err := o.Validate(tg.proto); err != nil {
					t.Fatalf("Validate(%+v): got %v, want nil", o, err)
				}
				f, local := create(t, tg, 0, o)
				fd := sysfd(t, f)
				tt.check(t, tg, fd)
				wantReachable(t, tg, fd, local, o.Listen)
			})
		}
	}
}

// TestCreateV6Only binds the IPv6 wildcard address (Linux turns v6only on
// for any other IPv6 address), only on lo, and checks that IPv4 clients
// reach the socket exactly when v6only is off.
func TestCreateV6Only(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		for _, v6only := range []bool{true, false} {
			if proto == "udp" && v6only {
				continue // an IPv4 datagram that does not arrive proves nothing
			}
			t.Run(fmt.Sprintf("%s/v6only=%v", proto, v6only), func(t *testing.T) {
				checkFDs(t)
				o := binder.Defaults(proto)
				o.V6Only = v6only
				o.BindToDevice = "lo"
				tg := target{proto, netip.IPv6Unspecified()}
				f, local := create(t, tg, 0, o)
				fd := sysfd(t, f)
				wantOpt(t, fd, ipv6V6Only, map[bool]int{false: 0, true: 1}[v6only])
				// With v6only on, nothing listens on 127.0.0.1 at this port.
				wantReachable(t, tg, fd, netip.AddrPortFrom(lo4, local.Port()), !v6only)
			})
		}
	}
}

// TestCreateReusePort checks that two sockets with reuseport share a port,
// and that without it the second bind fails.
func TestCreateReusePort(t *testing.T) {
	for _, tg := range targets {
		for _, reuse := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/reuseport=%v", tg, reuse), func(t *testing.T) {
				checkFDs(t)
				o := binder.Defaults(tg.proto)
				o.ReusePort = reuse
				o.ReuseAddr = false
				_, local := create(t, tg, 0, o)
				f, _, err := binder.Create(tg.proto, local, o)
				if f != nil {
					f.Close()
				}
				if reuse && err != nil {
					t.Errorf("second Create of %s with reuseport: got %v, want a socket", local, err)
				}
				if !reuse && !errors.Is(err, syscall.EADDRINUSE) {
					t.Errorf("second Create of %s without reuseport: got %v, want EADDRINUSE", local, err)
				}
			})
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		proto   string
		set     func(*binder.Options)
		wantErr string // "" for valid
	}{
		{"tcp defaults", "tcp", func(o *binder.Options) {}, ""},
		{"udp defaults", "udp", func(o *binder.Options) {}, ""},
		{"largest values", "tcp", func(o *binder.Options) {
			o.RcvBuf, o.SndBuf, o.FastOpen, o.DeferAccept, o.Backlog = 1<<30, 1<<30, 1<<16, 3600, 1<<20
		}, ""},
		{"15-byte device name", "udp", func(o *binder.Options) { o.BindToDevice = "abcdefghijklmno" }, ""},
		{"udp buffers and socket options", "udp", func(o *binder.Options) {
			o.RcvBuf, o.SndBuf, o.ReusePort, o.FreeBind, o.Transparent, o.PMTUDiscOff = 1, 1, true, true, true, true
		}, ""},
		{"tcp not listening", "tcp", func(o *binder.Options) { o.Listen = false }, ""},

		{"negative rcvbuf", "tcp", func(o *binder.Options) { o.RcvBuf = -1 }, "rcvbuf"},
		{"negative sndbuf", "udp", func(o *binder.Options) { o.SndBuf = -1 }, "sndbuf"},
		{"rcvbuf over 1 GiB", "tcp", func(o *binder.Options) { o.RcvBuf = 1<<30 + 1 }, "rcvbuf"},
		{"sndbuf over 1 GiB", "udp", func(o *binder.Options) { o.SndBuf = 1<<30 + 1 }, "sndbuf"},
		{"16-byte device name", "tcp", func(o *binder.Options) { o.BindToDevice = "abcdefghijklmnop" }, "bind_to_device"},
		{"device name with slash", "tcp", func(o *binder.Options) { o.BindToDevice = "eth0/1" }, "bind_to_device"},
		{"device name with space", "udp", func(o *binder.Options) { o.BindToDevice = "eth 0" }, "bind_to_device"},
		{"device name with NUL", "udp", func(o *binder.Options) { o.BindToDevice = "lo\x00" }, "bind_to_device"},
		{"fastopen on udp", "udp", func(o *binder.Options) { o.FastOpen = 1 }, "TCP options"},
		{"defer_accept on udp", "udp", func(o *binder.Options) { o.DeferAccept = 1 }, "TCP options"},
		{"backlog on udp", "udp", func(o *binder.Options) { o.Backlog = 1 }, "TCP options"},
		{"listen on udp", "udp", func(o *binder.Options) { o.Listen = true }, "TCP options"},
		{"negative fastopen", "tcp", func(o *binder.Options) { o.FastOpen = -1 }, "fastopen"},
		{"fastopen too long", "tcp", func(o *binder.Options) { o.FastOpen = 1<<16 + 1 }, "fastopen"},
		{"negative defer_accept", "tcp", func(o *binder.Options) { o.DeferAccept = -1 }, "defer_accept"},
		{"defer_accept over an hour", "tcp", func(o *binder.Options) { o.DeferAccept = 3601 }, "defer_accept"},
		{"negative backlog", "tcp", func(o *binder.Options) { o.Backlog = -1 }, "backlog"},
		{"backlog too long", "tcp", func(o *binder.Options) { o.Backlog = 1<<20 + 1 }, "backlog"},
		{"backlog without listen", "tcp", func(o *binder.Options) { o.Listen, o.Backlog = false, 5 }, "listening socket"},
		{"fastopen without listen", "tcp", func(o *binder.Options) { o.Listen, o.FastOpen = false, 5 }, "listening socket"},
		{"defer_accept without listen", "tcp", func(o *binder.Options) { o.Listen, o.DeferAccept = false, 5 }, "listening socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := binder.Defaults(tt.proto)
			tt.set(&o)
			err := o.Validate(tt.proto)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate(%q, %+v): got %v, want nil", tt.proto, o, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate(%q, %+v): got %v, want an error about %q", tt.proto, o, err, tt.wantErr)
			}
		})
	}
}

// wantCreateErr checks a failed Create: no socket, the errno kept, the hint
// in the message, and no fd left open.
func wantCreateErr(t *testing.T, tg target, ap netip.AddrPort, o binder.Options, errno syscall.Errno, hint string) {
	t.Helper()
	before := openFDs(t)
	f, local, err := binder.Create(tg.proto, ap, o)
	if f != nil {
		f.Close()
	}
	if !errors.Is(err, errno) || f != nil || local.IsValid() {
		t.Fatalf("Create(%s, %s, %+v): got %v, %s, %v; want no socket and %s (%d)", tg.proto, ap, o, f, local, err, unix.ErrnoName(errno), errno)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) {
		t.Errorf("Create error %v: want an *os.SyscallError inside (naming the failed call)", err)
	}
	if !strings.Contains(err.Error(), hint) {
		t.Errorf("Create error: got %q, want a hint containing %q", err, hint)
	}
	if after := openFDs(t); after != before {
		t.Errorf("open fds after a failed Create: got %d, want %d", after, before)
	}
}

func TestCreateAddrInUse(t *testing.T) {
	const hint = "another socket holds this address and port"
	for _, tg := range targets {
		// The defaults leave no way in for a second socket with
		// SO_REUSEADDR: UDP sockets have it off, TCP ones listen.
		cases := []struct {
			name  string
			reuse bool // the second socket's SO_REUSEADDR
		}{{"no reuseaddr", false}, {"second with reuseaddr", true}}
		for _, c := range cases {
			t.Run(tg.String()+"/"+c.name, func(t *testing.T) {
				checkFDs(t)
				_, local := create(t, tg, 0, binder.Defaults(tg.proto))
				o := binder.Defaults(tg.proto)
				o.ReuseAddr = c.reuse
				wantCreateErr(t, tg, local, o, syscall.EADDRINUSE, hint)
			})
		}
	}
}

func TestCreateNoSuchDevice(t *testing.T) {
	checkFDs(t)
	o := binder.Defaults("udp")
	o.BindToDevice = "sfnodev0"
	wantCreateErr(t, target{"udp", lo4}, netip.AddrPortFrom(lo4, 0), o, syscall.ENODEV, "no such network interface")
}

// TestCreateNonLocalAddress binds a documentation address this host does
// not have: it fails with the freebind hint, and works with freebind. It
// never sends anything.
func TestCreateNonLocalAddress(t *testing.T) {
	tests := []struct {
		addr   netip.Addr
		sysctl string
	}{
		{netip.MustParseAddr("192.0.2.77"), "/proc/sys/net/ipv4/ip_nonlocal_bind"},
		{netip.MustParseAddr("2001:db8::77"), "/proc/sys/net/ipv6/ip_nonlocal_bind"},
	}
	local, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("listing local addresses: %v", err)
	}
	for _, tt := range tests {
		for _, proto := range []string{"tcp", "udp"} {
			tg := target{proto, tt.addr}
			t.Run(tg.String(), func(t *testing.T) {
				checkFDs(t)
				if b, err := os.ReadFile(tt.sysctl); err == nil && strings.TrimSpace(string(b)) != "0" {
					skipOrFail(t, fmt.Sprintf("%s is %s: every address is bindable here; set it to 0 to run this test", tt.sysctl, strings.TrimSpace(string(b))))
				}
				for _, a := range local {
					if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == tt.addr {
						skipOrFail(t, fmt.Sprintf("%s is configured on this host; this test needs it absent", tt.addr))
					}
				}
				ap := netip.AddrPortFrom(tt.addr, 0)
				wantCreateErr(t, tg, ap, binder.Defaults(proto), syscall.EADDRNOTAVAIL, "freebind")

				o := binder.Defaults(proto)
				o.FreeBind = true
				f, got := create(t, tg, 0, o)
				if got.Addr() != tt.addr || got.Port() == 0 {
					t.Errorf("bound with freebind: got %s, want %s with a real port", got, tt.addr)
				}
				wantOpt(t, sysfd(t, f), freeBind(tg), 1)
			})
		}
	}
}

func TestIntegrationTransparent(t *testing.T) {
	requireRoot(t)
	for _, tg := range targets {
		t.Run(tg.String(), func(t *testing.T) {
			checkFDs(t)
			o := binder.Defaults(tg.proto)
			o.Transparent = true
			f, _, err := binder.Create(tg.proto, netip.AddrPortFrom(tg.addr, 0), o)
			if err != nil {
				t.Fatalf("Create with transparent as root: got %v, want a socket (root has CAP_NET_ADMIN)", err)
			}
			defer f.Close()
			wantOpt(t, sysfd(t, f), transparent(tg), 1)
		})
	}
}

// childEnv tells a re-executed test binary to run the unprivileged part of
// TestIntegrationUnprivileged; its value is the address to bind.
const childEnv = "SOCKFACTORY_BINDER_TEST_CHILD"

// TestIntegrationUnprivileged runs Create as uid 65534 in a child process:
// a port below 1024 gives EACCES and transparent gives EPERM, both with
// their hints.
func TestIntegrationUnprivileged(t *testing.T) {
	if addr := os.Getenv(childEnv); addr != "" {
		unprivilegedChild(t, netip.MustParseAddr(addr))
		return
	}
	requireRoot(t)
	checkFDs(t)

	// The go tool's build directory is private to root: copy the test
	// binary where uid 65534 may run it.
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("finding the test binary: %v", err)
	}
	dir, err := os.MkdirTemp("", "binder-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "binder.test")
	copyFile(t, exe, bin)

	cmd := exec.Command(bin, "-test.run=^TestIntegrationUnprivileged$", "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	addr := "127.0.0.1"
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n <= 80 {
			// Anyone may bind low ports here: run the child in a new
			// network namespace, where the limit is back at 1024 (and
			// only the wildcard address is usable).
			cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
			addr = "0.0.0.0"
		}
	}
	cmd.Env = append(os.Environ(), childEnv+"="+addr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child test as uid 65534: got %v, want success; its output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestIntegrationUnprivileged") {
		t.Fatalf("child test as uid 65534 did not pass; its output:\n%s", out)
	}
}

func unprivilegedChild(t *testing.T, addr netip.Addr) {
	checkFDs(t)
	if uid := os.Getuid(); uid != 65534 {
		t.Fatalf("child runs as uid %d, want 65534", uid)
	}
	for _, proto := range []string{"tcp", "udp"} {
		tg := target{proto, addr}
		t.Run(tg.String()+"/low port", func(t *testing.T) {
			wantCreateErr(t, tg, netip.AddrPortFrom(addr, 80), binder.Defaults(proto), syscall.EACCES, "CAP_NET_BIND_SERVICE")
		})
		t.Run(tg.String()+"/transparent", func(t *testing.T) {
			o := binder.Defaults(proto)
			o.Transparent = true
			wantCreateErr(t, tg, netip.AddrPortFrom(addr, 0), o, syscall.EPERM, "CAP_NET_ADMIN")
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatalf("copying %s: %v", from, err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
