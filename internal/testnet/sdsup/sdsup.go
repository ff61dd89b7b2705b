// Package sdsup is a stand-in for systemd's service manager in tests: it
// listens on a notification socket ($NOTIFY_SOCKET), records and checks
// every sd_notify(3) message a service sends, keeps a file descriptor store
// as FileDescriptorStoreMax= does (systemd.service(5)), and starts the
// service the way systemd does with socket activation (sd_listen_fds(3)):
// sockets added with AddListener and then the stored descriptors at 3, 4,
// ..., with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set to the service's
// own pid. Only tests import it.
//
// What it copies from systemd (src/core/service.c, src/shared/notify-recv.c):
// a datagram over 4096 bytes (PIPE_BUF), with a NUL inside, with truncated
// control data or without credentials is ignored whole; a message is split
// into assignments at "\n" and "\r", empty ones skipped; when a key is
// assigned twice only the first counts; descriptors that come without
// FDSTORE=1 are closed, and so are those beyond FileDescriptorStoreMax=;
// FDSTOREREMOVE=1 wins over FDSTORE=1 in the same message; an invalid
// FDNAME= is ignored ("stored" is the default name); a descriptor that
// refers to the same open file as one in the store is closed, not stored
// twice; a stored descriptor that reports POLLHUP or POLLERR is dropped
// unless it came with FDPOLL=0; BARRIER=1 closes its descriptor and nothing
// else in its message counts; MAINPID= and MAINPIDFD=1 change the main pid.
// Every deviation from sd_notify(3) is recorded as an error (Errors, Check),
// including some systemd only logs or ignores (unknown keys, values other
// than the documented ones, FDNAME= without FDSTORE=1).
//
// What it does not do: there is no unit state machine (READY=1, RELOADING=1
// and STOPPING=1 are checked and recorded, and change nothing), no timeouts
// (EXTEND_TIMEOUT_USEC=) and no watchdog enforcement (a test Waits for
// WATCHDOG=1 itself). Messages from any pid are accepted, as with
// NotifyAccess=all; Message.FromMain says whether the sender was the main
// pid. The POLLHUP/POLLERR check is made whenever the store is looked at or
// changed (Store, StoreNames, Start, a new FDSTORE=1), not the moment it
// happens. The store lives as long as the Supervisor, across any number of
// Starts, as systemd keeps it across restarts.
package sdsup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

const (
	// notifyBufferMax is systemd's NOTIFY_BUFFER_MAX (PIPE_BUF): it drops
	// longer datagrams.
	notifyBufferMax = 4096
	// scmMaxFD is the kernel's limit of descriptors in one SCM_RIGHTS.
	scmMaxFD = 253
	// fdnameMax is systemd's FDNAME_MAX.
	fdnameMax = 255
	// monotonicSlack is how far MONOTONIC_USEC= may be from the
	// supervisor's CLOCK_MONOTONIC when the message is read.
	monotonicSlack = 10 * time.Second
)

// Options are the unit file settings the supervisor follows.
type Options struct {
	// FDStoreMax is FileDescriptorStoreMax=: how many descriptors the store
	// holds. Zero, systemd's default, turns the store off: every descriptor
	// sent with FDSTORE=1 is closed and the message recorded as an error.
	// When non-zero, Command's service gets FDSTORE=<FDStoreMax>, as
	// systemd.exec(5) says.
	FDStoreMax int
	// Watchdog is WatchdogSec=: when non-zero, Command's service gets
	// WATCHDOG_USEC= and WATCHDOG_PID= (its own pid). It is not enforced.
	Watchdog time.Duration
}

// Field is one KEY=VALUE assignment of a message.
type Field struct {
	Key, Value string
}

