package clientsuite

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fake is a scripted daemon: it listens on a SOCK_SEQPACKET socket, reads
// each request, answers hello with ok, a release of zeroToken with
// not_found (the drivers' warm-up), and every other request with the next
// scripted reply. With none left it answers not_found, so that a case that
// sends more than it scripted fails on the reply, not by hanging.
type fake struct {
	t      *testing.T
	socket string
	l      *net.UnixListener
	wg     sync.WaitGroup

	mu     sync.Mutex
	script []fakeReply
	conns  []*net.UnixConn
	ops    []string // the scripted requests, in order: op, and token if any
}

// fakeReply is one scripted answer.
type fakeReply struct {
	// body returns the reply packet for a request with this id.
	body func(id uint64) []byte
	// fds returns descriptors to send with it as SCM_RIGHTS; the fake
	// closes its copies once the packet is sent.
	fds func() []int
	// hangup closes the connection instead of replying.
	hangup bool
}

// startFake listens on a new socket; cleanup closes everything and waits
// for the fake's goroutines.
func startFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{t: t, socket: filepath.Join(shortTempDir(t), "fake.sock")}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: f.socket, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	f.l = l
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
		if n := len(f.script); n > 0 && !t.Failed() && !t.Skipped() {
			t.Errorf("fake daemon: %d scripted replies were never asked for", n)
		}
	})
	f.wg.Go(func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			f.wg.Go(func() { f.serve(c) })
		}
	})
	return f
}

// reply scripts the next answers.
func (f *fake) reply(r ...fakeReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, r...)
}

// json scripts a reply whose body is format with the request's id as its
// only argument (%d).
func (f *fake) json(format string) {
	f.reply(fakeReply{body: func(id uint64) []byte { return fmt.Appendf(nil, format, id) }})
}

// serve answers the requests on one connection.
func (f *fake) serve(c *net.UnixConn) {
	defer c.Close()
	buf := make([]byte, 1<<17)
	oob := make([]byte, unix.CmsgSpace(16*4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || (n == 0 && oobn == 0) {
			return
		}
		if oobn != 0 {
			f.t.Errorf("fake daemon: a request came with %d bytes of control data", oobn)
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if fds, err := unix.ParseUnixRights(&m); err == nil {
						for _, fd := range fds {
							unix.Close(fd)
						}
					}
				}
			}
		}
		var req struct {
			V     int    `json:"v"`
			ID    uint64 `json:"id"`
			Op    string `json:"op"`
			Token *struct {
				Token string `json:"token"`
			} `json:"token"`
		}
		if err := json.Unmarshal(buf[:n], &req); err != nil {
			f.t.Errorf("fake daemon: request %q: %v", buf[:n], err)
			return
		}
		var r fakeReply
		switch {
		case req.Op == "hello":
			r.body = func(id uint64) []byte { return fmt.Appendf(nil, `{"v":1,"id":%d,"ok":true}`, id) }
		case req.Op == "release" && req.Token != nil && req.Token.Token == zeroToken:
			r.body = notFound
		default:
			f.mu.Lock()
			seen := req.Op
			if req.Token != nil {
				seen += " " + req.Token.Token
			}
			f.ops = append(f.ops, seen)
			if len(f.script) > 0 {
				r, f.script = f.script[0], f.script[1:]
			} else {
				r.body = notFound
			}
			f.mu.Unlock()
		}
		if r.hangup {
			return
		}
		var fds []int
		if r.fds != nil {
			fds = r.fds()
		}
		var rights []byte
		if len(fds) > 0 {
			rights = unix.UnixRights(fds...)
		}
		_, _, err = c.WriteMsgUnix(r.body(req.ID), rights, nil)
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err != nil {
			f.t.Errorf("fake daemon: sending a reply: %v", err)
			return
		}
	}
}

// seen returns the requests the script answered, each as its op and, for
// pickup and release, its token.
func (f *fake) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ops...)
}

func notFound(id uint64) []byte {
	return fmt.Appendf(nil, `{"v":1,"id":%d,"error":{"code":"not_found","message":"fake daemon: no such token"}}`, id)
}

// sockets returns a function making n fresh TCP sockets (not connected),
// for replies that carry descriptors.
func sockets(t *testing.T, n int) func() []int {
	return func() []int {
		var fds []int
		for range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Errorf("fake daemon: socket: %v", err)
				continue
			}
			fds = append(fds, fd)
		}
		return fds
	}
}
