package sockfactory_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/server"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// bindPolicy grants testUID connect and bind on loopback.
func bindPolicy(tb testing.TB) *policy.Policy {
	tb.Helper()
	p := loopbackPolicy()
	g, err := policy.ParseBindGrant("*:127.0.0.1:*")
	if err != nil {
		tb.Fatal(err)
	}
	p.Rules[0].Bind = []policy.BindGrant{g}
	return p
}

// benchDaemon starts an in-process daemon granting bindPolicy for the
// benchmark and returns its socket path.
func benchDaemon(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "sf.sock")
	d, err := startDaemon(path, server.Options{Policy: bindPolicy(b)})
	if err != nil {
		b.Fatalf("starting daemon on %s: %v", path, err)
	}
	b.Cleanup(func() {
		if err := d.close(); err != nil {
			b.Error(err)
		}
	})
	return path
}

// usage is the process's CPU time and context switches so far.
type usage struct {
	cpu  time.Duration
	vcsw int64 // voluntary: a thread blocked, to be woken up later
}

func getUsage(b *testing.B) usage {
	b.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return usage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), vcsw: ru.Nvcsw}
}

// reportUsage reports, per operation since start, the CPU time the whole
// process (the in-process daemon included) spent, and its threads'
// voluntary context switches: on a loaded machine steadier than ns/op.
func reportUsage(b *testing.B, start usage) {
	b.Helper()
	end := getUsage(b)
	n := float64(b.N)
	b.ReportMetric(float64(end.cpu-start.cpu)/n, "cpu-ns/op")
	b.ReportMetric(float64(end.vcsw-start.vcsw)/n, "vcsw/op")
}

// BenchmarkRoundTrip measures one request and its reply, without a
// descriptor: a release of a token the daemon does not know.
func BenchmarkRoundTrip(b *testing.B) {
	c := &sockfactory.Client{Socket: benchDaemon(b)}
	defer c.Close()
	ctx := context.Background()
	if err := c.Release(ctx, "nosuchtoken"); !errors.Is(err, sockfactory.ErrNotFound) {
		b.Fatalf("Release: %v, want %v", err, sockfactory.ErrNotFound)
	}
	b.ReportAllocs()
	defer reportUsage(b, getUsage(b))
	for b.Loop() {
		if err := c.Release(ctx, "nosuchtoken"); !errors.Is(err, sockfactory.ErrNotFound) {
			b.Fatalf("Release: %v, want %v", err, sockfactory.ErrNotFound)
		}
	}
}

// BenchmarkRoundTripParallel is BenchmarkRoundTrip from GOMAXPROCS
// goroutines pipelining on one Client.
func BenchmarkRoundTripParallel(b *testing.B) {
	c := &sockfactory.Client{Socket: benchDaemon(b)}
	defer c.Close()
	ctx := context.Background()
	if err := c.Release(ctx, "nosuchtoken"); !errors.Is(err, sockfactory.ErrNotFound) {
		b.Fatalf("Release: %v, want %v", err, sockfactory.ErrNotFound)
	}
	b.ReportAllocs()
	defer reportUsage(b, getUsage(b))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.Release(ctx, "nosuchtoken"); !errors.Is(err, sockfactory.ErrNotFound) {
				b.Errorf("Release: %v, want %v", err, sockfactory.ErrNotFound)
				return
			}
		}
	})
}

// BenchmarkRoundTripRaw is the floor BenchmarkRoundTrip is compared with:
// the same request and reply over a blocking socket with plain
// sendmsg/recvmsg, no decoding beyond what the check needs. With the
// daemon in the same process, the thread blocked in recvmsg makes the
// runtime wake another for the daemon, which this floor pays for; the
// out-of-process comparison is internal/bench's (fdpass, handoff).
func BenchmarkRoundTripRaw(b *testing.B) {
	path := benchDaemon(b)
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(s)
	if err := unix.Connect(s, &unix.SockaddrUnix{Name: path}); err != nil {
		b.Fatal(err)
	}
	req, err := wire.Encode(&wire.Request{V: wire.Version, ID: 1, Op: wire.OpRelease, Token: &wire.TokenRequest{Token: "nosuchtoken"}})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, wire.MaxMessageSize)
	oob := make([]byte, unix.CmsgSpace(wire.MaxFDs*4))
	b.ReportAllocs()
	defer reportUsage(b, getUsage(b))
	for b.Loop() {
		if err := unix.Sendmsg(s, req, nil, nil, 0); err != nil {
			b.Fatal(err)
		}
		var n int
		for {
			n, _, _, _, err = unix.Recvmsg(s, buf, oob, unix.MSG_CMSG_CLOEXEC)
			if err != unix.EINTR { // a blocking call the runtime's signals interrupt
				break
			}
		}
		if err != nil || n == 0 {
			b.Fatalf("recvmsg: %d bytes, %v", n, err)
		}
	}
}

// BenchmarkBindFile measures a bind of a socket the daemon has cached
// (share mode any), the descriptor passed back and closed, and the
// reference released: two round trips, one carrying a descriptor.
func BenchmarkBindFile(b *testing.B) {
	c := &sockfactory.Client{Socket: benchDaemon(b)}
	defer c.Close()
	ctx := context.Background()
	lo := &sockfactory.ListenOptions{Share: "any"}
	// The first holder keeps the socket in the daemon's cache.
	hold, first, err := c.BindFile(ctx, "tcp", "127.0.0.1:0", lo)
	if err != nil {
		b.Fatal(err)
	}
	defer hold.Close()
	b.ReportAllocs()
	defer reportUsage(b, getUsage(b))
	for b.Loop() {
		f, bd, err := c.BindFile(ctx, "tcp", first.Addr, lo)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		if !bd.Shared {
			b.Fatalf("bind of %s was not served from the cache", first.Addr)
		}
		if err := c.Release(ctx, bd.Token); err != nil {
			b.Fatal(err)
		}
	}
}
