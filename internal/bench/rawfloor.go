package bench

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Floors nobody can soften. The fdpass floor (floors.go) serves through
// the same Go machinery as the daemon: its poller, a goroutine per
// connection. The servers here do what a C server does instead, so that
// the handoff modes are compared with the least the machine needs to
// answer a request with a descriptor:
//
//   - fdpass-threads: Go, with raw blocking system calls on threads of its
//     own (runtime.LockOSThread): one thread per CPU, each waiting in
//     epoll_wait on its own epoll set, an accepting thread blocked in
//     accept4 dealing connections out in turn. No Go poller, no goroutine
//     per connection; the runtime is there only around each system call.
//   - fdpass-c: the C program in cfloor/fdpass_floor.c, a thread per
//     connection blocked in recv and sendmsg: two system calls and one
//     wake-up per request, the fewest there can be.
//   - fdpass-c-epoll: the same program with the epoll design of
//     fdpass-threads, which wakes less often than a thread per
//     connection once many connections are ready at once.
//
// The tool builds the C program with the C compiler ($CC, else cc) into
// its temporary directory at start; without one, the C floors are left
// out (docs/benchmarks.md says so), and asking for them by name fails.
// Each mode's floor is the fastest of these and fdpass in the same round
// ("fdpass-floor", a derived row: bench.go).

// ServeFDPassThreadsArg is the argument that makes cmd/sockfactory-bench
// run the fdpass-threads floor (followed by the socket path).
const ServeFDPassThreadsArg = "-serve-fdpass-threads"

//go:embed cfloor/fdpass_floor.c
var cFloorSource []byte

// ServeFDPassThreads serves the fdpass protocol (one byte in, one byte and
// one descriptor out, on SOCK_SEQPACKET) at path with raw blocking system
// calls on locked threads, until ctx is done.
func ServeFDPassThreads(ctx context.Context, path string) error {
	passed, _, err := listenTCP4(1)
	if err != nil {
		return err
	}
	defer unix.Close(passed)
	l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
		return os.NewSyscallError("bind "+path, err)
	}
	defer os.Remove(path)
	if err := unix.Listen(l, 4096); err != nil {
		return os.NewSyscallError("listen", err)
	}

	// Each worker's epoll set also holds an eventfd, written to stop it.
	workers := runtime.NumCPU()
	stopFD, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	defer unix.Close(stopFD)
	eps := make([]int, 0, workers)
	defer func() {
		for _, ep := range eps {
			unix.Close(ep)
		}
	}()
	for range workers {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return os.NewSyscallError("epoll_create1", err)
		}
		eps = append(eps, ep)
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, stopFD, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(stopFD)}); err != nil {
			return os.NewSyscallError("epoll_ctl", err)
		}
	}
	oob := unix.UnixRights(passed)
	var wg sync.WaitGroup
	for _, ep := range eps {
		wg.Go(func() {
			runtime.LockOSThread()
			serveEpoll(ep, stopFD, oob)
		})
	}
	accepted := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		next := 0
		for {
			fd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			switch {
			case err == nil:
			case err == unix.EINTR || err == unix.ECONNABORTED || err == unix.EMFILE || err == unix.ENFILE:
				continue
			default:
				accepted <- err
				return
			}
			if err := unix.EpollCtl(eps[next], unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
				unix.Close(fd)
				accepted <- os.NewSyscallError("epoll_ctl", err)
				return
			}
			next = (next + 1) % len(eps)
		}
	}()
	var serr error
	select {
	case <-ctx.Done():
		unix.Shutdown(l, unix.SHUT_RDWR) // wakes the blocked accept4
		<-accepted
	case err := <-accepted:
		serr = os.NewSyscallError("accept4", err)
	}
	// Stop the workers: the eventfd stays readable, so every epoll set
	// reports it.
	unix.Write(stopFD, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	wg.Wait()
	return serr
}

// serveEpoll answers requests on the connections of epoll set ep until
// stopFD is readable, then closes its connections.
func serveEpoll(ep, stopFD int, oob []byte) {
	conns := map[int]bool{}
	defer func() {
		for fd := range conns {
			unix.Close(fd)
		}
	}()
	var events [64]unix.EpollEvent
	var b [1]byte
	for {
		n, err := unix.EpollWait(ep, events[:], -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == stopFD {
				return
			}
			conns[fd] = true
			if !answerFDPass(fd, b[:], oob) {
				unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, fd, nil)
				unix.Close(fd)
				delete(conns, fd)
			}
		}
	}
}

// answerFDPass reads one request from the blocking socket fd and replies
// with one byte and the descriptor in oob; false when fd is done.
func answerFDPass(fd int, b, oob []byte) bool {
	for {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return false
		}
		break
	}
	for {
		err := unix.Sendmsg(fd, b, oob, nil, unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		return err == nil
	}
}

// buildCFloor compiles cfloor/fdpass_floor.c into dir and returns the
// program's path, or an error saying why it cannot (no C compiler).
func buildCFloor(dir string) (string, error) {
	path := cCompiler()
	if path == "" {
		return "", errors.New("no C compiler: install gcc, or set CC")
	}
	src := filepath.Join(dir, "fdpass_floor.c")
	if err := os.WriteFile(src, cFloorSource, 0o600); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "fdpass_floor")
	if b, err := exec.Command(path, "-O2", "-pthread", "-o", out, src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", path, src, err, b)
	}
	return out, nil
}
