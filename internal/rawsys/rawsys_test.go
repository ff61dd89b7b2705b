package rawsys

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Every call against real sockets: a UNIX pair passing a descriptor, a
// TCP connect to a loopback listener with its local address, accept4 on
// an empty and a non-empty queue, peer credentials, the send timeout, and
// the errors of a closed descriptor.
func TestCalls(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])

	if _, _, _, err := Recvmsg(pair[1], make([]byte, 8), nil, unix.MSG_DONTWAIT); err != unix.EAGAIN {
		t.Errorf("Recvmsg of an empty socket: %v, want EAGAIN", err)
	}
	dup, err := DupCloexec(pair[0])
	if err != nil {
		t.Fatal(err)
	}
	if flags, err := unix.FcntlInt(uintptr(dup), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("DupCloexec: flags %#x, %v; want FD_CLOEXEC", flags, err)
	}
	if n, err := Sendmsg(pair[0], []byte("hello"), unix.UnixRights(dup), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL); n != 5 || err != nil {
		t.Fatalf("Sendmsg: %d, %v", n, err)
	}
	if err := Close(dup); err != nil {
		t.Errorf("Close: %v", err)
	}
	buf, oob := make([]byte, 16), make([]byte, unix.CmsgSpace(4))
	n, oobn, flags, err := Recvmsg(pair[1], buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil || string(buf[:n]) != "hello" || flags&unix.MSG_CTRUNC != 0 {
		t.Fatalf("Recvmsg: %q, flags %#x, %v", buf[:n], flags, err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control data: %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights: %v, %v", fds, err)
	}
	Close(fds[0])
	cred, err := PeerCred(pair[1])
	if err != nil || int(cred.Pid) != os.Getpid() || int(cred.Uid) != os.Getuid() {
		t.Errorf("PeerCred: %+v, %v; want this process", cred, err)
	}

	// TCP on loopback, IPv4.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File() // blocking copy; made non-blocking below
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	lfd := int(lf.Fd())
	if err := unix.SetNonblock(lfd, true); err != nil {
		t.Fatal(err)
	}
	if _, err := Accept4(lfd, unix.SOCK_CLOEXEC); err != unix.EAGAIN {
		t.Errorf("Accept4 of an empty queue: %v, want EAGAIN", err)
	}
	s, err := Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(s)
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	if err := Connect(s, target, 0); err != nil && err != unix.EINPROGRESS {
		t.Fatalf("Connect: %v", err)
	}
	if err := Connect(s, target, 0); err != nil && err != unix.EISCONN {
		t.Fatalf("second Connect: %v, want EISCONN (loopback has finished)", err)
	}
	local, err := Getsockname(s)
	if err != nil || local.Addr() != netip.MustParseAddr("127.0.0.1") || local.Port() == 0 {
		t.Errorf("Getsockname: %v, %v; want 127.0.0.1 and a port", local, err)
	}
	var a int
	for deadline := time.Now().Add(5 * time.Second); ; {
		if a, err = Accept4(lfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK); err != unix.EAGAIN || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond) // the handshake is done; the queue is a step behind at most
	}
	if err != nil {
		t.Fatalf("Accept4: %v", err)
	}
	peer, err := unix.Getpeername(a)
	if p, ok := peer.(*unix.SockaddrInet4); err != nil || !ok || p.Port != int(local.Port()) {
		t.Errorf("accepted connection's peer %v, %v; want port %d", peer, err, local.Port())
	}
	if n, err := unix.Write(s, []byte("x")); n != 1 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		n, err = Read(a, buf)
		if err != unix.EAGAIN || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if n != 1 || err != nil || buf[0] != 'x' {
		t.Errorf("Read: %q, %v", buf[:n], err)
	}
	if err := SetBlocking(s); err != nil {
		t.Fatal(err)
	}
	if fl, _ := unix.FcntlInt(uintptr(s), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Errorf("SetBlocking left O_NONBLOCK: %#x", fl)
	}
	if err := SetSendTimeout(s, unix.Timeval{Sec: 3}); err != nil {
		t.Fatal(err)
	}
	if tv, err := unix.GetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO); err != nil || tv.Sec != 3 {
		t.Errorf("SO_SNDTIMEO: %+v, %v; want 3 s", tv, err)
	}

	// IPv6 loopback, where the machine has it.
	if ln6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		defer ln6.Close()
		s6, err := Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer Close(s6)
		if err := Connect(s6, ln6.Addr().(*net.TCPAddr).AddrPort(), 0); err != nil && err != unix.EINPROGRESS {
			t.Fatalf("Connect [::1]: %v", err)
		}
		if l6, err := Getsockname(s6); err != nil || l6.Addr() != netip.IPv6Loopback() {
			t.Errorf("Getsockname [::1]: %v, %v", l6, err)
		}
	}

	// A closed descriptor: every call says EBADF.
	Close(a)
	if err := Close(a); err != unix.EBADF {
		t.Errorf("Close of a closed descriptor: %v, want EBADF", err)
	}
	if _, err := Read(a, buf); err != unix.EBADF {
		t.Errorf("Read of a closed descriptor: %v, want EBADF", err)
	}
	if _, err := Getsockname(a); err != unix.EBADF {
		t.Errorf("Getsockname of a closed descriptor: %v, want EBADF", err)
	}
}

// The request path's calls allocate nothing, errors included: each is
// made once or twice per request.
func TestNoAllocations(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	msg, buf, oob := []byte("ping"), make([]byte, 16), make([]byte, 64)
	if n := testing.AllocsPerRun(200, func() {
		if _, err := Sendmsg(pair[0], msg, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := Recvmsg(pair[1], buf, oob, unix.MSG_DONTWAIT); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := Recvmsg(pair[1], buf, oob, unix.MSG_DONTWAIT); err != unix.EAGAIN {
			t.Fatalf("Recvmsg of an empty socket: %v, want EAGAIN", err)
		}
	}); n != 0 {
		t.Errorf("Sendmsg, Recvmsg and an EAGAIN: %v allocations per round, want 0", n)
	}
}
