package server

import (
	"fmt"
	"testing"

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
