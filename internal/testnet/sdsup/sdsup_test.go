package sdsup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/testnet"
	"golang.org/x/sys/unix"
)

// TestMain runs the test binary as a service when Start starts it with
// SDSUP_TEST_HELPER=1 (TestRestart).
func TestMain(m *testing.M) {
	if os.Getenv("SDSUP_TEST_HELPER") == "1" {
		if err := helper(); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// sendRaw sends payload with fds (SCM_RIGHTS) and oob to s's socket from
// a fresh unbound socket, as sd_pid_notify_with_fds does.
func sendRaw(s *Supervisor, payload string, oob []byte, fds ...int) error {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sock)
	if len(fds) > 0 {
		oob = append(oob, unix.UnixRights(fds...)...)
	}
	return unix.Sendmsg(sock, []byte(payload), oob, &unix.SockaddrUnix{Name: s.path}, 0)
}

// send sends payload with fds and waits until s has read it.
func send(t *testing.T, s *Supervisor, payload string, fds ...int) Message {
	t.Helper()
	if err := sendRaw(s, payload, nil, fds...); err != nil {
		t.Fatalf("sending %q: %v", payload, err)
	}
	m, err := s.Wait(5*time.Second, func(m Message) bool { return m.Raw == payload })
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type pipe struct{ r, w *os.File }

func newPipe(t *testing.T) pipe {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return pipe{r, w}
}

// writersGone is whether every write end of p is closed: the supervisor
// closed its copy (the test closed its own).
func (p pipe) writersGone(t *testing.T) bool {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(p.r.Fd())}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		t.Fatal(err)
	}
	return pfd[0].Revents&unix.POLLHUP != 0
}

