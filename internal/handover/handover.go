// Package handover carries a live upgrade between two daemon processes:
// the running one (the parent) starts the next one (the child) with one
// end of a private SOCK_SEQPACKET socketpair, and over it they agree on a
// format version, the parent sends its state (an opaque payload) with the
// descriptors it names, the child says when it has taken everything and
// is ready to serve, and the parent commits. Until the commit the parent
// still owns and serves everything; if the child fails, exits or is late
// at any step before it, the parent kills it and goes on as if nothing
// happened. After the commit the child serves and the parent exits.
//
// It knows nothing of what the payload means (the daemon does) and makes
// no decision about when to upgrade. The exchange is documented in
// docs/operations.md ("The handover format").
//
// Why not cloudflare/tableflip: it hands over listeners only, by name,
// and signals readiness through a pipe; a sockfactory upgrade also hands
// over client connections, cached sockets and their references, which
// must travel as one versioned document beside their descriptors, and
// the child must be able to refuse that document before it serves
// anything. Its discipline is kept: one upgrade at a time, the parent
// keeps everything until the child is ready, a bounded wait.
package handover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Version is the handover format this daemon writes and reads. A daemon
// reads only versions from MinVersion to Version.
const (
	Version    = 1
	MinVersion = 1
)

// EnvFD names the environment variable that gives the child the
// descriptor number of its end of the socketpair.
const EnvFD = "SOCKFACTORY_UPGRADE_FD"

// Limits of the exchange: a data packet carries at most chunkSize bytes of
// payload, an fd packet at most fdsPerPacket descriptors (the kernel's
// SCM_MAX_FD is 253), and a payload is at most maxPayload bytes.
const (
	chunkSize    = 32 << 10
	fdsPerPacket = 250
	maxPayload   = 256 << 20
	maxControl   = 4 << 10
)

// message is one control packet: JSON, with the type in Type.
type message struct {
	Type string `json:"type"`
	// hello (child): the versions it reads, its pid and daemon version.
	Min    int    `json:"min,omitempty"`
	Max    int    `json:"max,omitempty"`
	PID    int    `json:"pid,omitempty"`
	Daemon string `json:"daemon,omitempty"`
	// state (parent): the version chosen, the payload's size in bytes and
	// the number of descriptors that follow.
	Version int `json:"version,omitempty"`
	Bytes   int `json:"bytes,omitempty"`
	FDs     int `json:"fds,omitempty"`
	// refuse, fail: why.
	Reason string `json:"reason,omitempty"`
}

// Message types, in the order they are sent.
const (
	typeHello    = "hello"    // child: versions it reads
	typeState    = "state"    // parent: version, then data and fd packets
	typeRefuse   = "refuse"   // parent: no version in common
	typePrepared = "prepared" // child: everything taken; will serve on commit
	typeFail     = "fail"     // child: could not take the state
	typeCommit   = "commit"   // parent: serve; this process is leaving
)

// Hello is what the child says about itself.
type Hello struct {
	PID      int
	Daemon   string // its version string
	Min, Max int    // the handover versions it reads
}

// Parent is the running daemon's side of one upgrade.
type Parent struct {
	conn *net.UnixConn
	cmd  *exec.Cmd
	done chan error // cmd.Wait's result
	pid  int
}

