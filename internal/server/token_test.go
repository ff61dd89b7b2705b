package server

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/wire"
)

// dialServer connects a raw client to the server at path, closed when the
// test ends.
func dialServer(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	nc, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*net.UnixConn)
}

// recvRaw reads one reply packet as sent, closing any fd it carries.
func recvRaw(t *testing.T, c *net.UnixConn) []byte {
	t.Helper()
	buf, oob := make([]byte, wire.MaxMessageSize), make([]byte, 128)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("reading a reply: %v", err)
	}
	closeRights(oob[:oobn])
	return buf[:n]
}

// bindToken makes a bind on c and returns its token ("token_only" asks for
// a pending one).
func bindToken(t *testing.T, c *net.UnixConn, tokenOnly bool) string {
	t.Helper()
	send(t, c, fmt.Sprintf(`{"v":1,"id":1,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:0","token_only":%v}}`, tokenOnly))
	rep := recvReply(t, c)
	if rep.Error != nil || rep.Bind == nil {
		t.Fatalf("bind: got %+v, want a token", rep)
	}
	return rep.Bind.Token
}

// TestTokenFailuresAlike: a pickup (or release) of any token the caller
// cannot use is answered byte for byte alike, without the socket's
// address: an unknown or malformed token, an expired, released or
// already picked-up one, a held reference's, and one for an address the
// caller is not (or no longer) granted. Before, the last named its
// address: a prober learned that the token existed and what it was for.
func TestTokenFailuresAlike(t *testing.T) {
	srv, path := startServer(t, `bind = ["tcp:127.0.0.1:*"]`, Options{})
	owner, prober := dialServer(t, path), dialServer(t, path)
	released := bindToken(t, owner, true)
	send(t, owner, fmt.Sprintf(`{"v":1,"id":2,"op":"release","token":{"token":%q}}`, released))
	if rep := recvReply(t, owner); !rep.OK {
		t.Fatalf("release: %+v", rep)
	}
	picked := bindToken(t, owner, true)
	send(t, owner, fmt.Sprintf(`{"v":1,"id":3,"op":"pickup","token":{"token":%q}}`, picked))
	if rep := recvReply(t, owner); rep.Error != nil {
		t.Fatalf("pickup: %+v", rep)
	}
	held := bindToken(t, owner, false)
	refused := bindToken(t, owner, true)

	// An expired token, from a server whose tokens live 1 ms.
	short, shortPath := startServer(t, `bind = ["tcp:127.0.0.1:*"]`, Options{TokenTTL: time.Millisecond})
	expirer := dialServer(t, shortPath)
	expired := bindToken(t, expirer, true)
	deadline := time.Now().Add(10 * time.Second)
	for s, _ := short.Registry().Counts(); s != 0; s, _ = short.Registry().Counts() {
		if time.Now().After(deadline) {
			t.Fatal("the 1 ms token never expired")
		}
		time.Sleep(time.Millisecond)
	}

	ask := func(c *net.UnixConn, op, tok string) []byte {
		t.Helper()
		send(t, c, fmt.Sprintf(`{"v":1,"id":7,"op":%q,"token":{"token":%q}}`, op, tok))
		return recvRaw(t, c)
	}
	pickups := map[string][]byte{
		"unknown":   ask(prober, "pickup", "0123456789abcdef0123456789abcdef"),
		"malformed": ask(prober, "pickup", "xyz"),
		"released":  ask(prober, "pickup", released),
		"picked up": ask(prober, "pickup", picked),
		"held":      ask(prober, "pickup", held),
		"expired":   ask(dialServer(t, shortPath), "pickup", expired),
	}
	// The policy now grants binds on another address only: the prober's
	// uid is known, but not granted refused's socket.
	cfg, err := config.Parse("test.toml", []byte(fmt.Sprintf("[[rule]]\nname = \"t\"\nusers = [%d]\nbind = [\"tcp:127.0.0.2:*\"]\n", os.Getuid())))
	if err != nil {
		t.Fatal(err)
	}
	srv.SetPolicy(cfg.Policy)
	pickups["not granted"] = ask(prober, "pickup", refused)
	releases := map[string][]byte{
		"unknown":          ask(prober, "release", "0123456789abcdef0123456789abcdef"),
		"another's held":   ask(prober, "release", held),
		"another's token":  ask(prober, "release", refused),
		"released already": ask(prober, "release", released),
	}
	for op, replies := range map[string]map[string][]byte{"pickup": pickups, "release": releases} {
		want := replies["unknown"]
		rep, err := wire.DecodeReply(want)
		if err != nil || rep.Error == nil || rep.Error.Code != wire.CodeNotFound {
			t.Fatalf("%s of an unknown token: got %s (%v), want not_found", op, want, err)
		}
		for name, got := range replies {
			if !bytes.Equal(got, want) {
				t.Errorf("%s of a token %s:\n got  %s\nwant %s (as for an unknown token)", op, name, got, want)
			}
			if strings.Contains(string(got), "127.0.0.1") {
				t.Errorf("%s of a token %s: the reply %s names the socket's address", op, name, got)
			}
		}
	}
	// Nothing changed: the refused token is still pending for the owner.
	if s, refs := srv.Registry().Counts(); s != 3 || refs != 3 {
		t.Errorf("after the probes: %d sockets, %d references; want 3, 3 (picked, held, refused)", s, refs)
	}
}