func ino(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// baseFDs counts open descriptors once the runtime's poller exists, so
// that its epoll and eventfd are in the count before and after.
func baseFDs(t *testing.T) int {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	return testnet.OpenFDs(t)
}

// TestMessages: each message produces exactly the error it should (none
// for a good one), and its descriptors are stored or closed as systemd
// would.
func TestMessages(t *testing.T) {
	long := "FDSTORE=1\nFDNAME=" + strings.Repeat("x", 256)
	cases := []struct {
		name    string
		payload string
		fds     int // pipe write ends sent along
		max     int // FileDescriptorStoreMax=
		want    string
		stored  []string // the store's names afterwards: the first len(stored) fds
	}{
		{name: "good", payload: "READY=1\nSTATUS=serving 3 sockets\nX_SOCKFACTORY_GEN=2\n"},
		{name: "good store", payload: "FDSTORE=1\nFDNAME=listener-1", fds: 1, max: 1, stored: []string{"listener-1"}},
		{name: "good store default name", payload: "FDSTORE=1\nFDPOLL=0\n", fds: 2, max: 2, stored: []string{"stored", "stored"}},
		{name: "good store names", payload: "FDSTORE=1\nFDNAME=~ !#$%&'()*+,-./;<=>?@[\\]^_`{|}", fds: 1, max: 1, stored: []string{"~ !#$%&'()*+,-./;<=>?@[\\]^_`{|}"}},
		{name: "good remove", payload: "FDSTOREREMOVE=1\nFDNAME=gone", max: 1},
		{name: "good barrier", payload: "BARRIER=1", fds: 1},
		{name: "good reload", payload: "RELOADING=1\nMONOTONIC_USEC=%NOW%"},
		{name: "good reload done", payload: "READY=1\nSTATUS=reloaded\nMONOTONIC_USEC=%NOW%"},
		{name: "good watchdog", payload: "WATCHDOG=1\nWATCHDOG_USEC=5000000\nEXTEND_TIMEOUT_USEC=1000000"},
		{name: "good watchdog trigger", payload: "WATCHDOG=trigger"},
		{name: "good stopping", payload: "STOPPING=1\nERRNO=2\nBUSERROR=org.freedesktop.DBus.Error.Failed\nVARLINKERROR=org.varlink.service.InvalidParameter\nEXIT_STATUS=3\nNOTIFYACCESS=main"},
		{name: "good CRLF and empty lines", payload: "READY=1\r\n\nSTATUS=up\n\n"},
		{name: "good trailing NUL", payload: "READY=1\x00"},
		{name: "good empty", payload: ""},

		{name: "READY=0", payload: "READY=0", want: "READY=0: the only defined value is 1"},
		{name: "STOPPING=true", payload: "STOPPING=true", want: "STOPPING=true: the only defined value is 1"},
		{name: "no =", payload: "READY", want: `"READY" is not KEY=VALUE`},
		{name: "no key", payload: "=1", want: `"=1" is not KEY=VALUE`},
		{name: "unknown key", payload: "SOCKFACTORY_READY=1", want: "SOCKFACTORY_READY= is not in sd_notify(3)"},
		{name: "lower case", payload: "ready=1", want: "ready= is not in sd_notify(3)"},
		{name: "WATCHDOG=2", payload: "WATCHDOG=2", want: "WATCHDOG=2: want 1 or trigger"},
		{name: "MAINPID word", payload: "MAINPID=abc", want: "MAINPID=abc: want a pid above 1"},
		{name: "MAINPID=1", payload: "MAINPID=1", want: "MAINPID=1: want a pid above 1"},
		{name: "MAINPID negative", payload: "MAINPID=-5", want: "MAINPID=-5: want a pid above 1"},
		{name: "MAINPID space", payload: "MAINPID= 42", want: "MAINPID= 42: want a pid above 1"},
		{name: "EXTEND_TIMEOUT_USEC fraction", payload: "EXTEND_TIMEOUT_USEC=1.5", want: "EXTEND_TIMEOUT_USEC=1.5: want a positive decimal integer"},
		{name: "WATCHDOG_USEC=0", payload: "WATCHDOG_USEC=0", want: "WATCHDOG_USEC=0: want a positive decimal integer"},
		{name: "ERRNO name", payload: "ERRNO=ENOENT", want: "ERRNO=ENOENT: want an errno number"},
		{name: "ERRNO too big", payload: "ERRNO=70000", want: "ERRNO=70000: want an errno number"},
		{name: "NOTIFYACCESS", payload: "NOTIFYACCESS=some", want: "NOTIFYACCESS=some: want none, main, exec or all"},
		{name: "RELOADING alone", payload: "RELOADING=1", want: "RELOADING=1 without MONOTONIC_USEC="},
		{name: "MONOTONIC_USEC stale", payload: "RELOADING=1\nMONOTONIC_USEC=1", want: "from CLOCK_MONOTONIC"},
		{name: "MONOTONIC_USEC realtime", payload: fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", time.Now().UnixMicro()), want: "from CLOCK_MONOTONIC"},
		{name: "STATUS two lines", payload: "STATUS=line one\nline two", want: `"line two" is not KEY=VALUE`},
		{name: "STATUS not UTF-8", payload: "STATUS=\xff\xfe", want: "STATUS= is not UTF-8"},
		{name: "twice", payload: "READY=1\nSTATUS=a\nREADY=1", want: "READY= assigned twice"},
		{name: "FDNAME colon", payload: "FDSTORE=1\nFDNAME=a:b", fds: 1, max: 1, want: `FDNAME="a:b": want at most 255`, stored: []string{"stored"}},
		{name: "FDNAME 256", payload: long, fds: 1, max: 1, want: "want at most 255", stored: []string{"stored"}},
		{name: "FDNAME tab", payload: "FDSTORE=1\nFDNAME=a\tb", fds: 1, max: 1, want: `FDNAME="a\tb"`, stored: []string{"stored"}},
		{name: "FDNAME DEL", payload: "FDSTORE=1\nFDNAME=a\x7f", fds: 1, max: 1, want: `FDNAME="a\x7f"`, stored: []string{"stored"}},
		{name: "FDNAME empty", payload: "FDSTORE=1\nFDNAME=", fds: 1, max: 1, want: "FDNAME= is empty", stored: []string{""}},
		{name: "fds without FDSTORE", payload: "READY=1", fds: 2, max: 2, want: "2 descriptors without FDSTORE=1"},
		{name: "FDSTORE without fds", payload: "FDSTORE=1\nFDNAME=x", max: 1, want: "FDSTORE=1 without descriptors"},
		{name: "FDSTOREREMOVE without FDNAME", payload: "FDSTOREREMOVE=1", max: 1, want: "FDSTOREREMOVE=1 without FDNAME="},
		{name: "FDSTOREREMOVE bad FDNAME", payload: "FDSTOREREMOVE=1\nFDNAME=a:b", max: 1, want: `FDNAME="a:b"`},
		{name: "store full", payload: "FDSTORE=1\nFDNAME=x", fds: 3, max: 1, want: "the store is full (FileDescriptorStoreMax=1): systemd closes the remaining 2", stored: []string{"x"}},
		{name: "store off", payload: "FDSTORE=1\nFDNAME=x", fds: 1, want: "FileDescriptorStoreMax=0"},
		{name: "BARRIER mixed", payload: "BARRIER=1\nREADY=1", fds: 1, want: "BARRIER=1 must be alone"},
		{name: "BARRIER no fd", payload: "BARRIER=1", want: "BARRIER=1 needs exactly one descriptor, got 0"},
		{name: "BARRIER two fds", payload: "BARRIER=1", fds: 2, want: "got 2"},
		{name: "FDPOLL=2", payload: "FDSTORE=1\nFDNAME=x\nFDPOLL=2", fds: 1, max: 1, want: "FDPOLL=2: want 0 or 1", stored: []string{"x"}},
		{name: "FDNAME alone", payload: "FDNAME=x", want: "FDNAME= without FDSTORE=1"},
		{name: "FDPOLL alone", payload: "FDPOLL=0", want: "FDPOLL= without FDSTORE=1"},
		{name: "FDPOLL with remove", payload: "FDSTOREREMOVE=1\nFDNAME=x\nFDPOLL=0", max: 1, want: "FDPOLL= goes with FDSTORE=1"},
		{name: "store and remove", payload: "FDSTORE=1\nFDSTOREREMOVE=1\nFDNAME=x", fds: 1, max: 1, want: "FDSTORE=1 with FDSTOREREMOVE=1"},
		{name: "MAINPIDFD no fd", payload: "MAINPIDFD=1", want: "MAINPIDFD=1 needs exactly one descriptor"},
		{name: "MAINPIDFD pipe", payload: "MAINPIDFD=1", fds: 1, want: "not a pidfd"},
		{name: "NUL inside", payload: "READY=1\x00STATUS=x", fds: 1, max: 1, want: "NUL inside the message"},
		{name: "too long", payload: "FDSTORE=1\nX_BIG=" + strings.Repeat("x", 4096), fds: 1, max: 1, want: "systemd ignores messages over 4096 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := New(t, Options{FDStoreMax: c.max})
			payload := strings.ReplaceAll(c.payload, "%NOW%", strconv.FormatUint(monotonic(), 10))
			var pipes []pipe
			var fds []int
			for range c.fds {
				p := newPipe(t)
				pipes = append(pipes, p)
				fds = append(fds, int(p.w.Fd()))
			}
			if err := sendRaw(s, payload, nil, fds...); err != nil {
				t.Fatal(err)
			}
			for _, p := range pipes {
				p.w.Close()
			}
			m, err := s.Wait(5*time.Second, func(m Message) bool { return m.Raw == payload })
			if err != nil {
				t.Fatal(err)
			}
			if m.FDs != c.fds {
				t.Errorf("Message.FDs = %d, want %d", m.FDs, c.fds)
			}
			errs := s.Errors()
			switch {
			case c.want == "" && len(errs) > 0:
				t.Errorf("good message %q: errors %v", payload, errs)
			case c.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), c.want)):
				t.Errorf("message %q: errors %v, want one containing %q", payload, errs, c.want)
			}
			if got := s.StoreNames(); !slices.Equal(got, c.stored) {
				t.Errorf("store %q, want %q", got, c.stored)
			}
			for i, p := range pipes {
				if gone, want := p.writersGone(t), i >= len(c.stored); gone != want {
					t.Errorf("descriptor %d closed by the supervisor: %v, want %v", i, gone, want)
				}
			}
		})
	}
}