// Message is one datagram received on the notification socket.
type Message struct {
	// Raw is the payload as sent.
	Raw string
	// Fields are its assignments in order; lines that are not KEY=VALUE
	// are left out (and recorded as errors).
	Fields []Field
	// FDs is how many descriptors came with it (SCM_RIGHTS). They belong
	// to the supervisor, which stored or closed them before the message
	// became visible.
	FDs int
	// PID and UID are the sender's, from SCM_CREDENTIALS.
	PID int32
	UID uint32
	// FromMain is whether PID was the main pid when the message arrived.
	FromMain bool
	// At is when the supervisor read it.
	At time.Time
}

// Get returns the value assigned to key and whether it is assigned. When
// key is assigned more than once the first assignment wins, as in systemd
// (which is also recorded as an error).
func (m Message) Get(key string) (string, bool) {
	for _, f := range m.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// Has returns a matcher for Wait: messages that assign value to key.
func Has(key, value string) func(Message) bool {
	return func(m Message) bool {
		v, ok := m.Get(key)
		return ok && v == value
	}
}

// Stored is one entry of the descriptor store.
type Stored struct {
	// Name is its FDNAME= ("stored" when none was given).
	Name string
	// FD is the supervisor's descriptor. It stays the supervisor's: do not
	// close it. It is closed when the entry is removed, or dropped for
	// POLLHUP/POLLERR, or at cleanup; dup it to keep it longer.
	FD int
}

type entry struct {
	name string
	fd   int
	poll bool
}

// Supervisor is the service manager of one test. Its methods may be called
// from any goroutine, except New and AddListener, which call t.Fatal.
type Supervisor struct {
	t    testing.TB
	opts Options
	dir  string
	path string
	sock *os.File
	done chan struct{}

	mu        sync.Mutex
	closed    bool
	changed   chan struct{} // closed and replaced on each message, closed at cleanup
	msgs      []Message
	taken     []bool // msgs[i] was returned by Wait
	errs      []error
	store     []entry
	listeners []entry
	mainPID   int
}

// New makes a supervisor with a notification socket in a new directory
// under os.TempDir (or /tmp, if that path would not fit in sun_path). The
// socket and directory are world-accessible, so that a service that drops
// privileges may still notify. When the test ends, the socket, every
// descriptor in the store and every AddListener copy are closed, the reader
// goroutine has stopped and the directory is removed.
func New(t testing.TB, o Options) *Supervisor {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdsup")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify")
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		os.RemoveAll(dir)
		if dir, err = os.MkdirTemp("/tmp", "sdsup"); err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(dir, "notify")
	}
	fd, err := listen(dir, path)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("sdsup: notification socket %s: %v", path, err)
	}
	sock := os.NewFile(uintptr(fd), path) // non-blocking: the runtime poller reads it
	rc, err := sock.SyscallConn()
	if err != nil {
		sock.Close()
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	s := &Supervisor{t: t, opts: o, dir: dir, path: path, sock: sock, done: make(chan struct{}), changed: make(chan struct{})}
	go s.read(rc)
	t.Cleanup(s.cleanup)
	return s
}

func listen(dir, path string) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: path})
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}
	if err == nil {
		// Room for bursts; SO_RCVBUFFORCE needs CAP_NET_ADMIN.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		}
	}
	if err == nil {
		err = os.Chmod(path, 0o777)
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (s *Supervisor) cleanup() {
	s.sock.Close() // ends the reader's wait
	<-s.done
	s.mu.Lock()
	s.closed = true
	close(s.changed)
	for _, e := range append(s.store, s.listeners...) {
		unix.Close(e.fd)
	}
	s.store, s.listeners = nil, nil
	s.mu.Unlock()
	os.RemoveAll(s.dir)
}

// Env returns the service's NOTIFY_SOCKET=, for a service started some
// other way than Command.
func (s *Supervisor) Env() []string {
	return []string{"NOTIFY_SOCKET=" + s.path}
}

func (s *Supervisor) read(rc syscall.RawConn) {
	defer close(s.done)
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*scmMaxFD)+unix.CmsgSpace(4))
	for {
		var n, oobn, flags int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
				if rerr != unix.EINTR {
					return rerr != unix.EAGAIN
				}
			}
		})
		if err != nil {
			return // closed
		}
		if rerr != nil && n == 0 && oobn == 0 {
			s.mu.Lock()
			s.errs = append(s.errs, fmt.Errorf("sdsup: recvmsg: %w", rerr))
			s.mu.Unlock()
			return
		}
		s.receive(buf[:n], oob[:oobn], flags)
	}
}

