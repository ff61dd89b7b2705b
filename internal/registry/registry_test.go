package registry_test

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/registry"
)

const (
	shareNone     = registry.ShareNone
	shareSameName = registry.ShareSameName
	shareAny      = registry.ShareAny
)

func TestMain(m *testing.M) {
	// The runtime's poller keeps its fds open for good once started; start
	// it now so that it does not count as a leak in the first test.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	os.Exit(m.Run())
}

// openFDs counts the test process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v", err)
	}
	return len(ents)
}

// poll reports whether cond became true within timeout.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkFDs fails t if, once t and its other cleanups are done, the process
// holds more fds than now. Call it first so that its cleanup runs last.
func checkFDs(t *testing.T) {
	t.Helper()
	base := openFDs(t)
	t.Cleanup(func() {
		got := base
		if !poll(5*time.Second, func() bool { got = openFDs(t); return got <= base }) {
			t.Errorf("open fds after the test: got %d, want %d (the count before it)", got, base)
		}
	})
}

// fixture is a registry whose Create funcs make real sockets with binder
// and count their calls.
type fixture struct {
	t       *testing.T
	g       *registry.Registry
	creates atomic.Int32
}

func newFixture(t *testing.T, ttl time.Duration) *fixture {
	t.Helper()
	checkFDs(t)
	f := &fixture{t: t, g: registry.New(ttl)}
	t.Cleanup(f.g.Close)
	return f
}

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

func key(proto string, addr netip.Addr, port uint16) registry.Key {
	return registry.Key{Proto: proto, Addr: netip.AddrPortFrom(addr, port)}
}

// tcp0 is the key for a new TCP socket on 127.0.0.1 with a port the system picks.
var tcp0 = key("tcp", lo4, 0)

// create returns a Create func that binds k with opts and counts its calls.
func (f *fixture) create(k registry.Key, opts binder.Options) func() (*os.File, netip.AddrPort, error) {
	return func() (*os.File, netip.AddrPort, error) {
		f.creates.Add(1)
		return binder.Create(k.Proto, k.Addr, opts)
	}
}

// req is a request for k with the default options and no linger.
func (f *fixture) req(k registry.Key, h *registry.Holder, share registry.Share, name string) *registry.Request {
	opts := binder.Defaults(k.Proto)
	return &registry.Request{Key: k, Share: share, Name: name, Options: opts, Holder: h, Create: f.create(k, opts)}
}

func (f *fixture) pending(k registry.Key, h *registry.Holder, share registry.Share, name string) *registry.Request {
	r := f.req(k, h, share, name)
	r.Pending = true
	return r
}

// acquire must succeed; the grant's file is closed when the test ends.
func (f *fixture) acquire(r *registry.Request) *registry.Grant {
	f.t.Helper()
	g, err := f.g.Acquire(r)
	if err != nil {
		f.t.Fatalf("Acquire(%s, share %s, name %q, pending %v): got error %v, want a grant", r.Key, r.Share, r.Name, r.Pending, err)
	}
	f.closeLater(g)
	if !r.Lend && r.Pending != (g.File == nil) {
		f.t.Errorf("Acquire(pending %v): got file %v, want a file only when not pending", r.Pending, g.File)
	}
	return g
}

func (f *fixture) closeLater(g *registry.Grant) {
	if g != nil && g.File != nil {
		f.t.Cleanup(func() { g.File.Close() })
	}
}

func (f *fixture) wantCounts(sockets, refs int) {
	f.t.Helper()
	gotS, gotR := f.g.Counts()
	if gotS != sockets || gotR != refs {
		f.t.Errorf("Counts(): got %d sockets, %d refs; want %d sockets, %d refs", gotS, gotR, sockets, refs)
	}
}

// pollCounts waits until Counts reports sockets and refs.
func (f *fixture) pollCounts(sockets, refs int) {
	f.t.Helper()
	var gotS, gotR int
	if !poll(5*time.Second, func() bool { gotS, gotR = f.g.Counts(); return gotS == sockets && gotR == refs }) {
		f.t.Fatalf("Counts() after waiting: got %d sockets, %d refs; want %d sockets, %d refs", gotS, gotR, sockets, refs)
	}
}

// state is what a rejected request must leave unchanged.
type state struct {
	sockets, refs int
	status        []registry.SocketInfo
	creates       int32
}

func (f *fixture) state() state {
	s, r := f.g.Counts()
	return state{s, r, f.g.Status(nil, true), f.creates.Load()}
}

func (f *fixture) wantUnchanged(before state) {
	f.t.Helper()
	after := f.state()
	if after.sockets != before.sockets || after.refs != before.refs {
		f.t.Errorf("Counts() after a rejected request: got %d sockets, %d refs; want %d, %d as before", after.sockets, after.refs, before.sockets, before.refs)
	}
	if after.creates != before.creates {
		f.t.Errorf("Create calls for a rejected request: got %d, want 0", after.creates-before.creates)
	}
	if !reflect.DeepEqual(after.status, before.status) {
		f.t.Errorf("Status(all) after a rejected request:\n got  %+v\nwant %+v (as before)", after.status, before.status)
	}
}

// inode identifies the socket behind f.
type inode struct{ dev, ino uint64 }

func inodeOf(t *testing.T, f *os.File) inode {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		t.Fatalf("Control: %v", err)
	}
	if serr != nil {
		t.Fatalf("fstat %s: %v", f.Name(), serr)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		t.Fatalf("fstat %s: got mode %o, want a socket", f.Name(), st.Mode)
	}
	return inode{uint64(st.Dev), st.Ino}
}