// TestStore: descriptors are kept under their names in arrival order, are
// the very files sent, are not stored twice, are dropped on POLLHUP unless
// FDPOLL=0, are closed by FDSTOREREMOVE=1, and nothing is left open after
// cleanup.
func TestStore(t *testing.T) {
	base := baseFDs(t)
	dflt := newPipe(t) // outlives the supervisor, to see that its cleanup closes what it stores
	t.Run("run", func(t *testing.T) {
		s := New(t, Options{FDStoreMax: 8})
		a, b1, b2, hup, nohup := newPipe(t), newPipe(t), newPipe(t), newPipe(t), newPipe(t)
		send(t, s, "FDSTORE=1\nFDNAME=a", int(a.w.Fd()))
		send(t, s, "FDSTORE=1\nFDNAME=b", int(b1.w.Fd()), int(b2.w.Fd()))
		send(t, s, "FDSTORE=1\nFDNAME=hup", int(hup.r.Fd()))
		send(t, s, "FDSTORE=1\nFDNAME=nohup\nFDPOLL=0", int(nohup.r.Fd()))
		send(t, s, "FDSTORE=1\n", int(dflt.w.Fd()))
		send(t, s, "FDSTORE=1\nFDNAME=again", int(dflt.w.Fd()), int(a.w.Fd())) // the same files again
		for _, p := range []pipe{a, b1, b2, dflt} {
			p.w.Close()
		}

		want := []string{"a", "b", "b", "hup", "nohup", "stored"}
		if got := s.StoreNames(); !slices.Equal(got, want) {
			t.Fatalf("store %q, want %q", got, want)
		}
		st := s.Store()
		for i, p := range []pipe{a, b1, b2, hup, nohup, dflt} {
			if got, want := ino(t, st[i].FD), ino(t, int(p.r.Fd())); got != want {
				t.Errorf("store[%d] (%s) is inode %d, want the pipe's %d", i, st[i].Name, got, want)
			}
		}

		// The read ends lose their writers: "hup" reports POLLHUP and is
		// dropped, "nohup" came with FDPOLL=0 and stays.
		hup.w.Close()
		nohup.w.Close()
		want = []string{"a", "b", "b", "nohup", "stored"}
		if got := s.StoreNames(); !slices.Equal(got, want) {
			t.Errorf("after POLLHUP: store %q, want %q", got, want)
		}

		send(t, s, "FDSTOREREMOVE=1\nFDNAME=b")
		want = []string{"a", "nohup", "stored"}
		if got := s.StoreNames(); !slices.Equal(got, want) {
			t.Errorf("after removing b: store %q, want %q", got, want)
		}
		if !b1.writersGone(t) || !b2.writersGone(t) {
			t.Error("FDSTOREREMOVE=1 FDNAME=b left a b descriptor open")
		}
		if a.writersGone(t) {
			t.Error("FDSTOREREMOVE=1 FDNAME=b closed a")
		}
		send(t, s, "FDSTOREREMOVE=1\nFDNAME=a")
		if !a.writersGone(t) {
			t.Fatal("FDSTOREREMOVE=1 FDNAME=a left a open")
		}
		if n, err := a.r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("read of a's pipe after its removal: %d, %v; want EOF", n, err)
		}
		s.Check(t)
	})
	if !dflt.writersGone(t) {
		t.Error("cleanup left a stored descriptor open")
	}
	dflt.r.Close()
	if got := testnet.OpenFDs(t); got != base {
		t.Errorf("open descriptors: %d, want %d as before", got, base)
	}
}

