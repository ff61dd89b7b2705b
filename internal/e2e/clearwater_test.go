package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/testnet"
)

// The Clearwater-compatible front door (issue 3), driven the way existing
// Clearwater clients drive it: a C client compiled from
// testdata/clearwater_client.c, and raw Go clients that look at every byte
// and control message the daemon sends.

// cwBase is the part of every configuration here that is not a Clearwater
// listener: the native socket the harness waits for, and a resolver that
// only ever asks the test's fake DNS server.
const cwBase = `
[daemon]
socket = "%SOCKET%"

[resolver]
servers = ["%DNS%"]
`

// startCWDaemon starts a daemon on cwBase plus listeners, after replacing
// %DIR% with the daemon's own temporary directory (where the tests put the
// Clearwater sockets and allow-list directories). prepare, when not nil,
// runs before the daemon starts, with that directory.
func startCWDaemon(t *testing.T, records map[string][]netip.Addr, listeners string, prepare func(dir string)) *daemon {
	t.Helper()
	dns := startFakeDNS(t, records)
	dir := publicTempDir(t)
	d := &daemon{t: t, dir: dir, socket: filepath.Join(dir, "run", "sockfactory.sock"), config: filepath.Join(dir, "sockfactoryd.toml")}
	if prepare != nil {
		prepare(dir)
	}
	config := strings.NewReplacer("%DNS%", dns.addr, "%DIR%", dir).Replace(cwBase + listeners)
	d.writeConfig(config)
	d.start()
	t.Cleanup(d.stop)
	// The harness waits for the native socket only; the Clearwater
	// sockets are opened after it.
	want := strings.Count(listeners, "[[clearwater]]")
	waitFor(t, "the Clearwater listeners to start", func() bool {
		return strings.Count(d.log.String(), `msg="listening (clearwater)"`) == want
	})
	return d
}

// cwPath returns the path of a Clearwater socket in the daemon's directory.
func (d *daemon) cwPath(name string) string { return filepath.Join(d.dir, name) }

// cwWarmUp makes one granted request through each listener (the first
// request opens files such as /etc/hosts), waits until the harness's own
// probe of the native socket is finished, then takes the fd baseline that
// is checked at cleanup.
func (d *daemon) cwWarmUp(t *testing.T, requests ...[2]string) {
	t.Helper()
	for _, r := range requests {
		requireGrant(t, cwRequest(t, r[0], r[1]), "warm-up request "+r[1])
	}
	waitFor(t, "native probe connections to end", func() bool {
		log := d.log.String()
		n := strings.Count(log, "client connected")
		return n > 0 && n == strings.Count(log, "client disconnected")
	})
	d.checkFDs()
}

// logLine returns the first line of the daemon's log that holds every one
// of parts.
func (d *daemon) logLine(parts ...string) (string, bool) {
	for line := range strings.SplitSeq(d.log.String(), "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			return line, true
		}
	}
	return "", false
}

// countLog counts the lines of the daemon's log that hold every one of
// parts.
func (d *daemon) countLog(parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(d.log.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// waitLog waits for a log line holding every one of parts and returns it.
func (d *daemon) waitLog(t *testing.T, parts ...string) string {
	t.Helper()
	var line string
	if !poll(10*time.Second, func() bool {
		var ok bool
		line, ok = d.logLine(parts...)
		return ok
	}) {
		t.Fatalf("no daemon log line holding all of %q; log:\n%s", parts, d.log)
	}
	return line
}

// cwReply is everything a raw client received on one Clearwater connection
// until the daemon closed it.
type cwReply struct {
	data []byte
	// msgs are the control messages, fds the descriptors of the
	// SCM_RIGHTS ones (closed at cleanup).
	msgs []unix.SocketControlMessage
	fds  []int
	// trunc reports MSG_CTRUNC on some read.
	trunc bool
	// err is a read error other than EOF.
	err error
}

func (r cwReply) String() string {
	return fmt.Sprintf("data %q, %d control messages, fds %v, ctrunc %v, read error %v", r.data, len(r.msgs), r.fds, r.trunc, r.err)
}

func cwDial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatalf("connecting to the Clearwater socket %s: %v", path, err)
	}
	return c
}

// cwRequest sends req with one write, as Clearwater clients do, and reads
// until the daemon closes the connection.
func cwRequest(t *testing.T, path, req string) cwReply {
	t.Helper()
	c := cwDial(t, path)
	defer c.Close()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatalf("sending %q: %v", req, err)
	}
	return cwReadAll(t, c)
}

