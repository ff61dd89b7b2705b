package clientsuite

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// errorCodes are the daemon's error codes (docs/protocol.md, 11), each
// with an errno the fake daemon sends along: a library reports every code
// and errno as they came, whether or not the real daemon sends an errno
// with that code.
var errorCodes = []struct {
	code  string
	errno syscall.Errno
}{
	{"invalid_request", syscall.EINVAL},
	{"unsupported_version", syscall.EPROTO},
	{"denied", syscall.EACCES},
	{"resolve_failed", syscall.EHOSTUNREACH},
	{"connect_failed", syscall.ECONNREFUSED},
	{"timeout", syscall.ETIMEDOUT},
	{"limit_exceeded", syscall.EMFILE},
	{"internal", syscall.EIO},
	{"share_conflict", syscall.EBUSY},
	{"not_found", syscall.ENOENT},
	{"bind_failed", syscall.EADDRINUSE},
}

// fakeConnect is the command the fake cases send when any request will do.
const fakeConnect = "connect tcp 127.0.0.1:9"

// errorReply is the body of an error reply (errno 0: none).
func errorReply(code string, errno syscall.Errno) string {
	e := ""
	if errno != 0 {
		e = fmt.Sprintf(`,"errno":%d`, int(errno))
	}
	return `{"v":1,"id":%d,"error":{"code":"` + code + `","message":"scripted ` + code + ` failure"` + e + `}}`
}