// TestWait: Wait returns matching messages in order of arrival, each once,
// whether they came before or during the call; it times out; it ends
// after cleanup.
func TestWait(t *testing.T) {
	var s *Supervisor
	t.Run("run", func(t *testing.T) {
		s = New(t, Options{})
		for i := 1; i <= 3; i++ {
			if err := sendRaw(s, fmt.Sprintf("X_N=%d", i), nil); err != nil {
				t.Fatal(err)
			}
		}
		n := func(m Message) string { v, _ := m.Get("X_N"); return v }
		anyN := func(m Message) bool { _, ok := m.Get("X_N"); return ok }
		if m, err := s.Wait(5*time.Second, Has("X_N", "2")); err != nil || n(m) != "2" {
			t.Fatalf("Wait for X_N=2: %q, %v", m.Raw, err)
		}
		for _, want := range []string{"1", "3"} {
			if m, err := s.Wait(5*time.Second, anyN); err != nil || n(m) != want {
				t.Fatalf("Wait for any X_N: %q, %v; want X_N=%s", m.Raw, err, want)
			}
		}
		start := time.Now()
		if m, err := s.Wait(100*time.Millisecond, anyN); err == nil || !strings.Contains(err.Error(), "received 3") {
			t.Fatalf("Wait with every match taken: %q, %v; want a timeout listing 3 messages", m.Raw, err)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("Wait gave up after %v, before its timeout", d)
		}

		got := make(chan string, 1)
		go func() {
			m, err := s.Wait(5*time.Second, anyN)
			if err != nil {
				got <- err.Error()
			}
			got <- n(m)
		}()
		time.Sleep(20 * time.Millisecond) // most likely Waiting by now; either way it must see X_N=4
		if err := sendRaw(s, "X_N=4", nil); err != nil {
			t.Fatal(err)
		}
		if v := <-got; v != "4" {
			t.Errorf("Wait during the send: %s, want 4", v)
		}
		if msgs := s.Messages(); len(msgs) != 4 || msgs[0].Raw != "X_N=1" || msgs[3].Raw != "X_N=4" {
			t.Errorf("Messages: %v", msgs)
		}
		s.Check(t)
	})
	if _, err := s.Wait(time.Minute, func(Message) bool { return true }); err == nil || !strings.Contains(err.Error(), "after the test's cleanup") {
		t.Errorf("Wait after cleanup: %v", err)
	}
}

