package e2e

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// TestIntegrationSocketFile: the daemon replaces a stale socket file,
// refuses to start on a live daemon's socket or on a non-socket file, and
// removes its socket on SIGTERM (checked by the daemon helper's cleanup).
func TestIntegrationSocketFile(t *testing.T) {
	requireRoot(t)
	dir := publicTempDir(t)
	sock := filepath.Join(dir, "s.sock")

	// A stale socket: bound, then the owner went away without unlinking.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)

	first := exec.Command(bin.daemon, "-socket", sock)
	firstLog := &syncBuffer{}
	first.Stderr = firstLog
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { first.Process.Kill(); first.Wait() }()
	waitFor(t, "the daemon to take over the stale socket", func() bool {
		c, err := net.Dial("unixpacket", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	// A second daemon must not steal the live socket.
	out, err := exec.Command(bin.daemon, "-socket", sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by a running daemon") {
		t.Fatalf("second daemon on a live socket: err %v, output %q; want failure naming the running daemon", err, out)
	}
	if c, err := net.Dial("unixpacket", sock); err != nil {
		t.Fatalf("first daemon's socket no longer answers after the second one failed: %v", err)
	} else {
		c.Close()
	}

	// A regular file is never removed.
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin.daemon, "-socket", plain).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is not a socket") {
		t.Fatalf("daemon on a regular file: err %v, output %q; want a refusal", err, out)
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep me" {
		t.Fatalf("regular file changed to %q", b)
	}

	// SIGTERM: clean exit, socket removed.
	first.Process.Signal(unix.SIGTERM)
	if err := first.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, firstLog)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still present after SIGTERM: %v", err)
	}
}

// TestIntegrationClientReconnects: a Client keeps working across a daemon
// restart, without being recreated.
func TestIntegrationClientReconnects(t *testing.T) {
	requireRoot(t)
	d := startConnectDaemon(t, nil)
	c := d.client()
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	dial := func() {
		t.Helper()
		conn, err := c.DialContext(context.Background(), "tcp", echo)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		roundTrip(t, conn, "x\n")
		conn.Close()
	}
	dial()
	d.stop()
	if _, err := c.DialContext(context.Background(), "tcp", echo); !errors.Is(err, sockfactory.ErrUnavailable) {
		t.Fatalf("dial with the daemon stopped: got %v; want ErrUnavailable", err)
	}
	d.start()
	dial()
}

// TestIntegrationHostileInput: malformed packets get typed error replies on
// the same connection; the daemon stays up for everyone and leaks nothing.
func TestIntegrationHostileInput(t *testing.T) {
	requireRoot(t)
	d := startConnectDaemon(t, nil)
	conn, err := net.Dial("unixpacket", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	big := make([]byte, wire.MaxMessageSize+10)
	for i := range big {
		big[i] = ' '
	}
	cases := []struct {
		name string
		msg  []byte
		oob  []byte
		code wire.Code
		id   uint64
	}{
		{"not json", []byte("GET / HTTP/1.0\r\n\r\n"), nil, wire.CodeInvalidRequest, 0},
		{"unknown field", []byte(`{"v":1,"id":7,"op":"connect","connect":{"network":"tcp","address":"127.0.0.1:1"},"x":1}`), nil, wire.CodeInvalidRequest, 7},
		{"wrong type", []byte(`{"v":1,"id":8,"op":"connect","connect":{"network":6,"address":"127.0.0.1:1"}}`), nil, wire.CodeInvalidRequest, 8},
		{"future version", []byte(`{"v":99,"id":9,"op":"connect"}`), nil, wire.CodeUnsupportedVersion, 9},
		{"unknown op", []byte(`{"v":1,"id":10,"op":"format-disk"}`), nil, wire.CodeInvalidRequest, 10},
		{"invalid utf-8", []byte("{\"v\":1,\"id\":11,\"op\":\"connect\",\"connect\":{\"network\":\"tcp\",\"address\":\"\xff:1\"}}"), nil, wire.CodeInvalidRequest, 11},
		{"embedded NUL", []byte(`{"v":1,"id":12,"op":"connect","connect":{"network":"tcp","address":"localhost\u0000.evil:1"}}`), nil, wire.CodeInvalidRequest, 12},
		{"oversize", big, nil, wire.CodeInvalidRequest, 0},
		{"carries an fd", []byte(`{"v":1,"id":13,"op":"connect","connect":{"network":"tcp","address":"127.0.0.1:1"}}`), unix.UnixRights(int(devnull.Fd())), wire.CodeInvalidRequest, 0},
	}
	buf := make([]byte, wire.MaxMessageSize)
	oob := make([]byte, 256)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := uc.WriteMsgUnix(tc.msg, tc.oob, nil); err != nil {
				t.Fatalf("send: %v", err)
			}
			uc.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			if oobn != 0 {
				t.Fatalf("error reply carried %d bytes of control data", oobn)
			}
			rep, err := wire.DecodeReply(buf[:n])
			if err != nil {
				t.Fatalf("undecodable reply %q: %v", buf[:n], err)
			}
			if rep.Error == nil || rep.Error.Code != tc.code || rep.ID != tc.id {
				t.Fatalf("reply %s; want error code %s for id %d", buf[:n], tc.code, tc.id)
			}
		})
	}
	// Other clients were never affected, and this one is still served.
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	other := d.client()
	c, err := other.DialContext(context.Background(), "tcp", echo)
	if err != nil {
		t.Fatalf("another client after the hostile input: %v", err)
	}
	c.Close()
}

// TestIntegrationLogFlush: info lines wait to be written together (here for
// up to an hour), a warning is written at once with every line before it, in
// order, and shutdown writes what is still waiting.
func TestIntegrationLogFlush(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sf.sock")
	cmd := exec.Command(bin.daemon, "-socket", sock, "-log-flush", "1h")
	log := &syncBuffer{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	c := &sockfactory.Client{Socket: sock}
	defer c.Close()
	ctx := context.Background()
	var (
		f   *os.File
		err error
	)
	waitFor(t, "the daemon to answer", func() bool {
		f, _, err = c.BindFile(ctx, "tcp", "127.0.0.1:0", nil)
		return err == nil
	})
	f.Close()
	if strings.Contains(log.String(), "msg=grant") {
		t.Fatalf("the grant was written at once; want it held with -log-flush 1h:\n%s", log)
	}
	// All addresses are not loopback: the built-in policy denies it
	// before any socket is made.
	if _, _, err := c.BindFile(ctx, "tcp", "0.0.0.0:0", nil); !errors.Is(err, sockfactory.ErrDenied) {
		t.Fatalf("bind of all addresses: %v, want ErrDenied", err)
	}
	waitFor(t, "the denial in the log", func() bool { return strings.Contains(log.String(), "msg=deny") })
	out := log.String()
	if g, d := strings.Index(out, "msg=grant"), strings.Index(out, "msg=deny"); g < 0 || g > d {
		t.Fatalf("want the held grant written before the denial:\n%s", out)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, log)
	}
	exited <- nil // for the deferred Kill and wait
	if !strings.Contains(log.String(), `msg="shutting down"`) {
		t.Fatalf("the last info line was lost at exit:\n%s", log)
	}
}
