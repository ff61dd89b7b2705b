// Package logbuf batches log output: the daemon writes an audit line for
// every request, and one write(2) per line cost about a third of its CPU
// time per request under load. A Writer gathers whole lines and writes them
// together, at most a short delay after the first one arrived; a Handler
// around a slog.Handler flushes at once after every record at warning level
// or above, so that denials and errors are never late.
package logbuf

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// maxBuffer is how many bytes a Writer gathers before it writes them
// without waiting for the delay.
const maxBuffer = 64 << 10

// Writer gathers writes and passes them to the underlying writer together:
// when maxBuffer bytes are waiting, when the delay since the first waiting
// write has passed, on Flush and on Close. Each Write is passed on whole
// and in order; a Write larger than the buffer is passed on at once.
//
// Write never fails: an error from the underlying writer is returned by the
// next Flush or Close, as a log has nowhere better to report it.
type Writer struct {
	mu     sync.Mutex
	w      io.Writer
	delay  time.Duration
	buf    []byte
	timer  *time.Timer // armed while buf holds bytes
	err    error       // the first write error not yet reported
	closed bool
}

// New returns a Writer to w that holds bytes for at most delay. A delay of
// zero or less makes every Write go straight through.
func New(w io.Writer, delay time.Duration) *Writer {
	b := &Writer{w: w, delay: delay}
	if delay > 0 {
		b.timer = time.AfterFunc(time.Hour, func() { b.Flush() })
		b.timer.Stop()
	}
	return b
}

// Write gathers p, or writes it straight through when the Writer does not
// delay, is closed, or p does not fit in the buffer.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer == nil || b.closed || len(p) > maxBuffer {
		b.flushLocked()
		return b.w.Write(p)
	}
	if len(b.buf)+len(p) > maxBuffer {
		b.flushLocked()
	}
	if len(b.buf) == 0 {
		b.timer.Reset(b.delay)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes whatever is waiting and returns the first write error since
// the last Flush.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	err := b.err
	b.err = nil
	return err
}

func (b *Writer) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	if b.timer != nil {
		b.timer.Stop()
	}
	if _, err := b.w.Write(b.buf); err != nil && b.err == nil {
		b.err = err
	}
	if cap(b.buf) > maxBuffer {
		b.buf = nil // do not keep a rare large buffer
	} else {
		b.buf = b.buf[:0]
	}
}

// Close flushes and makes later writes go straight through. The underlying
// writer is not closed.
func (b *Writer) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.Flush()
}

// Handler is a slog.Handler that flushes its Writer after every record at
// level Urgent or above.
type Handler struct {
	slog.Handler
	W      *Writer
	Urgent slog.Level
}

// NewHandler wraps h, which writes to w, so that records at urgent level or
// above are written at once.
func NewHandler(h slog.Handler, w *Writer, urgent slog.Level) *Handler {
	return &Handler{Handler: h, W: w, Urgent: urgent}
}

// Handle passes r on, and flushes when r is urgent.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= h.Urgent {
		if ferr := h.W.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

// WithAttrs returns a Handler around h's handler with attrs added.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{Handler: h.Handler.WithAttrs(attrs), W: h.W, Urgent: h.Urgent}
}

// WithGroup returns a Handler around h's handler in group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{Handler: h.Handler.WithGroup(name), W: h.W, Urgent: h.Urgent}
}
