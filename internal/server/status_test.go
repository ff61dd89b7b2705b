package server

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/registry"
	"github.com/sockfactory/sockfactory/internal/wire"
)

func TestFitStatus(t *testing.T) {
	cases := []struct {
		name              string
		sockets, holders  int
		wantTruncated     bool
		wantMaxHolderList int
	}{
		{"small listing untouched", 10, 3, false, 3},
		{"many holders of one socket", 1, 1000, true, maxStatusHolders},
		{"many sockets", 3000, 2, true, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := &wire.StatusResult{}
			for i := range tc.sockets {
				st := wire.SocketStatus{Network: "udp", Local: fmt.Sprintf("127.0.0.1:%d", 1000+i), Refs: tc.holders}
				for j := range tc.holders {
					st.Holders = append(st.Holders, wire.HolderStatus{Share: "any", Name: "some-app", UID: 1000, PID: int32(j), App: "some-app", Token: "0123456789abcdef0123456789abcdef"})
				}
				res.Sockets = append(res.Sockets, st)
			}
			fitStatus(res)
			b, err := wire.Encode(&wire.Reply{V: wire.Version, ID: 1, Status: res})
			if err != nil {
				t.Fatalf("encoding the fitted status: %v (%d sockets left)", err, len(res.Sockets))
			}
			if res.Truncated != tc.wantTruncated {
				t.Fatalf("Truncated = %v; want %v (reply %d bytes)", res.Truncated, tc.wantTruncated, len(b))
			}
			if tc.wantTruncated && res.Total != tc.sockets {
				t.Errorf("Total = %d; want %d", res.Total, tc.sockets)
			}
			if len(res.Sockets) == 0 {
				t.Fatal("every socket was cut")
			}
			for _, s := range res.Sockets {
				if len(s.Holders) > tc.wantMaxHolderList || s.Refs != tc.holders {
					t.Fatalf("socket %s lists %d holders with refs %d; want at most %d listed and refs %d", s.Local, len(s.Holders), s.Refs, tc.wantMaxHolderList, tc.holders)
				}
			}
		})
	}
}

// TestStatusUnknownCaller: a caller no rule applies to gets an empty
// listing without the registry being asked, even while its lock is held
// (here by a Create that waits): its status costs the others nothing.
// Before, it walked the whole cache under the lock, and this test's status
// request would wait for the lock and time out.
func TestStatusUnknownCaller(t *testing.T) {
	srv, path := startServer(t, `bind = ["tcp:127.0.0.1:*"]`, Options{})
	c := dialServer(t, path)
	bindToken(t, c, false) // a socket the caller's uid holds
	cfg, err := config.Parse("test.toml", []byte("[[rule]]\nname = \"other\"\nusers = [4242]\nbind = [\"tcp:127.0.0.1:*\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetPolicy(cfg.Policy) // the caller's uid is no longer named
	inside, leave, done := make(chan struct{}), make(chan struct{}), make(chan error)
	go func() {
		_, err := srv.Registry().Acquire(&registry.Request{
			Key: registry.Key{Proto: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:0")}, Holder: &registry.Holder{UID: 4242},
			Create: func() (*os.File, netip.AddrPort, error) {
				close(inside)
				<-leave
				return nil, netip.AddrPort{}, errors.New("the test's Create makes nothing")
			},
		})
		done <- err
	}()
	var once sync.Once
	release := func() { once.Do(func() { close(leave); <-done }) }
	t.Cleanup(release) // before the server's Close, which needs the lock
	<-inside
	send(t, c, `{"v":1,"id":5,"op":"status"}`)
	got := recvRaw(t, c)
	release()
	if want := `{"v":1,"id":5,"status":{"sockets":[]}}`; string(got) != want {
		t.Errorf("status of a caller no rule names: got %s, want %s", got, want)
	}
}