// Spawn starts the next daemon: cmd, whose ExtraFiles and Env get the
// child's end of the socketpair (the caller sets Path, Args, the rest of
// Env and the standard streams). A child whose parent dies before the
// commit sees the socketpair end and must exit without serving
// (WaitCommit fails); after the commit it outlives the parent, which is
// why no parent-death signal is set.
func Spawn(cmd *exec.Cmd) (*Parent, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "handover")
	theirs := os.NewFile(uintptr(fds[1]), "handover-child")
	defer theirs.Close()
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, err
	}
	conn := c.(*net.UnixConn)
	cmd.ExtraFiles = append(cmd.ExtraFiles, theirs)
	cmd.Env = append(cmd.Env, EnvFD+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &Parent{conn: conn, cmd: cmd, done: make(chan error, 1), pid: cmd.Process.Pid}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// PID is the child's process ID.
func (p *Parent) PID() int { return p.pid }

// Hello waits for the child's hello.
func (p *Parent) Hello(ctx context.Context) (Hello, error) {
	m, err := p.read(ctx)
	if err != nil {
		return Hello{}, err
	}
	if m.Type != typeHello {
		return Hello{}, fmt.Errorf("the new daemon sent %q where a hello was due", m.Type)
	}
	return Hello{PID: m.PID, Daemon: m.Daemon, Min: m.Min, Max: m.Max}, nil
}

// Choose picks the newest version both read, or refuses the child.
func (p *Parent) Choose(h Hello) (int, error) {
	v := min(h.Max, Version)
	if v < max(h.Min, MinVersion) {
		reason := fmt.Sprintf("this daemon writes handover versions %d to %d; the new one reads %d to %d", MinVersion, Version, h.Min, h.Max)
		p.write(message{Type: typeRefuse, Reason: reason}, nil)
		return 0, errors.New(reason)
	}
	return v, nil
}

// Send sends the payload in version v with the descriptors it names. The
// descriptors stay the caller's: the kernel gives the child its own
// copies.
func (p *Parent) Send(ctx context.Context, v int, payload []byte, fds []int) error {
	if len(payload) > maxPayload {
		return fmt.Errorf("the state is %d bytes, more than the %d a handover carries", len(payload), maxPayload)
	}
	stop := p.deadline(ctx)
	defer stop()
	if err := p.write(message{Type: typeState, Version: v, Bytes: len(payload), FDs: len(fds)}, nil); err != nil {
		return err
	}
	for b := payload; len(b) > 0; {
		n := min(len(b), chunkSize)
		if _, _, err := p.conn.WriteMsgUnix(b[:n], nil, nil); err != nil {
			return p.failed("sending the state", err)
		}
		b = b[n:]
	}
	for f := fds; len(f) > 0; {
		n := min(len(f), fdsPerPacket)
		if _, _, err := p.conn.WriteMsgUnix([]byte{'F'}, unix.UnixRights(f[:n]...), nil); err != nil {
			return p.failed("sending descriptors", err)
		}
		f = f[n:]
	}
	return nil
}

// Prepared waits until the child has taken everything and is ready to
// serve.
func (p *Parent) Prepared(ctx context.Context) error {
	m, err := p.read(ctx)
	if err != nil {
		return err
	}
	switch m.Type {
	case typePrepared:
		return nil
	case typeFail:
		return fmt.Errorf("the new daemon could not take the state: %s", m.Reason)
	}
	return fmt.Errorf("the new daemon sent %q where prepared was due", m.Type)
}

// Commit tells the child to serve. From here on the child owns everything;
// the caller must stop serving and exit.
func (p *Parent) Commit() error {
	p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := p.write(message{Type: typeCommit}, nil); err != nil {
		return err
	}
	p.conn.Close()
	return nil
}

// Abort ends a failed upgrade: it kills the child, waits for it and
// closes the socketpair. The caller keeps everything.
func (p *Parent) Abort() {
	p.conn.Close()
	p.cmd.Process.Kill()
	<-p.done
}

// Exited reports the child's exit, if it has: the channel receives once.
func (p *Parent) Exited() <-chan error { return p.done }

// read reads one control message, failing when ctx ends or the child
// exits first.
func (p *Parent) read(ctx context.Context) (message, error) {
	stop := p.deadline(ctx)
	defer stop()
	buf := make([]byte, maxControl)
	n, _, _, _, err := p.conn.ReadMsgUnix(buf, nil)
	if err != nil {
		return message{}, p.failed("waiting for the new daemon", err)
	}
	if n == 0 {
		return message{}, p.failed("waiting for the new daemon", errors.New("it closed the handover socket"))
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return message{}, fmt.Errorf("the new daemon sent a malformed message: %w", err)
	}
	return m, nil
}

func (p *Parent) write(m message, oob []byte) error {
	b, _ := json.Marshal(m)
	if _, _, err := p.conn.WriteMsgUnix(b, oob, nil); err != nil {
		return p.failed("writing to the new daemon", err)
	}
	return nil
}

// failed describes an I/O failure, with the child's exit status when it
// has exited (the usual reason).
func (p *Parent) failed(doing string, err error) error {
	select {
	case werr := <-p.done:
		p.done <- werr // for Abort
		if werr == nil {
			werr = errors.New("exit status 0")
		}
		return fmt.Errorf("%s: the new daemon exited (%v); its log lines, just before this one, say why", doing, werr)
	case <-time.After(100 * time.Millisecond): // it may be exiting
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s: no answer within [daemon] upgrade_timeout; check that the file at the daemon's path is a sockfactoryd, and its log lines", doing)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// deadline makes reads and writes on the socketpair fail when ctx ends.
func (p *Parent) deadline(ctx context.Context) func() {
	if d, ok := ctx.Deadline(); ok {
		p.conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { p.conn.SetDeadline(time.Now()) })
	return func() { stop() }
}

// Child is the next daemon's side of an upgrade.
type Child struct {
	conn *net.UnixConn
}

// FromEnv returns the child's side when this process was started by an
// upgrade (EnvFD is set), else nil. It unsets EnvFD.
func FromEnv() (*Child, error) {
	v, ok := os.LookupEnv(EnvFD)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(EnvFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q is not a descriptor number", EnvFD, v)
	}
	unix.CloseOnExec(fd)
	if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("%s=%d is not a SOCK_SEQPACKET socket", EnvFD, fd)
	}
	f := os.NewFile(uintptr(fd), "handover")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s=%d: %w", EnvFD, fd, err)
	}
	return &Child{conn: c.(*net.UnixConn)}, nil
}

// Hello tells the parent who this is and what it reads.
func (c *Child) Hello(daemonVersion string) error {
	return c.write(message{Type: typeHello, Min: MinVersion, Max: Version, PID: os.Getpid(), Daemon: daemonVersion})
}

// Receive reads the state: the version, the payload and the descriptors
// (the caller's from now on, close-on-exec).
func (c *Child) Receive(ctx context.Context) (int, []byte, []int, error) {
	stop := c.deadline(ctx)
	defer stop()
	m, err := c.read()
	if err != nil {
		return 0, nil, nil, err
	}
	if m.Type == typeRefuse {
		return 0, nil, nil, fmt.Errorf("the running daemon refused the handover: %s", m.Reason)
	}
	if m.Type != typeState || m.Bytes < 0 || m.Bytes > maxPayload || m.FDs < 0 {
		return 0, nil, nil, fmt.Errorf("the running daemon sent %q where the state was due", m.Type)
	}
	if m.Version < MinVersion || m.Version > Version {
		return 0, nil, nil, fmt.Errorf("the running daemon sent handover version %d; this one reads %d to %d", m.Version, MinVersion, Version)
	}
	payload := make([]byte, 0, m.Bytes)
	buf := make([]byte, chunkSize)
	for len(payload) < m.Bytes {
		n, _, _, _, err := c.conn.ReadMsgUnix(buf, nil)
		if err != nil || n == 0 {
			return 0, nil, nil, fmt.Errorf("reading the state after %d of %d bytes: %v", len(payload), m.Bytes, err)
		}
		payload = append(payload, buf[:n]...)
	}
	if len(payload) != m.Bytes {
		return 0, nil, nil, fmt.Errorf("the state is %d bytes, not the %d announced", len(payload), m.Bytes)
	}
	fds := make([]int, 0, m.FDs)
	oob := make([]byte, unix.CmsgSpace(4*fdsPerPacket))
	fail := func(err error) (int, []byte, []int, error) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return 0, nil, nil, err
	}
	rc, err := c.conn.SyscallConn()
	if err != nil {
		return fail(err)
	}
	for len(fds) < m.FDs {
		// MSG_CMSG_CLOEXEC: the descriptors arrive close-on-exec, with
		// no fcntl each (ten thousand of them cost tens of milliseconds).
		var oobn, flags int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			_, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf[:1], oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return fail(fmt.Errorf("reading descriptors after %d of %d: %w", len(fds), m.FDs, err))
		}
		got, perr := rights(oob[:oobn])
		fds = append(fds, got...)
		if perr != nil || flags&unix.MSG_CTRUNC != 0 {
			return fail(fmt.Errorf("reading descriptors after %d of %d: control data cut or malformed", len(fds), m.FDs))
		}
	}
	if len(fds) != m.FDs {
		return fail(fmt.Errorf("got %d descriptors, not the %d announced", len(fds), m.FDs))
	}
	return m.Version, payload, fds, nil
}

