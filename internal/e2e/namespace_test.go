package e2e

import (
	"bufio"
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
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

var nsqSeq atomic.Int32

// nsqAdd makes a named network namespace with lo up, removed when the
// test ends (unless the test removed it), and returns its name and a
// handle on it that outlives the name.
func nsqAdd(t *testing.T) (string, *testnet.Netns) {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		testnet.SkipOrFail(t, "ip (iproute2) is needed: apt-get install iproute2")
	}
	name := fmt.Sprintf("sfq-%d-%d", os.Getpid(), nsqSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testnet.SkipOrFail(t, fmt.Sprintf("ip netns add: %v: %s", err, out))
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := testnet.OpenNetnsPath("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	if err := ns.LoopbackUp(); err != nil {
		t.Fatal(err)
	}
	return name, ns
}

// nsqGreeter serves, in ns, a TCP server on 127.0.0.1:port (0: any) that
// writes greeting and then echoes one line back; it returns the address.
func nsqGreeter(t *testing.T, ns *testnet.Netns, port int, greeting string) string {
	t.Helper()
	l, err := ns.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, greeting+"\n")
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, "echo "+line)
			}()
		}
	}()
	return l.Addr().String()
}

// nsqDNS answers A queries on pc from records until the test ends.
func nsqDNS(t *testing.T, pc net.PacketConn, records map[string]string) {
	t.Helper()
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			rb := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RecursionAvailable: true})
			name := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
			a, ok := records[name]
			if !ok {
				rb = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RCode: dnsmessage.RCodeNameError})
			}
			rb.StartQuestions()
			rb.Question(q)
			rb.StartAnswers()
			if ok && q.Type == dnsmessage.TypeA {
				rb.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: netip.MustParseAddr(a).As4()})
			}
			if msg, err := rb.Finish(); err == nil {
				pc.WriteTo(msg, from)
			}
		}
	}()
}

// nsqExchange reads the greeting, sends a line and reads its echo.
func nsqExchange(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if got, err := r.ReadString('\n'); err != nil || got != want+"\n" {
		t.Fatalf("greeting: %q, %v; want %q", got, err, want)
	}
	io.WriteString(c, "ping\n")
	if got, err := r.ReadString('\n'); err != nil || got != "echo ping\n" {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

// nsqThreadsIn counts pid's threads whose network namespace is ns's.
func nsqThreadsIn(t *testing.T, pid int, ns *testnet.Netns) int {
	t.Helper()
	var want unix.Stat_t
	if err := unix.Stat(ns.Path(), &want); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	n := 0
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/task/%s/ns/net", pid, e.Name()), &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			n++
		}
	}
	return n
}

// TestIntegrationNamedNetnsConnect: a client in namespace A, a server only
// on B's loopback, the daemon in the default namespace: a connect naming B
// reaches it (Go client and CLI), a name resolves as B sees it (its own
// resolv.conf and a DNS server only B can reach, its own hosts file), and
// the answers are still checked against the policy; a namespace no rule
// covers is denied before it is looked up.
func TestIntegrationNamedNetnsConnect(t *testing.T) {
	b, bns := nsqAdd(t)
	a, _ := nsqAdd(t)
	other, _ := nsqAdd(t)
	etc := publicTempDir(t)
	os.MkdirAll(filepath.Join(etc, b), 0o755)
	os.WriteFile(filepath.Join(etc, b, "resolv.conf"), []byte("nameserver 127.0.0.53\noptions timeout:2 attempts:1\n"), 0o644)
	os.WriteFile(filepath.Join(etc, b, "hosts"), []byte("127.0.0.1 fromhosts.sfq.test\n"), 0o644)
	pc, err := bns.ListenPacket("udp", "127.0.0.53:53")
	if err != nil {
		t.Fatal(err)
	}
	nsqDNS(t, pc, map[string]string{"svc.sfq.test": "127.0.0.1", "bad.example": "127.0.0.9", "good.example": "127.0.0.1"})
	// The host's own resolver for the daemon's namespace answers otherwise.
	hostDNS, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nsqDNS(t, hostDNS, map[string]string{"svc.sfq.test": "127.0.0.2"})
	addr := nsqGreeter(t, bns, 0, "hello from B")
	_, port, _ := net.SplitHostPort(addr)

	d := startDaemon(t, fmt.Sprintf(`
[daemon]
socket = "%%SOCKET%%"
[netns]
etc_dir = %q
[resolver]
servers = [%q]
[[rule]]
name = "b"
users = [0]
netns = [%q]
connect = ["127.0.0.1:*", "*.sfq.test:*"]
`, etc, hostDNS.LocalAddr().String(), b))
	ctx := context.Background()
	c := d.client()
	base := -1
	// good.example is granted by its address in B (no name pattern
	// names it): resolved in B, checked, then connected.
	for _, target := range []string{addr, "svc.sfq.test:" + port, "fromhosts.sfq.test:" + port, "good.example:" + port} {
		conn, err := (&sockfactory.Dialer{Client: c, Netns: b}).DialContext(ctx, "tcp", target)
		if err != nil {
			t.Fatalf("connect to %s in %s: %v\n%s", target, b, err, d.log)
		}
		nsqExchange(t, conn, "hello from B")
		conn.Close()
		if base < 0 {
			// After the first request: the daemon keeps B open (for a
			// minute without requests), and c's connection.
			base = nsqBaseline(t, d, 1)
		}
	}
	if !strings.Contains(d.log.String(), "netns="+b+" netns_id=") {
		t.Errorf("no audit line names the namespace and its identity:\n%s", d.log)
	}
	// The same address in the daemon's own namespace is not granted
	// (the rule covers B only); a namespace no rule covers is denied, a
	// name whose answer in B the rule does not grant too.
	for _, c2 := range []struct{ ns, target, want string }{
		{"", addr, "no connect to"},
		{other, addr, "nothing in network namespace"},
		{b, "bad.example:" + port, "none of its addresses"},
	} {
		_, err := (&sockfactory.Dialer{Client: c, Netns: c2.ns}).DialContext(ctx, "tcp", c2.target)
		if !errors.Is(err, sockfactory.ErrDenied) || !strings.Contains(err.Error(), c2.want) {
			t.Errorf("connect to %s in %q: %v; want denied, saying %q", c2.target, c2.ns, err, c2.want)
		}
	}
	// The CLI, run in namespace A.
	out, errOut, code := runCLIIn(t, a, "ping\n", "--socket", d.socket, "connect", "--netns", b, "svc.sfq.test:"+port)
	if code != 0 || out != "hello from B\necho ping\n" {
		t.Errorf("sockfactory connect --netns %s in %s: exit %d, stdout %q, stderr %q", b, a, code, out, errOut)
	}
	if n := nsqThreadsIn(t, d.cmd.Process.Pid, bns); n != 0 {
		t.Errorf("%d daemon threads stay in %s, want none", n, b)
	}
	nsqWaitFDs(t, d, base)
}

