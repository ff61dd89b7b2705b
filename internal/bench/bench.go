// Package bench is the load generator behind cmd/sockfactory-bench: it
// measures how fast a sockfactory daemon hands out sockets, at what latency
// and at what CPU cost, next to floors measured in the same run (the client
// creating the socket itself, and a minimal fd-passing server with no
// parsing and no policy), and how the daemon's cost grows with held sockets
// and client connections.
//
// It talks only to loopback: the daemon it starts (or is pointed at), a TCP
// sink on 127.0.0.1 and UNIX sockets in a private temporary directory. It
// reports numbers; it never decides whether they are good enough, and it
// fails only on errors (a failed request, a daemon that dies), never on
// slowness. It must not be imported by the daemon or the client library.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options configure a benchmark. The zero value runs every mode once at 1
// client for the default duration against a daemon it builds and starts.
type Options struct {
	// Modes are the modes to run, by name (see ModeNames); empty means
	// all. The floor of each mode is added when missing.
	Modes []string
	// Clients are the numbers of concurrent clients to run each mode
	// with; empty means 1.
	Clients []int
	// Duration is how long each run is measured; zero means 3 s. Ignored
	// when Requests is set.
	Duration time.Duration
	// Requests, when positive, makes each run measure this many
	// operations (all clients together) instead of a duration.
	Requests int
	// Warmup is how long each run goes unmeasured before it is measured;
	// zero means 300 ms, negative means none.
	Warmup time.Duration
	// Socket is the native socket of a running daemon to measure; empty
	// means start one (see Daemon).
	Socket string
	// ClearwaterSocket is the Clearwater listener of the running daemon
	// given in Socket; the clearwater mode needs it. Ignored when the tool
	// starts its own daemon.
	ClearwaterSocket string
	// Daemon is the sockfactoryd binary to start; empty means a
	// sockfactoryd next to Self, else one built with "go build" into the
	// temporary directory.
	Daemon string
	// DaemonLogLevel is passed to the daemon as -log-level; empty means
	// the daemon's default (info: one audit line per request).
	DaemonLogLevel string
	// DaemonMetrics turns the started daemon's Prometheus metrics on
	// ([metrics] listen on a UNIX socket in the tool's directory), to
	// measure what counting costs.
	DaemonMetrics bool
	// Held lists numbers of bound sockets to hold before running the
	// modes, ascending: the modes run once per level, floors only at the
	// first. Empty means no held sockets beyond the one shared socket the
	// handoff and pickup modes use.
	Held []int
	// Repeat runs every mode this many times in rounds (each round runs
	// every mode once, floors next to the modes compared with them), so
	// that noise shows; the report then adds a summary of medians. Zero
	// means 1.
	Repeat int
	// IdleConns, when positive, measures the daemon's memory per idle
	// client connection by opening this many before anything else.
	IdleConns int
	// PerfDir, when set, records each run's server process with
	// perf record into this directory (perf must be installed).
	PerfDir string
	// Syscalls counts each run's server system calls with this method
	// (SyscallsAuto, SyscallsPerf or SyscallsStrace; see syscalls.go);
	// empty means not at all. Wake-ups are counted on every run.
	Syscalls string
	// ClearwaterPeer is the socket path of another Clearwater-protocol
	// daemon (the original, say) to measure beside ours: the mode
	// clearwater-peer runs the clearwater client against it.
	ClearwaterPeer string
	// Self is this program's path, started again with ServeFDPassArg and
	// ServeSinkArg to run the fd-passing floor and the TCP sink as
	// processes of their own; empty means os.Executable(). The program
	// must handle those arguments as cmd/sockfactory-bench does.
	Self string
	// Progress receives one line per run as it finishes; nil discards.
	Progress io.Writer
}

// Defaults.
const (
	DefaultDuration = 3 * time.Second
	DefaultWarmup   = 300 * time.Millisecond
)

