package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// childOf returns the pid of a process whose parent is ppid, or 0.
func childOf(t *testing.T, ppid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			return pid
		}
	}
	return 0
}

// procStatus returns a field of /proc/pid/status.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// TestIntegrationLeastPrivilege: started as root with user = "nobody", the
// daemon serves as uid 65534 holding only CAP_NET_BIND_SERVICE, and still
// hands out port 53 (in a network namespace of its own: the host's port
// 53 may be taken).
func TestIntegrationLeastPrivilege(t *testing.T) {
	requireRoot(t)
	d, ns := startDaemonNetns(t, `
[daemon]
socket = "%SOCKET%"
socket_mode = "0666"
user = "nobody"

[[rule]]
name = "dns"
users = ["root"]
bind = ["udp:127.0.0.1:53", "tcp:127.0.0.1:53"]
`)
	// Ask the serving daemon, which answers only once it has taken its
	// new credentials, and take its pid from its log: a process seen as a
	// child before then may still be root, or not the daemon at all.
	if err := d.client().Reload(context.Background()); err != nil && !errors.Is(err, sockfactory.ErrDenied) {
		t.Fatalf("a request to the unprivileged daemon: %v", err)
	}
	var m []string
	waitFor(t, "the listening line with the serving daemon's pid", func() bool {
		m = regexp.MustCompile(`msg=listening .* pid=(\d+)`).FindStringSubmatch(d.log.String())
		return m != nil
	})
	child, _ := strconv.Atoi(m[1])
	if got := childOf(t, d.cmd.Process.Pid); got != child {
		t.Fatalf("the serving daemon (pid %d) is not the child of the started one (child %d)", child, got)
	}
	if got := procStatus(t, child, "Uid"); !strings.HasPrefix(got, "65534\t65534\t65534") {
		t.Fatalf("daemon uids: got %q; want 65534 (real, effective, saved)", got)
	}
	if got, want := procStatus(t, child, "CapEff"), fmt.Sprintf("%016x", 1<<10); got != want {
		t.Fatalf("daemon effective capabilities: got %s; want %s (CAP_NET_BIND_SERVICE only)", got, want)
	}
	waitFor(t, "the capability report in the log", func() bool {
		return strings.Contains(d.log.String(), "needed_capabilities_held=[CAP_NET_BIND_SERVICE]")
	})
	c := d.client()
	pc, err := c.ListenPacket(context.Background(), "udp", "127.0.0.1:53", nil)
	if err != nil {
		t.Fatalf("udp port 53 from the unprivileged daemon: %v", err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 512)
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			pc.WriteTo(buf[:n], from)
		}
	}()
	// A client in the daemon's namespace, where the socket is.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := ns.DialContext(ctx, "udp", "127.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("query"))
	buf := make([]byte, 16)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "query" {
		t.Fatalf("answer from port 53: got %q, %v", buf[:n], err)
	}
}

// TestIntegrationLimits: connection and socket limits refuse with
// limit_exceeded, and idle connections that hold nothing are closed while
// holders are kept.
func TestIntegrationLimits(t *testing.T) {
	requireRoot(t)
	d := startDaemon(t, `
[daemon]
socket = "%SOCKET%"

[limits]
connections_per_uid = 2
sockets_per_uid = 1
idle_timeout = "300ms"

[[rule]]
users = ["root"]
bind = ["tcp:127.0.0.1:*"]
`)
	ctx := context.Background()
	holder := d.client()
	l, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("first listen: %v", err)
	}
	defer l.Close()
	if _, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", nil); !errors.Is(err, sockfactory.ErrLimitExceeded) {
		t.Fatalf("second socket for the same uid: got %v; want ErrLimitExceeded", err)
	}

	// The holder is one connection; one more is allowed, a third refused.
	idle, err := net.Dial("unixpacket", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// Make sure the daemon has admitted it before the third one arrives.
	if _, err := idle.Write([]byte(`{"v":1,"id":1,"op":"status"}`)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, wire.MaxMessageSize)
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Read(buf); err != nil {
		t.Fatalf("second connection: no status reply: %v", err)
	}
	third, err := net.Dial("unixpacket", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := third.Read(buf)
	if err != nil {
		t.Fatalf("third connection: no reply: %v", err)
	}
	if rep, err := wire.DecodeReply(buf[:n]); err != nil || rep.Error == nil || rep.Error.Code != wire.CodeLimitExceeded {
		t.Fatalf("third connection: got %s; want a limit_exceeded reply", buf[:n])
	}

	// The idle connection is closed; the holder is not.
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := idle.Read(buf); err == nil && n > 0 {
		t.Fatalf("idle connection got data %q; want it closed", buf[:n])
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("idle connection still open after 10 s; want it closed after 300 ms")
	}
	st, err := holder.Status(ctx)
	if err != nil || len(st) != 1 || st[0].Refs != 1 {
		t.Fatalf("holder's status after the idle timeout: %+v, %v; want its socket still held", st, err)
	}
	// The line comes through the daemon's log pipe, maybe after the close.
	if !poll(5*time.Second, func() bool { return strings.Contains(d.log.String(), "closing idle connection") }) {
		t.Errorf("no log line for the idle close")
	}
}
