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

// group is one namespace in use: its descriptor, for setns(2), kept open
// from its first request until it is retired (its name went, or it was
// idle).
//
// Each socket(2) there runs on the requesting goroutine's own thread,
// locked for it: it enters the namespace, makes the socket and goes back
// (the descriptor of the daemon's own namespace is held for that).
// Measured on the 2-core machine (BenchmarkSocket, docs/benchmarks.md),
// two setns(2) calls cost about 1 us. Threads that sit inside each
// namespace and take requests over a channel cost 20-35 us instead, and a
// fresh goroutine per socket(2) 2-3 futex calls more (the runtime wakes an
// idle thread for it, and for its reply), so the daemon does neither. A
// thread that cannot go back is never unlocked: its goroutine ends, and
// the runtime ends the thread with it.
type group struct {
	id  ID
	key string // id.String(), made once

	mu      sync.RWMutex // read-held while fd is in use; write-held by retire
	fd      int          // the namespace; -1 once retired
	self    int          // the daemon's own namespace (the Manager's)
	lastUse atomic.Int64 // unix nanoseconds of the last request, for the janitor
}

// errGone is returned for a request to a group retired under it.
var errGone = errors.New("the namespace is being dropped (its name was removed or re-pointed, or it was idle): retry")

func newGroup(id ID, fd, self int) *group {
	return &group{id: id, key: id.String(), fd: fd, self: self}
}

// socket runs socket(domain, typ|SOCK_CLOEXEC, proto) inside the group's
// namespace and returns the descriptor, which the caller owns. self is the
// daemon's own namespace, where the thread goes back to.
func (g *group) socket(self, domain, typ, proto int) (int, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.fd < 0 {
		return -1, errGone
	}
	return inNamespace(g.fd, self, domain, typ, proto)
}

// inNamespace makes one socket(2) in namespace ns on the calling
// goroutine's own thread, locked for it. A thread that cannot go back to
// self must never run anything else: the goroutine then ends
// (runtime.Goexit, its deferred calls run: the request's connection is
// closed), and the runtime ends the thread, which is still locked (the
// main thread, which cannot end, it parks for good: it never runs Go code
// again). setns(2) back to a namespace the daemon holds open does not
// fail in practice;
// the price of the guarantee is one connection.
func inNamespace(ns, self, domain, typ, proto int) (int, error) {
	runtime.LockOSThread()
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		// setns(2) changes nothing when it fails.
		runtime.UnlockOSThread()
		return -1, setnsError(err)
	}
	fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		fd, err = -1, os.NewSyscallError("socket", err)
	}
	if rerr := unix.Setns(self, unix.CLONE_NEWNET); rerr != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		goexitInNamespace(rerr)
	}
	runtime.UnlockOSThread()
	return fd, err
}

// goexitInNamespace ends the calling goroutine, whose thread is stuck in
// another namespace; a variable so that tests can see it called.
var goexitInNamespace = func(err error) {
	_ = err // setns(2) back failed; nothing can be reported from here
	runtime.Goexit()
}

// retire closes the group's descriptor once no request uses it.
func (g *group) retire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fd >= 0 {
		unix.Close(g.fd)
		g.fd = -1
	}
}

// EnterError is a failure to enter a namespace (or to come back from
// one): the daemon's own doing, not the destination's or the caller's.
// The errno stays reachable with errors.Is.
type EnterError struct{ Err error }

func (e *EnterError) Error() string { return e.Err.Error() }
func (e *EnterError) Unwrap() error { return e.Err }

// setnsError explains a failed setns(2).
func setnsError(err error) error {
	if errors.Is(err, unix.EPERM) {
		return &EnterError{fmt.Errorf("entering the network namespace: %w: the daemon needs CAP_SYS_ADMIN for namespaces (see docs/security.md)", os.NewSyscallError("setns", err))}
	}
	return &EnterError{fmt.Errorf("entering the network namespace: %w", os.NewSyscallError("setns", err))}
}
