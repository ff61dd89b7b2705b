package server

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/testnet"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// BenchmarkHandoff measures the daemon's request path for the hand-out of
// a cached shared socket, in process: a raw client sends a bind request on
// one connection and waits for the reply and its fd. With -cpuprofile it
// shows where the server's time goes; the client's share is the wire
// encoding and two system calls.
func BenchmarkHandoff(b *testing.B) {
	_, path := startServer(b, `bind = ["tcp:127.0.0.1:*"]`, Options{})
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		b.Fatal(err)
	}
	// The first bind creates the socket; the loop's binds share it.
	hold, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := hold.Addr().String()
	hold.Close()
	buf, oob := make([]byte, 4096), make([]byte, 64)
	req := &wire.Request{V: wire.Version, Op: wire.OpBind, Bind: &wire.BindRequest{Network: "tcp", Address: addr, Share: "any", Name: "b"}}
	var out []byte
	do := func(id uint64) {
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
		closeRights(oob[:oobn])
	}
	do(1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		do(uint64(i) + 2)
	}
}

// BenchmarkConnect measures a brokered connect to a loopback listener in
// process: a raw client sends a connect request and waits for the reply
// and its fd, which it closes with a reset (no TIME_WAIT). The listener's
// accepting runs in the same process.
func BenchmarkConnect(b *testing.B) {
	_, path := startServer(b, `connect = ["127.0.0.1:*"]`, Options{})
	sink := testnet.Sink(b)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		b.Fatal(err)
	}
	buf, oob := make([]byte, 4096), make([]byte, 64)
	req := &wire.Request{V: wire.Version, Op: wire.OpConnect, Connect: &wire.ConnectRequest{Network: "tcp", Address: sink.String()}}
	var out []byte
	b.ReportAllocs()
	for i := range b.N {
		req.ID = uint64(i) + 1
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
		unix.SetsockoptLinger(fds[0], unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
		unix.Close(fds[0])
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
