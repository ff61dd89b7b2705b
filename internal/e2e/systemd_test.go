package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
	"github.com/sockfactory/sockfactory/internal/testnet/sdsup"
	"github.com/sockfactory/sockfactory/internal/wire"
)

const systemdConfig = `
[daemon]
socket = "%DIR%/native.sock"

[bind]
reclaim_grace = "%GRACE%"

[[rule]]
name = "root"
users = ["root"]
admin = true
connect = ["127.0.0.0/8:*"]
bind = ["tcp:127.0.0.0/8:*", "udp:127.0.0.0/8:*"]
`

// supervised is a daemon run by the sdsup stand-in for systemd.
type supervised struct {
	t      *testing.T
	sup    *sdsup.Supervisor
	dir    string
	socket string
	config string
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan error
}

func startSupervised(t *testing.T, o sdsup.Options, grace string) *supervised {
	t.Helper()
	dir := publicTempDir(t)
	s := &supervised{t: t, sup: sdsup.New(t, o), dir: dir, socket: filepath.Join(dir, "native.sock"), config: filepath.Join(dir, "sockfactoryd.toml")}
	config := strings.NewReplacer("%DIR%", dir, "%GRACE%", grace).Replace(systemdConfig)
	if err := os.WriteFile(s.config, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	s.log = &syncBuffer{}
	s.start()
	t.Cleanup(func() {
		if s.cmd != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(20 * time.Second):
				s.cmd.Process.Kill()
				t.Errorf("daemon did not exit within 20 s of SIGTERM")
			}
		}
		s.sup.Check(t)
		if t.Failed() {
			t.Logf("daemon log:\n%s", s.log)
		}
	})
	return s
}

// start starts the daemon the way systemd does (the fd store's contents
// passed in) and waits for READY=1 from it.
func (s *supervised) start() {
	s.t.Helper()
	s.cmd = s.sup.Command(bin.daemon, "-config", s.config, "-log-level", "debug", "-log-flush", "0")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.sup.Start(s.cmd); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan error, 1)
	cmd, exited := s.cmd, s.exited
	go func() { exited <- cmd.Wait() }()
	pid := s.cmd.Process.Pid
	s.wait("READY=1 from the daemon", func(m sdsup.Message) bool { return m.PID == int32(pid) && has(m, "READY", "1") })
}

func has(m sdsup.Message, k, v string) bool {
	got, ok := m.Get(k)
	return ok && got == v
}

func (s *supervised) wait(what string, match func(sdsup.Message) bool) sdsup.Message {
	s.t.Helper()
	m, err := s.sup.Wait(20*time.Second, match)
	if err != nil {
		s.t.Fatalf("waiting for %s: %v\n%s", what, err, s.log)
	}
	return m
}

