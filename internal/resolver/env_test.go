package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain points the system files at paths that do not exist, so that no
// test reads this machine's /etc/resolv.conf or /etc/hosts by accident.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "resolver-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	SystemResolvConf = filepath.Join(dir, "no-resolv.conf")
	SystemHosts = filepath.Join(dir, "no-hosts")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The resolv.conf lines naming the two fake servers env maps.
const (
	server1 = "127.0.0.1:53"
	server2 = "[::1]:53"
	oneNS   = "nameserver 127.0.0.1\n"
	twoNS   = "nameserver 127.0.0.1\nnameserver ::1\n"
)

// env is a Resolver whose Dir holds files and whose resolv.conf's
// 127.0.0.1 and ::1 reach fake servers.
type env struct {
	r *Resolver
	d *dialer
}

// newEnv makes an env: files are written into Dir, servers[0] answers for
// 127.0.0.1:53 and servers[1] for [::1]:53. Queries time out after 200 ms.
func newEnv(t testing.TB, files map[string]string, servers ...*fakeServer) env {
	t.Helper()
	fakes := map[string]*fakeServer{}
	for i, f := range servers {
		fakes[[]string{server1, server2}[i]] = f
	}
	d := newDialer(t, fakes)
	return env{d: d, r: &Resolver{Dir: writeFiles(t, files), Dial: d.Dial, Timeout: 200 * time.Millisecond}}
}

// lookup runs LookupNetIP and checks what must hold for every lookup:
// addresses or an error, never both, and no connection left open.
func (e env) lookup(t testing.TB, network, host string) ([]string, error) {
	t.Helper()
	addrs, err := e.r.LookupNetIP(context.Background(), network, host)
	if err != nil && addrs != nil {
		t.Errorf("LookupNetIP(%q, %q) = %v and error %v, want one of them", network, host, addrs, err)
	}
	if err == nil && len(addrs) == 0 {
		t.Errorf("LookupNetIP(%q, %q) = no addresses and no error", network, host)
	}
	if n := e.d.openConns(); n != 0 {
		t.Errorf("after LookupNetIP(%q, %q): %d connections open, want 0", network, host, n)
	}
	return addrStrings(addrs), err
}

// wantErr says what a failed lookup's *net.DNSError must be: kind is
// "notfound", "timeout" or "temporary"; server its Server field ("" for
// any); contains, text its message must hold.
type wantErr struct {
	kind     string
	server   string
	contains []string
}

// check fails t unless got and err are want, or the error wantErr
// describes (when w.kind is not "").
func check(t testing.TB, got []string, err error, want []string, w wantErr) {
	t.Helper()
	if w.kind == "" {
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("got %v, error %v; want %v", got, err, want)
		}
		return
	}
	if err == nil {
		t.Fatalf("got %v, want a %s error", got, w.kind)
	}
	de := asDNSError(t, err)
	kinds := map[string]bool{"notfound": de.IsNotFound, "timeout": de.IsTimeout, "temporary": de.IsTemporary && !de.IsTimeout}
	if !kinds[w.kind] {
		t.Errorf("error %q: IsNotFound %v, IsTimeout %v, IsTemporary %v; want %s", err, de.IsNotFound, de.IsTimeout, de.IsTemporary, w.kind)
	}
	if w.kind == "notfound" && (de.IsTimeout || de.IsTemporary) {
		t.Errorf("error %q: not found, but IsTimeout %v, IsTemporary %v, want neither", err, de.IsTimeout, de.IsTemporary)
	}
	if w.server != "" && de.Server != w.server {
		t.Errorf("error %q: Server %q, want %q", err, de.Server, w.server)
	}
	for _, s := range w.contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

// dialer is a Resolver.Dial that connects the server addresses a resolver
// asks for to fake servers, records every dial and counts connections not
// yet closed.
type dialer struct {
	mu    sync.Mutex
	fakes map[string]*fakeServer // by the address the resolver asks for
	dials []string               // "udp 127.0.0.1:53", in order
	open  int
}

// newDialer maps each address ("127.0.0.1:53", "[::1]:53") to a fake.
// The test fails if a connection is still open when it ends.
func newDialer(t testing.TB, fakes map[string]*fakeServer) *dialer {
	t.Helper()
	d := &dialer{fakes: fakes}
	t.Cleanup(func() {
		if n := d.openConns(); n != 0 {
			t.Errorf("%d connections to name servers left open, want 0", n)
		}
	})
	return d
}

func (d *dialer) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	d.mu.Lock()
	d.dials = append(d.dials, network+" "+address)
	f := d.fakes[address]
	d.mu.Unlock()
	if f == nil {
		return nil, fmt.Errorf("test dialer: no fake server for %s", address)
	}
	target := f.udp.LocalAddr().String()
	if network == "tcp" {
		target = f.tcp.Addr().String()
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, target)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.open++
	d.mu.Unlock()
	return &countedConn{Conn: c, d: d}, nil
}

func (d *dialer) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dials)
}

func (d *dialer) openConns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open
}

// countedConn tells its dialer when it is closed (the first time).
type countedConn struct {
	net.Conn
	d    *dialer
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.d.mu.Lock()
		c.d.open--
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}

// writeFiles writes name to contents files into a new temporary
// directory and returns it.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, contents := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(contents), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// asDNSError returns err as a *net.DNSError, failing the test if it is not
// one.
func asDNSError(t testing.TB, err error) *net.DNSError {
	t.Helper()
	var de *net.DNSError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T), want a *net.DNSError", err, err)
	}
	return de
}

// addrStrings formats addresses for comparison with a want list.
func addrStrings(addrs []netip.Addr) []string {
	out := []string{}
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}
