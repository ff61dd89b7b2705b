package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as aligned text for people.
func (r *Report) WriteTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "machine: %d CPUs, %s, Linux %s, %s; load average before %s, after %s\n",
		m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.LoadAvg, r.LoadAfter)
	fmt.Fprintf(w, "daemon: %s", r.Daemon)
	if r.DaemonLogLevel != "" {
		fmt.Fprintf(w, " (log level %s)", r.DaemonLogLevel)
	}
	if r.DaemonMetrics {
		fmt.Fprint(w, " (metrics on)")
	}
	if r.Requests > 0 {
		fmt.Fprintf(w, "; %d operations per run after %.1fs warm-up\n\n", r.Requests, r.Warmup)
	} else {
		fmt.Fprintf(w, "; %.1fs per run after %.1fs warm-up\n\n", r.Duration, r.Warmup)
	}
	rounds := len(r.Summary) > 0
	if err := writeRows(w, r.Results, rounds); err != nil {
		return err
	}
	if rounds {
		fmt.Fprintf(w, "\nmedians over %d rounds:\n", r.Summary[0].Rounds)
		if err := writeRows(w, r.Summary, false); err != nil {
			return err
		}
	}
	for _, res := range r.Results {
		for _, msg := range res.ErrorSamples {
			fmt.Fprintf(w, "error in %s with %d clients: %s\n", res.Mode, res.Clients, msg)
		}
	}
	if mem := r.Memory; mem != nil {
		fmt.Fprintln(w)
		if mem.IdleConns > 0 {
			fmt.Fprintf(w, "idle connections: %d; daemon RSS %s -> %s (%s per connection); heap %s -> %s (%s per connection)\n",
				mem.IdleConns, bytesStr(float64(mem.IdleRSSBefore)), bytesStr(float64(mem.IdleRSSAfter)), bytesStr(mem.RSSPerIdleConn),
				bytesStr(float64(mem.IdleHeapBefore)), bytesStr(float64(mem.IdleHeapAfter)), bytesStr(mem.HeapPerIdleConn))
		}
		if len(mem.Held) > 0 {
			var parts []string
			for _, s := range mem.Held {
				p := fmt.Sprintf("%d: RSS %s", s.Held, bytesStr(float64(s.RSS)))
				if s.Heap > 0 {
					p += fmt.Sprintf(", heap %s", bytesStr(float64(s.Heap)))
				}
				parts = append(parts, p)
			}
			fmt.Fprintf(w, "held sockets: %s\n", strings.Join(parts, "; "))
			if mem.RSSPerHeldSocket != 0 {
				fmt.Fprintf(w, "per held socket: RSS %s, heap %s (the last level bound at %.0f binds/s)\n",
					bytesStr(mem.RSSPerHeldSocket), bytesStr(mem.HeapPerHeldSocket), mem.HoldRate)
			}
			if mem.StatsAtMaxHeld != "" {
				fmt.Fprintf(w, "Stats at the largest level: %s\n", mem.StatsAtMaxHeld)
			}
		}
	}
	return nil
}

// writeRows writes one table of results.
func writeRows(w io.Writer, results []Result, rounds bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "mode\tclients\theld\tops/s\tp50 µs\tp99 µs\tp99.9 µs\terrors\tserver CPU s\tCPU µs/op\twake-ups/op\tsyscalls/op\tfloor\tvs floor\t"
	if rounds {
		head = "round\t" + head
	}
	fmt.Fprintln(tw, head)
	for _, res := range results {
		floor, ratio, p99 := "-", "-", "-"
		if res.Floor != "" {
			floor = res.Floor
			if res.Ratio > 0 {
				ratio = fmt.Sprintf("%.0f%%", 100*res.Ratio)
			}
			if res.FloorP99 > 0 {
				p99 = fmt.Sprintf("%.2fx", res.P99/res.FloorP99)
			}
		}
		name := res.Mode
		if res.Of != "" {
			name += " = " + res.Of
		}
		cpu, perOp, wake, calls := "-", "-", "-", "-"
		if res.Server != "" {
			cpu, perOp = fmt.Sprintf("%.2f", res.ServerCPU), fmt.Sprintf("%.1f", res.ServerCPUPerOp)
			wake = fmt.Sprintf("%.2f", res.WakeupsPerOp)
		}
		if res.SyscallMethod != "" {
			calls = fmt.Sprintf("%.1f", res.SyscallsPerOp)
			if res.SyscallMethod == SyscallsStrace {
				calls += " (strace)"
			}
		}
		if rounds {
			fmt.Fprintf(tw, "%d\t", res.Round)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.1f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			name, res.Clients, res.Held, res.Throughput, res.P50, res.P99, res.P999, res.Errors, cpu, perOp, wake, calls, floor, ratio, p99)
	}
	return tw.Flush()
}

// bytesStr formats a byte count for people.
func bytesStr(b float64) string {
	a := b
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case a >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.2f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}