// receive records one datagram. Every descriptor that came with it is
// stored or closed before the message becomes visible to Wait.
func (s *Supervisor) receive(payload, oob []byte, flags int) {
	m := Message{Raw: string(payload), At: time.Now()}
	var fds []int
	var cred *unix.Ucred
	var probs []string
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		probs = append(probs, "unparsable control data: "+err.Error())
	}
	for i := range cmsgs {
		c := &cmsgs[i]
		if c.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch c.Header.Type {
		case unix.SCM_RIGHTS:
			if r, err := unix.ParseUnixRights(c); err == nil {
				fds = append(fds, r...)
			}
		case unix.SCM_CREDENTIALS:
			cred, _ = unix.ParseUnixCredentials(c)
		}
	}
	m.FDs = len(fds)
	if cred != nil {
		m.PID, m.UID = cred.Pid, cred.Uid
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	m.FromMain = s.mainPID != 0 && int(m.PID) == s.mainPID
	probs = append(probs, s.process(&m, payload, fds, flags, cred != nil)...)
	raw := m.Raw
	if len(raw) > 200 {
		raw = raw[:200] + "..."
	}
	for _, p := range probs {
		s.errs = append(s.errs, fmt.Errorf("sdsup: message %d %q from pid %d: %s", len(s.msgs), raw, m.PID, p))
	}
	s.msgs = append(s.msgs, m)
	s.taken = append(s.taken, false)
	close(s.changed)
	s.changed = make(chan struct{})
}

