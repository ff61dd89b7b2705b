package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records what reaches the underlying writer, one entry per Write.
type sink struct {
	mu     sync.Mutex
	writes []string
	err    error
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, string(p))
	if s.err != nil {
		return 0, s.err
	}
	return len(p), nil
}

func (s *sink) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.writes, "")
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

func TestGathersUntilDelay(t *testing.T) {
	var s sink
	w := New(&s, time.Second)
	defer w.Close()
	for i := range 3 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	// An hour is far longer than the delay: the lines held back so far
	// must arrive together, in one write, without any Flush.
	deadline := time.Now().Add(time.Hour)
	for s.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got, want := s.text(), "line 0\nline 1\nline 2\n"; got != want {
		t.Fatalf("written %q, want %q", got, want)
	}
	if n := s.count(); n != 1 {
		t.Errorf("%d writes, want the 3 lines in 1", n)
	}
}

func TestHeldUntilFlush(t *testing.T) {
	var s sink
	w := New(&s, time.Hour)
	fmt.Fprint(w, "a\n")
	fmt.Fprint(w, "b\n")
	if s.count() != 0 {
		t.Fatalf("written before the delay: %q", s.text())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := s.text(); got != "a\nb\n" {
		t.Fatalf("after Flush: %q", got)
	}
	fmt.Fprint(w, "c\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.text(); got != "a\nb\nc\n" {
		t.Fatalf("after Close: %q", got)
	}
	fmt.Fprint(w, "d\n") // closed: straight through
	if got := s.text(); got != "a\nb\nc\nd\n" {
		t.Fatalf("write after Close: %q", got)
	}
}

func TestNoDelayWritesThrough(t *testing.T) {
	var s sink
	w := New(&s, 0)
	fmt.Fprint(w, "x\n")
	if got := s.text(); got != "x\n" {
		t.Fatalf("written %q, want it at once", got)
	}
}

func TestFullBufferAndLargeWrites(t *testing.T) {
	var s sink
	w := New(&s, time.Hour)
	line := strings.Repeat("y", 1000) + "\n"
	n := maxBuffer/len(line) + 1 // one more than fits
	for range n {
		w.Write([]byte(line))
	}
	if s.count() != 1 || len(s.text()) != (n-1)*len(line) {
		t.Fatalf("%d writes of %d bytes in all; want the full buffer (%d lines) written once", s.count(), len(s.text()), n-1)
	}
	big := strings.Repeat("z", maxBuffer+1)
	w.Write([]byte(big))
	// The waiting line goes first, then the large write, whole.
	if got := s.text(); got != strings.Repeat(line, n)+big {
		t.Fatalf("order or content lost: %d bytes", len(got))
	}
}

func TestWriteErrorReportedByFlush(t *testing.T) {
	s := sink{err: errors.New("disk full")}
	w := New(&s, time.Hour)
	if _, err := fmt.Fprint(w, "a\n"); err != nil {
		t.Fatalf("Write = %v; it reports nothing, Flush does", err)
	}
	if err := w.Flush(); err == nil || err.Error() != "disk full" {
		t.Fatalf("Flush = %v, want the write error", err)
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("second Flush = %v, want the error reported once", err)
	}
}

func TestHandlerFlushesUrgentRecords(t *testing.T) {
	var s sink
	w := New(&s, time.Hour)
	log := slog.New(NewHandler(slog.NewTextHandler(w, nil), w, slog.LevelWarn)).With("uid", 7)
	log.Info("grant", "id", 1)
	if s.count() != 0 {
		t.Fatalf("info record written at once: %q", s.text())
	}
	log.WithGroup("g").Warn("deny", "id", 2)
	got := s.text()
	i, j := strings.Index(got, "msg=grant uid=7 id=1"), strings.Index(got, "msg=deny uid=7 g.id=2")
	if i < 0 || j < 0 || j < i {
		t.Fatalf("after a warning, want both records in order; got %q", got)
	}
}

func TestConcurrentLinesStayWhole(t *testing.T) {
	var s sink
	w := New(&s, time.Millisecond)
	var wg sync.WaitGroup
	const writers, lines = 8, 500
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(w, "writer %d line %d\n", g, i)
			}
		}()
	}
	wg.Wait()
	w.Close()
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(s.text(), "\n"), "\n") {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer %d line %d", &g, &i); err != nil {
			t.Fatalf("torn line %q", l)
		}
		seen[l] = true
	}
	if len(seen) != writers*lines {
		t.Fatalf("%d distinct lines, want %d", len(seen), writers*lines)
	}
	if !bytes.HasSuffix([]byte(s.text()), []byte("\n")) {
		t.Fatal("output does not end with a whole line")
	}
}
