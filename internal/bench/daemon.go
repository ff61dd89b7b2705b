package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
)

// env is what the runs share: the servers, the sink, the shared socket.
type env struct {
	o   *Options
	dir string // private temporary directory; removed by close

	daemon     *process // nil when measuring a daemon we did not start
	daemonPID  int
	daemonDesc string
	socket     string // native socket
	cwSocket   string // Clearwater listener
	peerPID    int    // the Clearwater-protocol daemon at Options.ClearwaterPeer

	sink         *process // the TCP sink, a child process
	sinkPort     int
	sinkAddr     string              // "127.0.0.1:PORT"
	sinkSched    string              // how the sink's threads are scheduled
	floors       map[string]*process // the fdpass floors, by mode name
	floorSockets map[string]string   // their sockets

	cFloor string // the C floor program, once built

	anchor *sockfactory.Client // holds the shared socket
	shared string              // its address, "127.0.0.1:PORT"

	holders []*sockfactory.Client // hold the Held sockets
	held    int
	slot    int // next candidate address slot for a held socket
}

func newEnv(ctx context.Context, o *Options, ms []*mode) (_ *env, err error) {
	var uses need
	for _, m := range ms {
		uses |= m.uses
	}
	if len(o.Held) > 0 || o.IdleConns > 0 {
		uses |= needDaemon
	}
	dir, err := os.MkdirTemp("", "sockfactory-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{o: o, dir: dir}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if uses&needSink != 0 {
		if err := e.startSink(); err != nil {
			return nil, err
		}
	}
	for _, m := range ms {
		if m.uses&needFDPass != 0 {
			if err := e.startFloor(m.name); err != nil {
				return nil, err
			}
		}
	}
	if uses&needDaemon != 0 {
		if err := e.startDaemon(ctx, uses); err != nil {
			return nil, err
		}
	}
	if uses&needClearwaterPeer != 0 {
		if e.peerPID, err = listenerPID(o.ClearwaterPeer, e.sinkAddr); err != nil {
			return nil, fmt.Errorf("-clearwater-peer %s: %w", o.ClearwaterPeer, err)
		}
	}
	if uses&needShared != 0 {
		// One socket every handoff and pickup shares: bound once, held by
		// a client of its own for the whole benchmark.
		e.anchor = &sockfactory.Client{Socket: e.socket}
		f, b, err := e.anchor.BindFile(ctx, "tcp", "127.0.0.1:0", &sockfactory.ListenOptions{Share: "any"})
		if err != nil {
			return nil, fmt.Errorf("binding the shared socket: %w", err)
		}
		f.Close()
		e.shared = b.Addr
	}
	return e, nil
}

// close stops everything the env started and removes its directory.
func (e *env) close() {
	for _, c := range e.holders {
		c.Close()
	}
	if e.anchor != nil {
		e.anchor.Close()
	}
	if e.daemon != nil {
		e.daemon.stop()
	}
	for _, p := range e.floors {
		p.stop()
	}
	if e.sink != nil {
		e.sink.stop()
	}
	os.RemoveAll(e.dir)
}

// checkServers reports a server process that has died.
func (e *env) checkServers() error {
	ps := []*process{e.daemon, e.sink}
	for _, p := range e.floors {
		ps = append(ps, p)
	}
	for _, p := range ps {
		if p != nil {
			if err := p.check(); err != nil {
				return err
			}
		}
	}
	return nil
}

// self returns the path of this program, to start the floors with.
func (e *env) self() (string, error) {
	if e.o.Self != "" {
		return e.o.Self, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding this program to start the floors: %w", err)
	}
	return p, nil
}