// process parses m and acts on it as systemd would; it takes fds (stores
// or closes every one) and returns what is wrong with the message.
func (s *Supervisor) process(m *Message, payload []byte, fds []int, flags int, cred bool) (probs []string) {
	bad := func(format string, a ...any) { probs = append(probs, fmt.Sprintf(format, a...)) }
	defer func() { closeAll(fds) }() // what is left in fds when process returns

	ignored := true
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		bad("control data truncated (more than %d descriptors?): systemd ignores the message", scmMaxFD)
	case flags&unix.MSG_TRUNC != 0 || len(payload) > notifyBufferMax:
		bad("%d bytes: systemd ignores messages over %d bytes", len(payload), notifyBufferMax)
	case !cred:
		bad("no SCM_CREDENTIALS: systemd ignores the message")
	case len(payload) > 1 && bytes.IndexByte(payload[:len(payload)-1], 0) >= 0:
		bad("NUL inside the message: systemd ignores it")
	default:
		ignored = false
	}

	text := strings.TrimSuffix(m.Raw, "\x00") // systemd allows one trailing NUL
	seen := map[string]bool{}
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == '\r' }) {
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			if !ignored {
				bad("%q is not KEY=VALUE", line)
			}
			continue
		}
		m.Fields = append(m.Fields, Field{k, v})
		if ignored {
			continue // the reason it is ignored is problem enough
		}
		if seen[k] {
			bad("%s= assigned twice: systemd reads only the first", k)
			continue
		}
		seen[k] = true
		if p := checkValue(k, v); p != "" {
			bad("%s", p)
		}
	}
	if ignored {
		return probs
	}

	is1 := func(k string) bool { return Has(k, "1")(*m) }
	if is1("BARRIER") {
		if len(m.Fields) != 1 {
			bad("BARRIER=1 must be alone in its message: systemd ignores everything else in it")
		}
		if len(fds) != 1 {
			bad("BARRIER=1 needs exactly one descriptor, got %d", len(fds))
		}
		return probs // closing the descriptor is the answer
	}
	if is1("RELOADING") {
		if _, ok := m.Get("MONOTONIC_USEC"); !ok {
			bad("RELOADING=1 without MONOTONIC_USEC=: Type=notify-reload needs it to match the reload to its request")
		}
	}
	if v, ok := m.Get("MAINPID"); ok && checkValue("MAINPID", v) == "" {
		s.mainPID, _ = strconv.Atoi(v)
	}
	if is1("MAINPIDFD") {
		if len(fds) != 1 {
			bad("MAINPIDFD=1 needs exactly one descriptor (a pidfd), got %d", len(fds))
		} else if pid, err := pidfdPID(fds[0]); err != nil {
			bad("MAINPIDFD=1: %v", err)
		} else {
			s.mainPID = pid
		}
		return probs
	}

	name, hasName := m.Get("FDNAME")
	_, hasPoll := m.Get("FDPOLL")
	switch {
	case is1("FDSTOREREMOVE"):
		if is1("FDSTORE") {
			bad("FDSTORE=1 with FDSTOREREMOVE=1: systemd only removes, and closes the descriptors")
		}
		if hasPoll {
			bad("FDPOLL= goes with FDSTORE=1, not FDSTOREREMOVE=1")
		}
		switch {
		case !hasName:
			bad("FDSTOREREMOVE=1 without FDNAME=: systemd ignores it")
		case fdnameValid(name): // else checkValue said so
			s.remove(name)
		}
	case is1("FDSTORE"):
		if len(fds) == 0 {
			bad("FDSTORE=1 without descriptors")
		}
		if s.opts.FDStoreMax == 0 {
			if len(fds) > 0 {
				bad("FDSTORE=1 with the store off (FileDescriptorStoreMax=0): systemd closes the %d descriptors", len(fds))
			}
			return probs
		}
		if !hasName || !fdnameValid(name) {
			name = "stored"
		}
		if p := s.add(fds, name, !Has("FDPOLL", "0")(*m)); p != "" {
			bad("%s", p)
		}
		fds = nil
	default:
		if len(fds) > 0 {
			bad("%d descriptors without FDSTORE=1: systemd closes them", len(fds))
		}
		if hasName {
			bad("FDNAME= without FDSTORE=1 or FDSTOREREMOVE=1 means nothing")
		}
		if hasPoll {
			bad("FDPOLL= without FDSTORE=1 means nothing")
		}
	}
	return probs
}

// checkValue says what is wrong with the assignment k=v on its own, or "".
func checkValue(k, v string) string {
	switch k {
	case "READY", "RELOADING", "STOPPING", "FDSTORE", "FDSTOREREMOVE", "BARRIER", "MAINPIDFD", "RESTART_RESET":
		if v != "1" {
			return fmt.Sprintf("%s=%s: the only defined value is 1", k, v)
		}
	case "FDPOLL":
		if v != "0" && v != "1" {
			return fmt.Sprintf("FDPOLL=%s: want 0 or 1", v)
		}
	case "WATCHDOG":
		if v != "1" && v != "trigger" {
			return fmt.Sprintf("WATCHDOG=%s: want 1 or trigger", v)
		}
	case "MAINPID":
		if n, ok := positive(v); !ok || n < 2 || n > 1<<31-1 {
			return fmt.Sprintf("MAINPID=%s: want a pid above 1", v)
		}
	case "WATCHDOG_USEC", "EXTEND_TIMEOUT_USEC", "MAINPIDFDID":
		if _, ok := positive(v); !ok {
			return fmt.Sprintf("%s=%s: want a positive decimal integer", k, v)
		}
	case "MONOTONIC_USEC":
		n, ok := positive(v)
		if !ok {
			return fmt.Sprintf("MONOTONIC_USEC=%s: want a positive decimal integer", v)
		}
		now := monotonic()
		if d := time.Duration(int64(n)-int64(now)) * time.Microsecond; d > monotonicSlack || d < -monotonicSlack {
			return fmt.Sprintf("MONOTONIC_USEC=%s is %v from CLOCK_MONOTONIC (%d): want the time of sending", v, d, now)
		}
	case "ERRNO":
		if n, ok := positive(v); !ok || n > 4095 {
			return fmt.Sprintf("ERRNO=%s: want an errno number, 1 to 4095", v)
		}
	case "NOTIFYACCESS":
		switch v {
		case "none", "main", "exec", "all":
		default:
			return fmt.Sprintf("NOTIFYACCESS=%s: want none, main, exec or all", v)
		}
	case "STATUS":
		if !utf8.ValidString(v) {
			return "STATUS= is not UTF-8: systemd ignores it"
		}
	case "FDNAME":
		if v == "" {
			return "FDNAME= is empty: systemd takes it and passes an empty name in LISTEN_FDNAMES"
		}
		if !fdnameValid(v) {
			return fmt.Sprintf("FDNAME=%q: want at most %d printable ASCII characters other than ':'; systemd ignores it", v, fdnameMax)
		}
	case "BUSERROR", "VARLINKERROR", "EXIT_STATUS":
	default:
		if !strings.HasPrefix(k, "X_") {
			return fmt.Sprintf("%s= is not in sd_notify(3) (custom keys start with X_)", k)
		}
	}
	return ""
}