// portFree reports whether k's address and port can be bound by a fresh
// socket without SO_REUSEADDR, that is whether nothing holds it.
func portFree(t *testing.T, k registry.Key) bool {
	t.Helper()
	family, typ := unix.AF_INET, unix.SOCK_STREAM
	if k.Addr.Addr().Is6() {
		family = unix.AF_INET6
	}
	if k.Proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	defer unix.Close(fd)
	var sa unix.Sockaddr
	if family == unix.AF_INET6 {
		sa = &unix.SockaddrInet6{Port: int(k.Addr.Port()), Addr: k.Addr.Addr().As16()}
	} else {
		sa = &unix.SockaddrInet4{Port: int(k.Addr.Port()), Addr: k.Addr.Addr().As4()}
	}
	err = unix.Bind(fd, sa)
	if err != nil && !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("probe bind %s: got %v, want success or EADDRINUSE", k, err)
	}
	return err == nil
}

func wantPortFree(t *testing.T, k registry.Key, want bool) {
	t.Helper()
	if got := portFree(t, k); got != want {
		t.Errorf("%s free for a new bind: got %v, want %v", k, got, want)
	}
}

func TestParseShare(t *testing.T) {
	tests := []struct {
		in      string
		want    registry.Share
		wantStr string
		wantErr bool
	}{
		{"", shareNone, "none", false},
		{"none", shareNone, "none", false},
		{"same-name", shareSameName, "same-name", false},
		{"any", shareAny, "any", false},
		{"ANY", 0, "", true},
		{"sameapp", 0, "", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			got, err := registry.ParseShare(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Errorf("ParseShare(%q): got %v, nil; want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want || got.String() != tt.wantStr {
				t.Errorf("ParseShare(%q): got %v (%q), %v; want %v (%q), nil", tt.in, int(got), got, err, int(tt.want), tt.wantStr)
			}
		})
	}
}

// shareMatrix is the share rule written out: an existing reference with
// share mode existing, and a new request with mode request, whose names are
// the same or differ.
var shareMatrix = []struct {
	existing, request registry.Share
	sameNames         bool
	shared            bool
}{
	{shareNone, shareNone, true, false},
	{shareNone, shareNone, false, false},
	{shareNone, shareSameName, true, false},
	{shareNone, shareSameName, false, false},
	{shareNone, shareAny, true, false},
	{shareNone, shareAny, false, false},
	{shareSameName, shareNone, true, false},
	{shareSameName, shareNone, false, false},
	{shareSameName, shareSameName, true, true},
	{shareSameName, shareSameName, false, false},
	{shareSameName, shareAny, true, true},
	{shareSameName, shareAny, false, false},
	{shareAny, shareNone, true, false},
	{shareAny, shareNone, false, false},
	{shareAny, shareSameName, true, true},
	{shareAny, shareSameName, false, false},
	{shareAny, shareAny, true, true},
	{shareAny, shareAny, false, true},
}

func matrixName(existing, request registry.Share, sameNames bool) string {
	names := "different-names"
	if sameNames {
		names = "same-names"
	}
	return fmt.Sprintf("held_%s/asked_%s/%s", existing, request, names)
}

func TestCompatible(t *testing.T) {
	for _, tt := range shareMatrix {
		t.Run(matrixName(tt.existing, tt.request, tt.sameNames), func(t *testing.T) {
			other := "alpha"
			if !tt.sameNames {
				other = "beta"
			}
			if got := registry.Compatible(tt.existing, "alpha", tt.request, other); got != tt.shared {
				t.Errorf("Compatible(%s, alpha, %s, %s): got %v, want %v", tt.existing, tt.request, other, got, tt.shared)
			}
			if got := registry.Compatible(tt.request, other, tt.existing, "alpha"); got != tt.shared {
				t.Errorf("Compatible(%s, %s, %s, alpha): got %v, want %v (the rule is symmetric)", tt.request, other, tt.existing, got, tt.shared)
			}
		})
	}
}

func TestAcquireShareMatrix(t *testing.T) {
	for _, tt := range shareMatrix {
		t.Run(matrixName(tt.existing, tt.request, tt.sameNames), func(t *testing.T) {
			f := newFixture(t, time.Minute)
			a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
			first := f.acquire(f.req(tcp0, a, tt.existing, "alpha"))
			name := "alpha"
			if !tt.sameNames {
				name = "beta"
			}
			before := f.state()
			g, err := f.g.Acquire(f.req(first.Key, b, tt.request, name))
			f.closeLater(g)
			if !tt.shared {
				if !errors.Is(err, registry.ErrShareConflict) || g != nil {
					t.Fatalf("Acquire(%s, %q) over %s: got %+v, %v; want no grant and ErrShareConflict", tt.request, name, tt.existing, g, err)
				}
				f.wantUnchanged(before)
				return
			}
			if err != nil {
				t.Fatalf("Acquire(%s, %q) over %s: got error %v, want a shared grant", tt.request, name, tt.existing, err)
			}
			if !g.Shared || g.Key != first.Key {
				t.Errorf("grant: got shared %v, key %s; want shared true, key %s", g.Shared, g.Key, first.Key)
			}
			if got, want := inodeOf(t, g.File), inodeOf(t, first.File); got != want {
				t.Errorf("shared socket inode: got %+v, want %+v (the first holder's)", got, want)
			}
			if got := f.creates.Load(); got != 1 {
				t.Errorf("Create calls: got %d, want 1", got)
			}
			f.wantCounts(1, 2)
		})
	}
}

