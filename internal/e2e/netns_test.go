package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

// One daemon for every network namespace: requests naming a namespace
// (a name under /run/netns, or "caller"), rules' netns, DNS as seen from
// inside a namespace, Clearwater listeners per namespace, and a namespace
// deleted under cached sockets. The namespaces are the tests' own, made
// with `ip netns add sft-PID-N` and deleted at cleanup; nothing here needs
// a host port free: servers listen on the namespaces' own loopbacks, on a
// port that testnet.ClosedPort holds closed on the host's.

// netnsSeq numbers the namespaces this test binary makes.
var netnsSeq atomic.Int32

// namedNetns is a network namespace named under /run/netns (`ip netns
// add`), lo up, held open by a descriptor that outlives its name.
type namedNetns struct {
	*testnet.Netns
	name string
	// id is the namespace's identity as the daemon prints it: the
	// device and inode of its nsfs file, "dev:ino".
	id string
}

// ipTool returns the path of iproute2's ip, skipping (or failing, with
// SOCKFACTORY_REQUIRE_ROOT=1) when it is missing.
func ipTool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("ip")
	if err != nil {
		testnet.SkipOrFail(t, "needs iproute2's ip to name network namespaces (install iproute2, e.g. apt-get install iproute2)")
	}
	return p
}

// newNamedNetns makes a namespace with `ip netns add sft-PID-N` and
// deletes it when the test ends (unless the test did).
func newNamedNetns(t testing.TB) *namedNetns {
	t.Helper()
	ip := ipTool(t)
	name := fmt.Sprintf("sft-%d-%d", os.Getpid(), netnsSeq.Add(1))
	path := filepath.Join("/run/netns", name)
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		testnet.SkipOrFail(t, fmt.Sprintf("cannot name a network namespace (ip netns add %s: %v: %s); run as root where /run/netns can be mounted", name, err, bytes.TrimSpace(out)))
	}
	t.Cleanup(func() {
		if _, err := os.Lstat(path); err == nil {
			if out, err := exec.Command(ip, "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		}
	})
	ns, err := testnet.OpenNetnsPath(path)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	t.Cleanup(func() { ns.Close() })
	if err := ns.LoopbackUp(); err != nil {
		t.Fatalf("bringing lo up in %s: %v", name, err)
	}
	return &namedNetns{Netns: ns, name: name, id: nsfsID(t, path)}
}

// del deletes the namespace's name (`ip netns del`); n's descriptor keeps
// the namespace itself alive.
func (n *namedNetns) del(t testing.TB) {
	t.Helper()
	if out, err := exec.Command(ipTool(t), "netns", "del", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", n.name, err, out)
	}
}

// nsfsID returns "dev:ino" of the namespace file at path (links followed,
// so /proc/PID/ns/net works too).
func nsfsID(t testing.TB, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// greeter serves on a listener made in ns at addr: each connection gets
// "hello from LABEL\n", then its bytes echoed until it closes. Closed when
// the test ends.
func greeter(t testing.TB, ns *testnet.Netns, addr, label string) string {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("server %s on %s in a namespace: %v", label, addr, err)
	}
	serveGreeting(t, l, label)
	return l.Addr().String()
}

func greetingOf(label string) string { return "hello from " + label + "\n" }

// expectGreeting reads the greeter's line on c, then sends msg and reads
// it back: bytes go both ways.
func expectGreeting(t *testing.T, c net.Conn, label, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	want := greetingOf(label)
	buf := make([]byte, len(want))
	if n, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
		t.Fatalf("greeting: got %q, %v; want %q (the server in namespace %s)", buf[:n], err, want, label)
	}
	roundTrip(t, c, msg)
}

// wantDaemonError checks that err is the daemon's error with code, its
// message holding every one of parts.
func wantDaemonError(t *testing.T, err error, what, code string, parts ...string) *sockfactory.Error {
	t.Helper()
	var e *sockfactory.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("%s: got %v; want the daemon's error with code %s", what, err, code)
	}
	for _, p := range parts {
		if !strings.Contains(e.Message, p) {
			t.Fatalf("%s: message %q; want it to hold %q", what, e.Message, p)
		}
	}
	return e
}

// netnsWarmUp makes the warm-up requests (which open what the daemon
// keeps: /etc/hosts, a namespace's descriptor), waits until their
// connection and the harness's probes are gone, and takes the descriptor
// baseline that cleanup checks. Clients made after it are closed before
// that check.
func netnsWarmUp(t *testing.T, d *daemon, warm func(c *sockfactory.Client)) int {
	t.Helper()
	base := netnsBaseline(t, d, warm)
	d.checkFDs()
	return base
}

// netnsBaseline is netnsWarmUp without the check at cleanup, for a test
// that checks the count itself, and fails fast.
func netnsBaseline(t *testing.T, d *daemon, warm func(c *sockfactory.Client)) int {
	t.Helper()
	c := &sockfactory.Client{Socket: d.socket, App: "warm-up"}
	warm(c)
	c.Close()
	waitFor(t, "warm-up connections to end", func() bool {
		log := d.log.String()
		n := strings.Count(log, "client connected")
		return n > 0 && n == strings.Count(log, "client disconnected")
	})
	return d.fds()
}

