package server

import (
	"fmt"
	"net"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/binder"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// TestParseBindOptions: the options a bind request resolves to, and the
// option names the policy sees. SO_REUSEADDR is on by default only where
// the socket listens, and "reuseaddr" is named only where it would expose
// the port to other users; v6only is normalised where Linux decides it.
func TestParseBindOptions(t *testing.T) {
	yes, no := true, false
	tcpListen := binder.Options{ReuseAddr: true, V6Only: true, Listen: true}
	tcpBound := binder.Options{V6Only: true}
	udp := binder.Options{V6Only: true}
	with := func(o binder.Options, f func(*binder.Options)) binder.Options { f(&o); return o }
	tests := []struct {
		name, network, address string
		opts                   *wire.SocketOptions
		want                   binder.Options
		used                   []string
	}{
		{"udp defaults", "udp", "127.0.0.1:53", nil, udp, nil},
		{"tcp defaults", "tcp", "127.0.0.1:53", nil, tcpListen, nil},
		{"tcp bound only", "tcp", "127.0.0.1:53", &wire.SocketOptions{Listen: &no}, tcpBound, []string{"listen"}},
		{"udp reuseaddr on", "udp", "127.0.0.1:53", &wire.SocketOptions{ReuseAddr: &yes}, with(udp, func(o *binder.Options) { o.ReuseAddr = true }), []string{"reuseaddr"}},
		{"udp reuseaddr off", "udp", "127.0.0.1:53", &wire.SocketOptions{ReuseAddr: &no}, udp, nil},
		{"tcp bound only, reuseaddr on", "tcp", "127.0.0.1:53", &wire.SocketOptions{Listen: &no, ReuseAddr: &yes},
			with(tcpBound, func(o *binder.Options) { o.ReuseAddr = true }), []string{"listen", "reuseaddr"}},
		{"tcp listening, reuseaddr on", "tcp", "127.0.0.1:53", &wire.SocketOptions{ReuseAddr: &yes}, tcpListen, nil},
		{"tcp listening, reuseaddr off", "tcp", "127.0.0.1:53", &wire.SocketOptions{ReuseAddr: &no},
			with(tcpListen, func(o *binder.Options) { o.ReuseAddr = false }), nil},
		{"other options keep the reuseaddr default", "udp", "127.0.0.1:53", &wire.SocketOptions{PMTUDiscOff: &yes},
			with(udp, func(o *binder.Options) { o.PMTUDiscOff = true }), []string{"pmtud_off"}},
		{"v6only off on ::1", "tcp6", "[::1]:53", &wire.SocketOptions{V6Only: &no}, tcpListen, []string{"v6only"}},
		{"v6only off on a global IPv6 address", "udp6", "[2001:db8::1]:53", &wire.SocketOptions{V6Only: &no}, udp, []string{"v6only"}},
		{"v6only off on IPv4", "udp4", "127.0.0.1:53", &wire.SocketOptions{V6Only: &no}, udp, []string{"v6only"}},
		{"v6only off on ::", "tcp6", "[::]:53", &wire.SocketOptions{V6Only: &no}, with(tcpListen, func(o *binder.Options) { o.V6Only = false }), []string{"v6only"}},
		{"empty host is dual-stack", "udp", ":53", nil, with(udp, func(o *binder.Options) { o.V6Only = false }), nil},
		{"v6only on for an empty host", "udp", ":53", &wire.SocketOptions{V6Only: &yes}, udp, []string{"v6only"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := &session{}
			got, err := ss.parseBind(&wire.BindRequest{Network: tt.network, Address: tt.address, Options: tt.opts})
			if err != nil {
				t.Fatalf("parseBind(%s %s): %v", tt.network, tt.address, err)
			}
			if got.opts != tt.want {
				t.Errorf("options of %s %s: got %+v, want %+v", tt.network, tt.address, got.opts, tt.want)
			}
			if !reflect.DeepEqual(got.used, tt.used) {
				t.Errorf("option names for the policy: got %q, want %q", got.used, tt.used)
			}
		})
	}
}

// TestBindV6OnlySpecificShares: two requests for one specific IPv6 address
// and port that differ only in v6only (meaningless there: Linux turns it
// on) share the cached socket instead of failing with share_conflict.
func TestBindV6OnlySpecificShares(t *testing.T) {
	srv, path := startServer(t, `bind = ["*:[::1]:*"]`, Options{})
	before := countFDs(t) // the server's listener and the poller open
	for _, network := range []string{"tcp6", "udp6"} {
		t.Run(network, func(t *testing.T) {
			nc, err := net.Dial("unixpacket", path)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			c := nc.(*net.UnixConn)
			send(t, c, fmt.Sprintf(`{"v":1,"id":1,"op":"bind","bind":{"network":%q,"address":"[::1]:0","share":"any","name":"n"}}`, network))
			first := recvReply(t, c)
			if first.Error != nil || first.Bind == nil || first.FDs != 1 {
				t.Fatalf("first bind: got %+v, %+v; want a socket", first, first.Error)
			}
			for id, v6only := range map[int]string{2: "false", 3: "true"} {
				send(t, c, fmt.Sprintf(`{"v":1,"id":%d,"op":"bind","bind":{"network":%q,"address":%q,"share":"any","name":"n","options":{"v6only":%s}}}`,
					id, network, first.Bind.Local, v6only))
				rep := recvReply(t, c)
				if rep.Error != nil || rep.Bind == nil || !rep.Bind.Shared || rep.Bind.Local != first.Bind.Local {
					t.Errorf("bind of %s with v6only %s: got %+v, error %+v; want the cached socket shared", first.Bind.Local, v6only, rep.Bind, rep.Error)
				}
			}
		})
	}
	// The clients have left: their sessions end, the last references
	// go, and the daemon closes the sockets (no linger).
	after := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if after = countFDs(t); srv.Sessions() == 0 && after == before {
			return
		}
	}
	t.Errorf("open fds after the clients left: got %d, want %d as before; sessions %d", after, before, srv.Sessions())
}

// countFDs counts this process's open descriptors.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
