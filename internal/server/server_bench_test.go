package server

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/metrics"
	"github.com/sockfactory/sockfactory/internal/testnet"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// rawClient is a benchmark's client of the server at path: one
// SOCK_SEQPACKET connection and do, which sends a request with the next
// ID, waits for its reply and closes the one fd it must carry (a
// connected one with a reset: no TIME_WAIT). It allocates only in the
// wire codec.
func rawClient(b *testing.B, path string) (do func(req *wire.Request)) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		b.Fatal(err)
	}
	buf, oob := make([]byte, 4096), make([]byte, 64)
	var out []byte
	var id uint64
	return func(req *wire.Request) {
		id++
		req.ID = id
		if out, err = wire.AppendRequest(out[:0], req); err != nil {
			b.Fatal(err)
		}
		if err := unix.Send(fd, out, 0); err != nil {
			b.Fatal(err)
		}
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			b.Fatal(err)
		}
		rep, err := wire.DecodeReply(buf[:n])
		if err != nil || rep.Error != nil || rep.FDs != 1 || oobn == 0 {
			b.Fatalf("reply %q: %v", buf[:n], err)
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		fds, _ := unix.ParseUnixRights(&msgs[0])
		if rep.Connect != nil {
			unix.SetsockoptLinger(fds[0], unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
		}
		unix.Close(fds[0])
	}
}

// freeAddr returns a loopback TCP address free when it is called.
func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// BenchmarkHandoff measures the daemon's request path for the hand-out of
// a cached shared socket, in process: a raw client sends a bind request on
// one connection and waits for the reply and its fd. With -cpuprofile it
// shows where the server's time goes; the client's share is the wire
// encoding and two system calls.
func BenchmarkHandoff(b *testing.B) { benchHandoff(b, Options{}) }

// BenchmarkHandoffMetrics is BenchmarkHandoff with metrics on: what
// counting costs (docs/metrics.md, "Cost").
func BenchmarkHandoffMetrics(b *testing.B) { benchHandoff(b, benchMetrics()) }

// benchMetrics are Options with metrics on, as the daemon sets them.
func benchMetrics() Options {
	m := metrics.New(metrics.Options{Version: "bench"})
	m.SetRules([]string{"t"})
	return Options{Metrics: m}
}

func benchHandoff(b *testing.B, o Options) {
	_, path := startServer(b, `bind = ["tcp:127.0.0.1:*"]`, o)
	do := rawClient(b, path)
	req := &wire.Request{V: wire.Version, Op: wire.OpBind, Bind: &wire.BindRequest{Network: "tcp", Address: freeAddr(b), Share: "any", Name: "b"}}
	do(req) // the first bind creates the socket; the loop's binds share it
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		do(req)
	}
}

// BenchmarkConnect measures a brokered connect to a loopback listener in
// process: a raw client sends a connect request and waits for the reply
// and its fd, which it closes with a reset (no TIME_WAIT). The listener's
// accepting runs in the same process.
func BenchmarkConnect(b *testing.B) { benchConnect(b, Options{}) }

// BenchmarkConnectMetrics is BenchmarkConnect with metrics on.
func BenchmarkConnectMetrics(b *testing.B) { benchConnect(b, benchMetrics()) }

func benchConnect(b *testing.B, o Options) {
	_, path := startServer(b, `connect = ["127.0.0.1:*"]`, o)
	sink := testnet.Sink(b)
	do := rawClient(b, path)
	req := &wire.Request{V: wire.Version, Op: wire.OpConnect, Connect: &wire.ConnectRequest{Network: "tcp", Address: sink.String()}}
	b.ReportAllocs()
	for range b.N {
		do(req)
	}
}

// BenchmarkDirectConnect is BenchmarkConnect's floor: the same connect and
// close made by the client itself.
func BenchmarkDirectConnect(b *testing.B) {
	sink := testnet.Sink(b)
	sa := &unix.SockaddrInet4{Addr: sink.Addr().As4(), Port: int(sink.Port())}
	b.ReportAllocs()
	for range b.N {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Connect(s, sa); err != nil {
			b.Fatal(err)
		}
		unix.SetsockoptLinger(s, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
		unix.Close(s)
	}
}