// cwReadAll reads data and control messages until EOF, with buffers far
// larger than a Clearwater client's, so that anything extra shows.
func cwReadAll(t *testing.T, c *net.UnixConn) cwReply {
	t.Helper()
	var r cwReply
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	oob := make([]byte, 4096)
	for {
		n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
		n, oobn = max(n, 0), max(oobn, 0) // -1 on some errors
		r.data = append(r.data, buf[:n]...)
		if flags&unix.MSG_CTRUNC != 0 {
			r.trunc = true
		}
		if oobn > 0 {
			msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr != nil {
				t.Fatalf("unparsable control data % x: %v", oob[:oobn], perr)
			}
			for _, m := range msgs {
				r.msgs = append(r.msgs, m)
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_RIGHTS {
					fds, perr := unix.ParseUnixRights(&m)
					if perr != nil {
						t.Fatalf("unparsable SCM_RIGHTS: %v", perr)
					}
					r.fds = append(r.fds, fds...)
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				r.err = err
			}
			break
		}
		if n == 0 && oobn == 0 {
			break // EOF
		}
	}
	for _, fd := range r.fds {
		t.Cleanup(func() { unix.Close(fd) })
	}
	return r
}

// requireGrant checks the success reply, byte for byte: exactly one data
// byte, a space, and exactly one SCM_RIGHTS message with exactly one fd,
// then EOF. It returns the fd.
func requireGrant(t *testing.T, r cwReply, what string) int {
	t.Helper()
	if r.err != nil || !bytes.Equal(r.data, []byte{0x20}) || len(r.msgs) != 1 || len(r.fds) != 1 || r.trunc {
		t.Fatalf("%s: got %v; want data \" \" (0x20), one SCM_RIGHTS message with one fd, then EOF", what, r)
	}
	if h := r.msgs[0].Header; h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_RIGHTS {
		t.Fatalf("%s: control message level %d type %d; want SOL_SOCKET/SCM_RIGHTS", what, h.Level, h.Type)
	}
	return r.fds[0]
}

// requirePlainClose checks the error reply: the connection closed without
// a byte of data or control data.
func requirePlainClose(t *testing.T, r cwReply, what string) {
	t.Helper()
	if r.err != nil || len(r.data) != 0 || len(r.msgs) != 0 || r.trunc {
		t.Fatalf("%s: got %v; want a plain close (EOF, no data, no control data)", what, r)
	}
}

// fdPeer returns the peer address of a socket fd as ip:port.
func fdPeer(t *testing.T, fd int) string {
	t.Helper()
	sa, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatalf("getpeername: %v", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	}
	t.Fatalf("getpeername: unexpected %T", sa)
	return ""
}

// checkDelivered checks a delivered fd as a C client would use it: its
// family and type, its peer, blocking mode and SO_SNDTIMEO; then it echoes
// a line through it with plain blocking syscalls.
func checkDelivered(t *testing.T, fd, domain int, peer string, sndtimeo time.Duration) {
	t.Helper()
	// Look at the flags first: nothing here may touch them.
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatalf("F_GETFL: %v", err)
	}
	if fl&unix.O_NONBLOCK != 0 {
		t.Errorf("delivered socket has O_NONBLOCK (flags %#o); want blocking mode, or C clients get EAGAIN", fl)
	}
	if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || got != domain {
		t.Errorf("SO_DOMAIN: got %d, %v; want %d", got, err, domain)
	}
	if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || got != unix.SOCK_STREAM {
		t.Errorf("SO_TYPE: got %d, %v; want SOCK_STREAM (%d)", got, err, unix.SOCK_STREAM)
	}
	if got := fdPeer(t, fd); got != peer {
		t.Errorf("peer: got %s; want %s", got, peer)
	}
	tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO)
	if err != nil {
		t.Fatalf("SO_SNDTIMEO: %v", err)
	}
	if got := time.Duration(tv.Sec)*time.Second + time.Duration(tv.Usec)*time.Microsecond; got != sndtimeo {
		t.Errorf("SO_SNDTIMEO: got %v; want %v", got, sndtimeo)
	}
	// A receive bound so that a broken echo fails the test instead of
	// hanging it; the socket stays blocking.
	rcv := unix.NsecToTimeval((20 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &rcv); err != nil {
		t.Fatal(err)
	}
	msg := []byte("through the delivered socket\n")
	if n, err := unix.Write(fd, msg); err != nil || n != len(msg) {
		t.Fatalf("write on the delivered socket: %d, %v", n, err)
	}
	got := make([]byte, 0, len(msg))
	buf := make([]byte, len(msg))
	for len(got) < len(msg) {
		n, err := unix.Read(fd, buf[:len(msg)-len(got)])
		if err != nil || n == 0 {
			t.Fatalf("read on the delivered socket after %q: %d, %v", got, n, err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo through the delivered socket: got %q; want %q", got, msg)
	}
}

// cClient holds the C test client, built once per test binary run.
var cClient struct {
	once sync.Once
	path string
	err  error
}

// clearwaterClient returns the path of the compiled C test client. It
// lives in the binaries' directory, which other uids can enter.
func clearwaterClient(t *testing.T) string {
	t.Helper()
	cClient.once.Do(func() {
		gcc, err := exec.LookPath("gcc")
		if err != nil {
			cClient.err = err
			return
		}
		out := filepath.Join(bin.dir, "clearwater_client")
		b, err := exec.Command(gcc, "-Wall", "-Werror", "-o", out, filepath.Join("testdata", "clearwater_client.c")).CombinedOutput()
		if err != nil {
			cClient.err = fmt.Errorf("gcc -Wall -Werror testdata/clearwater_client.c: %v\n%s", err, b)
			return
		}
		cClient.path = out
	})
	if errors.Is(cClient.err, exec.ErrNotFound) {
		testnet.SkipOrFail(t, "needs gcc to build the C Clearwater client (install gcc, e.g. apt-get install gcc)")
	}
	if cClient.err != nil {
		t.Fatal(cClient.err)
	}
	return cClient.path
}

// runCWClient runs the C client against socket with target and line; attr
// adjusts the process (a new network namespace, another uid). It returns
// stdout, stderr, the exit code and the client's pid.
func runCWClient(t *testing.T, attr *syscall.SysProcAttr, socket, target, line string) (string, string, int, int) {
	t.Helper()
	prog := clearwaterClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, socket, target, line)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = attr
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the C client: %v", err)
	}
	pid := cmd.Process.Pid
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running the C client: %v", err)
	}
	return out.String(), errb.String(), code, pid
}