// TestCredentials: each message carries its sender's pid and uid; MAINPID=
// and MAINPIDFD=1 change the main pid, which FromMain follows.
func TestCredentials(t *testing.T) {
	s := New(t, Options{})
	m := send(t, s, "X_A=1")
	if int(m.PID) != os.Getpid() || int(m.UID) != os.Getuid() || m.FromMain {
		t.Errorf("message from this process: pid %d uid %d FromMain %v; want %d %d false", m.PID, m.UID, m.FromMain, os.Getpid(), os.Getuid())
	}
	if s.MainPID() != 0 {
		t.Errorf("MainPID before any: %d", s.MainPID())
	}

	pidfd, err := unix.PidfdOpen(1, 0)
	if err != nil {
		t.Fatal(os.NewSyscallError("pidfd_open", err))
	}
	send(t, s, "MAINPIDFD=1", pidfd)
	unix.Close(pidfd)
	if got := s.MainPID(); got != 1 {
		t.Errorf("MainPID after MAINPIDFD=1 with a pidfd of pid 1: %d", got)
	}

	send(t, s, fmt.Sprintf("MAINPID=%d", os.Getpid()))
	if got := s.MainPID(); got != os.Getpid() {
		t.Errorf("MainPID after MAINPID=%d: %d", os.Getpid(), got)
	}
	if m := send(t, s, "READY=1"); !m.FromMain {
		t.Error("message from the new main pid: FromMain false")
	}

	// A privileged sender may speak for another process (sd_pid_notify).
	cred := unix.UnixCredentials(&unix.Ucred{Pid: 1, Uid: 0, Gid: 0})
	if err := sendRaw(s, "X_FOR=1", cred); errors.Is(err, unix.EPERM) {
		t.Log("not privileged to send credentials of pid 1; skipping that part")
	} else if err != nil {
		t.Fatal(err)
	} else {
		m, err := s.Wait(5*time.Second, Has("X_FOR", "1"))
		if err != nil {
			t.Fatal(err)
		}
		if m.PID != 1 || m.UID != 0 || m.FromMain {
			t.Errorf("message sent for pid 1: pid %d uid %d FromMain %v", m.PID, m.UID, m.FromMain)
		}
	}
	s.Check(t)
}