// TestShareRuleEveryHolder checks that a request must be compatible with
// every reference, pending tokens included, not only the first.
func TestShareRuleEveryHolder(t *testing.T) {
	type ref struct {
		share   registry.Share
		name    string
		pending bool
	}
	tests := []struct {
		name     string
		existing []ref
		share    registry.Share
		reqName  string
		shared   bool
	}{
		{"second held ref forbids", []ref{{shareAny, "x", false}, {shareSameName, "x", false}}, shareAny, "y", false},
		{"pending token forbids", []ref{{shareAny, "x", false}, {shareSameName, "x", true}}, shareAny, "y", false},
		{"lone pending token forbids", []ref{{shareNone, "", true}}, shareAny, "", false},
		{"all compatible", []ref{{shareAny, "x", false}, {shareSameName, "x", false}, {shareSameName, "x", true}}, shareAny, "x", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			a, c := &registry.Holder{UID: 1}, &registry.Holder{UID: 3}
			k := tcp0
			for _, r := range tt.existing {
				req := f.req(k, a, r.share, r.name)
				req.Pending = r.pending
				k = f.acquire(req).Key
			}
			before := f.state()
			g, err := f.g.Acquire(f.req(k, c, tt.share, tt.reqName))
			f.closeLater(g)
			if tt.shared {
				if err != nil || !g.Shared {
					t.Fatalf("Acquire(%s, %q): got %+v, %v; want a shared grant", tt.share, tt.reqName, g, err)
				}
				f.wantCounts(1, len(tt.existing)+1)
				return
			}
			if !errors.Is(err, registry.ErrShareConflict) {
				t.Fatalf("Acquire(%s, %q): got %+v, %v; want ErrShareConflict", tt.share, tt.reqName, g, err)
			}
			f.wantUnchanged(before)
		})
	}
}

// TestShareRuleManyReferences checks the share rule on one socket against a
// model through a long run of acquires and releases in any order: the
// registry checks a request against one reference while all are alike, and
// must notice when they stop being alike and when they are alike again.
func TestShareRuleManyReferences(t *testing.T) {
	f := newFixture(t, time.Minute)
	h := &registry.Holder{UID: 1}
	type held struct {
		token string
		share registry.Share
		name  string
	}
	// The anchor is never released, so that the socket stays cached.
	first := f.acquire(f.req(tcp0, h, shareAny, "x"))
	first.File.Close()
	refs := []held{{first.Token, shareAny, "x"}}
	rnd := rand.New(rand.NewPCG(1, 2))
	shares := []registry.Share{shareAny, shareSameName, shareNone}
	names := []string{"x", "y"}
	var granted, refused int
	for step := range 3000 {
		if len(refs) > 1 && rnd.IntN(3) == 0 {
			i := 1 + rnd.IntN(len(refs)-1)
			if _, err := f.g.Release(refs[i].token, h, false); err != nil {
				t.Fatalf("step %d: release: %v", step, err)
			}
			refs = append(refs[:i], refs[i+1:]...)
			continue
		}
		sh, name := shares[rnd.IntN(len(shares))], names[rnd.IntN(len(names))]
		want := true
		for _, r := range refs {
			want = want && registry.Compatible(r.share, r.name, sh, name)
		}
		g, err := f.g.Acquire(f.req(first.Key, h, sh, name))
		if want != (err == nil) {
			t.Fatalf("step %d: Acquire(%s, %q) with %d references: got %v, want shared %v", step, sh, name, len(refs), err, want)
		}
		if err != nil {
			if !errors.Is(err, registry.ErrShareConflict) {
				t.Fatalf("step %d: got %v, want ErrShareConflict", step, err)
			}
			refused++
			continue
		}
		granted++
		g.File.Close()
		refs = append(refs, held{g.Token, sh, name})
	}
	f.wantCounts(1, len(refs))
	if granted < 100 || refused < 100 {
		t.Fatalf("%d granted, %d refused: the run did not exercise both", granted, refused)
	}
	if n := f.g.ReleaseHolder(h); n != len(refs) {
		t.Fatalf("ReleaseHolder: %d references, want %d", n, len(refs))
	}
	f.wantCounts(0, 0)
}

func TestAcquireOptionsDiffer(t *testing.T) {
	tests := []struct {
		name   string
		change func(*binder.Options)
	}{
		{"reuseport", func(o *binder.Options) { o.ReusePort = true }},
		{"rcvbuf", func(o *binder.Options) { o.RcvBuf = 1 << 16 }},
		{"not listening", func(o *binder.Options) { o.Listen = false }},
		{"no reuseaddr", func(o *binder.Options) { o.ReuseAddr = false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
			first := f.acquire(f.req(tcp0, a, shareAny, ""))
			opts := binder.Defaults("tcp")
			tt.change(&opts)
			r := f.req(first.Key, b, shareAny, "")
			r.Options, r.Create = opts, f.create(first.Key, opts)
			before := f.state()
			g, err := f.g.Acquire(r)
			f.closeLater(g)
			if !errors.Is(err, registry.ErrOptionsDiffer) || g != nil {
				t.Fatalf("Acquire with options %+v over %+v: got %+v, %v; want ErrOptionsDiffer", opts, binder.Defaults("tcp"), g, err)
			}
			f.wantUnchanged(before)
		})
	}
}