// startFloor starts the fdpass floor server of mode name (fdpass,
// fdpass-threads, fdpass-c, fdpass-c-epoll) and waits until it accepts.
func (e *env) startFloor(name string) error {
	self, err := e.self()
	if err != nil {
		return err
	}
	socket := filepath.Join(e.dir, name+".sock")
	path, args := self, []string{ServeFDPassArg, socket}
	switch name {
	case "fdpass":
	case "fdpass-threads":
		args[0] = ServeFDPassThreadsArg
	case "fdpass-c", "fdpass-c-epoll":
		if e.cFloor == "" {
			if e.cFloor, err = buildCFloor(e.dir); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		design := "threads"
		if name == "fdpass-c-epoll" {
			design = "epoll"
		}
		path, args = e.cFloor, []string{design, socket}
	default:
		return fmt.Errorf("no floor server for mode %s", name)
	}
	p, err := startProcess(name, path, args, filepath.Join(e.dir, name+".log"), nil)
	if err != nil {
		return err
	}
	if e.floors == nil {
		e.floors = map[string]*process{}
	}
	if e.floorSockets == nil {
		e.floorSockets = map[string]string{}
	}
	e.floors[name], e.floorSockets[name] = p, socket
	return waitSocket(socket, "unixpacket", p)
}

// startSink starts the TCP sink process on a listening socket made here.
func (e *env) startSink() error {
	self, err := e.self()
	if err != nil {
		return err
	}
	fd, port, err := listenTCP4(65535)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	f := os.NewFile(uintptr(fd), "sink")
	defer f.Close() // the child has its copy
	logPath := filepath.Join(e.dir, "sink.log")
	p, err := startProcess("sink", self, []string{ServeSinkArg}, logPath, []*os.File{f})
	if err != nil {
		return err
	}
	e.sink, e.sinkPort, e.sinkAddr = p, port, fmt.Sprintf("127.0.0.1:%d", port)
	// Wait until it accepts, and until it says how it is scheduled.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := p.check(); err != nil {
			return err
		}
		for line := range strings.SplitSeq(tail(logPath, 4096), "\n") {
			if v, ok := strings.CutPrefix(line, "sink acceptor scheduling: "); ok {
				e.sinkSched = v
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the sink did not start within 20 s; its log:\n%s", tail(logPath, 2048))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) startDaemon(ctx context.Context, uses need) error {
	if e.o.Socket != "" {
		e.socket, e.cwSocket = e.o.Socket, e.o.ClearwaterSocket
		if uses&needClearwater != 0 && e.cwSocket == "" {
			return errors.New("the clearwater mode needs -clearwater-socket with -socket")
		}
		pid, err := peerPID(e.socket)
		if err != nil {
			return err
		}
		e.daemonPID, e.daemonDesc = pid, "running daemon at "+e.socket
		return nil
	}
	bin, err := e.daemonBinary(ctx)
	if err != nil {
		return err
	}
	e.socket = filepath.Join(e.dir, "sockfactoryd.sock")
	e.cwSocket = filepath.Join(e.dir, "clearwater.sock")
	conf := filepath.Join(e.dir, "sockfactoryd.toml")
	doc := daemonConfig(os.Getuid(), e.socket, e.cwSocket)
	if e.o.DaemonMetrics {
		// Counted as the daemon counts for Prometheus; the listener is a
		// UNIX socket nobody scrapes, so only the counting is measured.
		doc += fmt.Sprintf("\n[metrics]\nlisten = %q\n", filepath.Join(e.dir, "metrics.sock"))
	}
	if err := os.WriteFile(conf, []byte(doc), 0o600); err != nil {
		return err
	}
	args := []string{"-config", conf}
	if e.o.DaemonLogLevel != "" {
		args = append(args, "-log-level", e.o.DaemonLogLevel)
	}
	p, err := startProcess("sockfactoryd", bin, args, filepath.Join(e.dir, "sockfactoryd.log"), nil)
	if err != nil {
		return err
	}
	e.daemon, e.daemonPID, e.daemonDesc = p, p.pid(), bin
	if err := waitSocket(e.socket, "unixpacket", p); err != nil {
		return err
	}
	return waitSocket(e.cwSocket, "unix", p)
}

// daemonBinary finds or builds sockfactoryd.
func (e *env) daemonBinary(ctx context.Context) (string, error) {
	if e.o.Daemon != "" {
		return e.o.Daemon, nil
	}
	if self, err := e.self(); err == nil {
		p := filepath.Join(filepath.Dir(self), "sockfactoryd")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	out := filepath.Join(e.dir, "sockfactoryd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/sockfactory/sockfactory/cmd/sockfactoryd")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building sockfactoryd (run from the module's directory, or give -daemon PATH): %w\n%s", err, msg)
	}
	return out, nil
}

// daemonConfig is the configuration of the daemon the tool starts: the
// given uid may connect to 127.0.0.1 on any port, bind TCP or UDP on any
// loopback address (127.0.0.0/8: the held sockets need more ports than one
// address has) and is an admin (for Stats); the limits are far above what
// the tool asks for; the Clearwater listener allows 127.0.0.1.
func daemonConfig(uid int, socket, cwSocket string) string {
	return fmt.Sprintf(`# Written by sockfactory-bench.
[daemon]
socket = %q
socket_mode = "0600"

[limits]
connections = 1000000
connections_per_uid = 1000000
sockets = 4000000
sockets_per_uid = 4000000
tokens = 1000000
tokens_per_uid = 1000000
idle_timeout = "0"

[[rule]]
name = "bench"
users = [%d]
connect = ["127.0.0.1:*"]
bind = ["*:127.0.0.0/8:*"]
admin = true

[[clearwater]]
socket = %q
socket_mode = "0600"
allowed_hosts = ["127.0.0.1"]
users = [%d]
`, socket, uid, cwSocket, uid)
}

// process is a server the tool started: the daemon or the fdpass floor.
type process struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed when it has exited
	err    error         // its exit status, once exited
}

// startProcess starts path with args, its output going to logPath and
// extra as its fds 3 and up.
func startProcess(name, path string, args []string, logPath string, extra []*os.File) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = extra
	// Die with the tool, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// check reports whether the process has exited, with the end of its log.
func (p *process) check() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); the end of its log:\n%s", p.name, p.err, tail(p.log, 2048))
	default:
		return nil
	}
}