// TestCommand: the service sees LISTEN_PID equal to its own pid,
// LISTEN_FDS and LISTEN_FDNAMES naming the listeners then the store (most
// recent first), the very sockets and pipes at 3, 4, 5 and nothing from 6
// to 9 (dash keeps a copy of stdin at 10), and the watchdog and store settings; the supervisor leaks nothing.
func TestCommand(t *testing.T) {
	base := baseFDs(t)
	t.Run("run", func(t *testing.T) {
		s := New(t, Options{FDStoreMax: 2, Watchdog: 3 * time.Second})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		lf, err := l.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		lino := ino(t, int(lf.Fd()))
		s.AddListener("http", lf)
		lf.Close() // the supervisor has its own copy
		a, b := newPipe(t), newPipe(t)
		send(t, s, "FDSTORE=1\nFDNAME=a", int(a.w.Fd()))
		send(t, s, "FDSTORE=1\nFDNAME=b", int(b.w.Fd()))
		a.w.Close()
		b.w.Close()

		cmd := s.Command("sh", "-c", `echo "$$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES $WATCHDOG_PID $WATCHDOG_USEC $FDSTORE"
readlink /proc/$$/fd/3 /proc/$$/fd/4 /proc/$$/fd/5
for i in 0 1 2 3 4 5 6 7 8 9; do [ ! -e /proc/$$/fd/$i ] || printf "$i "; done; echo
echo written-to-a >&5`)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := s.Start(cmd); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		if got := s.MainPID(); got != pid {
			t.Errorf("MainPID %d, want the service's %d", got, pid)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("service: %v; stderr %s", err, stderr.String())
		}
		lines := strings.Split(out.String(), "\n")
		want := []string{
			fmt.Sprintf("%d %d 3 http:b:a %d 3000000 2", pid, pid, pid),
			fmt.Sprintf("socket:[%d]", lino),
			fmt.Sprintf("pipe:[%d]", ino(t, int(b.r.Fd()))),
			fmt.Sprintf("pipe:[%d]", ino(t, int(a.r.Fd()))),
			"0 1 2 3 4 5 ",
			"",
		}
		if !slices.Equal(lines, want) {
			t.Errorf("service saw\n%s\nwant\n%s", out.String(), strings.Join(want, "\n"))
		}
		// The service has exited: what it wrote to fd 5 is in a's pipe now
		// (and a read would block if it went elsewhere).
		pfd := []unix.PollFd{{Fd: int32(a.r.Fd()), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 0); err != nil || n != 1 {
			t.Errorf("nothing to read from the pipe stored as a (%v)", err)
		} else {
			buf := make([]byte, 64)
			n, err := a.r.Read(buf)
			if err != nil || string(buf[:n]) != "written-to-a\n" {
				t.Errorf("read from the pipe stored as a: %q, %v", buf[:n], err)
			}
		}
		if got := s.StoreNames(); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("store after Start: %q", got)
		}
		if err := s.Start(exec.Command("true")); err == nil {
			t.Error("Start of a Cmd not made by Command succeeded")
		}
		if err := s.Start(s.Command("sdsup-no-such-program")); err == nil {
			t.Error("Start of a program not in PATH succeeded")
		}
		s.Check(t)
	})
	if got := testnet.OpenFDs(t); got != base {
		t.Errorf("open descriptors: %d, want %d as before", got, base)
	}
}

