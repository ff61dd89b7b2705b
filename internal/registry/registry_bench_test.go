package registry_test

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/registry"
)

// benchRegistry returns a registry holding n distinct sockets (duplicates
// of one real socket under made-up keys: the registry never looks at the
// address behind a file) for one holder, plus one socket shared with share
// mode any, whose key it returns. Everything is closed when b ends.
func benchRegistry(b *testing.B, n int) (*registry.Registry, registry.Key) {
	b.Helper()
	opts := binder.Defaults("tcp")
	base, _, err := binder.Create("tcp", netip.MustParseAddrPort("127.0.0.1:0"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { base.Close() })
	dup := func(k registry.Key) func() (*os.File, netip.AddrPort, error) { return dupCreate(base, k) }
	g := registry.New(time.Minute)
	b.Cleanup(g.Close)
	holder := &registry.Holder{UID: 1000, PID: 1}
	for i := range n {
		k := key("tcp", netip.AddrFrom4([4]byte{127, 0, byte(1 + i/50000), 2}), uint16(10000+i%50000))
		gr, err := g.Acquire(&registry.Request{Key: k, Share: registry.ShareNone, Options: opts, Holder: holder, Create: dup(k)})
		if err != nil {
			b.Fatalf("holding socket %d: %v", i, err)
		}
		gr.File.Close()
	}
	shared := key("tcp", lo4, 9)
	gr, err := g.Acquire(&registry.Request{Key: shared, Share: registry.ShareAny, Options: opts, Holder: holder, Create: dup(shared)})
	if err != nil {
		b.Fatal(err)
	}
	gr.File.Close()
	return g, shared
}

// dupCreate returns a Request.Create that makes "the socket for k" as a
// close-on-exec duplicate of base.
func dupCreate(base *os.File, k registry.Key) func() (*os.File, netip.AddrPort, error) {
	return func() (*os.File, netip.AddrPort, error) {
		rc, err := base.SyscallConn()
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		fd, derr := -1, error(nil)
		if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
			return nil, netip.AddrPort{}, err
		}
		if derr != nil {
			return nil, netip.AddrPort{}, derr
		}
		return os.NewFile(uintptr(fd), "bench"), k.Addr, nil
	}
}

// BenchmarkAcquireRelease is the cache's part of a handoff: look the shared
// socket up, check sharing, take a reference with a duplicate of the fd to
// send, then close the duplicate and release the reference. "token" is the
// first half of a pickup: a pending reference, no fd.
func BenchmarkAcquireRelease(b *testing.B) {
	opts := binder.Defaults("tcp")
	for _, held := range []int{10, 10000} {
		for _, pending := range []bool{false, true} {
			kind := "file"
			if pending {
				kind = "token"
			}
			b.Run(fmt.Sprintf("%s/held=%d", kind, held), func(b *testing.B) {
				g, shared := benchRegistry(b, held)
				h := &registry.Holder{UID: 1000, PID: 2}
				req := &registry.Request{Key: shared, Share: registry.ShareAny, Options: opts, Holder: h, Pending: pending,
					Create: func() (*os.File, netip.AddrPort, error) {
						b.Fatal("the shared socket was not cached")
						return nil, netip.AddrPort{}, nil
					}}
				b.ReportAllocs()
				for b.Loop() {
					gr, err := g.Acquire(req)
					if err != nil {
						b.Fatal(err)
					}
					if gr.File != nil {
						gr.File.Close()
					}
					if _, err := g.Release(gr.Token, h, false); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkHeldSocketHeap reports the live heap one held socket costs the
// cache (after a GC, file and bookkeeping included), as heap-B/socket; the
// time is that of holding 10000 sockets and closing them again.
func BenchmarkHeldSocketHeap(b *testing.B) {
	const n = 10000
	var ms runtime.MemStats
	var total float64
	runs := 0
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		g, _ := benchRegistry(b, n)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		total += (float64(ms.HeapAlloc) - float64(before)) / n
		runs++
		g.Close()
	}
	b.ReportMetric(total/float64(runs), "heap-B/socket")
}

// BenchmarkRegistryScale shows the cache's operations stay O(1) as it
// grows to a million held sockets: a handoff's acquire and release of a
// cached shared socket, the same as a pending reference (a token), a
// lookup of a token that is not there, and a bind of a new address and
// its release, at 10, 1,000, 100,000 and 1,000,000 held sockets. The held
// entries have no descriptor (WithoutDescriptors: a million would exceed
// RLIMIT_NOFILE here) but are otherwise what a token-only bind leaves: a
// table entry, a pending reference, a token. heap-B/socket is the live heap each costs,
// measured while building the level.
//
//	go test -run '^$' -bench BenchmarkRegistryScale -benchtime 200000x ./internal/registry/
func BenchmarkRegistryScale(b *testing.B) {
	restore := registry.WithoutDescriptors()
	defer restore()
	opts := binder.Defaults("tcp")
	base, _, err := binder.Create("tcp", netip.MustParseAddrPort("127.0.0.1:0"), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	for _, held := range []int{10, 1000, 100000, 1000000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			before := ms.HeapAlloc
			g := registry.New(time.Minute)
			defer g.Close()
			holder := &registry.Holder{UID: 1000, PID: 1}
			for i := range held {
				k := key("tcp", netip.AddrFrom4([4]byte{127, byte(1 + i/(250*50000)), byte(1 + i/50000%250), 2}), uint16(10000+i%50000))
				// Pending: a token-only bind, which hands no descriptor out.
				gr, err := g.Acquire(&registry.Request{Key: k, Share: registry.ShareNone, Options: opts, Holder: holder, Pending: true,
					Create: func() (*os.File, netip.AddrPort, error) { return nil, k.Addr, nil }})
				if err != nil {
					b.Fatalf("holding socket %d: %v", i, err)
				}
				if gr.File != nil {
					b.Fatal("an entry without a descriptor was handed out")
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			heapPer := (float64(ms.HeapAlloc) - float64(before)) / float64(held)
			shared := key("tcp", lo4, 9)
			sharedReq := func(h *registry.Holder, pending bool) *registry.Request {
				return &registry.Request{Key: shared, Share: registry.ShareAny, Options: opts, Holder: h, Pending: pending,
					Create: dupCreate(base, shared)}
			}
			gr, err := g.Acquire(sharedReq(holder, false))
			if err != nil {
				b.Fatal(err)
			}
			gr.File.Close()
			h := &registry.Holder{UID: 1000, PID: 2}
			fresh := key("tcp", netip.AddrFrom4([4]byte{127, 200, 0, 1}), 80)
			for _, kind := range []string{"file", "token", "unknown-token", "bind-release"} {
				b.Run(kind, func(b *testing.B) {
					req := sharedReq(h, kind == "token")
					if kind == "bind-release" {
						req = &registry.Request{Key: fresh, Share: registry.ShareNone, Options: opts, Holder: h,
							Create: dupCreate(base, fresh)}
					}
					b.ReportAllocs()
					for b.Loop() {
						if kind == "unknown-token" {
							if _, err := g.Release("0123456789abcdef0123456789abcdef", h, false); err == nil {
								b.Fatal("an unknown token was released")
							}
							continue
						}
						gr, err := g.Acquire(req)
						if err != nil {
							b.Fatal(err)
						}
						if gr.File != nil {
							gr.File.Close()
						}
						if _, err := g.Release(gr.Token, h, false); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(heapPer, "heap-B/socket")
				})
			}
		})
	}
}