// TestAcquireSharesSocket checks that holders of a shared key get the very
// same socket, and a new key gets another one.
func TestAcquireSharesSocket(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		for _, addr := range []netip.Addr{lo4, lo6} {
			t.Run(proto+"/"+addr.String(), func(t *testing.T) {
				f := newFixture(t, time.Minute)
				a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
				first := f.acquire(f.req(key(proto, addr, 0), a, shareAny, ""))
				if first.Shared {
					t.Errorf("first grant: got shared true, want false")
				}
				second := f.acquire(f.req(first.Key, b, shareAny, ""))
				if !second.Shared || second.Key != first.Key {
					t.Errorf("second grant: got shared %v, key %s; want true, %s", second.Shared, second.Key, first.Key)
				}
				if got, want := inodeOf(t, second.File), inodeOf(t, first.File); got != want {
					t.Errorf("second grant's socket: got inode %+v, want %+v (the first grant's)", got, want)
				}
				if second.File.Fd() == first.File.Fd() {
					t.Errorf("both grants got fd %d, want separate duplicates", first.File.Fd())
				}
				other := f.acquire(f.req(key(proto, addr, 0), a, shareAny, ""))
				if got, notWant := inodeOf(t, other.File), inodeOf(t, first.File); got == notWant {
					t.Errorf("a new port-0 socket: got inode %+v, want another socket than the first", got)
				}
				f.wantCounts(2, 3)
			})
		}
	}
}

func TestCreateErrorChangesNothing(t *testing.T) {
	f := newFixture(t, time.Minute)
	h := &registry.Holder{UID: 1}
	taken := f.acquire(f.req(tcp0, h, shareNone, ""))
	// Another registry asks for the same port: the bind fails.
	other := registry.New(time.Minute)
	defer other.Close()
	r := f.req(taken.Key, h, shareAny, "")
	g, err := other.Acquire(r)
	if !errors.Is(err, syscall.EADDRINUSE) || g != nil {
		t.Fatalf("Acquire of a port bound elsewhere: got %+v, %v; want EADDRINUSE", g, err)
	}
	if s, refs := other.Counts(); s != 0 || refs != 0 {
		t.Errorf("Counts() after a failed Create: got %d sockets, %d refs; want 0, 0", s, refs)
	}
}

func TestRelease(t *testing.T) {
	f := newFixture(t, time.Minute)
	a, b, admin := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}, &registry.Holder{UID: 0}
	ga := f.acquire(f.req(tcp0, a, shareAny, ""))
	gb := f.acquire(f.req(ga.Key, b, shareAny, ""))
	ga.File.Close()
	gb.File.Close()

	if _, err := f.g.Release(ga.Token, b, false); !errors.Is(err, registry.ErrNoToken) {
		t.Errorf("Release of a's token by b: got %v, want ErrNoToken", err)
	}
	if _, err := f.g.Release("00000000000000000000000000000000", a, false); !errors.Is(err, registry.ErrNoToken) {
		t.Errorf("Release of an unknown token: got %v, want ErrNoToken", err)
	}
	f.wantCounts(1, 2)

	k, err := f.g.Release(ga.Token, a, false)
	if err != nil || k != ga.Key {
		t.Errorf("Release by its holder: got %s, %v; want %s, nil", k, err, ga.Key)
	}
	if _, err := f.g.Release(ga.Token, a, false); !errors.Is(err, registry.ErrNoToken) {
		t.Errorf("second Release of the same token: got %v, want ErrNoToken", err)
	}
	f.wantCounts(1, 1)
	wantPortFree(t, ga.Key, false)

	k, err = f.g.Release(gb.Token, admin, true)
	if err != nil || k != gb.Key {
		t.Errorf("Release by an admin: got %s, %v; want %s, nil", k, err, gb.Key)
	}
	f.wantCounts(0, 0)
	wantPortFree(t, ga.Key, true)
}

func TestReleasePending(t *testing.T) {
	tests := []struct {
		name    string
		by      string // "owner", "other" or "admin"
		admin   bool
		allowed bool
	}{
		{"owner", "owner", false, true},
		{"other holder", "other", false, false},
		{"other holder as admin", "other", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			owner, other := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
			g := f.acquire(f.pending(tcp0, owner, shareNone, ""))
			f.wantCounts(1, 1)
			by := owner
			if tt.by == "other" {
				by = other
			}
			_, err := f.g.Release(g.Token, by, tt.admin)
			if !tt.allowed {
				if !errors.Is(err, registry.ErrNoToken) {
					t.Errorf("Release(pending, %s, admin %v): got %v, want ErrNoToken", tt.by, tt.admin, err)
				}
				f.wantCounts(1, 1)
				return
			}
			if err != nil {
				t.Errorf("Release(pending, %s, admin %v): got %v, want nil", tt.by, tt.admin, err)
			}
			f.wantCounts(0, 0)
			wantPortFree(t, g.Key, true)
			if _, err := f.g.Pickup(g.Token, other, func(registry.Key) bool { return true }); !errors.Is(err, registry.ErrNoToken) {
				t.Errorf("Pickup of a released token: got %v, want ErrNoToken", err)
			}
		})
	}
}

