package registry

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/binder"
)

// FuzzRestore feeds Restore states decoded from arbitrary JSON (what a
// previous daemon or a crash record hands over): it must never panic,
// and either take the state or refuse it with ErrBadState, leaving the
// registry empty; every descriptor it was given is closed on refusal, and
// by Close after a success.
func FuzzRestore(f *testing.F) {
	// A real state as the seed: two sockets, shared, a pending token.
	g := New(time.Minute)
	h := &Holder{UID: 7, PID: 70, App: "app"}
	k := Key{Proto: "udp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}
	for range 2 {
		r := &Request{Key: k, Share: ShareAny, Options: binder.Options{}, Holder: h, Create: func() (*os.File, netip.AddrPort, error) {
			return binder.Create(k.Proto, k.Addr, binder.Options{})
		}}
		gr, err := g.Acquire(r)
		if err != nil {
			f.Fatal(err)
		}
		gr.File.Close()
	}
	st, err := g.Snapshot([]*Holder{h})
	if err != nil {
		f.Fatal(err)
	}
	for i := range st.Sockets {
		st.Sockets[i].FD = i
	}
	seed, _ := json.Marshal(st)
	g.Close()
	f.Add(seed)
	f.Add([]byte(`{"holders":[],"sockets":[],"reclaim_key":"` + st.ReclaimKey + `"}`))
	f.Add([]byte(`{"holders":[{"uid":1}],"sockets":[{"fd":0,"proto":"tcp","addr":"127.0.0.1:80","refs":[{"token":"00112233445566778899aabbccddeeff","share":2,"holder":0}]}],"reclaim_key":"` + st.ReclaimKey + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st State
		if json.Unmarshal(data, &st) != nil {
			return
		}
		fds := make([]int, 3)
		for i := range fds {
			fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			fds[i] = fd
		}
		given := append([]int(nil), fds...)
		g := New(time.Minute)
		_, err := g.Restore(&st, fds)
		if err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("Restore: %v, want ErrBadState", err)
			}
			if n, r := g.Counts(); n != 0 || r != 0 {
				t.Fatalf("refused, but %d sockets and %d references stay", n, r)
			}
		} else {
			g.Status(nil, true)
			if _, err := g.Snapshot(nil); err != nil {
				t.Fatalf("Snapshot after Restore: %v", err)
			}
		}
		g.Close()
		for _, fd := range given {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				unix.Close(fd)
				t.Fatalf("descriptor %d still open after Restore (err %v) and Close", fd, err)
			}
		}
	})
}
