package server

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/testnet"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// fullQueue returns a loopback TCP address where a connect stays in
// progress for as long as the test lasts.
func fullQueue(t *testing.T) string {
	ap, _ := testnet.FullQueue(t)
	return ap.String()
}

// startServer serves a Server whose one rule grants the caller's uid what
// grant says (a TOML line such as `connect = ["127.0.0.1:*"]`), on a
// socket in a temporary directory, and returns it with the socket's path.
// It is closed when the test ends.
func startServer(tb testing.TB, grant string, o Options) (*Server, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "sf.sock")
	cfg, err := config.Parse("test.toml", []byte(fmt.Sprintf("[[rule]]\nname = \"t\"\nusers = [%d]\n%s\n", os.Getuid(), grant)))
	if err != nil {
		tb.Fatal(err)
	}
	o.Policy = cfg.Policy
	srv := New(o)
	tb.Cleanup(func() { srv.Close() })
	ln, err := Listen("unixpacket", path, 0o600, -1)
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(ln)
	return srv, path
}

// send sends one raw request packet.
func send(t *testing.T, c *net.UnixConn, req string) {
	t.Helper()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
}

// recvReply reads one reply, closing any fd it carries, and returns it
// with the number of fds.
func recvReply(t *testing.T, c *net.UnixConn) *wire.Reply {
	t.Helper()
	buf, oob := make([]byte, wire.MaxMessageSize), make([]byte, 128)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("reading a reply: %v", err)
	}
	closeRights(oob[:oobn])
	rep, err := wire.DecodeReply(buf[:n])
	if err != nil {
		t.Fatalf("reply %q: %v", buf[:n], err)
	}
	return rep
}

// TestConnectWaitMovesReader: a connect served by the connection's reader
// that has to wait hands the reading over, so the connection's next
// requests are answered first; the connection keeps working afterwards and
// its end is seen whichever goroutine reads then.
func TestConnectWaitMovesReader(t *testing.T) {
	stalled := fullQueue(t)
	ok := testnet.Sink(t).String()
	goroutines := runtime.NumGoroutine()
	srv, path := startServer(t, `connect = ["127.0.0.1:*"]`, Options{})
	nc, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.UnixConn)

	for round := 1; round <= 2; round++ {
		// Round 1 waits in run's goroutine, round 2 in the one that took
		// the reading over.
		id := uint64(10 * round)
		send(t, c, fmt.Sprintf(`{"v":1,"id":%d,"op":"connect","connect":{"network":"tcp","address":%q,"timeout_ms":1500}}`, id, stalled))
		send(t, c, fmt.Sprintf(`{"v":1,"id":%d,"op":"hello","hello":{"app":"x"}}`, id+1))
		send(t, c, fmt.Sprintf(`{"v":1,"id":%d,"op":"connect","connect":{"network":"tcp","address":%q}}`, id+2, ok))
		first, second := recvReply(t, c), recvReply(t, c)
		if first.ID != id+1 || !first.OK {
			t.Fatalf("round %d: first reply %+v; want the hello (id %d), not held up by the waiting connect", round, first, id+1)
		}
		if second.ID != id+2 || second.Error != nil || second.FDs != 1 {
			t.Fatalf("round %d: second reply %+v; want the connect to a listening address (id %d) with its socket", round, second, id+2)
		}
		last := recvReply(t, c)
		if last.ID != id || last.Error == nil || last.Error.Code != wire.CodeTimeout {
			t.Fatalf("round %d: last reply %+v; want the stalled connect (id %d) timed out", round, last, id)
		}
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions after the client left, want 0", n)
	}
	srv.Close()
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines after Close, want at most %d as before", n, goroutines)
	}
}

// TestLeaveCancelsWaitingConnect: a client that leaves while the first
// reader waits on its connect (and another goroutine reads) has its
// connect cancelled and its session ended at once, not at the connect's
// timeout.
func TestLeaveCancelsWaitingConnect(t *testing.T) {
	stalled := fullQueue(t)
	srv, path := startServer(t, `connect = ["127.0.0.1:*"]`, Options{ConnectTimeout: time.Hour})
	nc, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.UnixConn)
	send(t, c, fmt.Sprintf(`{"v":1,"id":1,"op":"connect","connect":{"network":"tcp","address":%q}}`, stalled))
	send(t, c, `{"v":1,"id":2,"op":"hello","hello":{"app":"x"}}`)
	if rep := recvReply(t, c); rep.ID != 2 {
		t.Fatalf("first reply %+v, want the hello", rep)
	}
	c.Close()
	// An hour is the connect's timeout: the session must end long
	// before, as soon as the departure is seen.
	deadline := time.Now().Add(30 * time.Second)
	for srv.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions after the client left, want 0", n)
	}
}