// netnsBindWarmUp binds and releases TCP 127.0.0.1:0 through c in each
// of namespaces ("" for the daemon's own).
func netnsBindWarmUp(t *testing.T, namespaces ...string) func(c *sockfactory.Client) {
	return func(c *sockfactory.Client) {
		t.Helper()
		for _, ns := range namespaces {
			f, b, err := c.BindFile(context.Background(), "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Netns: ns})
			if err != nil {
				t.Fatalf("warm-up bind in %q: %v", ns, err)
			}
			f.Close()
			if err := c.Release(context.Background(), b.Token); err != nil {
				t.Fatalf("warm-up release in %q: %v", ns, err)
			}
		}
	}
}

// runCmd runs argv with stdin and env (nil: PATH only) and returns
// stdout, stderr and the exit code.
func runCmd(t *testing.T, stdin string, env []string, argv ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = env
	if env == nil {
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %q: %v", argv, err)
	}
	return out.String(), errb.String(), 0
}

// netnsThreads returns, for each network namespace a thread of pid is in
// other than pid's own (its main thread's), how many threads are there.
func netnsThreads(t *testing.T, pid int) map[string]int {
	t.Helper()
	own := nsfsID(t, fmt.Sprintf("/proc/%d/ns/net", pid))
	links, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/ns/net", pid))
	if err != nil || len(links) == 0 {
		t.Fatalf("listing the threads of pid %d: %v", pid, err)
	}
	out := map[string]int{}
	for _, l := range links {
		var st unix.Stat_t
		if unix.Stat(l, &st) != nil {
			continue // the thread ended meanwhile
		}
		if id := fmt.Sprintf("%d:%d", st.Dev, st.Ino); id != own {
			out[id]++
		}
	}
	return out
}

// nsFDs counts pid's descriptors of the network namespace id ("dev:ino"),
// by what they are (a descriptor opened from /run/netns/NAME reads as that
// path, not as net:[INO]).
func nsFDs(t *testing.T, pid int, id string) int {
	t.Helper()
	n := 0
	for fd := range testnet.ProcFDs(t, pid) {
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), &st) == nil && fmt.Sprintf("%d:%d", st.Dev, st.Ino) == id {
			n++
		}
	}
	return n
}

// TestIntegrationNetnsConnect: with the daemon in the default namespace,
// a connect naming namespace B reaches a server that listens only on B's
// loopback (on a port held closed on the host's), bytes going both ways,
// from the Go client in the test process and from the CLI run in a
// namespace of its own (A); the same request without netns is refused by
// the host's closed port. A namespace no rule of the caller covers is
// denied before it is looked up (no netns_id in the audit line), as it is
// for uid 65534, whose rules cover only its own namespace and "other"; a
// covered name that does not exist says how to make it.
func TestIntegrationNetnsConnect(t *testing.T) {
	requireRoot(t)
	b := newNamedNetns(t)
	uncovered := newNamedNetns(t)
	missing := fmt.Sprintf("sft-%d-missing", os.Getpid())
	hostPort := testnet.ClosedPort(t)
	srv := greeter(t, b.Netns, hostPort.String(), "B")
	d := startDaemon(t, strings.NewReplacer("{B}", b.name, "{MISSING}", missing, "{ETC}", publicTempDir(t)).Replace(`
[daemon]
socket = "%SOCKET%"
socket_mode = "0666"

[netns]
etc_dir = "{ETC}"

[[rule]]
name = "root-b"
users = [0]
netns = ["{B}", "daemon", "{MISSING}"]
connect = ["127.0.0.1:*"]

[[rule]]
name = "nobody-other"
users = [65534]
netns = ["other"]
connect = ["127.0.0.1:*"]

[[rule]]
name = "nobody-own"
users = [65534]
connect = ["127.0.0.1:*"]
`))
	netnsWarmUp(t, d, func(c *sockfactory.Client) {
		f, err := c.ConnectFileWith(context.Background(), "tcp", srv, &sockfactory.ConnectOptions{Netns: b.name})
		if err != nil {
			t.Fatalf("warm-up connect in %s: %v\n%s", b.name, err, d.log)
		}
		f.Close()
	})
	c := d.client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("go client, netns B", func(t *testing.T) {
		conn, err := (&sockfactory.Dialer{Client: c, Netns: b.name}).DialContext(ctx, "tcp", srv)
		if err != nil {
			t.Fatalf("dial %s with netns %s: %v", srv, b.name, err)
		}
		defer conn.Close()
		if got := conn.RemoteAddr().String(); got != srv {
			t.Errorf("remote address: got %s; want %s", got, srv)
		}
		expectGreeting(t, conn, "B", "ping from the test process\n")
		d.waitLog(t, "msg=grant", "address="+srv, "netns="+b.name+" ", "netns_id="+b.id, pidField(os.Getpid()))
	})
	t.Run("go client, no netns", func(t *testing.T) {
		f, err := c.ConnectFileWith(ctx, "tcp", srv, nil)
		if err == nil {
			f.Close()
			t.Fatalf("connect to %s in the daemon's namespace succeeded; want it refused (the port is held closed there)", srv)
		}
		wantDaemonError(t, err, "connect without netns", "connect_failed")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connect without netns: got %v; want ECONNREFUSED reachable", err)
		}
	})
	t.Run("go client, uncovered namespace", func(t *testing.T) {
		f, err := c.ConnectFileWith(ctx, "tcp", srv, &sockfactory.ConnectOptions{Netns: uncovered.name})
		if err == nil {
			f.Close()
			t.Fatalf("connect with netns %s (no rule covers it) succeeded; want denied", uncovered.name)
		}
		wantDaemonError(t, err, "connect in an uncovered namespace", "denied", uncovered.name)
		line := d.waitLog(t, "msg=deny", "netns="+uncovered.name+" ")
		if strings.Contains(line, "netns_id=") {
			t.Errorf("denial of an uncovered namespace names its identity, so it was looked up: %s", line)
		}
	})
	t.Run("go client, covered name missing", func(t *testing.T) {
		f, err := c.ConnectFileWith(ctx, "tcp", srv, &sockfactory.ConnectOptions{Netns: missing})
		if err == nil {
			f.Close()
			t.Fatalf("connect with netns %s (no such namespace) succeeded", missing)
		}
		wantDaemonError(t, err, "connect in a missing namespace", "not_found", "ip netns add "+missing)
	})
	t.Run("cli in namespace A, netns B", func(t *testing.T) {
		msg := "ping from namespace A\n"
		out, errOut, code := runCLI(t, msg, inNewNetns(), "connect", "-socket", d.socket, "--netns", b.name, srv)
		if want := greetingOf("B") + msg; code != 0 || out != want {
			t.Fatalf("sockfactory connect --netns %s %s in a new namespace: exit %d, stdout %q, stderr %q; want exit 0, stdout %q", b.name, srv, code, out, errOut, want)
		}
	})
	t.Run("cli in namespace A, no netns", func(t *testing.T) {
		out, errOut, code := runCLI(t, "x\n", inNewNetns(), "connect", "-socket", d.socket, srv)
		if code != 1 || !strings.Contains(errOut, "connection refused") {
			t.Fatalf("sockfactory connect %s without --netns: exit %d, stdout %q, stderr %q; want exit 1, connection refused", srv, code, out, errOut)
		}
	})
	t.Run("cli as uid 65534, rules without B", func(t *testing.T) {
		out, errOut, code := runCLI(t, "x\n", inNewNetnsAs(65534, 65534), "connect", "-socket", d.socket, "--netns", b.name, srv)
		if code != 1 || !strings.Contains(errOut, "denied") {
			t.Fatalf("sockfactory connect --netns %s as uid 65534: exit %d, stdout %q, stderr %q; want exit 1, denied", b.name, code, out, errOut)
		}
		line := d.waitLog(t, "msg=deny", "uid=65534 ", "netns="+b.name+" ")
		if strings.Contains(line, "netns_id=") {
			t.Errorf("denial of uid 65534 in %s names the namespace's identity, so it was looked up first: %s", b.name, line)
		}
		// Its own namespace it may use.
		out, errOut, code = runCLI(t, "x\n", asUser(65534, 65534), "connect", "-socket", d.socket, srv)
		if code != 1 || !strings.Contains(errOut, "connection refused") {
			t.Fatalf("sockfactory connect %s as uid 65534 in the daemon's namespace: exit %d, stdout %q, stderr %q; want the host's closed port refused", srv, code, out, errOut)
		}
	})
}

