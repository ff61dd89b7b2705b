// Command sockfactory-bench measures how fast a sockfactory daemon hands
// out sockets, next to floors measured in the same run: the client
// creating the socket itself, and a minimal fd-passing server. It starts
// its own daemon (or measures one given with -socket), talks only to
// loopback, and exits 1 when an operation failed or a server died, never
// because a number is low. See docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sockfactory/sockfactory/internal/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) == 2 && args[0] == bench.ServeFDPassArg {
		// The fd-passing floor, started by the tool itself.
		if err := bench.ServeFDPass(ctx, args[1]); err != nil {
			fmt.Fprintln(stderr, "sockfactory-bench: fdpass server:", err)
			return 1
		}
		return 0
	}
	if len(args) == 2 && args[0] == bench.ServeFDPassThreadsArg {
		// The fdpass-threads floor: raw system calls on threads of its own.
		if err := bench.ServeFDPassThreads(ctx, args[1]); err != nil {
			fmt.Fprintln(stderr, "sockfactory-bench: fdpass-threads server:", err)
			return 1
		}
		return 0
	}
	if len(args) == 1 && args[0] == bench.ServeSinkArg {
		// The TCP sink, started by the tool itself with its listening
		// socket as fd 3.
		if err := bench.ServeSink(ctx, 3, stdout); err != nil {
			fmt.Fprintln(stderr, "sockfactory-bench: sink:", err)
			return 1
		}
		return 0
	}

	var (
		o        bench.Options
		modes    = "all"
		clients  = "1,8,64"
		held     string
		jsonOut  bool
		jsonFile string
	)
	fs := flag.NewFlagSet("sockfactory-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&modes, "mode", modes, "comma-separated `modes` to run, or all: "+strings.Join(bench.ModeNames(), ", ")+" (floors are added)")
	fs.StringVar(&clients, "clients", clients, "comma-separated `numbers` of concurrent clients")
	fs.DurationVar(&o.Duration, "duration", bench.DefaultDuration, "measured `time` of each run")
	fs.IntVar(&o.Requests, "requests", 0, "measure this many operations per run instead of a duration")
	fs.DurationVar(&o.Warmup, "warmup", bench.DefaultWarmup, "unmeasured `time` before each run (negative: none)")
	fs.StringVar(&o.Socket, "socket", "", "native socket `path` of a running daemon to measure (default: start one)")
	fs.StringVar(&o.ClearwaterSocket, "clearwater-socket", "", "Clearwater listener `path` of the daemon given with -socket")
	fs.StringVar(&o.Daemon, "daemon", "", "sockfactoryd `binary` to start (default: next to this program, else go build)")
	fs.StringVar(&o.DaemonLogLevel, "daemon-log-level", "", "the started daemon's -log-level (default: its own, info)")
	fs.BoolVar(&o.DaemonMetrics, "daemon-metrics", false, "turn the started daemon's Prometheus metrics on ([metrics] listen on a UNIX socket), to measure what counting costs")
	fs.IntVar(&o.Repeat, "repeat", 1, "run every mode this `many` times, in rounds, and add medians")
	fs.StringVar(&held, "held", "", "comma-separated ascending `levels` of held sockets to run the modes at (e.g. 10,100000)")
	fs.IntVar(&o.IdleConns, "idle-conns", 0, "measure daemon memory per idle connection with this `many` connections")
	fs.StringVar(&o.PerfDir, "perf", "", "record the server of each run with perf record into `dir`")
	fs.StringVar(&o.Syscalls, "syscalls", "", "count the server's system calls per operation with `method` auto, perf or strace (strace slows the server: its times are then meaningless)")
	fs.StringVar(&o.ClearwaterPeer, "clearwater-peer", "", "socket `path` of another Clearwater-protocol daemon (the original, say) to measure beside ours as mode clearwater-peer")
	fs.BoolVar(&jsonOut, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&jsonFile, "json-file", "", "also write the report as JSON to `file`")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sockfactory-bench [flags]\n\nMeasures sockfactoryd against floors measured in the same run.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sockfactory-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var err error
	if o.Clients, err = intList(clients); err != nil {
		fmt.Fprintln(stderr, "sockfactory-bench: -clients:", err)
		return 2
	}
	if held != "" {
		if o.Held, err = intList(held); err != nil {
			fmt.Fprintln(stderr, "sockfactory-bench: -held:", err)
			return 2
		}
	}
	o.Modes = strings.Split(modes, ",")
	o.Progress = stderr
	if o.Warmup == 0 {
		o.Warmup = -time.Nanosecond // an explicit -warmup 0 means none
	}

	rep, err := bench.Run(ctx, o)
	code := 0
	if rep != nil {
		rep.Command = append([]string{"sockfactory-bench"}, args...)
		if jsonOut {
			rep.WriteJSON(stdout)
		} else {
			rep.WriteTable(stdout)
		}
		if jsonFile != "" {
			if werr := writeJSON(jsonFile, rep); werr != nil {
				fmt.Fprintln(stderr, "sockfactory-bench:", werr)
				code = 1
			}
		}
		if n := rep.Errors(); n > 0 {
			fmt.Fprintf(stderr, "sockfactory-bench: %d operations failed\n", n)
			code = 1
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "sockfactory-bench:", err)
		code = 1
	}
	return code
}

func writeJSON(path string, rep *bench.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// intList parses "1,8,64".
func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a list of numbers such as 1,8,64", s)
		}
		out = append(out, n)
	}
	return out, nil
}
