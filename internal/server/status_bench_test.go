package server

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// fillRegistry caches n sockets held by a holder of another uid: duplicates
// of /dev/null under made-up addresses (the registry never looks behind a
// descriptor). They go when the server closes.
func fillRegistry(b *testing.B, srv *Server, n int) {
	b.Helper()
	null, err := os.Open(os.DevNull)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	other := &registry.Holder{UID: 4242}
	for i := range n {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}), 53)
		_, err := srv.Registry().Acquire(&registry.Request{Key: registry.Key{Proto: "udp", Addr: ap}, Holder: other, Create: func() (*os.File, netip.AddrPort, error) {
			fd, err := unix.FcntlInt(null.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, netip.AddrPort{}, err
			}
			return os.NewFile(uintptr(fd), "fake"), ap, nil
		}})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBindUnderStatusFlood measures a bind of a cached shared socket
// and its release (two round trips) on one connection, while other
// connections of the same uid, which hold nothing, send status requests
// as fast as they are answered. The cache holds 10000 sockets of another
// uid. A status that walked the whole cache under the registry's lock
// (review item 4) made each bind wait for such walks.
func BenchmarkBindUnderStatusFlood(b *testing.B) {
	for _, flooders := range []int{0, 4} {
		b.Run(fmt.Sprintf("flooders=%d", flooders), func(b *testing.B) {
			srv, path := startServer(b, `bind = ["tcp:127.0.0.1:*"]`, Options{})
			fillRegistry(b, srv, 10000)
			hold, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			addr := hold.Addr().String()
			hold.Close()
			dial := func() *net.UnixConn {
				nc, err := net.Dial("unixpacket", path)
				if err != nil {
					b.Fatal(err)
				}
				return nc.(*net.UnixConn)
			}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for range flooders {
				c := dial()
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, wire.MaxMessageSize)
					for {
						select {
						case <-stop:
							c.Close()
							return
						default:
						}
						if _, err := c.Write([]byte(`{"v":1,"id":1,"op":"status"}`)); err != nil {
							return
						}
						if _, err := c.Read(buf); err != nil {
							return
						}
					}
				}()
			}
			c := dial()
			defer c.Close()
			// The first bind creates the shared socket; a reference kept
			// on it keeps it cached.
			buf, oob := make([]byte, 4096), make([]byte, 64)
			roundTrip := func(req string) *wire.Reply {
				if _, err := c.Write([]byte(req)); err != nil {
					b.Fatal(err)
				}
				n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
				if err != nil {
					b.Fatal(err)
				}
				closeRights(oob[:oobn])
				rep, err := wire.DecodeReply(buf[:n])
				if err != nil || rep.Error != nil {
					b.Fatalf("reply %q: %v", buf[:n], err)
				}
				return rep
			}
			bind := fmt.Sprintf(`{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":%q,"share":"any","name":"b"}}`, addr)
			roundTrip(bind)
			b.ResetTimer()
			for range b.N {
				tok := roundTrip(bind).Bind.Token
				roundTrip(`{"v":1,"id":3,"op":"release","token":{"token":"` + tok + `"}}`)
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
		})
	}
}