// rights returns the descriptors of every SCM_RIGHTS message in oob
// (received with MSG_CMSG_CLOEXEC).
func rights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// Prepared tells the parent everything is taken.
func (c *Child) Prepared() error { return c.write(message{Type: typePrepared}) }

// Fail tells the parent the state could not be taken, and why; the
// parent then keeps serving.
func (c *Child) Fail(reason string) {
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	c.write(message{Type: typeFail, Reason: reason})
	c.conn.Close()
}

// WaitCommit waits for the parent's commit. Any other outcome (the parent
// aborted, closed the socket or is late) means this process must exit
// without serving anything.
func (c *Child) WaitCommit(ctx context.Context) error {
	stop := c.deadline(ctx)
	defer stop()
	m, err := c.read()
	if err != nil {
		return err
	}
	if m.Type != typeCommit {
		return fmt.Errorf("the running daemon sent %q where the commit was due", m.Type)
	}
	c.conn.Close()
	return nil
}

func (c *Child) read() (message, error) {
	buf := make([]byte, maxControl)
	n, _, _, _, err := c.conn.ReadMsgUnix(buf, nil)
	if err != nil {
		return message{}, fmt.Errorf("reading from the running daemon: %w", err)
	}
	if n == 0 {
		return message{}, errors.New("the running daemon closed the handover socket")
	}
	var m message
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		return message{}, fmt.Errorf("the running daemon sent a malformed message: %w", err)
	}
	return m, nil
}

func (c *Child) write(m message) error {
	b, _ := json.Marshal(m)
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("writing to the running daemon: %w", err)
	}
	return nil
}

func (c *Child) deadline(ctx context.Context) func() {
	if d, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Now()) })
	return func() { stop() }
}

// Close closes the child's end (after a failure).
func (c *Child) Close() { c.conn.Close() }
