package testnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// requireNetns fails under SOCKFACTORY_REQUIRE_ROOT=1, and skips
// otherwise, unless the test may make network namespaces.
func requireNetns(t *testing.T) {
	t.Helper()
	RequireRoot(t)
}

// threadNamespaces returns the network namespace of every thread of this
// process, by thread id.
func threadNamespaces(t *testing.T) map[string]string {
	t.Helper()
	links, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range links {
		if ns, err := os.Readlink(l); err == nil { // a thread may end meanwhile
			out[l] = ns
		}
	}
	return out
}

// TestIntegrationNetnsPorts: a namespace of its own has its own ports: a
// listener there takes the port a host listener holds, each side's dial
// reaches its own listener, and no thread is left in the namespace nor
// any descriptor open.
func TestIntegrationNetnsPorts(t *testing.T) {
	requireNetns(t)
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	n := NewNetns(t)
	base := OpenFDs(t)
	func() {
		host, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer host.Close()
		hostUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer hostUDP.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, addr := range []string{host.Addr().String(), fmt.Sprintf("[::1]:%d", host.Addr().(*net.TCPAddr).Port)} {
			l, err := n.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("listen on tcp %s in the namespace while the host holds the port: %v", addr, err)
			}
			defer l.Close()
			if got := l.Addr().String(); got != addr {
				t.Errorf("listener address: got %s, want %s", got, addr)
			}
			go func() {
				c, err := l.Accept()
				if err == nil {
					io.WriteString(c, "netns\n")
					c.Close()
				}
			}()
			c, err := n.DialContext(ctx, "tcp", addr)
			if err != nil {
				t.Fatalf("dial tcp %s in the namespace: %v", addr, err)
			}
			b, err := io.ReadAll(c)
			c.Close()
			if string(b) != "netns\n" || err != nil {
				t.Fatalf("dial tcp %s in the namespace: read %q, %v; want the namespace's listener's line", addr, b, err)
			}
		}
		pc, err := n.ListenPacket("udp", hostUDP.LocalAddr().String())
		if err != nil {
			t.Fatalf("udp %s in the namespace while the host holds it: %v", hostUDP.LocalAddr(), err)
		}
		defer pc.Close()
		uc, err := n.DialContext(ctx, "udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		if _, err := uc.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 16)
		if k, from, err := pc.ReadFrom(buf); err != nil || string(buf[:k]) != "ping" || from.String() != uc.LocalAddr().String() {
			t.Fatalf("datagram in the namespace: got %q from %v, %v; want ping from %s", buf[:k], from, err, uc.LocalAddr())
		}
		// A closed port in the namespace refuses.
		if c, err := n.DialContext(ctx, "tcp", "127.0.0.1:1"); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("dial of a closed port in the namespace: got %v; want ECONNREFUSED", err)
		}
	}()
	for th, ns := range threadNamespaces(t) {
		if ns != self {
			t.Errorf("thread %s is in %s after the test; want the process's %s", th, ns, self)
		}
	}
	if got := OpenFDs(t); got != base {
		t.Errorf("open descriptors: got %d, want %d as before", got, base)
	}
}

// TestIntegrationNetnsDialCancel: a dial that cannot complete ends when
// its context does, leaving nothing open.
func TestIntegrationNetnsDialCancel(t *testing.T) {
	requireNetns(t)
	n := NewNetns(t)
	base := OpenFDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	// No route in a namespace with only lo: 192.0.2.1 is unreachable at
	// once, which is an error too; a dial must not hang either way.
	c, err := n.DialContext(ctx, "tcp", "192.0.2.1:9")
	if err == nil {
		c.Close()
		t.Fatal("dial of 192.0.2.1 from a namespace with only lo succeeded")
	}
	if got := OpenFDs(t); got != base {
		t.Errorf("open descriptors after the failed dial: got %d, want %d", got, base)
	}
}

// TestClosedPort: a connect to the closed port is refused, and nothing
// else can listen there while the test holds it.
func TestClosedPort(t *testing.T) {
	ap := ClosedPort(t)
	c, err := net.DialTimeout("tcp", ap.String(), 10*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial of the closed port %s: connected; want refused", ap)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial of the closed port %s: got %v; want ECONNREFUSED", ap, err)
	}
	if l, err := net.Listen("tcp", ap.String()); !errors.Is(err, syscall.EADDRINUSE) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("listen on the closed port %s: got %v; want EADDRINUSE", ap, err)
	}
}
