package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// SocketMode is the permission of a metrics UNIX socket: the daemon's
// user and group may scrape.
const SocketMode os.FileMode = 0o660

// IsUnix reports whether a [metrics] listen value is a UNIX socket path
// (absolute) rather than a TCP host:port.
func IsUnix(addr string) bool { return strings.HasPrefix(addr, "/") }

// Listen opens the metrics listener at addr: a TCP host:port, or for an
// absolute path a UNIX stream socket with mode SocketMode. A socket file
// already at the path (a crashed daemon's, or the previous daemon's in a
// live upgrade) is replaced; any other file is an error. A UNIX
// listener's file is not removed by Close: Server.Close does that.
func Listen(addr string) (net.Listener, error) {
	if !IsUnix(addr) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
		}
		return l, nil
	}
	if fi, err := os.Lstat(addr); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("metrics listener on %s: the path is a file, not a socket: remove it or choose another path", addr)
		}
		if err := os.Remove(addr); err != nil {
			return nil, fmt.Errorf("metrics listener on %s: replacing the old socket: %w", addr, err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(addr, SocketMode); err != nil {
		l.Close()
		os.Remove(addr)
		return nil, fmt.Errorf("metrics listener on %s: %w", addr, err)
	}
	return l, nil
}

// Server serves the metrics over HTTP: /metrics, and /healthz, which
// answers 200 while the daemon serves and 503 once it stops or has handed
// over to the next daemon. Create it with NewServer.
type Server struct {
	m       *Metrics
	log     *slog.Logger
	addr    string
	serving atomic.Bool
	http    *http.Server

	mu     sync.Mutex
	l      net.Listener
	closed bool
	done   chan struct{} // closed when Start's goroutine ends
}

// NewServer returns a Server of m's metrics for addr (see Listen), not
// listening yet. log may be nil.
func NewServer(m *Metrics, addr string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{m: m, log: log, addr: addr, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorLog: slogAdapter{log}}))
	mux.HandleFunc("GET /healthz", s.healthz)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	s.serving.Store(true)
	return s
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.serving.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "stopping")
		return
	}
	fmt.Fprintln(w, "ok")
}

// Start listens and serves on a goroutine of its own until ctx ends or
// Close is called. A TCP address in use (the previous daemon's, during a
// live upgrade) is retried every retry until it is free; every other
// failure is logged and metrics are then not served.
func (s *Server) Start(ctx context.Context, retry time.Duration) {
	go func() {
		defer close(s.done)
		logged := false
		for {
			l, err := Listen(s.addr)
			if err == nil {
				s.mu.Lock()
				if s.closed {
					s.mu.Unlock()
					l.Close()
					return
				}
				s.l = l
				s.mu.Unlock()
				s.log.Info("serving metrics", "listen", s.addr)
				if err := s.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
					s.log.Error("metrics listener failed; metrics are not served", "listen", s.addr, "err", err)
				}
				return
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				s.log.Error("cannot serve metrics", "err", err)
				return
			}
			if !logged {
				s.log.Warn("metrics listener: address in use; retrying until it is free", "listen", s.addr)
				logged = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}()
}

// Addr is the listener's address once it listens, else nil.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.l == nil {
		return nil
	}
	return s.l.Addr()
}

// Stopping makes /healthz answer 503 from now on.
func (s *Server) Stopping() { s.serving.Store(false) }

// Close stops serving; with unlink, it removes a UNIX socket's file (not
// when the next daemon serves it). It waits for Start's goroutine, and is
// idempotent.
func (s *Server) Close(unlink bool) {
	s.Stopping()
	s.mu.Lock()
	already := s.closed
	s.closed = true
	l := s.l
	s.mu.Unlock()
	if already {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.http.Shutdown(ctx) // closes l; a scrape in progress gets a second to finish
	if l != nil && unlink && IsUnix(s.addr) {
		os.Remove(s.addr)
	}
}

// Wait waits for the serving goroutine Start made to end (after Close or
// the end of its context).
func (s *Server) Wait() { <-s.done }

// slogAdapter is promhttp's error log.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Println(v ...any) { a.log.Error("serving metrics", "err", fmt.Sprint(v...)) }