// inNewNetnsAs combines inNewNetns and asUser.
func inNewNetnsAs(uid, gid uint32) *syscall.SysProcAttr {
	a := asUser(uid, gid)
	a.Cloneflags = syscall.CLONE_NEWNET
	return a
}

func pidField(pid int) string { return fmt.Sprintf(" pid=%d ", pid) }

// TestIntegrationClearwaterCClient: a C client doing exactly what Clearwater
// clients do (one send of host:port, recvmsg with a 1-byte buffer and a
// CMSG_SPACE(sizeof(int)) control buffer, then blocking send/recv), run in
// a fresh network namespace, reaches a server on the default namespace's
// loopback through the daemon, by address and by name; a refused request
// leaves it with "no fd received".
func TestIntegrationClearwaterCClient(t *testing.T) {
	requireRoot(t)
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	d := startCWDaemon(t, map[string][]netip.Addr{"sas.test": {netip.MustParseAddr("127.0.0.1")}}, `
[[clearwater]]
socket = "%DIR%/clearwater_management_namespace_socket"
allowed_hosts = ["127.0.0.1", "sas.test"]
`, nil)
	sock := d.cwPath("clearwater_management_namespace_socket")
	d.cwWarmUp(t, [2]string{sock, echo}, [2]string{sock, "sas.test:" + port(echo)})

	for _, target := range []string{echo, "sas.test:" + port(echo)} {
		t.Run(target, func(t *testing.T) {
			line := "hello via " + target + "\n"
			out, errOut, code, pid := runCWClient(t, inNewNetns(), sock, target, line)
			if code != 0 || out != line {
				t.Fatalf("C client in a new netns asking for %s: exit %d, stdout %q, stderr %q; want exit 0 and the line echoed", target, code, out, errOut)
			}
			d.waitLog(t, "msg=grant", "listener=clearwater", "uid=0 ", pidField(pid), "request="+target+" ", "remote="+echo)
		})
	}

	t.Run("not allowed", func(t *testing.T) {
		target := "127.0.0.2:" + port(echo)
		out, errOut, code, pid := runCWClient(t, inNewNetns(), sock, target, "x\n")
		if code != 3 || !strings.Contains(errOut, "no fd received") {
			t.Fatalf("C client asking for %s: exit %d, stdout %q, stderr %q; want exit 3, \"no fd received\"", target, code, out, errOut)
		}
		d.waitLog(t, "msg=deny", "uid=0 ", pidField(pid), "request="+target+" ")
	})
}

