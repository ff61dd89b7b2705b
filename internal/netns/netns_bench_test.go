package netns

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkSocket is socket(2) and close(2) in the daemon's own namespace
// and, through the namespace's threads, in a named one: the cost a
// request naming a namespace adds. Run as root:
//
//	go test ./internal/netns -run XXX -bench Socket -cpu 1,2
func BenchmarkSocket(b *testing.B) {
	name := addNetns(b)
	m, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		name string
		t    func() Target
	}{
		{"own", func() Target { return Target{} }},
		{"named", func() Target {
			t, err := m.Named(name)
			if err != nil {
				b.Fatal(err)
			}
			return t
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					t := c.t()
					fd, err := t.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
					if err != nil {
						b.Fatal(err)
					}
					unix.Close(fd)
				}
			})
		})
	}
}