// nsqBaseline returns the daemon's descriptor count once its sockets are
// its listener and open client connections (the harness's probes gone).
func nsqBaseline(t *testing.T, d *daemon, open int) int {
	t.Helper()
	var fds map[int]string
	waitFor(t, "the probe connections to end", func() bool {
		fds = testnet.ProcFDs(t, d.cmd.Process.Pid)
		n := 0
		for _, l := range fds {
			if strings.HasPrefix(l, "socket:") {
				n++
			}
		}
		return n == 1+open
	})
	return len(fds)
}

// nsqWaitFDs waits for the daemon's descriptor count to come back to
// base, not counting descriptors of the namespaces in keep (the daemon
// keeps a namespace it used open for a minute without requests).
func nsqWaitFDs(t *testing.T, d *daemon, base int, keep ...*testnet.Netns) {
	t.Helper()
	kept := map[string]bool{}
	for _, ns := range keep {
		var st unix.Stat_t
		if err := unix.Stat(ns.Path(), &st); err != nil {
			t.Fatal(err)
		}
		kept[fmt.Sprintf("net:[%d]", st.Ino)] = true
	}
	var got int
	if !poll(10*time.Second, func() bool {
		got = 0
		for _, l := range testnet.ProcFDs(t, d.cmd.Process.Pid) {
			if !kept[l] {
				got++
			}
		}
		return got == base
	}) {
		t.Errorf("daemon fds: got %d, want the baseline %d: %v", got, base, testnet.ProcFDs(t, d.cmd.Process.Pid))
	}
}

// runCLIIn runs the CLI inside the named namespace ns.
func runCLIIn(t *testing.T, ns, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin.cli}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// TestIntegrationNamedNetnsCaller: a process of uid 65534 in a namespace of
// its own gets TCP port 80 and UDP port 53 bound there (netns = caller):
// they work inside it, and are not the daemon's namespace's; the same
// request from the daemon's namespace is denied.
func TestIntegrationNamedNetnsCaller(t *testing.T) {
	cns, cn := nsqAdd(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		testnet.SkipOrFail(t, "setpriv (util-linux) is needed")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		testnet.SkipOrFail(t, "bash is needed for /dev/tcp")
	}
	d := startDaemon(t, `
[daemon]
socket = "%SOCKET%"
socket_mode = "0666"
[[rule]]
name = "containers"
users = [65534]
netns = ["caller"]
bind = ["tcp:*:80", "udp:*:53"]
`)
	base := nsqBaseline(t, d, 0)
	// Inside, the checker connects to its own port 80 (the passed
	// listener's backlog completes the handshake) and sends a datagram
	// to port 53, which it reads on the passed UDP socket (fd 4).
	check := `exec 5<>/dev/tcp/127.0.0.1/80 && echo tcp-ok; echo hi > /dev/udp/127.0.0.1/53 && timeout 5 head -c 3 <&4 && echo udp-ok`
	cmd := exec.Command("ip", "netns", "exec", cns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		bin.cli, "--socket", d.socket, "exec", "--netns", "caller", "--listen", "tcp://0.0.0.0:80", "--listen", "udp://0.0.0.0:53", "--", "bash", "-c", check)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "tcp-ok") || !strings.Contains(string(out), "hi\nudp-ok") {
		t.Fatalf("exec in %s as nobody: %v\n%s\n%s", cns, err, out, d.log)
	}
	if !strings.Contains(d.log.String(), "netns=caller netns_id=") {
		t.Errorf("no audit line for the caller's namespace:\n%s", d.log)
	}
	// The same from the daemon's own namespace: denied.
	_, errOut, code := runCLI(t, "", asUser(65534, 65534), "--socket", d.socket, "exec", "--netns", "caller", "--listen", "tcp://0.0.0.0:80", "--", "true")
	if code != 1 || !strings.Contains(errOut, "denied") {
		t.Errorf("netns caller from the daemon's namespace: exit %d, %q; want denied", code, errOut)
	}
	nsqWaitFDs(t, d, base, cn)
}