func TestReleaseHolder(t *testing.T) {
	f := newFixture(t, time.Minute)
	a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	s1a := f.acquire(f.req(tcp0, a, shareAny, ""))
	s1a2 := f.acquire(f.req(s1a.Key, a, shareAny, ""))
	s1b := f.acquire(f.req(s1a.Key, b, shareAny, ""))
	s2a := f.acquire(f.req(key("udp", lo4, 0), a, shareNone, ""))
	aPending := f.acquire(f.pending(tcp0, a, shareNone, ""))
	for _, g := range []*registry.Grant{s1a, s1a2, s1b, s2a} {
		g.File.Close()
	}
	f.wantCounts(3, 5)

	if got := f.g.ReleaseHolder(a); got != 3 {
		t.Errorf("ReleaseHolder(a): got %d, want 3 (its held references)", got)
	}
	// b's reference and a's pending token (not held yet) stay.
	f.wantCounts(2, 2)
	wantPortFree(t, s2a.Key, true)
	wantPortFree(t, s1a.Key, false)
	if _, err := f.g.Release(s1a.Token, a, true); !errors.Is(err, registry.ErrNoToken) {
		t.Errorf("Release of a token dropped with its holder: got %v, want ErrNoToken", err)
	}
	if got := f.g.ReleaseHolder(a); got != 0 {
		t.Errorf("second ReleaseHolder(a): got %d, want 0", got)
	}
	if got := f.g.ReleaseHolder(&registry.Holder{UID: 1}); got != 0 {
		t.Errorf("ReleaseHolder of another Holder with a's fields: got %d, want 0 (holders are compared by pointer)", got)
	}
	f.wantCounts(2, 2)

	if got := f.g.ReleaseHolder(b); got != 1 {
		t.Errorf("ReleaseHolder(b): got %d, want 1", got)
	}
	f.wantCounts(1, 1)
	wantPortFree(t, s1a.Key, true)

	if _, err := f.g.Release(aPending.Token, a, false); err != nil {
		t.Errorf("Release of a's pending token by a: got %v, want nil", err)
	}
	f.wantCounts(0, 0)
	wantPortFree(t, aPending.Key, true)
}

func allow(registry.Key) bool { return true }

func TestPickup(t *testing.T) {
	f := newFixture(t, time.Minute)
	owner, app := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	held := f.acquire(f.req(tcp0, owner, shareAny, ""))
	p := f.acquire(f.pending(held.Key, owner, shareAny, ""))
	if p.Expires.IsZero() || !p.Shared {
		t.Errorf("pending grant: got expires %v, shared %v; want an expiry and shared true", p.Expires, p.Shared)
	}

	g, err := f.g.Pickup(p.Token, app, allow)
	if err != nil {
		t.Fatalf("Pickup: got %v, want a grant", err)
	}
	f.closeLater(g)
	if g.Token != p.Token || g.Key != held.Key || !g.Shared || g.File == nil {
		t.Errorf("Pickup grant: got token %s, key %s, shared %v, file %v; want %s, %s, true, a file", g.Token, g.Key, g.Shared, g.File, p.Token, held.Key)
	}
	if got, want := inodeOf(t, g.File), inodeOf(t, held.File); got != want {
		t.Errorf("picked-up socket: got inode %+v, want %+v", got, want)
	}
	f.wantCounts(1, 2)

	g2, err := f.g.Pickup(p.Token, app, allow)
	f.closeLater(g2)
	if !errors.Is(err, registry.ErrNoToken) {
		t.Errorf("second Pickup: got %+v, %v; want ErrNoToken", g2, err)
	}
	// The reference is now the app's.
	if _, err := f.g.Release(p.Token, owner, false); !errors.Is(err, registry.ErrNoToken) {
		t.Errorf("Release of a picked-up token by its former owner: got %v, want ErrNoToken", err)
	}
	if got := f.g.ReleaseHolder(app); got != 1 {
		t.Errorf("ReleaseHolder(app): got %d, want 1", got)
	}
	f.wantCounts(1, 1)
}

func TestPickupRefused(t *testing.T) {
	f := newFixture(t, time.Minute)
	owner, app := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	p := f.acquire(f.pending(tcp0, owner, shareNone, ""))
	before := f.state()
	var asked []registry.Key
	g, err := f.g.Pickup(p.Token, app, func(k registry.Key) bool { asked = append(asked, k); return false })
	f.closeLater(g)
	if !errors.Is(err, registry.ErrNoToken) || g != nil {
		t.Fatalf("Pickup refused by policy: got %+v, %v; want ErrNoToken", g, err)
	}
	if len(asked) != 1 || asked[0] != p.Key {
		t.Errorf("allowed() asked about: got %v, want [%s]", asked, p.Key)
	}
	f.wantUnchanged(before)
	st := f.g.Status(owner, false)
	if len(st) != 1 || len(st[0].Refs) != 1 || !st[0].Refs[0].Pending {
		t.Errorf("Status after a refused pickup: got %+v, want the token still pending", st)
	}

	g, err = f.g.Pickup(p.Token, app, allow)
	if err != nil {
		t.Fatalf("Pickup after a refused one: got %v, want a grant", err)
	}
	f.closeLater(g)
	f.wantCounts(1, 1)
}

func TestTokenExpiry(t *testing.T) {
	f := newFixture(t, 50*time.Millisecond)
	owner, app := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	p := f.acquire(f.pending(tcp0, owner, shareNone, ""))
	if d := time.Until(p.Expires); d > 50*time.Millisecond || d < -time.Second {
		t.Errorf("pending token expires in %v, want at most the 50ms TTL", d)
	}
	f.pollCounts(0, 0)
	wantPortFree(t, p.Key, true)
	if g, err := f.g.Pickup(p.Token, app, allow); !errors.Is(err, registry.ErrNoToken) {
		f.closeLater(g)
		t.Errorf("Pickup of an expired token: got %+v, %v; want ErrNoToken", g, err)
	}
	if _, err := f.g.Release(p.Token, owner, false); !errors.Is(err, registry.ErrNoToken) {
		t.Errorf("Release of an expired token: got %v, want ErrNoToken", err)
	}
}

