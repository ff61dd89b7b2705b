package bench

import (
	"context"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/testnet"
)

func TestPercentiles(t *testing.T) {
	us := func(n ...int) []time.Duration {
		var d []time.Duration
		for _, v := range n {
			d = append(d, time.Duration(v)*time.Microsecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100 down to 1: sorting is percentiles' job
	}
	tests := []struct {
		name                string
		in                  []time.Duration
		p50, p99, p999, max float64
	}{
		{"empty", nil, 0, 0, 0, 0},
		{"one", us(7), 7, 7, 7, 7},
		{"two", us(9, 1), 1, 9, 9, 9},
		{"1 to 100", us(hundred...), 50, 99, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p50, p99, p999, maxv := percentiles(tt.in)
			if got, want := []float64{p50, p99, p999, maxv}, []float64{tt.p50, tt.p99, tt.p999, tt.max}; !reflect.DeepEqual(got, want) {
				t.Errorf("percentiles = %v, want %v", got, want)
			}
		})
	}
}

// The generated configuration must be one the daemon accepts, granting
// what the modes need.
func TestDaemonConfigParses(t *testing.T) {
	c, err := config.Parse("bench.toml", []byte(daemonConfig(1234, "/tmp/x/sf.sock", "/tmp/x/cw.sock")))
	if err != nil {
		t.Fatalf("config.Parse(daemonConfig(...)): %v", err)
	}
	if c.Socket != "/tmp/x/sf.sock" || len(c.Clearwater) != 1 || c.Clearwater[0].Socket != "/tmp/x/cw.sock" {
		t.Errorf("sockets: got native %q, clearwater %+v; want /tmp/x/sf.sock and one listener at /tmp/x/cw.sock", c.Socket, c.Clearwater)
	}
	if c.Limits.IdleTimeout != 0 || c.Limits.SocketsPerUID < 1000000 || c.Limits.ConnectionsPerUID < 1000 {
		t.Errorf("limits %+v: want no idle timeout and room for 10^6 sockets and 10^3 connections per uid", c.Limits)
	}
	if len(c.Policy.Rules) != 1 || !c.Policy.Rules[0].Admin || c.Policy.Rules[0].UIDs[0] != 1234 {
		t.Errorf("rules %+v: want one admin rule for uid 1234", c.Policy.Rules)
	}
}

func TestSelectModes(t *testing.T) {
	t.Setenv("CC", "")
	if cCompiler() == "" {
		testnet.SkipOrFail(t, "no C compiler (cc): install gcc")
		return
	}
	withoutPeer := slices.DeleteFunc(ModeNames(), func(n string) bool { return n == "clearwater-peer" })
	noC := func(ns []string) []string {
		return slices.DeleteFunc(slices.Clone(ns), func(n string) bool { return strings.HasPrefix(n, "fdpass-c") })
	}
	fdpassAll := []string{"fdpass", "fdpass-threads", "fdpass-c", "fdpass-c-epoll"}
	tests := []struct {
		in      []string
		peer    string
		cc      string // $CC: "" for cc
		want    []string
		wantErr bool
	}{
		{nil, "", "", withoutPeer, false},
		{[]string{"all"}, "", "", withoutPeer, false},
		{[]string{"all"}, "/run/cw.sock", "", ModeNames(), false},
		{[]string{"clearwater-peer"}, "/run/cw.sock", "", append([]string{"direct-connect"}, append(fdpassAll, "clearwater-peer")...), false},
		{[]string{"clearwater-peer"}, "", "", nil, true},
		{[]string{"handoff"}, "", "", append(fdpassAll, "handoff"), false},
		{[]string{"clearwater", "connect"}, "", "", append([]string{"direct-connect"}, append(fdpassAll, "connect", "clearwater")...), false},
		{[]string{"direct-bind"}, "", "", []string{"direct-bind"}, false},
		{[]string{"bogus"}, "", "", nil, true},
		// Without a C compiler the C floors drop out of "all" and of a
		// floor, and naming one is an error.
		{[]string{"all"}, "", "/nonexistent/cc", noC(withoutPeer), false},
		{[]string{"handoff"}, "", "/nonexistent/cc", []string{"fdpass", "fdpass-threads", "handoff"}, false},
		{[]string{"fdpass-c"}, "", "/nonexistent/cc", nil, true},
	}
	for _, tt := range tests {
		t.Setenv("CC", tt.cc)
		ms, err := selectModes(tt.in, &Options{ClearwaterPeer: tt.peer})
		if (err != nil) != tt.wantErr {
			t.Errorf("selectModes(%q) with CC=%q: error %v, want error %v", tt.in, tt.cc, err, tt.wantErr)
			continue
		}
		var got []string
		for _, m := range ms {
			got = append(got, m.name)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("selectModes(%q) with CC=%q = %q, want %q", tt.in, tt.cc, got, tt.want)
		}
	}
}

func TestRatiosAndSummary(t *testing.T) {
	var results []Result
	// Round 0: fdpass-c is the fastest floor; round 1: fdpass-threads;
	// round 2: fdpass-c again, but fdpass-threads, faster, had an error
	// and does not count.
	for round, floors := range [][3]float64{{100, 150, 200}, {100, 300, 200}, {100, 400, 160}} {
		errs := 0
		if round == 2 {
			errs = 1
		}
		results = append(results,
			Result{Mode: "direct-connect", Clients: 8, Round: round, Throughput: 600, P99: 30},
			Result{Mode: "fdpass", Clients: 8, Round: round, Throughput: floors[0], P99: 10},
			Result{Mode: "fdpass-threads", Clients: 8, Round: round, Throughput: floors[1], P99: 20, Errors: errs},
			Result{Mode: "fdpass-c", Clients: 8, Round: round, Throughput: floors[2], P99: 40},
			Result{Mode: "connect", Floor: "connect-floor", Clients: 8, Round: round, Throughput: 100, P99: 90},
			Result{Mode: "handoff", Floor: "fdpass-floor", Clients: 8, Round: round, Throughput: 80, P99: 60},
		)
	}
	results = fillRatios(results)
	var modes []string
	for _, r := range results[:8] {
		modes = append(modes, r.Mode)
	}
	if want := []string{"direct-connect", "fdpass", "fdpass-threads", "fdpass-c", "fdpass-floor", "connect-floor", "connect", "handoff"}; !reflect.DeepEqual(modes, want) {
		t.Fatalf("round 0 rows = %q, want %q (each derived floor after the last run it rests on)", modes, want)
	}
	var of []string
	var handoff, connect, composite []float64
	var p99s []float64
	for _, r := range results {
		switch r.Mode {
		case "fdpass-floor":
			of = append(of, r.Of)
		case "connect-floor":
			composite = append(composite, r.Throughput)
		case "handoff":
			handoff = append(handoff, r.Ratio)
			p99s = append(p99s, r.FloorP99)
		case "connect":
			connect = append(connect, r.Ratio)
		}
	}
	if want := []string{"fdpass-c", "fdpass-threads", "fdpass-c"}; !reflect.DeepEqual(of, want) {
		t.Errorf("fdpass-floor made of %q, want %q (the fastest floor without errors, each round)", of, want)
	}
	if want := []float64{0.4, 80.0 / 300, 0.5}; !reflect.DeepEqual(handoff, want) {
		t.Errorf("handoff ratios = %v, want %v", handoff, want)
	}
	if want := []float64{40, 20, 40}; !reflect.DeepEqual(p99s, want) {
		t.Errorf("handoff floor p99 = %v, want the chosen floor's: %v", p99s, want)
	}
	// 1/(1/600 + 1/200) = 150; 1/(1/600 + 1/300) = 200; 1/(1/600 + 1/160).
	want := []float64{150, 200, 1 / (1.0/600 + 1.0/160)}
	for i := range want {
		if math.Abs(composite[i]-want[i]) > 1e-9 || math.Abs(connect[i]-100/want[i]) > 1e-9 {
			t.Errorf("round %d: connect-floor %v, connect ratio %v; want %v and %v", i, composite[i], connect[i], want[i], 100/want[i])
		}
	}
	sum := summarize(results)
	var h *Result
	for i := range sum {
		if sum[i].Mode == "handoff" {
			h = &sum[i]
		}
		if sum[i].Mode == "fdpass-floor" && sum[i].Of != "fdpass-c or fdpass-threads" {
			t.Errorf("fdpass-floor summary made of %q, want both floors that stood for it", sum[i].Of)
		}
	}
	if h == nil || h.Rounds != 3 || h.Throughput != 80 || h.Ratio != 0.4 {
		t.Errorf("handoff summary = %+v, want 3 rounds, median 80 ops/s, median ratio 0.4", h)
	}
}

func TestProcReaders(t *testing.T) {
	cpu, err := procCPU(os.Getpid())
	if err != nil || cpu < 0 || math.IsNaN(cpu) {
		t.Errorf("procCPU(self) = %v, %v; want a non-negative time", cpu, err)
	}
	rss, err := procRSS(os.Getpid())
	if err != nil || rss <= 0 {
		t.Errorf("procRSS(self) = %v, %v; want a positive size", rss, err)
	}
	if got := cpuModel("processor\t: 0\nmodel name\t: Some CPU @ 2GHz\n"); got != "Some CPU @ 2GHz" {
		t.Errorf("cpuModel = %q, want %q", got, "Some CPU @ 2GHz")
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFDs returns this process's open descriptor count once it is want,
// or after 5 s: a server in this process closes its ends of connections
// when it sees the clients go, a moment after they do.
func waitFDs(t *testing.T, want int) int {
	t.Helper()
	got := openFDs(t)
	for deadline := time.Now().Add(5 * time.Second); got != want && time.Now().Before(deadline); got = openFDs(t) {
		time.Sleep(time.Millisecond)
	}
	return got
}

// The floors and their clients work and close every fd they receive.
func TestFloorsCloseWhatTheyReceive(t *testing.T) {
	dir := t.TempDir()
	e := &env{floorSockets: map[string]string{"fdpass": filepath.Join(dir, "fdpass.sock")}}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: e.floorSockets["fdpass"], Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	fixed, _, err := listenTCP4(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveFDPass(ctx, ln, fixed) }()
	sinkFD, port, err := listenTCP4(4096)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sinkFD)
	e.sinkPort = port
	sinkDone := make(chan error, 1)
	go func() { sinkDone <- ServeSink(ctx, sinkFD, io.Discard) }()

	for _, tc := range []struct {
		name string
		new  func(*env) (op, closer, error)
	}{
		{"fdpass", fdPassClient("fdpass")},
		{"direct-connect", newDirectConnect},
		{"direct-bind", newDirectBind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			f, c, err := tc.new(e)
			if err != nil {
				t.Fatalf("setting up a client: %v", err)
			}
			for i := range 200 {
				if err := f(); err != nil {
					t.Fatalf("operation %d: %v", i, err)
				}
			}
			c()
			// The fdpass server, in this process, closes its end of the
			// connection when it sees the client's go.
			if after := waitFDs(t, before); after != before {
				t.Errorf("open fds: %d after 200 operations, %d before", after, before)
			}
		})
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serveFDPass: %v", err)
	}
	if err := <-sinkDone; err != nil {
		t.Errorf("ServeSink: %v", err)
	}
}

// The raw floors (fdpass-threads in process, the C program in both of
// its designs) answer every request with one descriptor, and the clients
// close what they receive; the C program exits cleanly on SIGTERM.
func TestRawFloors(t *testing.T) {
	dir := t.TempDir()
	e := &env{dir: dir, o: &Options{}, floorSockets: map[string]string{"fdpass-threads": filepath.Join(dir, "threads.sock")}}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	threadsSock := e.floorSockets["fdpass-threads"]
	go func() { served <- ServeFDPassThreads(ctx, threadsSock) }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("unixpacket", e.floorSockets["fdpass-threads"])
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-served:
			t.Fatalf("ServeFDPassThreads: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("fdpass-threads does not accept after 10 s: %v", err)
		}
		time.Sleep(5 * time.Millisecond) // polling: nothing says when the socket is bound
	}
	names := []string{"fdpass-threads"}
	if cCompiler() == "" {
		testnet.SkipOrFail(t, "no C compiler (cc) for the C floor: install gcc")
	} else {
		for _, name := range []string{"fdpass-c", "fdpass-c-epoll"} {
			if err := e.startFloor(name); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			before := openFDs(t)
			var clients []closer
			var ops []op
			for range 3 { // more connections than one, to the same server
				f, c, err := fdPassClient(name)(e)
				if err != nil {
					t.Fatalf("setting up a client: %v", err)
				}
				ops, clients = append(ops, f), append(clients, c)
			}
			for i := range 300 {
				if err := ops[i%3](); err != nil {
					t.Fatalf("operation %d: %v", i, err)
				}
			}
			for _, c := range clients {
				c()
			}
			// fdpass-threads, in this process, closes its ends of the
			// connections when it sees the clients go.
			if after := waitFDs(t, before); after != before {
				t.Errorf("open fds of the tool: %d after 300 operations, %d before", after, before)
			}
		})
	}
	for _, name := range names[1:] {
		if err := e.floors[name].stop(); err != nil {
			t.Errorf("%s on SIGTERM: %v; want a clean exit", name, err)
		}
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeFDPassThreads: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeFDPassThreads did not return within 10 s of its context's end")
	}
	if _, err := os.Stat(e.floorSockets["fdpass-threads"]); !os.IsNotExist(err) {
		t.Errorf("fdpass-threads left its socket: %v", err)
	}
}
