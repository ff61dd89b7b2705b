package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory"
)

// BenchmarkUpgrade times live upgrades of a daemon holding 10 and 10,000
// sockets while a client binds and releases a shared socket in a loop on
// one connection: ns/op is one upgrade as the admin's client sees it (its
// request sent to the new daemon's answer), took-ms the daemon's own
// count, and max-ms / p99-ms the longest and 99th-percentile latency of
// the looping client's requests that were under way during an upgrade
// (base-p99-ms: the same outside upgrades). Run it with
//
//	go test -run '^$' -bench BenchmarkUpgrade -benchtime 20x ./internal/e2e/
func BenchmarkUpgrade(b *testing.B) {
	for _, held := range []int{10, 10000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) { benchUpgrade(b, held) })
	}
}

func benchUpgrade(b *testing.B, held int) {
	u := startUpgradable(b, "", "30s")
	ctx := context.Background()
	holder := &sockfactory.Client{Socket: u.socket, App: "holder"}
	defer holder.Close()
	for range held - 1 {
		f, _, err := holder.BindFile(ctx, "udp", "127.0.0.1:0", nil)
		if err != nil {
			b.Fatalf("holding sockets: %v", err)
		}
		f.Close() // the daemon keeps its own, for this connection
	}
	ln, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Share: "any"})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	type sample struct {
		start, end time.Time
	}
	var (
		mu      sync.Mutex
		samples []sample
		loopErr error
	)
	looper := &sockfactory.Client{Socket: u.socket, App: "looper"}
	defer looper.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := time.Now()
			f, bd, err := looper.BindFile(ctx, "tcp", addr, &sockfactory.ListenOptions{Share: "any"})
			if err == nil {
				f.Close()
				err = looper.Release(ctx, bd.Token)
			}
			e := time.Now()
			mu.Lock()
			samples = append(samples, sample{s, e})
			if err != nil && loopErr == nil {
				loopErr = err
			}
			mu.Unlock()
		}
	}()
	admin := &sockfactory.Client{Socket: u.socket}
	defer admin.Close()
	time.Sleep(200 * time.Millisecond) // the loop runs before the first upgrade
	var windows [][2]time.Time
	var took time.Duration
	b.ResetTimer()
	for range b.N {
		s := time.Now()
		r, err := admin.Upgrade(ctx)
		if err != nil {
			b.Fatalf("upgrade: %v", err)
		}
		windows = append(windows, [2]time.Time{s, time.Now()})
		took += r.Took
		u.old = append(u.old, u.pid)
		u.pid = r.NewPID
		b.StopTimer()
		time.Sleep(20 * time.Millisecond) // let the loop run between upgrades
		b.StartTimer()
	}
	b.StopTimer()
	close(stop)
	<-done
	if loopErr != nil {
		b.Fatalf("a looping request failed: %v", loopErr)
	}
	var during, outside []float64
	for _, sm := range samples {
		ms := float64(sm.end.Sub(sm.start).Microseconds()) / 1000
		in := false
		for _, w := range windows {
			in = in || (sm.start.Before(w[1]) && sm.end.After(w[0]))
		}
		if in {
			during = append(during, ms)
		} else {
			outside = append(outside, ms)
		}
	}
	slices.Sort(during)
	slices.Sort(outside)
	pct := func(v []float64, p float64) float64 {
		if len(v) == 0 {
			return 0
		}
		return v[min(len(v)-1, int(p*float64(len(v))))]
	}
	b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "took-ms")
	b.ReportMetric(pct(during, 1), "max-ms")
	b.ReportMetric(pct(during, 0.99), "p99-ms")
	b.ReportMetric(pct(outside, 0.99), "base-p99-ms")
	b.ReportMetric(float64(len(during))/float64(b.N), "reqs-in-upgrade")
}