// Result is the outcome of one run: one mode at one number of clients.
type Result struct {
	// Mode is the mode's name; Floor the floor it is compared with
	// (empty for a floor).
	Mode  string `json:"mode"`
	Floor string `json:"floor,omitempty"`
	// Clients is the number of concurrent clients; Held the number of
	// extra sockets the daemon held during the run.
	Clients int `json:"clients"`
	Held    int `json:"held"`
	// Round counts the repetitions, from 0; in a summary, Rounds is how
	// many runs the medians are taken over.
	Round  int `json:"round"`
	Rounds int `json:"rounds,omitempty"`
	// RoundTrips is how many request/reply exchanges one operation takes.
	RoundTrips int `json:"round_trips_per_op"`
	// Ops is the number of operations measured, Seconds the measured
	// time, Throughput their ratio.
	Ops        int     `json:"ops"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"ops_per_sec"`
	// Latencies of one operation, in microseconds.
	P50  float64 `json:"p50_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p999_us"`
	Max  float64 `json:"max_us"`
	// Errors counts failed operations, warm-up included; ErrorSamples
	// holds the first few distinct messages.
	Errors       int      `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Server names the process serving the requests ("sockfactoryd",
	// "fdpass", or empty when the client works alone). ServerCPU is its
	// user+system CPU time during the measured part, in seconds (from
	// /proc/PID/stat, 10 ms resolution), ServerCPUPerOp the same per
	// operation in microseconds.
	Server         string  `json:"server,omitempty"`
	ServerCPU      float64 `json:"server_cpu_s"`
	ServerCPUPerOp float64 `json:"server_cpu_us_per_op"`
	// ToolCPU is this process's CPU time during the measured part: the
	// clients (the servers and the TCP sink are processes of their own).
	ToolCPU float64 `json:"tool_cpu_s"`
	// FloorThroughput is the floor's throughput at the same number of
	// clients, Ratio this run's throughput over it; zero when there is no
	// floor or it was not measured.
	FloorThroughput float64 `json:"floor_ops_per_sec,omitempty"`
	Ratio           float64 `json:"ratio_to_floor,omitempty"`
	// FloorP99 is the floor's p99 in the same round (for a derived
	// floor, the one it stands for; connect-floor has none).
	FloorP99 float64 `json:"floor_p99_us,omitempty"`
	// Of says, for a derived floor (fdpass-floor, connect-floor), which
	// measured modes it was made from in this round.
	Of string `json:"derived_from,omitempty"`
	// Profile is the perf.data file recorded during the run, if any.
	Profile string `json:"profile,omitempty"`
	// WakeupsPerOp is the server's voluntary context switches (its
	// threads going to sleep, so later woken) per operation; SyscallsPerOp
	// its system calls per operation, when counted (SyscallMethod says
	// how: "perf" or "strace"; under strace the run's times mean nothing).
	WakeupsPerOp  float64 `json:"server_wakeups_per_op"`
	SyscallsPerOp float64 `json:"server_syscalls_per_op,omitempty"`
	SyscallMethod string  `json:"syscall_method,omitempty"`
}

// Report is everything one invocation measured.
type Report struct {
	// Machine describes where the numbers come from.
	Machine Machine `json:"machine"`
	// Command is the command line, when the caller sets it.
	Command []string `json:"command,omitempty"`
	// Daemon is the daemon binary started, or the socket measured.
	Daemon string `json:"daemon"`
	// DaemonLogLevel is the daemon's log level ("" for its default).
	DaemonLogLevel string `json:"daemon_log_level,omitempty"`
	// DaemonMetrics says the daemon counted for Prometheus.
	DaemonMetrics bool `json:"daemon_metrics,omitempty"`
	// Duration, Requests and Warmup are the run parameters.
	Duration float64 `json:"duration_s,omitempty"`
	Requests int     `json:"requests,omitempty"`
	Warmup   float64 `json:"warmup_s"`
	// Results are the runs, in the order they ran.
	Results []Result `json:"results"`
	// Summary holds, when there were several rounds, one entry per mode,
	// clients and held level with the median of every figure over the
	// rounds (each median taken on its own).
	Summary []Result `json:"summary,omitempty"`
	// Memory holds the growth measurements, when asked for.
	Memory *Memory `json:"memory,omitempty"`
	// SinkScheduling is how the TCP sink's accepting threads were
	// scheduled ("SCHED_FIFO" as root), if there was a sink.
	SinkScheduling string `json:"sink_scheduling,omitempty"`
	// LoadAfter is /proc/loadavg after the last run: a busy machine
	// makes every number noisier.
	LoadAfter string `json:"loadavg_after"`
}

// Errors reports the total number of failed operations.
func (r *Report) Errors() int {
	n := 0
	for _, res := range r.Results {
		n += res.Errors
	}
	return n
}

// Run runs the benchmark described by o. It returns the report so far
// together with an error when the set-up fails, the daemon dies or a run
// cannot be completed; failed operations are counted in the report, not
// returned as an error.
func Run(ctx context.Context, o Options) (*Report, error) {
	modes, err := selectModes(o.Modes, &o)
	if err != nil {
		return nil, err
	}
	if len(o.Clients) == 0 {
		o.Clients = []int{1}
	}
	for _, c := range o.Clients {
		if c < 1 {
			return nil, fmt.Errorf("clients %d: want at least 1", c)
		}
	}
	if o.Duration <= 0 {
		o.Duration = DefaultDuration
	}
	if o.Warmup == 0 {
		o.Warmup = DefaultWarmup
	}
	if !sort.IntsAreSorted(o.Held) {
		return nil, errors.New("held levels must be ascending")
	}
	if o.Repeat < 1 {
		o.Repeat = 1
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Syscalls, err = resolveSyscalls(o.Syscalls); err != nil {
		return nil, err
	}
	maxClients := slices.Max(o.Clients)
	maxHeld := 0
	if len(o.Held) > 0 {
		maxHeld = o.Held[len(o.Held)-1]
	}
	// Every client, held socket and idle connection is a descriptor in
	// the daemon; the client side needs a few per client. The daemon
	// inherits the hard limit and raises its own soft limit to it.
	if err := raiseNoFile(uint64(maxHeld + 4*maxClients + o.IdleConns + 256)); err != nil {
		return nil, err
	}

	e, err := newEnv(ctx, &o, modes)
	if err != nil {
		return nil, err
	}
	defer e.close()

	rep := &Report{Machine: describeMachine(), Daemon: e.daemonDesc, DaemonLogLevel: o.DaemonLogLevel, DaemonMetrics: o.DaemonMetrics, Warmup: max(o.Warmup, 0).Seconds()}
	rep.SinkScheduling = e.sinkSched
	if o.Requests > 0 {
		rep.Requests = o.Requests
	} else {
		rep.Duration = o.Duration.Seconds()
	}
	if o.IdleConns > 0 || len(o.Held) > 0 {
		rep.Memory = &Memory{}
	}
	if o.IdleConns > 0 {
		if err := e.measureIdleConns(ctx, o.IdleConns, rep.Memory); err != nil {
			return rep, err
		}
	}
	levels := o.Held
	if len(levels) == 0 {
		levels = []int{0}
	}
	for li, level := range levels {
		if len(o.Held) > 0 {
			if err := e.holdUpTo(ctx, level, rep.Memory); err != nil {
				return rep, err
			}
		}
		for round := range o.Repeat {
			for _, clients := range o.Clients {
				for _, m := range modes {
					if li > 0 && m.floor == "" {
						continue // floors do not depend on the daemon's state
					}
					if err := ctx.Err(); err != nil {
						return rep, err
					}
					res, err := e.runOne(ctx, m, clients, level)
					if res != nil {
						res.Round = round
						rep.Results = append(rep.Results, *res)
						fmt.Fprintln(o.Progress, progressLine(res))
					}
					if err != nil {
						return rep, err
					}
					if err := e.checkServers(); err != nil {
						return rep, err
					}
				}
			}
		}
	}
	if rep.Memory != nil && len(o.Held) > 0 {
		e.finishMemory(ctx, rep.Memory)
	}
	rep.Results = fillRatios(rep.Results)
	if o.Repeat > 1 {
		rep.Summary = summarize(rep.Results)
	}
	rep.LoadAfter = loadavg()
	return rep, nil
}

// fillRatios adds the derived floors of each round and number of clients
// (derivedFloors) after the last run they are made from, then compares
// each mode's throughput and p99 with its floor's at the same number of
// clients in the same round (floors run with nothing held).
func fillRatios(results []Result) []Result {
	key := func(mode string, r *Result) string { return fmt.Sprint(mode, "/", r.Clients, "/", r.Round) }
	floors := map[string]*Result{}
	for i := range results {
		if r := &results[i]; r.Floor == "" {
			floors[key(r.Mode, r)] = r
		}
	}
	// The derived rows, each placed after the last of its parts.
	after := map[int][]Result{}
	last := map[string]int{} // derived key -> index of its last part
	derive := func(name string, r *Result) *Result {
		switch name {
		case "fdpass-floor":
			var best *Result
			for _, p := range derivedFloors[name] {
				if f := floors[key(p, r)]; f != nil && f.Errors == 0 && (best == nil || f.Throughput > best.Throughput) {
					best = f
				}
			}
			if best == nil {
				return nil
			}
			d := *best
			d.Mode, d.Of, d.ErrorSamples, d.Profile = name, best.Mode, nil, ""
			return &d
		case "connect-floor":
			direct, fd := floors[key("direct-connect", r)], floors[key("fdpass-floor", r)]
			if direct == nil || fd == nil || direct.Throughput <= 0 || fd.Throughput <= 0 {
				return nil
			}
			return &Result{
				Mode: name, Of: "direct-connect+" + fd.Of, Clients: r.Clients, Held: r.Held, Round: r.Round,
				RoundTrips: 1, Throughput: 1 / (1/direct.Throughput + 1/fd.Throughput),
				P50: direct.P50 + fd.P50, P99: direct.P99 + fd.P99, P999: direct.P999 + fd.P999,
			}
		}
		return nil
	}
	// fdpass-floor first: connect-floor is made from it.
	for _, name := range []string{"fdpass-floor", "connect-floor"} {
		// Placed after the last measured run it rests on.
		var parts []string
		for _, p := range derivedFloors[name] {
			if sub, ok := derivedFloors[p]; ok {
				parts = append(parts, sub...)
			} else {
				parts = append(parts, p)
			}
		}
		for i := range results {
			r := &results[i]
			if r.Floor == "" && slices.Contains(parts, r.Mode) {
				last[key(name, r)] = i
			}
		}
		for i := range results {
			r := &results[i]
			if r.Floor != "" || !slices.Contains(parts, r.Mode) || last[key(name, r)] != i {
				continue
			}
			if d := derive(name, r); d != nil {
				after[i] = append(after[i], *d)
				floors[key(name, r)] = d
			}
		}
	}
	out := make([]Result, 0, len(results)+len(after))
	for i := range results {
		out = append(out, results[i])
		out = append(out, after[i]...)
	}
	for i := range out {
		r := &out[i]
		if r.Floor == "" {
			continue
		}
		if f := floors[key(r.Floor, r)]; f != nil && f.Throughput > 0 {
			r.FloorThroughput = f.Throughput
			r.Ratio = r.Throughput / f.Throughput
			if r.Floor != "connect-floor" {
				r.FloorP99 = f.P99
			}
		}
	}
	return out
}

// summarize returns, per mode, clients and held level (in first-run
// order), the median of each figure over the rounds.
func summarize(results []Result) []Result {
	type group struct{ runs []*Result }
	var order []string
	groups := map[string]*group{}
	for i := range results {
		r := &results[i]
		k := fmt.Sprint(r.Mode, "/", r.Clients, "/", r.Held)
		g := groups[k]
		if g == nil {
			g = &group{}
			groups[k] = g
			order = append(order, k)
		}
		g.runs = append(g.runs, r)
	}
	var out []Result
	for _, k := range order {
		runs := groups[k].runs
		med := func(f func(*Result) float64) float64 {
			v := make([]float64, len(runs))
			for i, r := range runs {
				v[i] = f(r)
			}
			return median(v)
		}
		s := *runs[0]
		s.Round, s.Rounds = 0, len(runs)
		s.Ops, s.Errors, s.ErrorSamples, s.Profile = 0, 0, nil, ""
		for _, r := range runs {
			s.Ops += r.Ops
			s.Errors += r.Errors
		}
		s.Seconds = med(func(r *Result) float64 { return r.Seconds })
		s.Throughput = med(func(r *Result) float64 { return r.Throughput })
		s.P50 = med(func(r *Result) float64 { return r.P50 })
		s.P99 = med(func(r *Result) float64 { return r.P99 })
		s.P999 = med(func(r *Result) float64 { return r.P999 })
		s.Max = med(func(r *Result) float64 { return r.Max })
		s.ServerCPU = med(func(r *Result) float64 { return r.ServerCPU })
		s.ServerCPUPerOp = med(func(r *Result) float64 { return r.ServerCPUPerOp })
		s.ToolCPU = med(func(r *Result) float64 { return r.ToolCPU })
		s.FloorThroughput = med(func(r *Result) float64 { return r.FloorThroughput })
		s.Ratio = med(func(r *Result) float64 { return r.Ratio })
		s.FloorP99 = med(func(r *Result) float64 { return r.FloorP99 })
		var of []string
		for _, r := range runs {
			if r.Of != "" && !slices.Contains(of, r.Of) {
				of = append(of, r.Of)
			}
		}
		s.Of = strings.Join(of, " or ")
		s.WakeupsPerOp = med(func(r *Result) float64 { return r.WakeupsPerOp })
		s.SyscallsPerOp = med(func(r *Result) float64 { return r.SyscallsPerOp })
		out = append(out, s)
	}
	return out
}

// median returns the median of v (the mean of the middle two for an even
// count), sorting v in place.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func progressLine(r *Result) string {
	s := fmt.Sprintf("%-14s clients=%-4d held=%-6d %9.0f ops/s  p50=%7.1fus p99=%8.1fus p99.9=%8.1fus errors=%d",
		r.Mode, r.Clients, r.Held, r.Throughput, r.P50, r.P99, r.P999, r.Errors)
	if r.Server != "" {
		s += fmt.Sprintf(" server_cpu=%.2fs (%.1fus/op)", r.ServerCPU, r.ServerCPUPerOp)
	}
	if len(r.ErrorSamples) > 0 {
		s += " first error: " + r.ErrorSamples[0]
	}
	return s
}

// Phases of a run, as seen by its workers.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// op is one operation of a mode, run by one client; closer releases the
// client's resources and must unblock an op in progress.
type (
	op     func() error
	closer func()
)

// workerStats is what one client recorded.
type workerStats struct {
	lat    []time.Duration
	errors int
	msgs   []string
}

func (w *workerStats) fail(err error) {
	w.errors++
	if len(w.msgs) < 3 {
		w.msgs = append(w.msgs, err.Error())
	}
}

// stuckTimeout is how long a run waits for its clients to finish their
// last operation before it declares the server stuck.
const stuckTimeout = 30 * time.Second

// runOne runs mode m with n clients.
func (e *env) runOne(ctx context.Context, m *mode, n, held int) (*Result, error) {
	ops := make([]op, 0, n)
	closers := make([]closer, 0, n)
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	// Set the clients up (connections made, first request answered)
	// before anything is timed.
	for range n {
		f, c, err := m.newClient(e)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("%s: setting up a client: %w", m.name, err)
		}
		ops = append(ops, f)
		closers = append(closers, c)
	}

	var (
		phase     atomic.Int32
		remaining atomic.Int64
		completed atomic.Int64 // operations that succeeded, in any phase
		wg        sync.WaitGroup
	)
	remaining.Store(int64(e.o.Requests))
	stats := make([]workerStats, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &stats[i]
			w.lat = make([]time.Duration, 0, 4096)
			for {
				ph := phase.Load()
				if ph == phaseStop {
					return
				}
				if ph == phaseMeasure && e.o.Requests > 0 && remaining.Add(-1) < 0 {
					return
				}
				t0 := time.Now()
				err := ops[i]()
				d := time.Since(t0)
				if err != nil {
					w.fail(err)
					if phase.Load() == phaseStop {
						return
					}
					time.Sleep(time.Millisecond) // do not spin on a dead server
					continue
				}
				completed.Add(1)
				if ph == phaseMeasure {
					w.lat = append(w.lat, d)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	if e.o.Warmup > 0 {
		select {
		case <-time.After(e.o.Warmup):
		case <-ctx.Done():
		}
	}
	server := m.server(e)
	var perf *perfRecording
	if e.o.PerfDir != "" && server.pid > 0 {
		p, err := startPerf(e.o.PerfDir, fmt.Sprintf("%s-c%d-h%d", m.name, n, held), server.pid)
		if err != nil {
			phase.Store(phaseStop)
			closeAll()
			<-done
			return nil, err
		}
		perf = p
	}
	var count *syscallCount
	if e.o.Syscalls != SyscallsOff && server.pid > 0 {
		c, err := startSyscallCount(e.dir, fmt.Sprintf("%s-c%d-h%d", m.name, n, held), e.o.Syscalls, server.pid)
		if err != nil {
			phase.Store(phaseStop)
			closeAll()
			<-done
			return nil, err
		}
		count = c
	}
	cpu0, _ := procCPU(server.pid)
	wake0 := procWakeups(server.pid)
	// The counter sees calls from its attaching on, warm-up included:
	// divide by every operation completed while it was attached.
	countedFrom := completed.Load()
	tool0 := selfCPU()
	start := time.Now()
	phase.Store(phaseMeasure)
	if e.o.Requests > 0 {
		select {
		case <-done:
		case <-ctx.Done():
		}
	} else {
		select {
		case <-time.After(e.o.Duration):
		case <-ctx.Done():
		}
	}
	phase.Store(phaseStop)
	elapsed := time.Since(start)
	cpu1, _ := procCPU(server.pid)
	wake1 := procWakeups(server.pid)
	tool1 := selfCPU()
	if perf != nil {
		perf.stop()
	}
	var calls, countedOps int64
	var countErr error
	if count != nil {
		countErr = count.pause()
		countedOps = completed.Load() - countedFrom
		if countErr == nil {
			calls, countErr = count.result()
		} else {
			count.kill()
		}
	}
	var stuck error
	select {
	case <-done:
	case <-time.After(stuckTimeout):
		stuck = fmt.Errorf("%s with %d clients: clients still waiting %v after the run ended; closing them (is the server stuck?)", m.name, n, stuckTimeout)
		closeAll()
		closers = nil
		<-done
	}
	closeAll()

	res := &Result{Mode: m.name, Floor: m.floor, Clients: n, Held: held, RoundTrips: m.roundTrips, Server: server.name, Seconds: elapsed.Seconds()}
	if perf != nil {
		res.Profile = perf.path
	}
	var all []time.Duration
	for i := range stats {
		all = append(all, stats[i].lat...)
		res.Errors += stats[i].errors
		for _, msg := range stats[i].msgs {
			if len(res.ErrorSamples) < 5 && !slices.Contains(res.ErrorSamples, msg) {
				res.ErrorSamples = append(res.ErrorSamples, msg)
			}
		}
	}
	res.Ops = len(all)
	if elapsed > 0 {
		res.Throughput = float64(res.Ops) / elapsed.Seconds()
	}
	res.P50, res.P99, res.P999, res.Max = percentiles(all)
	if server.pid > 0 {
		res.ServerCPU = cpu1 - cpu0
		if res.Ops > 0 {
			res.ServerCPUPerOp = res.ServerCPU / float64(res.Ops) * 1e6
		}
	}
	res.ToolCPU = tool1 - tool0
	if server.pid > 0 && res.Ops > 0 {
		res.WakeupsPerOp = float64(wake1-wake0) / float64(res.Ops)
	}
	if count != nil {
		if countErr != nil {
			return res, errors.Join(stuck, fmt.Errorf("%s with %d clients: counting system calls: %w", m.name, n, countErr))
		}
		if countedOps > 0 {
			res.SyscallsPerOp = float64(calls) / float64(countedOps)
			res.SyscallMethod = count.method
		}
	}
	return res, stuck
}

// percentiles returns the 50th, 99th and 99.9th percentiles (nearest rank)
// and the maximum of d, in microseconds. d is sorted in place.
func percentiles(d []time.Duration) (p50, p99, p999, maxv float64) {
	if len(d) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(q*float64(len(d))+0.999999999) - 1
		i = min(max(i, 0), len(d)-1)
		return float64(d[i]) / float64(time.Microsecond)
	}
	return at(0.50), at(0.99), at(0.999), float64(d[len(d)-1]) / float64(time.Microsecond)
}

// raiseNoFile makes sure this process, and the daemon it starts, may open
// want descriptors: it raises the soft limit and, as root, the hard one.
// syscall.Setrlimit (not x/sys) so that the children inherit the new soft
// limit too.
func raiseNoFile(want uint64) error {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if r.Cur >= want {
		return nil
	}
	if r.Max < want {
		r.Max = want
	}
	r.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		var old syscall.Rlimit
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old)
		return fmt.Errorf("the held sockets, clients and connections asked for need RLIMIT_NOFILE %d, but the hard limit is %d and raising it failed (it takes root with CAP_SYS_RESOURCE): %w; ask for fewer", want, old.Max, err)
	}
	return nil
}

// selfCPU returns this process's user+system CPU time in seconds.
func selfCPU() float64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
}

func tvSeconds(tv unix.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// Machine describes the machine the numbers come from.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	LoadAvg   string `json:"loadavg_before"`
}

func describeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvg: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return m
}
