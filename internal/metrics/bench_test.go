package metrics

import (
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// BenchmarkRequest is what metrics add to one native request: reading the
// clock twice, one counter and one histogram observation.
func BenchmarkRequest(b *testing.B) {
	m := New(Options{NoRuntime: true})
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		m.Request(Native, wire.OpBind, "", time.Since(start))
	}
}

// BenchmarkRequestParallel is BenchmarkRequest from every CPU at once,
// on the same series: the worst case of contention.
func BenchmarkRequestParallel(b *testing.B) {
	m := New(Options{NoRuntime: true})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			start := time.Now()
			m.Request(Native, wire.OpBind, "", time.Since(start))
		}
	})
}