// positive parses a decimal integer above zero, digits only.
func positive(v string) (uint64, bool) {
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil && n > 0
}

// fdnameValid is systemd's fdname_is_valid: up to 255 bytes of ASCII
// other than control characters, DEL and ':'. It allows the empty name.
func fdnameValid(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return len(s) <= fdnameMax
}

func monotonic() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return uint64(ts.Nano() / 1000)
}

func pidfdPID(fd int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && pid > 0 {
				return pid, nil
			}
		}
	}
	return 0, errors.New("the descriptor is not a pidfd of a live process")
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// add stores fds under name, in order, as service_add_fd_store does; it
// takes them all and says what went wrong, or "". Called with s.mu held.
func (s *Supervisor) add(fds []int, name string, poll bool) string {
	s.prune()
next:
	for i, fd := range fds {
		for _, e := range s.store {
			if sameFile(e.fd, fd) {
				unix.Close(fd) // systemd drops duplicates silently
				continue next
			}
		}
		if len(s.store) >= s.opts.FDStoreMax {
			closeAll(fds[i:])
			return fmt.Sprintf("the store is full (FileDescriptorStoreMax=%d): systemd closes the remaining %d descriptors", s.opts.FDStoreMax, len(fds)-i)
		}
		s.store = append(s.store, entry{name: name, fd: fd, poll: poll})
	}
	return ""
}

// remove closes and drops every stored descriptor named name. Called with
// s.mu held.
func (s *Supervisor) remove(name string) {
	kept := s.store[:0]
	for _, e := range s.store {
		if e.name == name {
			unix.Close(e.fd)
			continue
		}
		kept = append(kept, e)
	}
	clear(s.store[len(kept):])
	s.store = kept
}

// prune closes and drops the stored descriptors that report POLLHUP or
// POLLERR, unless they came with FDPOLL=0. Called with s.mu held.
func (s *Supervisor) prune() {
	kept := s.store[:0]
	for _, e := range s.store {
		if e.poll && hungUp(e.fd) {
			unix.Close(e.fd)
			continue
		}
		kept = append(kept, e)
	}
	clear(s.store[len(kept):])
	s.store = kept
}

func hungUp(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd)}}
	for {
		n, err := unix.Poll(p, 0)
		if err != unix.EINTR {
			return err == nil && n > 0 && p[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
		}
	}
}

