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
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/config"
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
	withoutPeer := slices.DeleteFunc(ModeNames(), func(n string) bool { return n == "clearwater-peer" })
	tests := []struct {
		in      []string
		peer    string
		want    []string
		wantErr bool
	}{
		{nil, "", withoutPeer, false},
		{[]string{"all"}, "", withoutPeer, false},
		{[]string{"all"}, "/run/cw.sock", ModeNames(), false},
		{[]string{"clearwater-peer"}, "/run/cw.sock", []string{"direct-connect", "clearwater-peer"}, false},
		{[]string{"clearwater-peer"}, "", nil, true},
		{[]string{"handoff"}, "", []string{"fdpass", "handoff"}, false},
		{[]string{"clearwater", "connect"}, "", []string{"direct-connect", "connect", "clearwater"}, false},
		{[]string{"direct-bind"}, "", []string{"direct-bind"}, false},
		{[]string{"bogus"}, "", nil, true},
	}
	for _, tt := range tests {
		ms, err := selectModes(tt.in, &Options{ClearwaterPeer: tt.peer})
		if (err != nil) != tt.wantErr {
			t.Errorf("selectModes(%q): error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		var got []string
		for _, m := range ms {
			got = append(got, m.name)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("selectModes(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRatiosAndSummary(t *testing.T) {
	results := []Result{
		{Mode: "fdpass", Clients: 8, Round: 0, Throughput: 100},
		{Mode: "handoff", Floor: "fdpass", Clients: 8, Round: 0, Throughput: 50},
		{Mode: "fdpass", Clients: 8, Round: 1, Throughput: 200},
		{Mode: "handoff", Floor: "fdpass", Clients: 8, Round: 1, Throughput: 50},
		{Mode: "fdpass", Clients: 8, Round: 2, Throughput: 100},
		{Mode: "handoff", Floor: "fdpass", Clients: 8, Round: 2, Throughput: 80, Errors: 1},
	}
	fillRatios(results)
	if got := []float64{results[1].Ratio, results[3].Ratio, results[5].Ratio}; !reflect.DeepEqual(got, []float64{0.5, 0.25, 0.8}) {
		t.Errorf("ratios = %v, want each round against its own floor: [0.5 0.25 0.8]", got)
	}
	sum := summarize(results)
	if len(sum) != 2 {
		t.Fatalf("summarize: %d entries, want 2", len(sum))
	}
	h := sum[1]
	if h.Mode != "handoff" || h.Rounds != 3 || h.Throughput != 50 || h.Ratio != 0.5 || h.Errors != 1 {
		t.Errorf("handoff summary = %+v, want 3 rounds, median 50 ops/s, median ratio 0.5, 1 error", h)
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

// The floors and their clients work and close every fd they receive.
func TestFloorsCloseWhatTheyReceive(t *testing.T) {
	dir := t.TempDir()
	e := &env{fdpassSocket: filepath.Join(dir, "fdpass.sock")}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: e.fdpassSocket, Net: "unixpacket"})
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
		{"fdpass", newFDPass},
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
			after := openFDs(t)
			for deadline := time.Now().Add(5 * time.Second); after != before && time.Now().Before(deadline); after = openFDs(t) {
				time.Sleep(time.Millisecond)
			}
			if after != before {
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