// TestIntegrationNetnsDNS: a name in a connect with netns = B is resolved
// as inside B: B's resolv.conf under [netns] etc_dir names 127.0.0.53, a
// DNS server on B's own loopback (only a query sent from inside B reaches
// it), and B's hosts file there is read; [resolver.netns] replaces a
// namespace's name servers (E's resolv.conf names one nobody runs). The
// daemon's own namespace asks [resolver] servers, which answer otherwise.
// Every answer is still checked against the rule: only 127.0.0.1 is
// granted, so a name resolving to 127.0.0.9 in B, or to 127.0.0.2 in the
// daemon's namespace, is denied.
func TestIntegrationNetnsDNS(t *testing.T) {
	requireRoot(t)
	b := newNamedNetns(t)
	e := newNamedNetns(t)
	hostPort := testnet.ClosedPort(t)
	srv := greeter(t, b.Netns, hostPort.String(), "B")
	greeter(t, e.Netns, hostPort.String(), "E")
	p := strconv.Itoa(int(hostPort.Port()))
	lo, bad, other := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.9"), netip.MustParseAddr("127.0.0.2")

	pc, err := b.ListenPacket("udp", "127.0.0.53:53")
	if err != nil {
		t.Fatalf("DNS server on 127.0.0.53:53 in %s: %v", b.name, err)
	}
	dnsB := testnet.ServeDNS(t, pc, map[string][]netip.Addr{"svc.sft.test": {lo}, "bad.sft.test": {bad}})
	pc, err = e.ListenPacket("udp", "127.0.0.1:5353")
	if err != nil {
		t.Fatalf("DNS server on 127.0.0.1:5353 in %s: %v", e.name, err)
	}
	dnsE := testnet.ServeDNS(t, pc, map[string][]netip.Addr{"svc.sft.test": {lo}})
	pc, err = net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsHost := testnet.ServeDNS(t, pc, map[string][]netip.Addr{"svc.sft.test": {other}})

	etc := publicTempDir(t)
	files := map[string]string{
		b.name + "/resolv.conf": "nameserver 127.0.0.53\noptions timeout:2 attempts:2\n",
		b.name + "/hosts":       "127.0.0.1\thostsonly.sft.test\n",
		e.name + "/resolv.conf": "nameserver 127.0.0.54\noptions timeout:2 attempts:2\n",
	}
	for name, text := range files {
		path := filepath.Join(etc, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := startDaemon(t, strings.NewReplacer("{B}", b.name, "{E}", e.name, "{ETC}", etc, "{DNS}", dnsHost.Addr()).Replace(`
[daemon]
socket = "%SOCKET%"

[resolver]
servers = ["{DNS}"]

[resolver.netns]
{E} = ["127.0.0.1:5353"]

[netns]
etc_dir = "{ETC}"

[[rule]]
name = "root-loopback"
users = [0]
netns = ["{B}", "{E}", "daemon"]
connect = ["127.0.0.1:*"]
`))
	netnsWarmUp(t, d, func(c *sockfactory.Client) {
		for _, ns := range []string{b.name, e.name} {
			f, err := c.ConnectFileWith(context.Background(), "tcp", srv, &sockfactory.ConnectOptions{Netns: ns})
			if err != nil {
				t.Fatalf("warm-up connect in %s: %v\n%s", ns, err, d.log)
			}
			f.Close()
		}
	})
	c := d.client()

	type counts struct{ b, e, host int }
	svcQueries := func() counts {
		return counts{dnsB.Queries("svc.sft.test"), dnsE.Queries("svc.sft.test"), dnsHost.Queries("svc.sft.test")}
	}
	cases := []struct {
		name, netns, host string
		label             string   // the server reached; "" for a failure
		code              string   // the daemon's error code
		msg               []string // in its message
		asked             counts   // which servers got svc.sft.test queries: 1 for some, 0 for none
	}{
		{name: "B's DNS server", netns: b.name, host: "svc.sft.test", label: "B", asked: counts{1, 0, 0}},
		{name: "B's hosts file", netns: b.name, host: "hostsonly.sft.test", label: "B"},
		{name: "B's answer not granted", netns: b.name, host: "bad.sft.test", code: "denied", msg: []string{"127.0.0.9"}},
		{name: "unknown in B", netns: b.name, host: "nx.sft.test", code: "resolve_failed"},
		{name: "resolver.netns servers", netns: e.name, host: "svc.sft.test", label: "E", asked: counts{0, 1, 0}},
		{name: "B's hosts file is not E's", netns: e.name, host: "hostsonly.sft.test", code: "resolve_failed"},
		{name: "daemon's namespace, answer not granted", host: "svc.sft.test", code: "denied", msg: []string{"127.0.0.2"}, asked: counts{0, 0, 1}},
		{name: "B's hosts file is not the daemon's", host: "hostsonly.sft.test", code: "resolve_failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			before := svcQueries()
			addr := net.JoinHostPort(tc.host, p)
			conn, err := (&sockfactory.Dialer{Client: c, Netns: tc.netns}).DialContext(ctx, "tcp", addr)
			if tc.label != "" {
				if err != nil {
					t.Fatalf("dial %s with netns %q: %v", addr, tc.netns, err)
				}
				defer conn.Close()
				expectGreeting(t, conn, tc.label, "via "+tc.host+"\n")
			} else {
				if err == nil {
					conn.Close()
					t.Fatalf("dial %s with netns %q succeeded; want %s", addr, tc.netns, tc.code)
				}
				wantDaemonError(t, err, "dial "+addr, tc.code, tc.msg...)
			}
			after := svcQueries()
			got := counts{min(after.b-before.b, 1), min(after.e-before.e, 1), min(after.host-before.host, 1)}
			if got != tc.asked {
				t.Errorf("DNS servers asked for svc.sft.test (B's, E's, the host's; 1 = some query): got %v; want %v", got, tc.asked)
			}
		})
	}
}

// TestIntegrationNetnsCaller: uid 65534, run inside a namespace C the test
// made, asks with netns = "caller" for TCP port 80 and UDP port 53 (rule:
// netns = ["caller"], bind tcp:*:80 and udp:*:53) and gets them bound
// inside C: the program `sockfactory exec` runs answers on C's 127.0.0.1,
// C's /proc/net lists the sockets' inodes and the host's does not, and
// status says caller/C's identity. The same request from the daemon's own
// namespace is denied: a "caller" grant does not cover it.
func TestIntegrationNetnsCaller(t *testing.T) {
	requireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testnet.SkipOrFail(t, "needs util-linux's setpriv to run a program as uid 65534 in a named namespace (apt-get install util-linux)")
	}
	ip := ipTool(t)
	cns := newNamedNetns(t)
	d := startDaemon(t, bindBase+`
[[rule]]
name = "nobody-caller"
users = [65534]
netns = ["caller"]
bind = ["tcp:*:80", "udp:*:53"]

[[rule]]
name = "root-admin"
users = [0]
bind = ["tcp:127.0.0.1:*"]
admin = true
`)
	// As nobody inside C: ip netns exec C setpriv ... sockfactory exec ...
	inC := func(args ...string) []string {
		return append([]string{ip, "netns", "exec", cns.name, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin.cli, "exec", "-socket", d.socket}, args...)
	}
	// The warm-up includes a request from C: the daemon then keeps C's
	// descriptor (until C is idle a minute), in the baseline.
	netnsWarmUp(t, d, func(c *sockfactory.Client) {
		f, b, err := c.BindFile(context.Background(), "tcp", "127.0.0.1:0", nil)
		if err != nil {
			t.Fatalf("warm-up bind: %v", err)
		}
		f.Close()
		if err := c.Release(context.Background(), b.Token); err != nil {
			t.Fatal(err)
		}
		if out, errOut, code := runCmd(t, "", nil, inC("--netns", "caller", "--listen", "tcp://0.0.0.0:80", "--", "/bin/true")...); code != 0 {
			t.Fatalf("warm-up exec in %s as uid 65534: exit %d, stdout %q, stderr %q\n%s", cns.name, code, out, errOut, d.log)
		}
	})
	admin := d.client()
	ctx := bindCtx(t)
	daemonNS := nsfsID(t, fmt.Sprintf("/proc/%d/ns/net", d.cmd.Process.Pid))

	prog := bindPublicBinary(t)
	p := bindStartProc(t, ip, bindHelperEnv(d, "bind-listenfds"), nil,
		inC("--netns", "caller", "--listen", "tcp://0.0.0.0:80", "--listen", "udp://0.0.0.0:53", "--", prog, "-test.run=^$", "serve")[1:]...)
	ready := p.expect(t, "READY")
	if f := strings.Fields(ready); len(f) != 5 || f[2] != "fds=2" || f[3] != "tcp-80=0.0.0.0:80" || f[4] != "udp-53=0.0.0.0:53" {
		t.Fatalf("program's view of LISTEN_FDS: %q; want fds=2 tcp-80=0.0.0.0:80 udp-53=0.0.0.0:53", ready)
	}
	execPID := p.pid()

	st := bindStatus(t, admin)
	for _, k := range [][2]string{{"tcp", "0.0.0.0:80"}, {"udp", "0.0.0.0:53"}} {
		s := bindFind(st, k[0], k[1])
		if s == nil || len(s.Holders) != 1 || s.Holders[0].UID != 65534 || s.Holders[0].PID != int32(execPID) {
			t.Fatalf("status: %s %s: got %+v; want one holder, uid 65534 pid %d", k[0], k[1], s, execPID)
		}
		if s.Netns != "caller" || s.NetnsID != cns.id || s.NetnsID == daemonNS {
			t.Errorf("status: %s %s in netns %q %q; want caller %s (C's), not the daemon's %s", k[0], k[1], s.Netns, s.NetnsID, cns.id, daemonNS)
		}
	}
	for _, s := range netnsStatusJSON(t, d) {
		if s.Netns != "caller" || s.NetnsID != cns.id {
			t.Errorf("status --json: %s %s in netns %q %q; want caller %s", s.Network, s.Addr, s.Netns, s.NetnsID, cns.id)
		}
	}
	out, errOut, code := runCLI(t, "", nil, "status", "-socket", d.socket)
	if f := netnsTableRow(out, "tcp 0.0.0.0:80"); code != 0 || f == nil || f[len(f)-1] != "caller/"+cns.id {
		t.Errorf("sockfactory status: exit %d, stderr %q; want the row of tcp 0.0.0.0:80 to end in caller/%s:\n%s", code, errOut, cns.id, out)
	}

	// Read while the program waits for its clients: C's tables are those
	// of a process in C.
	daemonSockets := map[string]bool{}
	for _, target := range testnet.ProcFDs(t, d.cmd.Process.Pid) {
		daemonSockets[target] = true
	}
	for _, k := range []struct{ table, state string }{{"tcp", "0A"}, {"udp", "07"}} {
		port := map[string]uint16{"tcp": 80, "udp": 53}[k.table]
		inodes := procNetInodes(t, fmt.Sprintf("/proc/%d/net/%s", execPID, k.table), port, k.state)
		if len(inodes) != 1 || !daemonSockets["socket:["+inodes[0]+"]"] {
			t.Fatalf("/proc/net/%s in C: sockets on 0.0.0.0:%d: inodes %v; want one, which the daemon holds", k.table, port, inodes)
		}
		host, err := os.ReadFile("/proc/self/net/" + k.table)
		if err != nil {
			t.Fatal(err)
		}
		if procNetHasInode(host, inodes[0]) {
			t.Errorf("/proc/net/%s in the daemon's namespace lists inode %s, the socket bound for C", k.table, inodes[0])
		}
	}

	conn, err := cns.DialContext(ctx, "tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatalf("connect to 127.0.0.1:80 inside C: %v", err)
	}
	defer conn.Close()
	roundTripAnswer(t, conn, "over tcp\n", "tcp got: over tcp\n")
	uc, err := cns.DialContext(ctx, "udp", "127.0.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	roundTripAnswer(t, uc, "over udp", "udp got: over udp")
	if got := p.expect(t, "GOT"); got != `GOT tcp "over tcp\n" udp "over udp"` {
		t.Errorf("program's report: %q", got)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("sockfactory exec: exit %d; want the program's 0\n%s", code, p.stderr)
	}
	waitFor(t, "the program's sockets to be released", func() bool { return len(bindStatus(t, admin)) == 0 })

	t.Run("denied in the daemon's namespace", func(t *testing.T) {
		out, errOut, code := runCLI(t, "", asUser(65534, 65534), "exec", "-socket", d.socket, "--netns", "caller", "--listen", "tcp://0.0.0.0:80", "--", "/bin/true")
		if code != 1 || !strings.Contains(errOut, "denied") {
			t.Fatalf("sockfactory exec --netns caller as uid 65534 in the daemon's namespace: exit %d, stdout %q, stderr %q; want exit 1, denied", code, out, errOut)
		}
		d.waitLog(t, "msg=deny", "uid=65534 ", "netns=caller ", "netns_id="+daemonNS)
	})
}

// netnsTableRow returns the fields of the row of `sockfactory status`
// for key ("tcp 0.0.0.0:80"), or nil.
func netnsTableRow(table, key string) []string {
	for l := range strings.SplitSeq(table, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0]+" "+f[1] == key {
			return f
		}
	}
	return nil
}

