package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// group is the threads inside one namespace: each a goroutine locked to
// its OS thread, which entered the namespace once and then runs socket(2)
// for whoever asks, until the group is retired. Requests go to an idle
// thread; when none is idle and fewer than max run, a new one starts.
type group struct {
	id ID
	fd int // the namespace, for threads yet to start; closed by retire

	reqs chan *request
	quit chan struct{} // closed by retire

	mu      sync.Mutex // guards threads, retired, fd
	threads int
	retired bool
	exited  sync.WaitGroup // threads running

	lastUse atomic.Int64 // unix nanoseconds of the last request, for the janitor
}

// request is one socket(2) to run in a group's namespace.
type request struct {
	domain, typ, proto int
	fd                 int
	err                error
	done               chan struct{}
}

var requestPool = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

// maxThreads bounds one namespace's threads: socket(2) is quick, so a
// few serve any number of sessions.
var maxThreads = min(runtime.GOMAXPROCS(0), 4)

// errGone is returned for a request to a group retired under it.
var errGone = errors.New("the namespace is being dropped (its name was removed or re-pointed, or it was idle)")

func newGroup(id ID, fd int) *group {
	return &group{id: id, fd: fd, reqs: make(chan *request), quit: make(chan struct{})}
}

// socket runs socket(domain, typ, proto) inside the group's namespace and
// returns the descriptor, which the caller owns.
func (g *group) socket(domain, typ, proto int) (int, error) {
	r := requestPool.Get().(*request)
	r.domain, r.typ, r.proto, r.fd, r.err = domain, typ, proto, -1, nil
	select {
	case g.reqs <- r: // an idle thread took it
	default:
		if !g.start(r) {
			select {
			case g.reqs <- r:
			case <-g.quit:
				requestPool.Put(r)
				return -1, errGone
			}
		}
	}
	<-r.done
	fd, err := r.fd, r.err
	requestPool.Put(r)
	return fd, err
}

// start starts a thread with r as its first request, unless max threads
// run already or the group is retired; it reports whether r was taken.
func (g *group) start(r *request) bool {
	g.mu.Lock()
	if g.retired || g.threads >= maxThreads {
		g.mu.Unlock()
		return false
	}
	fd, err := unix.FcntlInt(uintptr(g.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		g.mu.Unlock()
		r.err = os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
		r.done <- struct{}{}
		return true
	}
	g.threads++
	g.exited.Add(1)
	g.mu.Unlock()
	go g.thread(fd, r)
	return true
}

// thread enters the namespace ns (a descriptor it closes) and serves
// requests, first one first, until the group is retired. It then goes back
// to the thread's own namespace and lets the runtime have the thread; a
// thread that cannot go back is never unlocked, so the runtime ends it
// with the goroutine.
func (g *group) thread(ns int, first *request) {
	defer g.exited.Done()
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(ns)
		g.leave()
		runtime.UnlockOSThread()
		first.err = fmt.Errorf("entering network namespace: opening this thread's own: %w", os.NewSyscallError("open", err))
		first.done <- struct{}{}
		return
	}
	err = unix.Setns(ns, unix.CLONE_NEWNET)
	unix.Close(ns)
	if err != nil {
		unix.Close(orig)
		g.leave()
		runtime.UnlockOSThread()
		first.err = setnsError(err)
		first.done <- struct{}{}
		return
	}
	for r := first; r != nil; r = g.next() {
		fd, err := unix.Socket(r.domain, r.typ|unix.SOCK_CLOEXEC, r.proto)
		r.fd, r.err = fd, os.NewSyscallError("socket", err)
		if err != nil {
			r.fd = -1
		}
		r.done <- struct{}{}
	}
	g.leave()
	err = unix.Setns(orig, unix.CLONE_NEWNET)
	unix.Close(orig)
	if err == nil {
		runtime.UnlockOSThread()
	}
}

// next waits for the thread's next request; nil once the group retires.
func (g *group) next() *request {
	select {
	case r := <-g.reqs:
		return r
	case <-g.quit:
		return nil
	}
}

func (g *group) leave() {
	g.mu.Lock()
	g.threads--
	g.mu.Unlock()
}

// retire stops the group's threads and closes its descriptor; requests
// already taken are answered first. It waits for the threads to go.
func (g *group) retire() {
	g.mu.Lock()
	if g.retired {
		g.mu.Unlock()
		return
	}
	g.retired = true
	close(g.quit)
	unix.Close(g.fd)
	g.fd = -1
	g.mu.Unlock()
	g.exited.Wait()
}

// setnsError explains a failed setns(2).
func setnsError(err error) error {
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("entering network namespace: %w: the daemon needs CAP_SYS_ADMIN for namespaces (keep it with [daemon] user, see docs/security.md)", os.NewSyscallError("setns", err))
	}
	return fmt.Errorf("entering network namespace: %w", os.NewSyscallError("setns", err))
}