// TestIntegrationClearwaterReply: the success reply is byte-exact (one 0x20
// byte, one SCM_RIGHTS message with one fd, then EOF) and the fd is what a
// C client expects: a connected AF_INET stream socket in blocking mode with
// SO_SNDTIMEO equal to the listener's connect timeout (30 s by default). A
// NUL ends the request; 1023 bytes are accepted, 1024 refused. The socket
// file's mode defaults to 0660.
func TestIntegrationClearwaterReply(t *testing.T) {
	requireRoot(t)
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	d := startCWDaemon(t, map[string][]netip.Addr{"sas.test": {netip.MustParseAddr("127.0.0.1")}}, `
[[clearwater]]
socket = "%DIR%/default.sock"
allowed_hosts = ["127.0.0.1", "SAS.Test"]

[[clearwater]]
socket = "%DIR%/configured.sock"
allowed_hosts = ["127.0.0.1"]
connect_timeout = "7s"
`, nil)
	def, conf := d.cwPath("default.sock"), d.cwPath("configured.sock")
	d.cwWarmUp(t, [2]string{def, echo}, [2]string{def, "sas.test:" + port(echo)}, [2]string{conf, echo})

	for _, sock := range []string{def, conf} {
		fi, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
			t.Errorf("%s: mode %v; want a socket with mode 0660 (the default)", sock, fi.Mode())
		}
	}

	pad := func(req string, n int) string { return req + "\x00" + strings.Repeat("x", n-len(req)-1) }
	cases := []struct {
		name, sock, req string
		sndtimeo        time.Duration
	}{
		{"default connect timeout", def, echo, 30 * time.Second},
		{"configured connect timeout", conf, echo, 7 * time.Second},
		{"name, in another case than the allowed entry", def, "sAS.tEST:" + port(echo), 30 * time.Second},
		{"NUL ends the request", def, echo + "\x00trailing junk", 30 * time.Second},
		{"1023 bytes", def, pad(echo, 1023), 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fd := requireGrant(t, cwRequest(t, tc.sock, tc.req), "request "+tc.name)
			checkDelivered(t, fd, unix.AF_INET, echo, tc.sndtimeo)
		})
	}
	t.Run("1024 bytes", func(t *testing.T) {
		requirePlainClose(t, cwRequest(t, def, pad(echo, 1024)), "request of 1024 bytes")
		d.waitLog(t, "msg=fail", pidField(os.Getpid()), `err="request longer than 1023 bytes"`)
	})
}

// TestIntegrationClearwaterErrors: every failure ends in a plain close
// (EOF, no data, no control data) and an audit line naming the caller's
// uid and pid and the reason; the daemon keeps serving and leaks no fd.
func TestIntegrationClearwaterErrors(t *testing.T) {
	requireRoot(t)
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	closed := closedPort(t)
	d := startCWDaemon(t, map[string][]netip.Addr{
		"sas.test":  {netip.MustParseAddr("127.0.0.1")},
		"evil.test": {netip.MustParseAddr("127.0.0.2")},
		// Listed, but its answer is the unspecified address, which is on
		// the daemon's default deny list.
		"zero.test": {netip.MustParseAddr("0.0.0.0")},
	}, fmt.Sprintf(`
[[clearwater]]
socket = "%%DIR%%/cw.sock"
allowed_hosts = ["127.0.0.1:%s", "127.0.0.1:%s", "sas.test", "nx.test", "zero.test"]
`, port(echo), closed), nil)
	sock := d.cwPath("cw.sock")
	d.cwWarmUp(t, [2]string{sock, echo}, [2]string{sock, "sas.test:" + port(echo)})

	otherPort := "1"
	if otherPort == port(echo) || otherPort == closed {
		t.Fatalf("test setup: port %s is in use by the test", otherPort)
	}
	pid := pidField(os.Getpid())
	cases := []struct {
		name string
		req  string // sent with one write; "" sends nothing and half-closes
		log  []string
	}{
		{"disallowed host", "127.0.0.2:" + port(echo), []string{"msg=deny", "code=denied"}},
		{"disallowed port", "127.0.0.1:" + otherPort, []string{"msg=deny", "code=denied"}},
		// A name not on the list is refused before any lookup, whatever
		// it resolves to.
		{"name not on the list", "evil.test:" + port(echo), []string{"msg=deny", "code=denied", "not an allowed host"}},
		{"listed name resolving to a deny-listed address", "zero.test:" + port(echo), []string{"msg=deny", "code=denied", "deny list"}},
		{"no colon", "127.0.0.1", []string{"msg=fail", "code=invalid_request"}},
		{"non-numeric port", "127.0.0.1:http", []string{"msg=fail", "code=invalid_request"}},
		{"port 0", "127.0.0.1:0", []string{"msg=fail", "code=invalid_request"}},
		{"port too large", "127.0.0.1:65536", []string{"msg=fail", "code=invalid_request"}},
		{"empty host", ":" + port(echo), []string{"msg=fail", "code=invalid_request"}},
		{"empty port", "127.0.0.1:", []string{"msg=fail", "code=invalid_request"}},
		{"empty (a lone NUL)", "\x00", []string{"msg=fail", "code=invalid_request", `err="empty request"`}},
		{"empty (nothing, then half-close)", "", []string{"msg=fail", "code=invalid_request", `err="client sent no request: EOF"`}},
		{"oversize", strings.Repeat("a", 1024), []string{"msg=fail", "code=invalid_request", `err="request longer than 1023 bytes"`}},
		{"lookup failure", "nx.test:" + port(echo), []string{"msg=fail", "code=resolve_failed", "no such host"}},
		{"refused connect", "127.0.0.1:" + closed, []string{"msg=fail", "code=connect_failed", "connection refused"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := cwDial(t, sock)
			defer c.Close()
			if tc.req == "" {
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			} else if _, err := c.Write([]byte(tc.req)); err != nil {
				t.Fatalf("sending %q: %v", tc.req, err)
			}
			requirePlainClose(t, cwReadAll(t, c), fmt.Sprintf("request %q", tc.req))
			want := append([]string{"listener=clearwater", "uid=0 ", pid}, tc.log...)
			if tc.req != "" && !strings.ContainsRune(tc.req, 0) && len(tc.req) <= 1023 {
				want = append(want, "request="+tc.req+" ")
			}
			t.Logf("%s", d.waitLog(t, want...))
		})
	}
	if n := d.countLog("msg=deny", pid); n != 4 {
		t.Errorf("audit log has %d deny lines for this process; want 4 (one per denied request)", n)
	}
	t.Run("still serving", func(t *testing.T) {
		fd := requireGrant(t, cwRequest(t, sock, echo), "request after the failures")
		checkDelivered(t, fd, unix.AF_INET, echo, 30*time.Second)
	})
}