func TestExpiredTokenStopsCountingAsHolder(t *testing.T) {
	// A second is long enough for the conflict check right after the
	// token is made, and short enough to wait out.
	f := newFixture(t, time.Second)
	a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	held := f.acquire(f.req(tcp0, a, shareAny, "mine"))
	f.acquire(f.pending(held.Key, a, shareSameName, "mine"))
	// While the token lives it forbids sharing under another name.
	g, err := f.g.Acquire(f.req(held.Key, b, shareAny, "other"))
	f.closeLater(g)
	if !errors.Is(err, registry.ErrShareConflict) {
		t.Fatalf("Acquire against a pending same-name token: got %v, want ErrShareConflict", err)
	}
	f.pollCounts(1, 1)
	g, err = f.g.Acquire(f.req(held.Key, b, shareAny, "other"))
	if err != nil {
		t.Fatalf("Acquire after the conflicting token expired: got %v, want a shared grant", err)
	}
	f.closeLater(g)
	if !g.Shared {
		t.Errorf("grant after expiry: got shared false, want true")
	}
	f.wantCounts(1, 2)
}

func TestLingerKeepsSocket(t *testing.T) {
	f := newFixture(t, time.Minute)
	a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	r := f.req(tcp0, a, shareNone, "")
	r.Linger = time.Hour
	g := f.acquire(r)
	ino := inodeOf(t, g.File)
	g.File.Close()
	if _, err := f.g.Release(g.Token, a, false); err != nil {
		t.Fatalf("Release: %v", err)
	}
	f.wantCounts(1, 0)
	wantPortFree(t, g.Key, false)
	st := f.g.Status(a, true)
	if len(st) != 1 || st[0].IdleSince.IsZero() || st[0].Linger != time.Hour || len(st[0].Refs) != 0 {
		t.Errorf("Status of a lingering socket: got %+v, want it idle, linger 1h, no refs", st)
	}
	if st := f.g.Status(a, false); len(st) != 0 {
		t.Errorf("Status(a, all=false) of a socket a no longer holds: got %+v, want nothing", st)
	}

	r = f.req(g.Key, b, shareNone, "")
	r.Linger = time.Hour
	g2 := f.acquire(r)
	if !g2.Shared {
		t.Errorf("re-acquire within linger: got shared false, want true")
	}
	if got := inodeOf(t, g2.File); got != ino {
		t.Errorf("re-acquired socket: got inode %+v, want %+v (the lingering one)", got, ino)
	}
	if got := f.creates.Load(); got != 1 {
		t.Errorf("Create calls: got %d, want 1", got)
	}
	if st := f.g.Status(b, false); len(st) != 1 || !st[0].IdleSince.IsZero() {
		t.Errorf("Status after re-acquire: got %+v, want one socket, not idle", st)
	}
}

func TestLingerExpires(t *testing.T) {
	f := newFixture(t, time.Minute)
	a := &registry.Holder{UID: 1}
	r := f.req(key("udp", lo4, 0), a, shareNone, "")
	r.Linger = 50 * time.Millisecond
	g := f.acquire(r)
	g.File.Close()
	if _, err := f.g.Release(g.Token, a, false); err != nil {
		t.Fatalf("Release: %v", err)
	}
	f.pollCounts(0, 0)
	wantPortFree(t, g.Key, true)
}

func TestPortZero(t *testing.T) {
	f := newFixture(t, time.Minute)
	h := &registry.Holder{UID: 1}
	g1 := f.acquire(f.req(tcp0, h, shareAny, ""))
	g2 := f.acquire(f.req(tcp0, h, shareAny, ""))
	for _, g := range []*registry.Grant{g1, g2} {
		if g.Shared || g.Key.Addr.Port() == 0 || g.Key.Addr.Addr() != lo4 || g.Key.Proto != "tcp" {
			t.Errorf("port-0 grant: got shared %v, key %s; want a new socket keyed by its real port", g.Shared, g.Key)
		}
		sa, err := unix.Getsockname(fdOf(t, g.File))
		if err != nil {
			t.Fatalf("getsockname: %v", err)
		}
		if got := sa.(*unix.SockaddrInet4).Port; got != int(g.Key.Addr.Port()) {
			t.Errorf("socket bound to port %d, want the grant key's %d", got, g.Key.Addr.Port())
		}
	}
	if g1.Key == g2.Key || inodeOf(t, g1.File) == inodeOf(t, g2.File) {
		t.Errorf("two port-0 grants: got keys %s and %s; want two sockets", g1.Key, g2.Key)
	}
	if got := f.creates.Load(); got != 2 {
		t.Errorf("Create calls: got %d, want 2", got)
	}
	f.wantCounts(2, 2)
	if st := f.g.Status(h, true); len(st) != 2 || st[0].Key.Addr.Port() == 0 || st[1].Key.Addr.Port() == 0 {
		t.Errorf("Status: got %+v, want two sockets with real ports", st)
	}
}