var fakeCases = func() []testCase {
	var cs []testCase
	for _, c := range errorCodes {
		cs = append(cs, testCase{name: "fake_error_" + c.code, fake: true, run: func(t *testing.T, x *caseEnv) {
			p := x.driver()
			x.fake.json(errorReply(c.code, c.errno))
			p.expectErr(fakeConnect, c.code, c.errno)
		}})
	}
	return append(cs, []testCase{
		{name: "fake_error_no_errno", fake: true, run: func(t *testing.T, x *caseEnv) {
			p := x.driver()
			x.fake.json(errorReply("connect_failed", 0))
			p.expectErr(fakeConnect, "connect_failed", 0)
		}},
		{name: "fake_error_unknown_code", fake: true, run: func(t *testing.T, x *caseEnv) {
			// A code the library does not know is a failure, reported
			// verbatim.
			p := x.driver()
			x.fake.json(errorReply("quota_exhausted", 0))
			p.expectErr(fakeConnect, "quota_exhausted", 0)
		}},
		{name: "fake_error_ops", fake: true, run: func(t *testing.T, x *caseEnv) {
			// Every op maps errors alike (status last: the C library has
			// none, and the case is skipped there once the rest passed).
			p := x.driver()
			for _, c := range []struct {
				cmd, code string
				errno     syscall.Errno
			}{
				{"bind tcp 127.0.0.1:0 none -", "bind_failed", syscall.EACCES},
				{"bindtoken udp 127.0.0.1:0 any -", "share_conflict", 0},
				{"pickup " + aToken, "limit_exceeded", syscall.ENFILE},
				{"release " + aToken, "internal", 0},
				{"status", "internal", syscall.ENOMEM},
			} {
				x.fake.json(errorReply(c.code, c.errno))
				p.expectErr(c.cmd, c.code, c.errno)
			}
		}},
		{name: "fake_connect_ok", fake: true, run: func(t *testing.T, x *caseEnv) {
			// The fake's control: a reply that follows the protocol
			// delivers the socket it carries.
			p := x.driver()
			x.fake.reply(fakeReply{
				body: func(id uint64) []byte {
					return fmt.Appendf(nil, `{"v":1,"id":%d,"fds":1,"connect":{"local":"127.0.0.1:1","remote":"%s"}}`, id, x.s.echoTCP)
				},
				fds: func() []int { return []int{connectedSocket(t, x.s.echoTCP)} },
			})
			h := p.one(fakeConnect)
			p.expect("fdinfo "+h, tcpInfo)
			p.expect("echo "+h+" through-the-fake", "ok through-the-fake")
			p.expect("close "+h, "ok")
		}},
		{name: "fake_close_releases", fake: true, run: func(t *testing.T, x *caseEnv) {
			// close releases the reference it came with, by its token.
			p := x.driver()
			const tok = "fedcba9876543210fedcba9876543210"
			x.fake.reply(fakeReply{
				body: func(id uint64) []byte {
					return fmt.Appendf(nil, `{"v":1,"id":%d,"fds":1,"bind":{"token":"%s","local":"127.0.0.1:1","network":"tcp","reclaim":"%s"}}`, id, tok, aToken)
				},
				fds: sockets(t, 1),
			})
			x.fake.json(`{"v":1,"id":%d,"ok":true}`)
			h, got := bind(p, "tcp 127.0.0.1:0 - -")
			if got != tok {
				t.Errorf("bind: got token %s, want %s", got, tok)
			}
			p.expect("close "+h, "ok")
			if !poll(commandTimeout, func() bool { return len(x.fake.seen()) == 2 }) {
				t.Fatalf("requests the fake daemon saw: %q, want bind, then release %s", x.fake.seen(), tok)
			}
			if s := x.fake.seen(); s[0] != "bind" || s[1] != "release "+tok {
				t.Errorf("requests the fake daemon saw: %q, want bind, then release %s", s, tok)
			}
		}},
		{name: "fake_fds_missing", fake: true, run: func(t *testing.T, x *caseEnv) {
			p := x.driver()
			x.fake.json(`{"v":1,"id":%d,"fds":1,"connect":{"local":"127.0.0.1:1","remote":"127.0.0.1:9"}}`)
			p.expectErr(fakeConnect, "protocol", 0)
		}},
		{name: "fake_fds_extra", fake: true, run: func(t *testing.T, x *caseEnv) {
			// Two descriptors where "fds" announces one: both must be
			// closed, on a connect and on a bind reply.
			p := x.driver()
			x.fake.reply(fakeReply{body: func(id uint64) []byte {
				return fmt.Appendf(nil, `{"v":1,"id":%d,"fds":1,"connect":{"local":"127.0.0.1:1","remote":"127.0.0.1:9"}}`, id)
			}, fds: sockets(t, 2)})
			p.expectErr(fakeConnect, "protocol", 0)
			checkFDs(t, p, "after a connect reply with one descriptor too many")
			x.fake.reply(fakeReply{body: func(id uint64) []byte {
				return fmt.Appendf(nil, `{"v":1,"id":%d,"fds":1,"bind":{"token":"%s","local":"127.0.0.1:1","network":"tcp","reclaim":"%s"}}`, id, aToken, aToken)
			}, fds: sockets(t, 2)})
			p.expectErr("bind tcp 127.0.0.1:0 - -", "protocol", 0)
			checkFDs(t, p, "after a bind reply with one descriptor too many")
		}},
		{name: "fake_fds_unannounced", fake: true, run: func(t *testing.T, x *caseEnv) {
			// A descriptor on a reply without "fds" (an error).
			p := x.driver()
			x.fake.reply(fakeReply{body: func(id uint64) []byte {
				return fmt.Appendf(nil, errorReply("denied", 0), id)
			}, fds: sockets(t, 1)})
			p.expectErr(fakeConnect, "protocol", 0)
			checkFDs(t, p, "after an error reply that carried a descriptor")
		}},
		{name: "fake_oversize", fake: true, run: func(t *testing.T, x *caseEnv) {
			// Larger than 65536 bytes: MSG_TRUNC, whatever it says.
			p := x.driver()
			x.fake.json(`{"v":1,"id":%d,"error":{"code":"denied","message":"` + strings.Repeat("x", 70000) + `"}}`)
			p.expectErr(fakeConnect, "protocol", 0)
		}},
		{name: "fake_version", fake: true, run: func(t *testing.T, x *caseEnv) {
			p := x.driver()
			x.fake.json(`{"v":2,"id":%d,"error":{"code":"denied","message":"a reply of version 2"}}`)
			p.expectErr(fakeConnect, "protocol", 0)
		}},
		{name: "fake_unknown_member", fake: true, run: func(t *testing.T, x *caseEnv) {
			p := x.driver()
			x.fake.json(`{"v":1,"id":%d,"error":{"code":"denied","message":"with a member version 1 has not"},"surprise":true}`)
			p.expectErr(fakeConnect, "protocol", 0)
		}},
		{name: "fake_hangup", fake: true, run: func(t *testing.T, x *caseEnv) {
			// The daemon reads the request and goes away.
			p := x.driver()
			x.fake.reply(fakeReply{hangup: true})
			// C must leave errno set on -1 and says ECONNRESET; Go and
			// Python carry no errno for an end of stream.
			p.expectErrIn(fakeConnect, "unavailable", 0, syscall.ECONNRESET)
		}},
	}...)
}()

// checkFDs checks that the driver, its library connected again, holds as
// many descriptors as after its warm-up.
func checkFDs(t *testing.T, p *proc, why string) {
	t.Helper()
	if got := p.warm(); got != p.baseFDs {
		t.Errorf("%s: the driver holds %d descriptors, want %d: the library did not close what the reply brought", why, got, p.baseFDs)
	}
}

// connectedSocket returns a blocking TCP socket connected to addr (an
// IPv4 ip:port), as the daemon would deliver it.
func connectedSocket(t *testing.T, addr string) int {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		t.Errorf("fake daemon: %v", err)
		return -1
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Errorf("fake daemon: socket: %v", err)
		return -1
	}
	sa := &unix.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		t.Errorf("fake daemon: connect %s: %v", addr, err)
		return -1
	}
	return fd
}