// kill SIGKILLs the daemon and waits for it.
func (s *supervised) kill() {
	s.t.Helper()
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// TestIntegrationNotify checks every sd_notify message the daemon sends
// in a life of start, watchdog, reload, live upgrade and stop, against
// the stand-in's reading of sd_notify(3): READY=1 once serving, STATUS=
// with a summary, WATCHDOG=1 each half of WATCHDOG_USEC, each one after a
// real request through the native socket, RELOADING=1 with MONOTONIC_USEC=
// and READY=1 after it, MAINPID= of the new daemon from the old one on an
// upgrade, and STOPPING=1 on SIGTERM.
func TestIntegrationNotify(t *testing.T) {
	requireRoot(t)
	s := startSupervised(t, sdsup.Options{Watchdog: time.Second}, "30s")
	pid := s.cmd.Process.Pid
	st := s.wait("STATUS=", func(m sdsup.Message) bool { _, ok := m.Get("STATUS"); return ok })
	if v, _ := st.Get("STATUS"); !strings.HasPrefix(v, "serving 0 connections; 0 held sockets") {
		t.Errorf("STATUS=%q, want a summary beginning \"serving 0 connections; 0 held sockets\"", v)
	}
	for range 3 {
		s.wait("WATCHDOG=1", func(m sdsup.Message) bool { return m.PID == int32(pid) && has(m, "WATCHDOG", "1") })
	}
	// Each ping came after a probe through the native socket: a
	// connection from the daemon's own pid, served like any other.
	// (The log comes through a pipe: it may lag the pings a little.)
	probeLine := fmt.Sprintf(`msg="client connected" uid=0 gid=0 pid=%d`, pid)
	if !poll(10*time.Second, func() bool { return strings.Count(s.log.String(), probeLine) >= 3 }) {
		t.Errorf("%d probe connections from the daemon's own pid for 3 watchdog pings", strings.Count(s.log.String(), probeLine))
	}

	// A held socket shows in STATUS=.
	c := &sockfactory.Client{Socket: s.socket}
	defer c.Close()
	ctx := context.Background()
	ln, err := c.Listen(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s.wait("STATUS= with the held socket", func(m sdsup.Message) bool {
		v, _ := m.Get("STATUS")
		return strings.Contains(v, "1 held sockets, 1 references, 0 pending tokens")
	})

	s.cmd.Process.Signal(syscall.SIGHUP)
	rl := s.wait("RELOADING=1", func(m sdsup.Message) bool { return has(m, "RELOADING", "1") })
	if _, ok := rl.Get("MONOTONIC_USEC"); !ok {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", rl.Raw)
	}
	s.wait("READY=1 after the reload", func(m sdsup.Message) bool { return m.PID == int32(pid) && has(m, "READY", "1") })

	out, errOut, code := runCLI(t, "", nil, "--socket", s.socket, "upgrade")
	if code != 0 {
		t.Fatalf("upgrade: exit %d %q %q", code, out, errOut)
	}
	var newPID int
	if _, err := fmt.Sscanf(out, "upgraded: pid %d -> %d", new(int), &newPID); err != nil {
		t.Fatalf("upgrade output %q: %v", out, err)
	}
	mp := s.wait("MAINPID= of the new daemon", func(m sdsup.Message) bool { v, _ := m.Get("MAINPID"); return v == fmt.Sprint(newPID) })
	if mp.PID != int32(pid) && mp.PID != int32(newPID) {
		t.Errorf("MAINPID= came from pid %d", mp.PID)
	}
	s.wait("READY=1 from the new daemon", func(m sdsup.Message) bool { return m.PID == int32(newPID) && has(m, "READY", "1") })
	if got := s.sup.MainPID(); got != newPID {
		t.Errorf("the supervisor's main pid is %d, want the new daemon's %d", got, newPID)
	}
	s.wait("WATCHDOG=1 from the new daemon", func(m sdsup.Message) bool { return m.PID == int32(newPID) && has(m, "WATCHDOG", "1") })
	waitFor(t, "the old daemon to exit", func() bool { return gone(pid) })
	s.cmd = nil
	ln.Close()
	c.Close()
	syscall.Kill(newPID, syscall.SIGTERM)
	s.wait("STOPPING=1", func(m sdsup.Message) bool { return m.PID == int32(newPID) && has(m, "STOPPING", "1") })
	waitFor(t, "the new daemon to exit", func() bool { return gone(newPID) })
	// The first process's Wait ends once no daemon holds its log pipe.
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Errorf("a daemon still holds the log pipe")
	}
}

// rawBind binds over a bare connection of its own (no Go Client, so it
// never reclaims anything) and returns the connection, the socket and
// its address.
func rawBind(t *testing.T, socket string) (*net.UnixConn, *os.File, string) {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: socket, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := wire.Encode(&wire.Request{V: wire.Version, ID: 1, Op: wire.OpBind, Bind: &wire.BindRequest{Network: "udp", Address: "127.0.0.1:0"}})
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 4096), make([]byte, 64)
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := wire.DecodeReply(buf[:n])
	if err != nil || rep.Bind == nil {
		t.Fatalf("raw bind: %v %+v", err, rep)
	}
	msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
	fds, _ := unix.ParseUnixRights(&msgs[0])
	return c, os.NewFile(uintptr(fds[0]), "raw"), rep.Bind.Local
}