// TestIntegrationNamedNetnsClearwater: one daemon, two Clearwater
// listeners, one per namespace, each client gets its namespace's server
// at the same address, as two Clearwater daemons gave before.
func TestIntegrationNamedNetnsClearwater(t *testing.T) {
	mgmt, mns := nsqAdd(t)
	sig, sns := nsqAdd(t)
	addr := nsqGreeter(t, mns, 0, "management")
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	nsqGreeter(t, sns, p, "signalling")
	dir := publicTempDir(t)
	d := startDaemon(t, fmt.Sprintf(`
[daemon]
socket = "%%SOCKET%%"
[[clearwater]]
socket = "%s/mgmt.sock"
allowed_hosts = ["127.0.0.1"]
netns = %q
[[clearwater]]
socket = "%s/sig.sock"
allowed_hosts = ["127.0.0.1"]
netns = %q
`, dir, mgmt, dir, sig))
	waitFor(t, "the Clearwater listeners", func() bool { return strings.Count(d.log.String(), `msg="listening (clearwater)"`) == 2 })
	for _, c := range []struct{ sock, want string }{{"mgmt.sock", "management"}, {"sig.sock", "signalling"}} {
		r := cwRequest(t, filepath.Join(dir, c.sock), addr)
		fd := requireGrant(t, r, c.sock)
		dup, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(dup), "cw")
		conn, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		nsqExchange(t, conn, c.want)
		conn.Close()
	}
}

// TestIntegrationNamedNetnsGone: a namespace removed while sockets are
// cached there: the daemon notices, closes the idle one, keeps the held
// one working for its holder, leaves no thread there, and its descriptors
// return to the baseline once the holder lets go.
func TestIntegrationNamedNetnsGone(t *testing.T) {
	b, bns := nsqAdd(t)
	d := startDaemon(t, fmt.Sprintf(`
[daemon]
socket = "%%SOCKET%%"
[[rule]]
name = "b"
users = [0]
netns = [%q]
bind = ["tcp:127.0.0.1:*"]
linger = "1h"
admin = true
`, b))
	ctx := context.Background()
	holder := d.client()
	if _, err := holder.Status(ctx); err != nil {
		t.Fatal(err)
	}
	base := nsqBaseline(t, d, 1) // the holder's connection open
	held, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Netns: b})
	if err != nil {
		t.Fatalf("bind in %s: %v\n%s", b, err, d.log)
	}
	idle, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Netns: b})
	if err != nil {
		t.Fatal(err)
	}
	idle.Close() // released: it lingers in the daemon
	count := func() (int, bool) {
		st, err := holder.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hasHeld := false
		for _, s := range st {
			if s.Netns != b || s.NetnsID == "" {
				t.Errorf("status: socket %s netns %q %q; want %s and its identity", s.Addr, s.Netns, s.NetnsID, b)
			}
			hasHeld = hasHeld || s.Addr == held.Addr().String()
		}
		return len(st), hasHeld
	}
	if n, ok := count(); n != 2 || !ok {
		t.Fatalf("status before: %d sockets, held listed %v; want 2, true", n, ok)
	}
	if out, err := exec.Command("ip", "netns", "del", b).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	d.waitLog(t, "network namespace gone", "netns="+b)
	if n, ok := count(); n != 1 || !ok {
		t.Errorf("status after: %d sockets, held listed %v; want the held one only", n, ok)
	}
	// The holder's socket still works, in the namespace the test still
	// holds open.
	conn, err := bns.DialContext(ctx, "tcp", held.Addr().String())
	if err != nil {
		t.Fatalf("connecting to the held listener after the removal: %v", err)
	}
	acc, err := held.Accept()
	if err != nil {
		t.Fatal(err)
	}
	acc.Close()
	conn.Close()
	if n := nsqThreadsIn(t, d.cmd.Process.Pid, bns); n != 0 {
		t.Errorf("%d daemon threads in the removed namespace", n)
	}
	// A new bind, in the daemon's namespace, is still served (denied:
	// the rule covers B only), and B's name is gone.
	if _, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Netns: b}); err == nil || !strings.Contains(err.Error(), "ip netns add") {
		t.Errorf("bind in the removed namespace: %v; want not found", err)
	}
	held.Close()
	nsqWaitFDs(t, d, base)
}