func fdOf(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	fd := -1
	rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

func TestTokens(t *testing.T) {
	f := newFixture(t, time.Minute)
	h := &registry.Holder{UID: 1}
	first := f.acquire(f.req(tcp0, h, shareAny, ""))
	valid := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	const n = 300
	for i := 0; i < n; i++ {
		r := f.req(first.Key, h, shareAny, "")
		r.Pending = i%2 == 1
		g := f.acquire(r)
		if g.File != nil {
			g.File.Close()
		}
		if !valid.MatchString(g.Token) {
			t.Fatalf("token %q: want 32 lowercase hex characters", g.Token)
		}
		if b, _ := hex.DecodeString(g.Token); len(b) != 16 {
			t.Errorf("token %q decodes to %d bytes, want 16", g.Token, len(b))
		}
		if seen[g.Token] || g.Token == first.Token {
			t.Fatalf("token %q issued twice", g.Token)
		}
		seen[g.Token] = true
	}
	f.wantCounts(1, n+1)
}

func TestStatus(t *testing.T) {
	f := newFixture(t, time.Minute)
	a := &registry.Holder{UID: 1000, PID: 11}
	b := &registry.Holder{UID: 1001, PID: 22}
	c := &registry.Holder{UID: 1002, PID: 33}
	f.g.SetApp(a, "resolver")
	f.g.SetApp(b, "auth")

	a1 := f.acquire(f.req(tcp0, a, shareAny, "n"))               // socket 1: a and b
	b1 := f.acquire(f.req(a1.Key, b, shareSameName, "n"))        // socket 1
	b2 := f.acquire(f.req(key("udp", lo4, 0), b, shareNone, "")) // socket 2: b only
	a3 := f.acquire(f.pending(tcp0, a, shareNone, ""))           // socket 3: a's pending token

	type ref struct {
		token   string
		holder  registry.Holder
		share   registry.Share
		name    string
		pending bool
		own     bool
	}
	// want maps each listed socket to its refs, by holder UID.
	check := func(t *testing.T, h *registry.Holder, all bool, want map[registry.Key][]ref) {
		t.Helper()
		st := f.g.Status(h, all)
		got := map[registry.Key][]ref{}
		for i, s := range st {
			if i > 0 {
				p, q := st[i-1].Key, s.Key
				if p.Proto > q.Proto || (p.Proto == q.Proto && p.Addr.Compare(q.Addr) >= 0) {
					t.Errorf("Status order: got %s before %s, want sorted by protocol then address", p, q)
				}
			}
			if s.Created.IsZero() {
				t.Errorf("Status %s: got zero Created, want the creation time", s.Key)
			}
			for _, r := range s.Refs {
				if r.Pending == r.Expires.IsZero() {
					t.Errorf("Status %s ref %+v: got pending %v with expiry %v, want an expiry exactly for pending refs", s.Key, r, r.Pending, r.Expires)
				}
				got[s.Key] = append(got[s.Key], ref{r.Token, r.Holder, r.Share, r.Name, r.Pending, r.Own})
			}
		}
		for _, refs := range want {
			sort.Slice(refs, func(i, j int) bool { return refs[i].holder.UID < refs[j].holder.UID })
		}
		for _, refs := range got {
			sort.Slice(refs, func(i, j int) bool { return refs[i].holder.UID < refs[j].holder.UID })
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Status(uid %d, all=%v):\n got  %+v\nwant %+v", h.UID, all, got, want)
		}
	}
	ha, hb := *a, *b

	t.Run("a's view", func(t *testing.T) {
		check(t, a, false, map[registry.Key][]ref{
			a1.Key: {{a1.Token, ha, shareAny, "n", false, true}, {"", hb, shareSameName, "n", false, false}},
			a3.Key: {{a3.Token, ha, shareNone, "", true, true}},
		})
	})
	t.Run("b's view", func(t *testing.T) {
		check(t, b, false, map[registry.Key][]ref{
			a1.Key: {{"", ha, shareAny, "n", false, false}, {b1.Token, hb, shareSameName, "n", false, true}},
			b2.Key: {{b2.Token, hb, shareNone, "", false, true}},
		})
	})
	t.Run("a stranger's view", func(t *testing.T) {
		check(t, c, false, map[registry.Key][]ref{})
	})
	t.Run("all", func(t *testing.T) {
		check(t, c, true, map[registry.Key][]ref{
			a1.Key: {{a1.Token, ha, shareAny, "n", false, false}, {b1.Token, hb, shareSameName, "n", false, false}},
			b2.Key: {{b2.Token, hb, shareNone, "", false, false}},
			a3.Key: {{a3.Token, ha, shareNone, "", true, false}},
		})
	})
	t.Run("all as a holder", func(t *testing.T) {
		check(t, a, true, map[registry.Key][]ref{
			a1.Key: {{a1.Token, ha, shareAny, "n", false, true}, {b1.Token, hb, shareSameName, "n", false, false}},
			b2.Key: {{b2.Token, hb, shareNone, "", false, false}},
			a3.Key: {{a3.Token, ha, shareNone, "", true, true}},
		})
	})
}

func TestClose(t *testing.T) {
	f := newFixture(t, time.Minute)
	a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	held := f.acquire(f.req(tcp0, a, shareAny, ""))
	shared := f.acquire(f.req(held.Key, b, shareAny, ""))
	p := f.acquire(f.pending(key("udp", lo6, 0), a, shareNone, ""))
	r := f.req(key("udp", lo4, 0), a, shareNone, "")
	r.Linger = time.Hour
	lingering := f.acquire(r)
	for _, g := range []*registry.Grant{held, shared, lingering} {
		g.File.Close()
	}
	if _, err := f.g.Release(lingering.Token, a, false); err != nil {
		t.Fatalf("Release: %v", err)
	}
	f.wantCounts(3, 3)

	f.g.Close()
	f.wantCounts(0, 0)
	for _, k := range []registry.Key{held.Key, p.Key, lingering.Key} {
		wantPortFree(t, k, true)
	}
	if st := f.g.Status(a, true); len(st) != 0 {
		t.Errorf("Status after Close: got %+v, want nothing", st)
	}
	before := f.creates.Load()
	if g, err := f.g.Acquire(f.req(tcp0, a, shareAny, "")); !errors.Is(err, registry.ErrClosed) {
		f.closeLater(g)
		t.Errorf("Acquire after Close: got %+v, %v; want ErrClosed", g, err)
	}
	if got := f.creates.Load(); got != before {
		t.Errorf("Create calls after Close: got %d, want 0", got-before)
	}
	if g, err := f.g.Pickup(p.Token, b, allow); !errors.Is(err, registry.ErrNoToken) {
		f.closeLater(g)
		t.Errorf("Pickup after Close: got %+v, %v; want ErrNoToken", g, err)
	}
	if _, err := f.g.Release(held.Token, a, true); !errors.Is(err, registry.ErrNoToken) {
		t.Errorf("Release after Close: got %v, want ErrNoToken", err)
	}
	if got := f.g.ReleaseHolder(a); got != 0 {
		t.Errorf("ReleaseHolder after Close: got %d, want 0", got)
	}
}

// TestConcurrentAcquireRelease has many holders take and drop references to
// one key at once; run it with -race.
func TestConcurrentAcquireRelease(t *testing.T) {
	f := newFixture(t, time.Minute)
	// Learn a free port, then give it back: the goroutines share that key.
	first := f.acquire(f.req(tcp0, &registry.Holder{}, shareAny, ""))
	first.File.Close()
	k := first.Key
	if _, err := f.g.Release(first.Token, nil, true); err != nil {
		t.Fatalf("Release: %v", err)
	}

	const goroutines, rounds = 100, 20
	var wg sync.WaitGroup
	for i := 0; i < goroutines; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			h := &registry.Holder{UID: uint32(i)}
			for j := 0; j < rounds; j++ {
				r := f.req(k, h, shareAny, "")
				r.Pending = (i+j)%4 == 0
				g, err := f.g.Acquire(r)
				if err != nil {
					t.Errorf("goroutine %d round %d: Acquire: %v", i, j, err)
					return
				}
				if r.Pending {
					if g, err = f.g.Pickup(g.Token, h, allow); err != nil {
						t.Errorf("goroutine %d round %d: Pickup: %v", i, j, err)
						return
					}
				}
				g.File.Close()
				if j%5 == 0 {
					f.g.Status(h, i%2 == 0)
					f.g.Counts()
				}
				if j%7 == 0 {
					if n := f.g.ReleaseHolder(h); n != 1 {
						t.Errorf("goroutine %d round %d: ReleaseHolder: got %d, want 1", i, j, n)
					}
				} else if _, err := f.g.Release(g.Token, h, false); err != nil {
					t.Errorf("goroutine %d round %d: Release: %v", i, j, err)
				}
			}
		}(i)
	}
	wg.Wait()
	f.wantCounts(0, 0)
	wantPortFree(t, k, true)
}

