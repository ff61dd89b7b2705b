package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// get fetches path from the metrics server at addr (a TCP address or a
// UNIX socket path) and returns the status and body.
func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	tr := &http.Transport{}
	url := "http://" + addr + path
	if IsUnix(addr) {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}
		url = "http://metrics" + path
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// started starts a Server of m on addr and waits until it listens.
func started(t *testing.T, m *Metrics, addr string) (*Server, string) {
	t.Helper()
	s := NewServer(m, addr, nil)
	s.Start(t.Context(), 10*time.Millisecond)
	t.Cleanup(func() { s.Close(true); s.Wait() })
	waitListening(t, s)
	if IsUnix(addr) {
		return s, addr
	}
	return s, s.Addr().String()
}

// waitListening waits until s listens.
func waitListening(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Addr() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the metrics server on %s does not listen", s.addr)
		}
		time.Sleep(time.Millisecond) // polling for a state with no event to wait on
	}
}

// TestServeTCP: /metrics on a loopback TCP port serves the daemon's
// metrics in the text format, /healthz is 200 until Stopping, and other
// paths are 404.
func TestServeTCP(t *testing.T) {
	m := New(Options{Version: "test"})
	m.Request(Native, wire.OpBind, "", time.Millisecond)
	s, addr := started(t, m, "127.0.0.1:0")
	code, body := get(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d; want 200", code)
	}
	for _, line := range []string{
		`sockfactory_requests_total{code="ok",door="native",op="bind"} 1`,
		`sockfactory_build_info{goversion="`,
		`process_open_fds `,
		`go_goroutines `,
	} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if code, body := get(t, addr, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q; want 200 \"ok\\n\"", code, body)
	}
	if code, _ := get(t, addr, "/"); code != http.StatusNotFound {
		t.Errorf("/: status %d; want 404", code)
	}
	s.Stopping()
	if code, _ := get(t, addr, "/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz after Stopping: status %d; want 503", code)
	}
}

// TestServeUnix: on a UNIX socket, the file has mode 0660, replaces a
// stale socket left at the path, and is removed by Close; a regular file
// at the path is refused, not removed.
func TestServeUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "metrics.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	m := New(Options{NoRuntime: true})
	s, _ := started(t, m, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != SocketMode {
		t.Errorf("socket mode %04o; want %04o", got, SocketMode)
	}
	if code, body := get(t, path, "/metrics"); code != http.StatusOK || !strings.Contains(body, "sockfactory_build_info") {
		t.Fatalf("/metrics over the UNIX socket: status %d, body %.200q", code, body)
	}
	s.Close(true)
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("after Close: Lstat = %v; want the socket removed", err)
	}

	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen on a regular file: got %v; want a not-a-socket error", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the regular file is gone: %v", err)
	}
}

// TestServeRetriesAddressInUse: a TCP address in use (the previous
// daemon's, in a live upgrade) is served once it is free.
func TestServeRetriesAddressInUse(t *testing.T) {
	old, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := old.Addr().String()
	s := NewServer(New(Options{NoRuntime: true}), addr, nil)
	s.Start(t.Context(), 5*time.Millisecond)
	defer func() { s.Close(true); s.Wait() }()
	if s.Addr() != nil {
		t.Fatal("listening while the address is in use")
	}
	old.Close()
	waitListening(t, s)
	if code, _ := get(t, addr, "/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics: status %d; want 200", code)
	}
}

// blockingStore holds the registry's lock for as long as the test wants:
// the registry calls Add with its lock held.
type blockingStore struct {
	entered, release chan struct{}
}

func (b *blockingStore) Add(registry.Key, int) {
	close(b.entered)
	<-b.release
}
func (b *blockingStore) Remove(registry.Key) {}
func (b *blockingStore) Changed()            {}

// TestScrapeDoesNotTakeTheRegistryLock: a scrape while a request holds
// the registry's lock finishes at once, and already shows the socket the
// request is caching.
func TestScrapeDoesNotTakeTheRegistryLock(t *testing.T) {
	m := New(Options{NoRuntime: true})
	reg := registry.New(time.Minute)
	defer reg.Close()
	m.Watch(reg)
	st := &blockingStore{entered: make(chan struct{}), release: make(chan struct{})}
	reg.SetStore(st)
	opts := binder.Defaults("tcp")
	req := &registry.Request{
		Key:     registry.Key{Proto: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:0")},
		Options: opts, Holder: &registry.Holder{UID: 1},
		Create: func() (*os.File, netip.AddrPort, error) {
			return binder.Create("tcp", netip.MustParseAddrPort("127.0.0.1:0"), opts)
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		g, err := reg.Acquire(req)
		if err != nil {
			t.Errorf("Acquire: %v", err)
			return
		}
		g.File.Close()
	}()
	<-st.entered // the registry is locked now, until release
	scraped := make(chan float64)
	go func() { scraped <- value(t, m, "sockfactory_held_sockets", "protocol", "tcp") }()
	select {
	case n := <-scraped:
		if n != 1 {
			t.Errorf("sockfactory_held_sockets{protocol=\"tcp\"} = %v under the lock; want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Error("a scrape blocked on the registry's lock")
	}
	close(st.release)
	<-done
	if n := value(t, m, "sockfactory_references", "protocol", "tcp"); n != 1 {
		t.Errorf("sockfactory_references{protocol=\"tcp\"} = %v; want 1", n)
	}
}
