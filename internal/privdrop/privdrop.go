// Package privdrop runs the daemon again, from a root process, as an
// unprivileged user that keeps only the capabilities its rules need, and
// keeps descriptors the daemon was started with from reaching that process.
//
// It must not decide which capabilities are needed (the caller does, from
// the configuration) and must not change the calling process's own
// credentials: the root process only starts the child and stays its parent.
//
// # Why a re-executed child and not an in-process drop
//
// Go can change the credentials of every thread at once (syscall.Setuid,
// and syscall.AllThreadsSyscall for prctl), but AllThreadsSyscall returns
// ENOTSUP in any binary that uses cgo, the race detector's included, so an
// in-process drop could not be tested in the race build the end-to-end
// tests use, and a thread started by C code would escape it. A new process
// instead starts with nothing but what it is given: the credentials,
// capabilities and descriptors set up between fork and exec.
//
// The bounding set and no_new_privs are per-thread attributes that a child
// inherits from the thread that forks it, and os/exec forks from the
// calling thread. Start therefore locks a goroutine to its OS thread, drops
// that thread's bounding set to the kept capabilities, sets no_new_privs on
// it, and starts the child from it. That thread never runs anything else:
// the goroutine keeps it while the child runs (the child's parent-death
// signal fires when the thread that forked it exits) and then returns
// without unlocking it, so the runtime ends the thread. (If that thread is
// the process's first one, the runtime parks it for good instead; the
// /proc/PID/status of the root process then shows the restricted bounding
// set and no_new_privs, which no other goroutine runs under.)
//
// # Descriptors
//
// SealInherited marks close-on-exec every descriptor from 3 up except the
// ones handed over on purpose (see Handed). It marks rather than closes:
// what leaks is what an exec passes on, and close-on-exec stops exactly
// that, while closing descriptors this process did not open could close
// one the Go runtime or a library opened before main, whose number would
// then be reused underneath it. The root process is root already, so a
// descriptor it still holds gives it nothing more.
package privdrop

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// Target is the identity Start gives the child.
type Target struct {
	// UID and GID become the child's real, effective and saved user and
	// group IDs.
	UID, GID uint32
	// Groups are the child's supplementary groups; empty: none.
	Groups []uint32
	// Caps are the capabilities the child keeps, by number
	// (CapNetBindService, CapNetAdmin): its ambient, permitted, effective
	// and inheritable sets, and its whole bounding set. Empty: none.
	Caps []uintptr
}

// Start starts cmd as t with no_new_privs set and a bounding set of t.Caps
// alone; the child gets SIGTERM when this process dies. It replaces
// cmd.SysProcAttr. The child gets only cmd's standard streams and
// ExtraFiles, provided every other descriptor of this process is
// close-on-exec (call SealInherited first). This process needs
// CAP_SETUID, CAP_SETGID and CAP_SETPCAP (start it as root).
//
// On success the returned channel receives cmd.Wait's result once the
// child has exited; meanwhile the caller may signal the child through
// cmd.Process. Wait runs as soon as the child exits and closes cmd's
// StdoutPipe and StderrPipe then, so give cmd files instead of reading
// those. The caller still owns the files it gave cmd and closes them once
// Start has returned.
func Start(cmd *exec.Cmd, t Target) (<-chan error, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: t.UID, Gid: t.GID, Groups: append([]uint32{}, t.Groups...)},
		AmbientCaps: t.Caps,
		Pdeathsig:   syscall.SIGTERM,
	}
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		// Never unlocked: see the package comment.
		runtime.LockOSThread()
		if err := restrictThread(t.Caps); err != nil {
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("starting %s as uid %d: %w", cmd.Path, t.UID, err)
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// restrictThread drops every capability but keep from the calling
// thread's bounding set and sets no_new_privs on it; both are inherited by
// the processes it starts.
func restrictThread(keep []uintptr) error {
	for c := uintptr(0); c < 64; c++ {
		if slices.Contains(keep, c) {
			continue
		}
		err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			break // past the last capability this kernel knows
		}
		if err != nil {
			return fmt.Errorf("dropping capability %d from the bounding set: %w (start the daemon as root, with CAP_SETPCAP)", c, os.NewSyscallError("prctl", err))
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("setting no_new_privs: %w", os.NewSyscallError("prctl", err))
	}
	return nil
}
