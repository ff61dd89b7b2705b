package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// Tests for the findings of security review issue 10 (items 4, 5, 7).

// reviewRootBind lets root bind TCP on 127.0.0.1; root is no admin, so
// that a release of another connection's token is refused as for anyone.
const reviewRootBind = `
[[rule]]
name = "root-bind"
users = [0]
bind = ["tcp:127.0.0.1:*"]
`

// reviewDial opens a raw connection to d, closed when the test ends.
func reviewDial(t *testing.T, d *daemon) *net.UnixConn {
	t.Helper()
	nc, err := net.Dial("unixpacket", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*net.UnixConn)
}

// reviewAsk sends msg on c and returns the reply packet as sent, closing
// any descriptor it carried.
func reviewAsk(t *testing.T, c *net.UnixConn, msg string) []byte {
	t.Helper()
	if _, _, err := c.WriteMsgUnix([]byte(msg), nil, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	buf, oob := make([]byte, wire.MaxMessageSize), make([]byte, unix.CmsgSpace(wire.MaxFDs*4))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no reply to %s: %v", msg, err)
	}
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
	return buf[:n]
}

// reviewToken binds on c and returns the reply's token.
func reviewToken(t *testing.T, c *net.UnixConn, tokenOnly bool) string {
	t.Helper()
	b := reviewAsk(t, c, fmt.Sprintf(`{"v":1,"id":1,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:0","token_only":%v}}`, tokenOnly))
	rep, err := wire.DecodeReply(b)
	if err != nil || rep.Bind == nil {
		t.Fatalf("bind: got %s (%v), want a token", b, err)
	}
	return rep.Bind.Token
}

// TestIntegrationReviewTokenProbes: against the real daemon, a pickup or
// release whose token member is missing, null or empty is invalid_request
// naming it (item 7); every token a caller cannot use gets one reply, byte
// for byte, naming no address, including a token whose address a reload
// stopped granting (item 5); and a caller no rule names gets an empty
// status (item 4). The daemon's descriptors come back to their baseline.
func TestIntegrationReviewTokenProbes(t *testing.T) {
	requireRoot(t)
	d, _ := startBindDaemon(t, bindBase+reviewRootBind)
	owner, prober := reviewDial(t, d), reviewDial(t, d)

	for _, op := range []string{"pickup", "release"} {
		for _, tok := range []string{`{}`, `{"token":null}`, `{"token":""}`} {
			b := reviewAsk(t, prober, fmt.Sprintf(`{"v":1,"id":9,"op":%q,"token":%s}`, op, tok))
			rep, err := wire.DecodeReply(b)
			if err != nil || rep.ID != 9 || rep.Error == nil || rep.Error.Code != wire.CodeInvalidRequest || !strings.Contains(rep.Error.Message, `member "token"`) {
				t.Errorf("%s with token object %s: got %s; want invalid_request with id 9 naming member \"token\"", op, tok, b)
			}
		}
	}

	released := reviewToken(t, owner, true)
	reviewAsk(t, owner, `{"v":1,"id":2,"op":"release","token":{"token":"`+released+`"}}`)
	picked := reviewToken(t, owner, true)
	reviewAsk(t, owner, `{"v":1,"id":3,"op":"pickup","token":{"token":"`+picked+`"}}`)
	held := reviewToken(t, owner, false)
	refused := reviewToken(t, owner, true)
	ask := func(op, tok string) []byte {
		return reviewAsk(t, prober, fmt.Sprintf(`{"v":1,"id":7,"op":%q,"token":{"token":%q}}`, op, tok))
	}
	pickups := map[string][]byte{
		"unknown":   ask("pickup", "0123456789abcdef0123456789abcdef"),
		"malformed": ask("pickup", "../../etc"),
		"released":  ask("pickup", released),
		"picked up": ask("pickup", picked),
		"held":      ask("pickup", held),
	}
	releases := map[string][]byte{
		"unknown":        ask("release", "0123456789abcdef0123456789abcdef"),
		"another's held": ask("release", held),
		"another's":      ask("release", refused),
	}
	// Reload a policy that grants root another address only.
	reloads := strings.Count(d.log.String(), `msg=reloaded`)
	d.writeConfig(bindBase + strings.ReplaceAll(reviewRootBind, "127.0.0.1", "127.0.0.2"))
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload", func() bool { return strings.Count(d.log.String(), `msg=reloaded`) > reloads })
	pickups["no longer granted"] = ask("pickup", refused)

	for op, replies := range map[string]map[string][]byte{"pickup": pickups, "release": releases} {
		want := replies["unknown"]
		if rep, err := wire.DecodeReply(want); err != nil || rep.Error == nil || rep.Error.Code != wire.CodeNotFound {
			t.Fatalf("%s of an unknown token: got %s; want not_found", op, want)
		}
		for name, got := range replies {
			if !bytes.Equal(got, want) || strings.Contains(string(got), "127.0.0.1") {
				t.Errorf("%s of a token %s:\n got  %s\nwant %s (the unknown token's reply, no address)", op, name, got, want)
			}
		}
	}

	// uid 65534, named by no rule, gets an empty status.
	out, errOut, code := runCLI(t, "", asUser(65534, 65534), "status", "--json", "-socket", d.socket)
	var st struct {
		Sockets []json.RawMessage `json:"sockets"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Sockets) != 0 {
		t.Errorf("sockfactory status as uid 65534 (no rule): exit %d, stdout %q, stderr %q; want exit 0 and no sockets", code, out, errOut)
	}
	// The refused token is still pending, and its asker may release it.
	if rep, err := wire.DecodeReply(reviewAsk(t, owner, `{"v":1,"id":4,"op":"release","token":{"token":"`+refused+`"}}`)); err != nil || !rep.OK {
		t.Errorf("the owner's release of its pending token after the probes: got %+v, %v; want ok", rep, err)
	}
	owner.Close()
	prober.Close()
}