// recvNoWait reports what a non-blocking peek on c sees: "open" when
// nothing is there yet, "eof" when the peer has closed, or the data or
// error.
func recvNoWait(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var res string
	if err := rc.Read(func(fd uintptr) bool {
		buf := make([]byte, 16)
		n, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT|unix.MSG_PEEK)
		switch {
		case errors.Is(err, unix.EAGAIN):
			res = "open"
		case err != nil:
			res = "error " + err.Error()
		case n == 0:
			res = "eof"
		default:
			res = fmt.Sprintf("data %q", buf[:n])
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return res
}

// watchedServer accepts one TCP connection on loopback and reports when
// that connection reaches EOF, that is when every copy of the client's
// socket has been closed.
func watchedServer(t *testing.T) (string, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, err = io.Copy(io.Discard, c)
		done <- err
	}()
	return l.Addr().String(), done
}

// TestIntegrationClearwaterSlowClients: a silent client does not delay a
// concurrent one and is dropped after the read timeout; a client that
// leaves while its connect hangs, or before reading its reply, harms
// nothing and leaks nothing; the daemon's fd count returns to baseline.
func TestIntegrationClearwaterSlowClients(t *testing.T) {
	requireRoot(t)
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	hole := blackhole(t)
	d := startCWDaemon(t, nil, `
[[clearwater]]
socket = "%DIR%/patient.sock"
allowed_hosts = ["127.0.0.1"]
read_timeout = "60s"
connect_timeout = "4s"

[[clearwater]]
socket = "%DIR%/impatient.sock"
allowed_hosts = ["127.0.0.1"]
read_timeout = "1s"
`, nil)
	patient, impatient := d.cwPath("patient.sock"), d.cwPath("impatient.sock")
	d.cwWarmUp(t, [2]string{patient, echo}, [2]string{impatient, echo})
	base := d.fds()

	t.Run("silent client does not delay another", func(t *testing.T) {
		silent := cwDial(t, patient)
		defer silent.Close()
		// The daemon has accepted it and is waiting for its request.
		waitFor(t, "the daemon to accept the silent client", func() bool { return d.fds() > base })
		fd := requireGrant(t, cwRequest(t, patient, echo), "request next to a silent client")
		checkDelivered(t, fd, unix.AF_INET, echo, 4*time.Second)
		if got := recvNoWait(t, silent); got != "open" {
			t.Fatalf("silent client's connection: %s; want it still open while the other client was served", got)
		}
	})

	t.Run("silent client dropped after read_timeout", func(t *testing.T) {
		silent := cwDial(t, impatient)
		defer silent.Close()
		requirePlainClose(t, cwReadAll(t, silent), "silent client")
		d.waitLog(t, "msg=fail", "socket="+impatient, pidField(os.Getpid()), `err="no request within the read timeout"`)
	})

	t.Run("client leaves while its connect hangs", func(t *testing.T) {
		c := cwDial(t, patient)
		if _, err := c.Write([]byte(hole)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		// Served meanwhile, while the hanging connect is still pending.
		for i := range 3 {
			fd := requireGrant(t, cwRequest(t, patient, echo), fmt.Sprintf("request %d while a connect hangs", i))
			checkDelivered(t, fd, unix.AF_INET, echo, 4*time.Second)
		}
		if line, ok := d.logLine("request=" + hole + " "); ok {
			t.Fatalf("the hanging connect finished before the other requests were served: %s", line)
		}
		d.waitLog(t, "msg=fail", "request="+hole+" ", "code=timeout")
	})

	t.Run("client leaves before reading its reply", func(t *testing.T) {
		dest, eof := watchedServer(t)
		c := cwDial(t, patient)
		if _, err := c.Write([]byte(dest)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		d.waitLog(t, "socket="+patient, "request="+dest+" ")
		// Every copy of the connected socket is closed: the daemon's and
		// the one in flight to the departed client.
		select {
		case err := <-eof:
			if err != nil {
				t.Fatalf("destination's connection ended with %v; want EOF", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("destination's connection still open: the delivered socket leaked; daemon fds %d, baseline %d", d.fds(), base)
		}
	})

	t.Run("still serving", func(t *testing.T) {
		fd := requireGrant(t, cwRequest(t, patient, echo), "request after the departed clients")
		checkDelivered(t, fd, unix.AF_INET, echo, 4*time.Second)
		waitFor(t, fmt.Sprintf("daemon fd count to return to %d", base), func() bool { return d.fds() == base })
	})
}

// TestIntegrationClearwaterAllowListReload: a host added to a file in an
// allowed-hosts directory is allowed on the next request, without a restart
// or a signal (a denial re-reads the list); a host removed from it stays
// allowed until SIGHUP, and is refused after.
func TestIntegrationClearwaterAllowListReload(t *testing.T) {
	requireRoot(t)
	echoA := echoServer(t, "tcp", "127.0.0.1:0")
	echoB := echoServer(t, "tcp", "127.0.0.1:0")
	var hosts string
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(hosts, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := startCWDaemon(t, nil, `
[[clearwater]]
socket = "%DIR%/clearwater_management_namespace_socket"
allowed_hosts_dirs = ["%DIR%/management.d"]
`, func(dir string) {
		if err := os.Mkdir(filepath.Join(dir, "management.d"), 0o755); err != nil {
			t.Fatal(err)
		}
		hosts = filepath.Join(dir, "management.d", "sas")
		write("# the SAS server\n127.0.0.1:" + port(echoA) + "\n")
	})
	sock := d.cwPath("clearwater_management_namespace_socket")
	d.cwWarmUp(t, [2]string{sock, echoA})
	pid := d.cmd.Process.Pid

	requirePlainClose(t, cwRequest(t, sock, echoB), "request for a host not in the list")
	d.waitLog(t, "msg=deny", "request="+echoB+" ")

	write("# the SAS server\n127.0.0.1:" + port(echoA) + "\n\n127.0.0.1:" + port(echoB) + "  # added while running\n")
	fd := requireGrant(t, cwRequest(t, sock, echoB), "request for a host just added to the list")
	checkDelivered(t, fd, unix.AF_INET, echoB, 30*time.Second)

	write("# the SAS server\n127.0.0.1:" + port(echoA) + "\n")
	// Removal is not noticed by itself: the list is re-read on a denial
	// or on SIGHUP only.
	requireGrant(t, cwRequest(t, sock, echoB), "request for a removed host before SIGHUP")
	reloads := d.countLog("reloaded allowed hosts")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the daemon to reload on SIGHUP", func() bool { return d.countLog("reloaded allowed hosts", "entries=1") > reloads })
	requirePlainClose(t, cwRequest(t, sock, echoB), "request for a removed host after SIGHUP")
	fd = requireGrant(t, cwRequest(t, sock, echoA), "request for the host still listed")
	checkDelivered(t, fd, unix.AF_INET, echoA, 30*time.Second)
	if d.cmd.Process.Pid != pid {
		t.Fatalf("daemon restarted")
	}
}

// TestIntegrationClearwaterUsers: with users = ["root"], another uid that
// can open the socket (mode 0666) gets a plain close and a denial naming
// its uid; root is served. With the default mode 0660, that uid cannot even
// connect.
func TestIntegrationClearwaterUsers(t *testing.T) {
	requireRoot(t)
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	d := startCWDaemon(t, nil, `
[[clearwater]]
socket = "%DIR%/root-only.sock"
socket_mode = "0666"
allowed_hosts = ["127.0.0.1"]
users = ["root"]

[[clearwater]]
socket = "%DIR%/default-mode.sock"
allowed_hosts = ["127.0.0.1"]
`, nil)
	rootOnly, defMode := d.cwPath("root-only.sock"), d.cwPath("default-mode.sock")
	d.cwWarmUp(t, [2]string{rootOnly, echo}, [2]string{defMode, echo})

	t.Run("uid 65534 refused by users", func(t *testing.T) {
		out, errOut, code, pid := runCWClient(t, inNewNetnsAs(65534, 65534), rootOnly, echo, "x\n")
		if code != 3 || !strings.Contains(errOut, "no fd received") {
			t.Fatalf("C client as uid 65534: exit %d, stdout %q, stderr %q; want exit 3, \"no fd received\"", code, out, errOut)
		}
		t.Logf("%s", d.waitLog(t, "msg=deny", "socket="+rootOnly, "uid=65534 ", pidField(pid), "code=denied"))
	})
	t.Run("root served", func(t *testing.T) {
		line := "root\n"
		out, errOut, code, _ := runCWClient(t, inNewNetns(), rootOnly, echo, line)
		if code != 0 || out != line {
			t.Fatalf("C client as root: exit %d, stdout %q, stderr %q; want exit 0 and the echo", code, out, errOut)
		}
	})
	t.Run("uid 65534 cannot open a 0660 socket", func(t *testing.T) {
		_, errOut, code, _ := runCWClient(t, inNewNetnsAs(65534, 65534), defMode, echo, "x\n")
		if code != 1 || !strings.Contains(errOut, "Permission denied") {
			t.Fatalf("C client as uid 65534 on the 0660 socket: exit %d, stderr %q; want exit 1, Permission denied at connect", code, errOut)
		}
	})
}

// TestIntegrationClearwaterIPv6: a listener reaches only IPv4 by default,
// as the original, so legacy clients always get AF_INET; with ipv6 = true
// it connects to [::1] and to names with only IPv6 addresses.
func TestIntegrationClearwaterIPv6(t *testing.T) {
	requireRoot(t)
	echo4 := echoServer(t, "tcp", "127.0.0.1:0")
	echo6 := echoServer(t, "tcp", "[::1]:0")
	d := startCWDaemon(t, map[string][]netip.Addr{"v6only.test": {netip.MustParseAddr("::1")}}, `
[[clearwater]]
socket = "%DIR%/v4.sock"
allowed_hosts = ["127.0.0.1", "::1", "v6only.test"]

[[clearwater]]
socket = "%DIR%/v6.sock"
allowed_hosts = ["[::1]", "v6only.test"]
ipv6 = true
`, nil)
	v4, v6 := d.cwPath("v4.sock"), d.cwPath("v6.sock")
	d.cwWarmUp(t, [2]string{v4, echo4}, [2]string{v6, echo6}, [2]string{v6, "v6only.test:" + port(echo6)})

	t.Run("IPv4 only by default", func(t *testing.T) {
		requirePlainClose(t, cwRequest(t, v4, echo6), "request for "+echo6)
		d.waitLog(t, "msg=fail", "socket="+v4, "request="+echo6+" ", "code=invalid_request")
		requirePlainClose(t, cwRequest(t, v4, "v6only.test:"+port(echo6)), "request for a name with only an IPv6 address")
		d.waitLog(t, "msg=fail", "socket="+v4, "request=v6only.test:"+port(echo6)+" ", "code=resolve_failed")
	})
	t.Run("ipv6 = true", func(t *testing.T) {
		for _, req := range []string{echo6, "v6only.test:" + port(echo6)} {
			fd := requireGrant(t, cwRequest(t, v6, req), "request for "+req)
			checkDelivered(t, fd, unix.AF_INET6, echo6, 30*time.Second)
		}
		// Brackets are required: the request splits on the last colon.
		requirePlainClose(t, cwRequest(t, v6, "::1:"+port(echo6)), "request without brackets")
	})
}

// TestIntegrationClearwaterDropIn: the daemon started from flags alone, as
// a drop-in for the original, serves the C client from another namespace
// and another uid (the socket has the requested mode 0666), and removes
// both its sockets on SIGTERM.
func TestIntegrationClearwaterDropIn(t *testing.T) {
	requireRoot(t)
	clearwaterClient(t) // skip before starting anything when gcc is missing
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	dir := publicTempDir(t)
	native := filepath.Join(dir, "run", "sockfactory.sock")
	cw := filepath.Join(dir, "clearwater_mgmt_namespace_socket")
	cmd := exec.Command(bin.daemon, "-socket", native, "-clearwater-socket", cw, "-allowed-hosts", "127.0.0.1", "-clearwater-mode", "0666")
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", log)
		}
	})
	waitFor(t, "the Clearwater listener to start", func() bool {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("daemon exited at start: %v\n%s", err, log)
		default:
		}
		return strings.Contains(log.String(), `msg="listening (clearwater)"`)
	})
	if fi, err := os.Lstat(cw); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o666 {
		t.Fatalf("%s: %v, %v; want a socket with mode 0666", cw, fi.Mode(), err)
	}

	line := "drop-in\n"
	out, errOut, code, pid := runCWClient(t, inNewNetnsAs(65534, 65534), cw, echo, line)
	if code != 0 || out != line {
		t.Fatalf("C client (uid 65534, new netns) via the flag-started listener: exit %d, stdout %q, stderr %q; want exit 0 and the echo", code, out, errOut)
	}
	if !poll(10*time.Second, func() bool {
		s := log.String()
		return strings.Contains(s, "msg=grant") && strings.Contains(s, "uid=65534 ") && strings.Contains(s, pidField(pid))
	}) {
		t.Errorf("no grant line naming uid 65534 and pid %d", pid)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not exit within 20s of SIGTERM")
	}
	for _, p := range []string{native, cw} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file %s still there after SIGTERM (err %v)", p, err)
		}
	}
}