// sameFile is whether a and b are the same open file, as systemd's same_fd
// decides it: F_DUPFD_QUERY, or else the same inode (not a device) opened
// with the same flags.
func sameFile(a, b int) bool {
	if r, err := unix.FcntlInt(uintptr(a), unix.F_DUPFD_QUERY, b); err == nil {
		return r > 0
	}
	var sa, sb unix.Stat_t
	if unix.Fstat(a, &sa) != nil || unix.Fstat(b, &sb) != nil || sa.Dev != sb.Dev || sa.Ino != sb.Ino {
		return false
	}
	if t := sa.Mode & unix.S_IFMT; t == unix.S_IFCHR || t == unix.S_IFBLK {
		return false
	}
	fa, erra := unix.FcntlInt(uintptr(a), unix.F_GETFL, 0)
	fb, errb := unix.FcntlInt(uintptr(b), unix.F_GETFL, 0)
	return erra == nil && errb == nil && fa == fb
}

// Store returns the descriptor store in the order the descriptors arrived
// (Start passes them in the opposite order). The descriptors stay the
// supervisor's; see Stored.
func (s *Supervisor) Store() []Stored {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune()
	out := make([]Stored, len(s.store))
	for i, e := range s.store {
		out[i] = Stored{Name: e.name, FD: e.fd}
	}
	return out
}

// StoreNames returns the names in Store, in the same order.
func (s *Supervisor) StoreNames() []string {
	var names []string
	for _, e := range s.Store() {
		names = append(names, e.Name)
	}
	return names
}

// Messages returns every message received so far, in order.
func (s *Supervisor) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Errors returns what was wrong with the messages received so far, one
// error per problem, each naming the message's index, payload and sender.
func (s *Supervisor) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// Check fails t (t.Errorf) with each of Errors.
func (s *Supervisor) Check(t testing.TB) {
	t.Helper()
	for _, err := range s.Errors() {
		t.Errorf("%v", err)
	}
}

// MainPID returns the main pid: that of the last process Start started,
// or the last valid MAINPID= (or MAINPIDFD=1) since, or 0.
func (s *Supervisor) MainPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mainPID
}

// Wait returns the first message, in order of arrival, that match accepts
// and that no earlier Wait returned: one received before the call or one
// that arrives within timeout. So successive Waits for the same match
// return successive matching messages, and a message Wait skipped because
// it did not match remains for a later Wait. match runs without the
// supervisor's lock held, possibly more than once for a message.
func (s *Supervisor) Wait(timeout time.Duration, match func(Message) bool) (Message, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next := 0
	for {
		s.mu.Lock()
		base, msgs := next, s.msgs[next:len(s.msgs):len(s.msgs)]
		next = len(s.msgs)
		closed, changed := s.closed, s.changed
		s.mu.Unlock()
		for i, m := range msgs {
			if !match(m) {
				continue
			}
			s.mu.Lock()
			free := !s.taken[base+i]
			s.taken[base+i] = true
			s.mu.Unlock()
			if free {
				return m, nil
			}
		}
		if closed {
			return Message{}, errors.New("sdsup: Wait after the test's cleanup")
		}
		select {
		case <-changed:
		case <-timer.C:
			var raws []string
			for _, m := range s.Messages() {
				raws = append(raws, strconv.Quote(m.Raw))
			}
			return Message{}, fmt.Errorf("sdsup: no new matching message within %v; received %d: %s", timeout, len(raws), strings.Join(raws, ", "))
		}
	}
}

// AddListener adds a socket for Start to pass before the stored
// descriptors, as a socket unit's (FileDescriptorName= name). The
// supervisor keeps its own copy of f, closed at cleanup; f stays the
// caller's. Listeners are passed in the order they were added.
func (s *Supervisor) AddListener(name string, f *os.File) {
	s.t.Helper()
	if name == "" || !fdnameValid(name) {
		s.t.Fatalf("sdsup: AddListener: invalid name %q", name)
	}
	rc, err := f.SyscallConn() // unlike Fd, leaves O_NONBLOCK alone
	if err != nil {
		s.t.Fatalf("sdsup: AddListener %s: %v", name, err)
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3) }); err != nil || derr != nil {
		s.t.Fatalf("sdsup: AddListener %s: %v", name, errors.Join(err, derr))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		unix.Close(nfd)
		s.t.Fatalf("sdsup: AddListener after cleanup")
	}
	s.listeners = append(s.listeners, entry{name: name, fd: nfd})
}