// stop sends SIGTERM, waits up to 10 s, then kills. It reports an exit
// that was not a clean one.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within 10 s of SIGTERM", p.name)
	}
}

func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

// waitSocket waits up to 20 s for a server to accept connections at path.
func waitSocket(path, network string, p *process) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialUnix(network, nil, &net.UnixAddr{Name: path, Net: network})
		if err == nil {
			c.Close()
			return nil
		}
		if perr := p.check(); perr != nil {
			return perr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections at %s after 20 s: %w; its log:\n%s", p.name, path, err, tail(p.log, 2048))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// peerPID returns the pid of the process listening at a native socket, as
// the kernel reports it (SO_PEERCRED).
func peerPID(path string) (int, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return 0, fmt.Errorf("connecting to the daemon at %s: %w", path, err)
	}
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		cred *unix.Ucred
		cerr error
	)
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, os.NewSyscallError("getsockopt SO_PEERCRED", cerr)
	}
	return int(cred.Pid), nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns a process's user+system CPU time in seconds, all its
// threads included, from /proc/PID/stat; 0 for pid 0.
func procCPU(pid int) (float64, error) {
	if pid <= 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields count from the
	// last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc/PID/stat")
	}
	return float64(ut+st) / clockTicks, nil
}

// procRSS returns a process's resident memory in bytes (VmRSS).
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("malformed VmRSS line %q", line)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func cpuModel(cpuinfo string) string {
	for line := range strings.SplitSeq(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// perfRecording is a perf record attached to a server for one run.
type perfRecording struct {
	cmd  *exec.Cmd
	path string
}

func startPerf(dir, name string, pid int) (*perfRecording, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name+".perf.data")
	cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", path)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting perf (install it, or drop -perf): %w", err)
	}
	// perf needs a moment to attach to every thread.
	time.Sleep(200 * time.Millisecond)
	return &perfRecording{cmd: cmd, path: path}, nil
}

func (p *perfRecording) stop() {
	p.cmd.Process.Signal(syscall.SIGINT)
	p.cmd.Wait()
}

// listenerPID returns the pid of the process listening on the UNIX stream
// socket at path, from the credentials the kernel gives a connection to it
// (those of the process that called listen), so that its CPU, wake-ups and
// system calls can be counted like the daemon's. The connection then makes
// a real request (req, the sink's address), so that a daemon that exits on
// a bad request, as the original does, is not disturbed.
func listenerPID(path, req string) (int, error) {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)
	if err := unix.Connect(s, &unix.SockaddrUnix{Name: path}); err != nil {
		return 0, os.NewSyscallError("connect", err)
	}
	cred, err := unix.GetsockoptUcred(s, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, os.NewSyscallError("getsockopt SO_PEERCRED", err)
	}
	if cred.Pid <= 0 {
		return 0, errors.New("the kernel gave no pid for the listening process (another pid namespace?)")
	}
	if _, err := unix.Write(s, []byte(req)); err != nil {
		return 0, os.NewSyscallError("send", err)
	}
	if err := setRecvTimeout(s); err != nil {
		return 0, err
	}
	fd, _, err := recvOneFD(s)
	if err != nil {
		return 0, fmt.Errorf("no socket for %s (does the daemon allow 127.0.0.1?): %w", req, err)
	}
	unix.Close(fd)
	return int(cred.Pid), nil
}