// TestIntegrationClearwaterTwoListeners: one daemon serves the management
// and the signaling paths with their own allow-lists; each reaches only its
// own hosts.
func TestIntegrationClearwaterTwoListeners(t *testing.T) {
	requireRoot(t)
	mgmtEcho := echoServer(t, "tcp", "127.0.0.1:0")
	sigEcho := echoServer(t, "tcp", "127.0.0.1:0")
	d := startCWDaemon(t, map[string][]netip.Addr{"sig.test": {netip.MustParseAddr("127.0.0.1")}}, fmt.Sprintf(`
[[clearwater]]
socket = "%%DIR%%/clearwater_management_namespace_socket"
allowed_hosts = ["127.0.0.1:%s"]

[[clearwater]]
socket = "%%DIR%%/clearwater_signaling_namespace_socket"
allowed_hosts = ["sig.test:%s"]
`, port(mgmtEcho), port(sigEcho)), nil)
	mgmt := d.cwPath("clearwater_management_namespace_socket")
	sig := d.cwPath("clearwater_signaling_namespace_socket")
	d.cwWarmUp(t, [2]string{mgmt, mgmtEcho}, [2]string{sig, "sig.test:" + port(sigEcho)})

	cases := []struct {
		sock, req, peer string // peer "" for a refusal
	}{
		{mgmt, mgmtEcho, mgmtEcho},
		{mgmt, sigEcho, ""},
		{mgmt, "sig.test:" + port(sigEcho), ""},
		{sig, "sig.test:" + port(sigEcho), sigEcho},
		{sig, sigEcho, ""},
		{sig, mgmtEcho, ""},
		{sig, "sig.test:" + port(mgmtEcho), ""},
	}
	for _, tc := range cases {
		t.Run(filepath.Base(tc.sock)+"/"+tc.req, func(t *testing.T) {
			line := "x\n"
			out, errOut, code, _ := runCWClient(t, inNewNetns(), tc.sock, tc.req, line)
			if tc.peer == "" {
				if code != 3 {
					t.Fatalf("C client asking %s for %s: exit %d, stdout %q, stderr %q; want a refusal (exit 3)", filepath.Base(tc.sock), tc.req, code, out, errOut)
				}
				return
			}
			if code != 0 || out != line {
				t.Fatalf("C client asking %s for %s: exit %d, stdout %q, stderr %q; want the echo", filepath.Base(tc.sock), tc.req, code, out, errOut)
			}
			d.waitLog(t, "msg=grant", "socket="+tc.sock, "request="+tc.req+" ", "remote="+tc.peer)
		})
	}
}