// sockName returns the bound address of fd, or an error once it is closed.
func sockName(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, err
	}
	in, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %T", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)), nil
}

// TestLend: a lent descriptor is the cached socket's own, needs no close
// by the caller, and stays open through the socket's release and the
// registry's Close until it is returned; then the fd count is back.
func TestLend(t *testing.T) {
	for _, how := range []string{"release", "registry close"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			base := openFDs(t)
			h := &registry.Holder{UID: 1}
			r := f.req(tcp0, h, shareAny, "")
			r.Lend = true
			g, err := f.g.Acquire(r)
			if err != nil {
				t.Fatal(err)
			}
			if g.File != nil || g.FD < 0 {
				t.Fatalf("lent grant: File %v, FD %d; want no file and a descriptor", g.File, g.FD)
			}
			if n := openFDs(t); n != base+1 {
				t.Errorf("%d fds open with one socket cached and lent, want %d: lending must not duplicate", n, base+1)
			}
			r2 := f.req(g.Key, h, shareAny, "")
			r2.Lend = true
			g2 := f.acquire(r2)
			if g2.FD != g.FD {
				t.Errorf("second lend of the same socket: fd %d, want %d", g2.FD, g.FD)
			}
			f.g.Return(g2)
			if g2.FD != -1 {
				t.Errorf("after Return: FD %d, want -1", g2.FD)
			}
			f.g.Return(g2) // twice: ignored
			if how == "release" {
				f.g.ReleaseHolder(h)
			} else {
				f.g.Close()
			}
			f.wantCounts(0, 0)
			if ap, err := sockName(g.FD); err != nil || ap != g.Key.Addr {
				t.Fatalf("lent fd after the socket went (%s): %v, %v; want it open, bound to %v", how, ap, err, g.Key.Addr)
			}
			f.g.Return(g)
			if n := openFDs(t); n != base {
				t.Errorf("%d fds open after the last Return, want %d", n, base)
			}
		})
	}
}

func TestPickupLent(t *testing.T) {
	f := newFixture(t, time.Minute)
	base := openFDs(t)
	a, b := &registry.Holder{UID: 1}, &registry.Holder{UID: 2}
	tok := f.acquire(f.pending(tcp0, a, shareAny, ""))
	g, err := f.g.PickupLent(tok.Token, b, func(registry.Key) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if g.File != nil || g.Key != tok.Key {
		t.Fatalf("lent pickup: %+v", g)
	}
	if ap, err := sockName(g.FD); err != nil || ap != tok.Key.Addr {
		t.Fatalf("lent fd: %v, %v; want bound to %v", ap, err, tok.Key.Addr)
	}
	f.g.ReleaseHolder(b)
	f.g.Return(g)
	f.wantCounts(0, 0)
	if n := openFDs(t); n != base {
		t.Errorf("%d fds open after release and Return, want %d", n, base)
	}
}