// wrapper sets LISTEN_PID and WATCHDOG_PID to the pid the service will
// have: a shell's $$ is kept by exec.
const wrapper = `[ -z "${LISTEN_FDS-}" ] || export LISTEN_PID=$$
[ -z "${WATCHDOG_USEC-}" ] || export WATCHDOG_PID=$$
exec "$0" "$@"`

// Command returns a Cmd that runs name with args as the service, for Start
// (which must start it, not Cmd.Start or Run). name is looked up in PATH
// as by exec.Command, and is the service's argv[0]; a failed lookup is in
// Cmd.Err. The service runs through /bin/sh, which execs it and so gives
// it its own pid. Its environment is this process's, without any
// NOTIFY_SOCKET, LISTEN_*, WATCHDOG_* or FDSTORE of its own, plus Env(),
// FDSTORE= (if Options.FDStoreMax is set) and WATCHDOG_USEC= (if
// Options.Watchdog is). The caller may set Stdout, Stderr, Dir, add to Env
// and so on before Start.
func (s *Supervisor) Command(name string, args ...string) *exec.Cmd {
	path := name
	var lerr error
	if !strings.Contains(name, "/") {
		path, lerr = exec.LookPath(name)
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", wrapper, path}, args...)...)
	cmd.Err = lerr
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID", "WATCHDOG_USEC", "FDSTORE":
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, s.Env()...)
	if s.opts.FDStoreMax > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("FDSTORE=%d", s.opts.FDStoreMax))
	}
	if s.opts.Watchdog > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("WATCHDOG_USEC=%d", s.opts.Watchdog.Microseconds()))
	}
	return cmd
}

// Start starts cmd, which Command made, the way systemd starts a service:
// if there are listeners or stored descriptors, copies of them are at 3,
// 4, ... in the service (the listeners first, in the order added, then the
// store, most recently stored first, as systemd's service_collect_fds has
// them), then any ExtraFiles the caller set, and LISTEN_FDS= and
// LISTEN_FDNAMES= are added to its environment (and LISTEN_PID= by the
// wrapper). Its pid becomes the main pid before any message it sends is
// read. The supervisor closes its copies once the service has started (or
// failed to); the caller waits for cmd as usual.
func (s *Supervisor) Start(cmd *exec.Cmd) error {
	if cmd.Path != "/bin/sh" || len(cmd.Args) < 4 || cmd.Args[2] != wrapper {
		return errors.New("sdsup: Start takes a Cmd made by Command")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("sdsup: Start after the test's cleanup")
	}
	s.prune()
	var files []*os.File
	var names []string
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	pass := func(e entry) error {
		nfd, err := unix.FcntlInt(uintptr(e.fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return fmt.Errorf("sdsup: dup of %s: %w", e.name, err)
		}
		files = append(files, os.NewFile(uintptr(nfd), e.name))
		names = append(names, e.name)
		return nil
	}
	for _, e := range s.listeners {
		if err := pass(e); err != nil {
			return err
		}
	}
	for i := len(s.store) - 1; i >= 0; i-- {
		if err := pass(s.store[i]); err != nil {
			return err
		}
	}
	theirs := cmd.ExtraFiles
	if len(files) > 0 {
		cmd.ExtraFiles = append(append([]*os.File(nil), files...), theirs...)
		cmd.Env = append(cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	err := cmd.Start()
	cmd.ExtraFiles = theirs
	if err != nil {
		return err
	}
	s.mainPID = cmd.Process.Pid
	return nil
}