// TestCommandNothingToPass: with no listeners and an empty store, the
// service gets no LISTEN_* at all, as from systemd.
func TestCommandNothingToPass(t *testing.T) {
	t.Setenv("LISTEN_FDS", "7") // this process's own must not leak through
	t.Setenv("NOTIFY_SOCKET", "/elsewhere")
	s := New(t, Options{})
	cmd := s.Command("sh", "-c", `echo "${LISTEN_PID-unset} ${LISTEN_FDS-unset} ${LISTEN_FDNAMES-unset} ${WATCHDOG_PID-unset} ${FDSTORE-unset} $NOTIFY_SOCKET"`)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := s.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if want := "unset unset unset unset unset " + s.path + "\n"; out.String() != want {
		t.Errorf("service saw %q, want %q", out.String(), want)
	}
}

// TestRestart: a service (this test binary) stores a memfd and says
// READY=1; started again it gets the memfd back at 3 named "state", reads
// what it wrote, stores it again (which systemd, and so the supervisor,
// does not count twice) and synchronizes with BARRIER=1.
func TestRestart(t *testing.T) {
	s := New(t, Options{FDStoreMax: 4})
	for run := 1; run <= 2; run++ {
		cmd := s.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(cmd.Env, "SDSUP_TEST_HELPER=1")
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := s.Start(cmd); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("run %d: %v; stderr %s", run, err, stderr.String())
		}
		pid := cmd.Process.Pid
		want := fmt.Sprintf("%d - - - -\n", pid)
		if run == 2 {
			want = fmt.Sprintf("%d %d 1 state state of run 1\n", pid, pid)
		}
		if out.String() != want {
			t.Errorf("run %d: service said %q, want %q", run, out.String(), want)
		}
		m, err := s.Wait(5*time.Second, Has("READY", "1"))
		if err != nil {
			t.Fatal(err)
		}
		if int(m.PID) != pid || !m.FromMain {
			t.Errorf("run %d: READY=1 from pid %d FromMain %v, want %d true", run, m.PID, m.FromMain, pid)
		}
		if got := s.StoreNames(); !slices.Equal(got, []string{"state"}) {
			t.Errorf("run %d: store %q, want [state]", run, got)
		}
	}
	s.Check(t)
}

// helper is the service of TestRestart.
func helper() error {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	to := &unix.SockaddrUnix{Name: os.Getenv("NOTIFY_SOCKET")}
	notify := func(state string, fds ...int) error {
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		return unix.Sendmsg(sock, []byte(state), oob, to, 0)
	}
	get := func(k string) string {
		if v, ok := os.LookupEnv(k); ok {
			return v
		}
		return "-"
	}
	fmt.Printf("%d %s %s %s ", os.Getpid(), get("LISTEN_PID"), get("LISTEN_FDS"), get("LISTEN_FDNAMES"))
	var state int
	if get("LISTEN_FDNAMES") == "state" && get("LISTEN_PID") == strconv.Itoa(os.Getpid()) {
		state = 3
		buf := make([]byte, 64)
		n, err := unix.Pread(state, buf, 0)
		if err != nil {
			return err
		}
		fmt.Printf("%s\n", buf[:n])
	} else {
		fmt.Printf("-\n")
		if state, err = unix.MemfdCreate("state", unix.MFD_CLOEXEC); err != nil {
			return err
		}
		if _, err := unix.Write(state, []byte("state of run 1")); err != nil {
			return err
		}
	}
	if err := notify("FDSTORE=1\nFDNAME=state", state); err != nil {
		return err
	}
	if err := notify(fmt.Sprintf("READY=1\nSTATUS=up\nMAINPID=%d", os.Getpid())); err != nil {
		return err
	}
	// sd_notify_barrier: wait until the supervisor closes its copy.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	err = notify("BARRIER=1", p[1])
	unix.Close(p[1])
	if err != nil {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(p[0])}}
	if n, err := unix.Poll(pfd, 5000); err != nil || n != 1 || pfd[0].Revents&unix.POLLHUP == 0 {
		return fmt.Errorf("barrier not answered: %d %v", n, err)
	}
	return nil
}