// procNetInodes returns the inodes of the sockets in a /proc/net/tcp or
// udp table whose local port is port and state st (hex, 0A: listening).
func procNetInodes(t *testing.T, path string, port uint16, st string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] == "sl" {
			continue
		}
		_, hexPort, _ := strings.Cut(f[1], ":")
		if hexPort == fmt.Sprintf("%04X", port) && f[3] == st {
			out = append(out, f[9])
		}
	}
	return out
}

// procNetHasInode reports whether a /proc/net table lists inode.
func procNetHasInode(table []byte, inode string) bool {
	for l := range strings.SplitSeq(string(table), "\n") {
		if f := strings.Fields(l); len(f) >= 10 && f[9] == inode {
			return true
		}
	}
	return false
}

// TestIntegrationNetnsClearwater: one daemon with two Clearwater listeners,
// one per namespace (B and D, each with a server on its own loopback at
// the same port, greeting differently), replaces the two Clearwater
// processes of a management + signalling deployment: the unmodified C
// client on each listener reaches the server of that listener's
// namespace, by address and by a name that only the namespaces' hosts
// files (under [netns] etc_dir) know.
func TestIntegrationNetnsClearwater(t *testing.T) {
	requireRoot(t)
	clearwaterClient(t) // skip before starting anything when gcc is missing
	b, nd := newNamedNetns(t), newNamedNetns(t)
	hostPort := testnet.ClosedPort(t)
	greeter(t, b.Netns, hostPort.String(), "B")
	greeter(t, nd.Netns, hostPort.String(), "D")
	p := strconv.Itoa(int(hostPort.Port()))
	listeners := strings.NewReplacer("{B}", b.name, "{D}", nd.name).Replace(`
[netns]
etc_dir = "%DIR%/netns"

[[clearwater]]
socket = "%DIR%/clearwater_management_namespace_socket"
allowed_hosts = ["127.0.0.1", "sas.sft.test"]
netns = "{B}"

[[clearwater]]
socket = "%DIR%/clearwater_signaling_namespace_socket"
allowed_hosts = ["127.0.0.1", "sas.sft.test"]
netns = "{D}"
`)
	d := startCWDaemon(t, nil, listeners, func(dir string) {
		for _, ns := range []string{b.name, nd.name} {
			nsDir := filepath.Join(dir, "netns", ns)
			if err := os.MkdirAll(nsDir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, text := range map[string]string{"hosts": "127.0.0.1 sas.sft.test\n", "resolv.conf": "nameserver 127.0.0.53\n"} {
				if err := os.WriteFile(filepath.Join(nsDir, name), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
	mgmt, sig := d.cwPath("clearwater_management_namespace_socket"), d.cwPath("clearwater_signaling_namespace_socket")
	d.cwWarmUp(t, [2]string{mgmt, hostPort.String()}, [2]string{sig, hostPort.String()}, [2]string{mgmt, "sas.sft.test:" + p}, [2]string{sig, "sas.sft.test:" + p})

	for _, l := range []struct {
		sock  string
		ns    *namedNetns
		label string
	}{{mgmt, b, "B"}, {sig, nd, "D"}} {
		for _, target := range []string{hostPort.String(), "sas.sft.test:" + p} {
			t.Run(filepath.Base(l.sock)+"/"+target, func(t *testing.T) {
				// The C client sends a line as long as the greeting and
				// prints what it reads back: the greeting.
				want := greetingOf(l.label)
				line := strings.Repeat("x", len(want)-1) + "\n"
				out, errOut, code, pid := runCWClient(t, inNewNetns(), l.sock, target, line)
				if code != 0 || out != want {
					t.Fatalf("C client on %s asking for %s: exit %d, stdout %q, stderr %q; want exit 0 and %q (the server in %s)", filepath.Base(l.sock), target, code, out, errOut, want, l.ns.name)
				}
				d.waitLog(t, "msg=grant", "socket="+l.sock, pidField(pid), "request="+target+" ", "netns="+l.ns.name+" ", "netns_id="+l.ns.id)
			})
		}
	}
}

// TestIntegrationNetnsDeleted: B is deleted (`ip netns del`) while the
// daemon caches two sockets bound in it (linger 1h): one held by a
// connected client, one released and lingering. The daemon notices, logs
// it, closes the lingering one and drops B's descriptor, and keeps
// serving; the held one stays listed and keeps working (a connection made
// inside B, through a descriptor of B opened before the deletion, reaches
// it); no thread of the daemon is in B; a new request naming B says how to
// make it. Once the holder releases, the socket closes at once (no
// linger), and the daemon's descriptors and foreign threads are back to
// the baseline.
func TestIntegrationNetnsDeleted(t *testing.T) {
	requireRoot(t)
	b := newNamedNetns(t)
	d, _ := startBindDaemon(t, strings.ReplaceAll(bindBase+`
[[rule]]
name = "root-b"
users = [0]
netns = ["{B}"]
bind = ["tcp:127.0.0.1:*"]
linger = "1h"

[[rule]]
name = "root-admin"
users = [0]
bind = ["tcp:127.0.0.1:*"]
admin = true
`, "{B}", b.name))
	pid := d.cmd.Process.Pid
	admin := bindClient(t, d, "admin")
	base := bindOpen(t, d, admin)
	ctx := bindCtx(t)
	inB := &sockfactory.ListenOptions{Netns: b.name}

	holder := bindClient(t, d, "holder")
	held, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", inB)
	if err != nil {
		t.Fatalf("listen in %s: %v", b.name, err)
	}
	heldAddr := serveEcho(t, held)
	conn, err := b.DialContext(ctx, "tcp", heldAddr)
	if err != nil {
		t.Fatalf("connect to the held listener %s inside %s: %v", heldAddr, b.name, err)
	}
	defer conn.Close()
	roundTrip(t, conn, "before the deletion\n")

	releaser := bindClient(t, d, "releaser")
	f, lb, err := releaser.BindFile(ctx, "tcp", "127.0.0.1:0", inB)
	if err != nil {
		t.Fatalf("bind in %s: %v", b.name, err)
	}
	f.Close()
	if err := releaser.Release(ctx, lb.Token); err != nil {
		t.Fatal(err)
	}
	st := bindStatus(t, admin)
	if s := bindFind(st, "tcp", lb.Addr); s == nil || s.Refs != 0 || s.NetnsID != b.id {
		t.Fatalf("status of the released socket: got %+v; want it lingering in %s", s, b.id)
	}
	if s := bindFind(st, "tcp", heldAddr); s == nil || s.Refs != 1 || s.NetnsID != b.id {
		t.Fatalf("status of the held socket: got %+v; want one reference in %s", s, b.id)
	}
	if n := nsFDs(t, pid, b.id); n != 1 {
		t.Errorf("daemon descriptors of %s before the deletion: got %d; want 1", b.name, n)
	}

	b.del(t)
	line := d.waitLog(t, `msg="network namespace gone`, "netns_id="+b.id)
	if !strings.Contains(line, "closed=1") {
		t.Errorf("log line: %s; want closed=1 (the lingering socket)", line)
	}

	st = bindStatus(t, admin) // still serving
	if s := bindFind(st, "tcp", lb.Addr); s != nil {
		t.Errorf("status after the deletion lists the lingering socket %+v; want it closed", s)
	}
	if s := bindFind(st, "tcp", heldAddr); s == nil || s.Refs != 1 {
		t.Errorf("status after the deletion: held socket %+v; want it listed with its reference", s)
	}
	own, err := admin.Listen(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("listen in the daemon's namespace after the deletion: %v", err)
	}
	own.Close()
	_, _, err = admin.BindFile(ctx, "tcp", "127.0.0.1:0", inB)
	wantDaemonError(t, err, "bind in the deleted "+b.name, "not_found", "ip netns add "+b.name)

	conn2, err := b.DialContext(ctx, "tcp", heldAddr)
	if err != nil {
		t.Fatalf("connect to the held listener inside the deleted %s: %v", b.name, err)
	}
	defer conn2.Close()
	roundTrip(t, conn2, "after the deletion\n")
	roundTrip(t, conn, "the old connection too\n")
	if th := netnsThreads(t, pid); th[b.id] != 0 {
		t.Errorf("daemon threads inside the deleted %s: %d; want 0 (all: %v)", b.name, th[b.id], th)
	}
	waitFor(t, "the daemon to close its descriptor of the deleted namespace", func() bool { return nsFDs(t, pid, b.id) == 0 })

	held.Close()
	holder.Close()
	releaser.Close()
	conn.Close()
	conn2.Close()
	waitFor(t, "the held socket to go", func() bool { return bindFind(bindStatus(t, admin), "tcp", heldAddr) == nil })
	if err := bindPortFreeIn(b.Netns, "tcp", heldAddr); err != nil {
		t.Errorf("binding %s in %s after its last reference went: %v; want it free (no linger in a deleted namespace)", heldAddr, b.name, err)
	}
	bindWaitFDs(t, d, base)
	if th := netnsThreads(t, pid); len(th) != 0 {
		t.Errorf("daemon threads in namespaces other than its own: %v; want none", th)
	}
}

// netnsStatusJSON is `sockfactory status --json`'s sockets, as root.
func netnsStatusJSON(t *testing.T, d *daemon) []sockfactory.SocketStatus {
	t.Helper()
	out, errOut, code := runCLI(t, "", nil, "status", "--json", "-socket", d.socket)
	if code != 0 {
		t.Fatalf("sockfactory status --json: exit %d, %s", code, errOut)
	}
	var js struct {
		Sockets []sockfactory.SocketStatus `json:"sockets"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		t.Fatalf("sockfactory status --json: %v\n%s", err, out)
	}
	return js.Sockets
}

// netnsBindConfig lets root bind TCP and UDP on 127.0.0.1 in the
// namespaces {NS} lists ({LINGER}: a linger line, or none), and in the
// daemon's own, where it is an admin and nothing lingers.
const netnsBindConfig = bindBase + `
[[rule]]
name = "root-netns"
users = [0]
netns = [{NS}]
bind = ["*:127.0.0.1:*"]
{LINGER}

[[rule]]
name = "root-admin"
users = [0]
bind = ["*:127.0.0.1:*"]
admin = true
`

func netnsBindDaemonConfig(linger string, names ...string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	if linger != "" {
		linger = "linger = " + strconv.Quote(linger)
	}
	return strings.NewReplacer("{NS}", strings.Join(q, ", "), "{LINGER}", linger).Replace(netnsBindConfig)
}

// TestIntegrationNetnsBindKey: the same address and port bound in two
// namespaces are two sockets (the cache key holds the namespace's
// identity): a bind with share "none" in D of the address held in B
// succeeds, with another socket, and each answers inside its own
// namespace; a second bind in B of that address is refused as a share
// conflict. Status lists both, with NETNS NAME/DEV:INO.
func TestIntegrationNetnsBindKey(t *testing.T) {
	requireRoot(t)
	b, nd := newNamedNetns(t), newNamedNetns(t)
	d := startDaemon(t, netnsBindDaemonConfig("", b.name, nd.name))
	netnsWarmUp(t, d, netnsBindWarmUp(t, "", b.name, nd.name))
	admin := bindClient(t, d, "admin")
	ctx := bindCtx(t)

	cb := bindClient(t, d, "in-b")
	lb, err := cb.Listen(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Netns: b.name})
	if err != nil {
		t.Fatalf("listen in %s: %v", b.name, err)
	}
	addr := lb.Addr().String()
	cd := bindClient(t, d, "in-d")
	ld, err := cd.Listen(ctx, "tcp", addr, &sockfactory.ListenOptions{Netns: nd.name})
	if err != nil {
		t.Fatalf("listen on %s in %s, held in %s: %v; want a socket of its own", addr, nd.name, b.name, err)
	}
	if ib, id := bindInode(t, lb), bindInode(t, ld); ib == id {
		t.Fatalf("%s in %s and in %s: the same socket (inode %d); want two", addr, b.name, nd.name, ib)
	}
	serveGreeting(t, lb, "B")
	serveGreeting(t, ld, "D")
	for _, n := range []struct {
		ns    *namedNetns
		label string
	}{{b, "B"}, {nd, "D"}} {
		conn, err := n.ns.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatalf("connect to %s inside %s: %v", addr, n.ns.name, err)
		}
		expectGreeting(t, conn, n.label, "inside "+n.label+"\n")
		conn.Close()
	}
	_, _, err = bindClient(t, d, "other").BindFile(ctx, "tcp", addr, &sockfactory.ListenOptions{Netns: b.name})
	if !errors.Is(err, sockfactory.ErrShareConflict) {
		t.Fatalf("second bind of %s in %s with share none: got %v; want ErrShareConflict", addr, b.name, err)
	}

	var ids []string
	for _, s := range bindStatus(t, admin) {
		if s.Network == "tcp" && s.Addr == addr {
			ids = append(ids, s.Netns+"/"+s.NetnsID)
		}
	}
	slices.Sort(ids)
	want := []string{b.name + "/" + b.id, nd.name + "/" + nd.id}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("status of tcp %s: namespaces %v; want %v", addr, ids, want)
	}
	out, _, _ := runCLI(t, "", nil, "status", "-socket", d.socket)
	var cols []string
	for l := range strings.SplitSeq(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "tcp" && f[1] == addr {
			cols = append(cols, f[len(f)-1])
		}
	}
	slices.Sort(cols)
	if !slices.Equal(cols, want) {
		t.Errorf("sockfactory status NETNS of tcp %s: %v; want %v:\n%s", addr, cols, want, out)
	}
}

// serveGreeting serves greeter's answers on l (closed when the test ends).
func serveGreeting(t testing.TB, l net.Listener, label string) {
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := io.WriteString(c, greetingOf(label)); err == nil {
					io.Copy(c, c)
				}
			}()
		}
	}()
}

// TestIntegrationNetnsRepointed: B's name is deleted and made again (a new
// namespace under the old name) while a socket bound in the old B lingers
// (linger 1h), and a bind in the new B of the same address follows at
// once, before the daemon's next check of its names (every 2 s). The bind
// is served in the new namespace (another socket, the new identity), and
// the old namespace is still noticed as gone: its lingering socket is
// closed and logged, not kept for the linger's hour with the dead
// namespace. Deleting the new B too brings the daemon's descriptors back
// to the baseline.
func TestIntegrationNetnsRepointed(t *testing.T) {
	requireRoot(t)
	b := newNamedNetns(t)
	d := startDaemon(t, netnsBindDaemonConfig("1h", b.name))
	admin := bindClient(t, d, "admin")
	base := netnsBaseline(t, d, netnsBindWarmUp(t, ""))
	bindStatus(t, admin)
	base++ // the admin's connection
	ctx := bindCtx(t)
	inB := &sockfactory.ListenOptions{Netns: b.name}

	c := bindClient(t, d, "app")
	f, old, err := c.BindFile(ctx, "tcp", "127.0.0.1:0", inB)
	if err != nil {
		t.Fatalf("bind in %s: %v", b.name, err)
	}
	oldIno := bindInode(t, f)
	f.Close()
	if err := c.Release(ctx, old.Token); err != nil {
		t.Fatal(err)
	}

	ip := ipTool(t)
	if out, err := exec.Command("sh", "-c", `"$0" netns del "$1" && "$0" netns add "$1"`, ip, b.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del and add %s: %v: %s", b.name, err, out)
	}
	newID := nsfsID(t, "/run/netns/"+b.name)
	f, cur, err := c.BindFile(ctx, "tcp", old.Addr, inB)
	if err != nil {
		t.Fatalf("bind of %s in the new %s: %v", old.Addr, b.name, err)
	}
	if ino := bindInode(t, f); ino == oldIno {
		t.Errorf("bind of %s in the new %s got the old namespace's socket (inode %d)", old.Addr, b.name, ino)
	}
	f.Close()
	if err := c.Release(ctx, cur.Token); err != nil {
		t.Fatal(err)
	}
	c.Close()
	d.waitLog(t, "msg=grant", "address="+old.Addr, "netns_id="+newID)

	goneLine := func(id string) (string, bool) {
		var line string
		ok := poll(6*time.Second, func() bool {
			var ok bool
			line, ok = d.logLine(`msg="network namespace gone`, "netns_id="+id)
			return ok
		})
		return line, ok
	}
	line, ok := goneLine(b.id)
	if !ok {
		var cached []string
		for _, s := range bindStatus(t, admin) {
			cached = append(cached, fmt.Sprintf("%s %s in %s/%s, refs %d", s.Network, s.Addr, s.Netns, s.NetnsID, s.Refs))
		}
		t.Fatalf("the old %s (%s), its name re-pointed to %s, was never noticed as gone: no \"network namespace gone\" line for it in 6 s; sockets cached: %v", b.name, b.id, newID, cached)
	}
	if !strings.Contains(line, "closed=1") {
		t.Errorf("log line: %s; want closed=1 (the old namespace's lingering socket)", line)
	}
	for _, s := range bindStatus(t, admin) {
		if s.NetnsID == b.id {
			t.Errorf("status after the old namespace went: %s %s still cached in it (%+v)", s.Network, s.Addr, s)
		}
	}

	if out, err := exec.Command(ip, "netns", "del", b.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", b.name, err, out)
	}
	if _, ok := goneLine(newID); !ok {
		t.Fatalf("the new %s (%s) deleted: no \"network namespace gone\" line in 6 s", b.name, newID)
	}
	bindWaitFDs(t, d, base)
}

// TestIntegrationNetnsUpgradeGone: sockets cached in B and D (lingering
// 1h) survive a live upgrade with their namespaces (status keeps the
// names and identities; a bind in D of the same address gets the same
// socket), and deleting B after the upgrade, with no request naming B
// since, is still noticed: the new daemon closes B's lingering socket and
// logs it. Once D is deleted too, the new daemon holds what it held right
// after the upgrade, less those two sockets.
func TestIntegrationNetnsUpgradeGone(t *testing.T) {
	requireRoot(t)
	b, nd := newNamedNetns(t), newNamedNetns(t)
	d := startDaemon(t, netnsBindDaemonConfig("1h", b.name, nd.name))
	u := &upgradable{daemon: d, pid: d.cmd.Process.Pid}
	t.Cleanup(u.stop)
	admin := bindClient(t, d, "admin")
	ctx := bindCtx(t)

	c := bindClient(t, d, "app")
	bound := map[string]*sockfactory.Binding{}
	inodes := map[string]uint64{}
	for _, ns := range []*namedNetns{b, nd} {
		f, bd, err := c.BindFile(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Netns: ns.name})
		if err != nil {
			t.Fatalf("bind in %s: %v", ns.name, err)
		}
		inodes[ns.name] = bindInode(t, f)
		f.Close()
		if err := c.Release(ctx, bd.Token); err != nil {
			t.Fatal(err)
		}
		bound[ns.name] = bd
	}

	u.upgrade(t)
	st := bindStatus(t, admin)
	for _, ns := range []*namedNetns{b, nd} {
		if s := bindFind(st, "tcp", bound[ns.name].Addr); s == nil || s.Netns != ns.name || s.NetnsID != ns.id || s.Refs != 0 {
			t.Fatalf("status after the upgrade: %s: got %+v; want it lingering in %s/%s", bound[ns.name].Addr, s, ns.name, ns.id)
		}
	}
	base := u.fds(t)

	b.del(t)
	if !poll(6*time.Second, func() bool { _, ok := d.logLine(`msg="network namespace gone`, "netns_id="+b.id); return ok }) {
		t.Fatalf("deleting %s after the upgrade was never noticed (no request has named it since): no \"network namespace gone\" line in 6 s; status: %+v", b.name, bindFind(bindStatus(t, admin), "tcp", bound[b.name].Addr))
	}
	if s := bindFind(bindStatus(t, admin), "tcp", bound[b.name].Addr); s != nil {
		t.Errorf("status after %s went: %+v still cached", b.name, s)
	}

	addr := bound[nd.name].Addr
	f, bd, err := c.BindFile(ctx, "tcp", addr, &sockfactory.ListenOptions{Netns: nd.name})
	if err != nil {
		t.Fatalf("bind of %s in %s after the upgrade: %v", addr, nd.name, err)
	}
	if got := bindInode(t, f); got != inodes[nd.name] {
		t.Errorf("bind of %s in %s after the upgrade: inode %d; want the handed-over socket's %d", addr, nd.name, got, inodes[nd.name])
	}
	f.Close()
	if err := c.Release(ctx, bd.Token); err != nil {
		t.Fatal(err)
	}
	nd.del(t)
	if !poll(6*time.Second, func() bool { _, ok := d.logLine(`msg="network namespace gone`, "netns_id="+nd.id); return ok }) {
		t.Fatalf("deleting %s after the upgrade and a request naming it: no \"network namespace gone\" line in 6 s", nd.name)
	}
	var got int
	if !poll(10*time.Second, func() bool { got = u.fds(t); return got == base-2 }) {
		t.Errorf("new daemon's descriptors: got %d; want %d, those right after the upgrade less the two deleted namespaces' sockets: %v", got, base-2, u.fdList(t))
	}
}