// TestIntegrationCrashSurvival SIGKILLs a daemon that keeps its sockets in
// the (stand-in) fd store and starts it again as systemd would: the same
// sockets are back; a Go Listener and a program run by sockfactory exec
// keep theirs and their references are reclaimed without their noticing;
// a reference nobody reclaims is released when the grace ends, and its
// socket leaves the store.
func TestIntegrationCrashSurvival(t *testing.T) {
	requireRoot(t)
	s := startSupervised(t, sdsup.Options{FDStoreMax: 64}, "3s")
	ctx := context.Background()

	holder, ln, lnIno := holdListener(t, s.socket, "holder")

	// A program run by exec holds a socket of its own.
	// It writes to a file, not a pipe, and is killed with its process
	// group: sleep outlives the CLI otherwise, and a pipe it holds would
	// keep Wait waiting.
	execCmd := exec.Command(bin.cli, "--socket", s.socket, "exec", "--listen", "tcp://127.0.0.1:0", "--", "sleep", "120")
	execLog, err := os.Create(filepath.Join(s.dir, "exec.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer execLog.Close()
	execCmd.Stdout, execCmd.Stderr = execLog, execLog
	execCmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := execCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(-execCmd.Process.Pid, syscall.SIGKILL); execCmd.Wait() }()

	raw, rawFile, rawAddr := rawBind(t, s.socket)
	defer raw.Close()
	defer rawFile.Close()

	admin := &sockfactory.Client{Socket: s.socket}
	defer admin.Close()
	var before []sockfactory.SocketStatus
	waitFor(t, "three held sockets", func() bool {
		before, err = admin.Status(ctx)
		return err == nil && len(before) == 3
	})
	admin.Close()
	var execAddr string
	for _, ss := range before {
		if ss.Holders[0].App == "sleep" {
			execAddr = ss.Addr
		}
	}
	if execAddr == "" {
		t.Fatalf("no socket held for the exec'd program: %+v", before)
	}
	// Three sockets and the two records in the store, once written.
	waitFor(t, "the sockets and the crash record in the fd store", func() bool {
		names := s.sup.StoreNames()
		n := 0
		for _, nm := range names {
			if strings.HasPrefix(nm, "sf-tcp-") || strings.HasPrefix(nm, "sf-udp-") {
				n++
			}
		}
		return n == 3 && len(names) == 5
	})
	s.waitRecord(3)

	s.kill()
	s.start()

	// The Go Listener's and the exec'd program's clients reconnect and
	// reclaim by themselves.
	waitFor(t, "two reclaims", func() bool { return strings.Count(s.log.String(), "op=reclaim") >= 2 })
	if !slices.Contains(socketInodes(t, s.cmd.Process.Pid), lnIno) {
		t.Errorf("the restarted daemon does not hold the Listener's socket (inode %d)", lnIno)
	}
	admin = &sockfactory.Client{Socket: s.socket}
	defer admin.Close()
	after, err := admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := statusKey(after), statusKey(before); got != want {
		t.Errorf("status after the restart:\n%s\nwant:\n%s", got, want)
	}
	// The Listener still accepts, and its client still works.
	checkAccepts(t, ln, "the Listener after the restart")
	if _, err := holder.Stats(ctx); err != nil {
		t.Errorf("the holder's client after the restart: %v", err)
	}
	// The bare connection reclaims nothing: its reference goes when the
	// grace ends, and its socket with it, out of the store too.
	s.wait("the orphan's socket to leave the store", func(m sdsup.Message) bool {
		v, _ := m.Get("FDNAME")
		return has(m, "FDSTOREREMOVE", "1") && strings.HasPrefix(v, "sf-udp-")
	})
	final, err := admin.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ss := range final {
		if ss.Addr == rawAddr {
			t.Errorf("the unreclaimed socket %s is still held: %+v", rawAddr, ss)
		}
	}
	if len(final) != 2 {
		t.Errorf("after the grace %d sockets held, want the 2 reclaimed: %+v", len(final), final)
	}
	// The line comes through the daemon's log pipe, maybe after the status.
	if !poll(5*time.Second, func() bool {
		return strings.Contains(s.log.String(), `msg="reclaim grace over: released the references not reclaimed" refs=1`)
	}) {
		t.Errorf("the log does not say one reference was released after the grace")
	}
	if b, _ := os.ReadFile(execLog.Name()); len(b) != 0 {
		t.Errorf("the exec'd program's CLI said something: %q", b)
	}
}

// TestIntegrationCrashRecordTampered corrupts the crash record in the
// store before the restart: the daemon rejects it, closes the stored
// sockets and takes them out of the store, and serves, empty; the holders
// keep their own sockets.
func TestIntegrationCrashRecordTampered(t *testing.T) {
	requireRoot(t)
	s := startSupervised(t, sdsup.Options{FDStoreMax: 64}, "3s")
	ctx := context.Background()
	holder := &sockfactory.Client{Socket: s.socket}
	defer holder.Close()
	ln, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	waitFor(t, "the socket and the records in the store", func() bool { return len(s.sup.StoreNames()) == 3 })
	s.waitRecord(1)
	s.kill()
	for _, e := range s.sup.Store() {
		if strings.HasPrefix(e.Name, "sf-state-") {
			if _, err := unix.Pwrite(e.FD, []byte("0000"), 10); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.start()
	if n := strings.Count(s.log.String(), "crash record rejected"); n != 2 {
		t.Errorf("%d records rejected, want 2:\n%s", n, s.log)
	}
	s.wait("the unrestored socket to leave the store", func(m sdsup.Message) bool {
		v, _ := m.Get("FDNAME")
		return has(m, "FDSTOREREMOVE", "1") && strings.HasPrefix(v, "sf-tcp-")
	})
	admin := &sockfactory.Client{Socket: s.socket}
	defer admin.Close()
	if ss, err := admin.Status(ctx); err != nil || len(ss) != 0 {
		t.Errorf("status after a rejected record: %v %+v, want nothing held", err, ss)
	}
	// The holder's socket is its own: it still accepts.
	checkAccepts(t, ln, "the Listener after the restart")
}

// TestIntegrationStopKeepsStore stops a daemon that keeps the fd store
// with SIGTERM, as systemctl restart does, and starts it again: the held
// socket is back, and the Go Listener's client reclaims its reference.
func TestIntegrationStopKeepsStore(t *testing.T) {
	requireRoot(t)
	s := startSupervised(t, sdsup.Options{FDStoreMax: 64}, "30s")
	ctx := context.Background()
	holder := &sockfactory.Client{Socket: s.socket, App: "holder"}
	defer holder.Close()
	ln, err := holder.Listen(ctx, "tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ino := inode(t, ln.TCPListener)
	// A TCP socket bound but not listening reports POLLHUP: it must
	// reach the store with FDPOLL=0, or systemd would drop it.
	bound, _, err := holder.BindFile(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{NoListen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bound.Close()
	waitFor(t, "the sockets and the records in the store", func() bool { return len(s.sup.StoreNames()) == 4 })
	s.waitRecord(2)
	pid := s.cmd.Process.Pid
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.wait("STOPPING=1", func(m sdsup.Message) bool { return m.PID == int32(pid) && has(m, "STOPPING", "1") })
	if err := <-s.exited; err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v", err)
	}
	s.cmd = nil
	if !strings.Contains(s.log.String(), "leaving the held sockets in the fd store") {
		t.Errorf("the stopping daemon does not say it leaves the sockets in the store")
	}
	if names := s.sup.StoreNames(); len(names) != 4 {
		t.Errorf("store after the stop: %v, want the two sockets and the two records", names)
	}
	s.start()
	waitFor(t, "the holder's reclaims", func() bool { return strings.Count(s.log.String(), "op=reclaim") == 2 })
	if !slices.Contains(socketInodes(t, s.cmd.Process.Pid), ino) {
		t.Errorf("the restarted daemon does not hold the Listener's socket")
	}
	admin := &sockfactory.Client{Socket: s.socket}
	defer admin.Close()
	ss, err := admin.Status(ctx)
	if err != nil || len(ss) != 2 || ss[0].Holders[0].App != "holder" || ss[1].Holders[0].App != "holder" {
		t.Errorf("status after the restart: %v %+v, want the holder's two sockets", err, ss)
	}
}

// checkAccepts checks that ln still accepts a connection.
func checkAccepts(t *testing.T, ln *sockfactory.Listener, what string) {
	t.Helper()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			c.Close()
		}
	}()
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	c.Close()
}

// holdListener makes a Client named app hold a listening TCP socket on
// loopback (share any) and returns them, and the socket's inode; both
// are closed at cleanup.
func holdListener(t testing.TB, socket, app string) (*sockfactory.Client, *sockfactory.Listener, uint64) {
	t.Helper()
	c := &sockfactory.Client{Socket: socket, App: app}
	t.Cleanup(func() { c.Close() })
	ln, err := c.Listen(context.Background(), "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Share: "any"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return c, ln, inode(t, ln.TCPListener)
}

// waitRecord waits until the newest crash record in the store lists n
// sockets, each with a reference: the record is rewritten within 50 ms of
// a change, and a crash before that would lose the newest references.
func (s *supervised) waitRecord(n int) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("a crash record of %d held sockets", n), func() bool {
		var best struct {
			Seq   uint64
			State struct {
				Sockets []struct {
					Refs []json.RawMessage `json:"refs"`
				} `json:"sockets"`
			} `json:"state"`
		}
		for _, e := range s.sup.Store() {
			if !strings.HasPrefix(e.Name, "sf-state-") {
				continue
			}
			buf := make([]byte, 1<<20)
			m, err := unix.Pread(e.FD, buf, 0)
			if err != nil {
				continue
			}
			_, body, ok := strings.Cut(string(buf[:max(m, 0)]), "\n")
			var rec = best
			if !ok || json.Unmarshal([]byte(body), &rec) != nil || rec.Seq < best.Seq {
				continue
			}
			best = rec
		}
		if len(best.State.Sockets) != n {
			return false
		}
		for _, sk := range best.State.Sockets {
			if len(sk.Refs) == 0 {
				return false
			}
		}
		return true
	})
}

// TestIntegrationCrashLoop SIGKILLs the daemon three times while clients
// hold Listeners and bind and release in loops: each time systemd (the
// stand-in) restarts it with the fd store, the holders reclaim by
// themselves, and the loops go on. Requests made while the daemon is down
// fail only with ErrUnavailable; at the end every Listener still accepts,
// every reference is back, and the daemon's descriptors are those of the
// sockets and connections it serves.
func TestIntegrationCrashLoop(t *testing.T) {
	requireRoot(t)
	// A release the looping clients sent while the daemon was down is
	// lost; their reference is an orphan nobody reclaims, released when
	// the grace ends.
	s := startSupervised(t, sdsup.Options{FDStoreMax: 256}, "2s")
	ctx := context.Background()
	const holders = 4
	var lns []*sockfactory.Listener
	for i := range holders {
		_, ln, _ := holdListener(t, s.socket, fmt.Sprintf("holder%d", i))
		lns = append(lns, ln)
	}
	var loops []*loop
	for i := range 2 {
		c := &sockfactory.Client{Socket: s.socket, App: fmt.Sprintf("looper%d", i)}
		defer c.Close()
		addr := lns[i].Addr().String()
		l := startLoop(fmt.Sprintf("bind/release %d", i), func() error {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			f, b, err := c.BindFile(ctx, "tcp", addr, &sockfactory.ListenOptions{Share: "any"})
			if err != nil {
				if errors.Is(err, sockfactory.ErrUnavailable) {
					time.Sleep(5 * time.Millisecond) // the daemon is down: do not spin
					return nil
				}
				return err
			}
			f.Close()
			if err := c.Release(ctx, b.Token); err != nil && !errors.Is(err, sockfactory.ErrUnavailable) && !errors.Is(err, sockfactory.ErrNotFound) {
				return err
			}
			return nil
		})
		loops = append(loops, l)
	}
	for round := range 3 {
		for _, l := range loops {
			l.waitMore(t, 10)
		}
		s.waitRecord(holders)
		s.kill()
		s.start()
		waitFor(t, fmt.Sprintf("round %d: every holder's reclaim", round), func() bool {
			return strings.Count(s.log.String(), "op=reclaim") >= holders*(round+1)
		})
	}
	for _, l := range loops {
		l.waitMore(t, 10)
		l.stop(t)
	}
	for i, ln := range lns {
		checkAccepts(t, ln, fmt.Sprintf("Listener %d after three crashes", i))
	}
	admin := &sockfactory.Client{Socket: s.socket}
	defer admin.Close()
	var ss []sockfactory.SocketStatus
	ok := poll(10*time.Second, func() bool {
		var err error
		ss, err = admin.Status(ctx)
		if err != nil || len(ss) != holders {
			return false
		}
		for _, st := range ss {
			if st.Refs != 1 || !strings.HasPrefix(st.Holders[0].App, "holder") {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Errorf("held after three crashes: %+v; want each holder's socket with its one reference", ss)
	}
	// Descriptors: the native listener, the sockets held, the holders'
	// and the loopers' and the admin's connections, and the runtime's few.
	pid := s.cmd.Process.Pid
	var sockets int
	waitFor(t, "the daemon's sockets to settle", func() bool {
		sockets = len(socketInodes(t, pid))
		return sockets == 1+holders+holders+2+1
	})
}
