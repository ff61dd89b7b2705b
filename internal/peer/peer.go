// Package peer reads the identity of the process at the other end of a UNIX
// socket from the kernel (SO_PEERCRED, SO_PEERGROUPS).
//
// The credentials are those the peer had when it connected; they are not
// re-read per request and cannot be forged by the peer. This package must not
// make policy decisions.
package peer

import (
	"fmt"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/policy"
	"github.com/sockfactory/sockfactory/internal/rawsys"
)

// Credentials returns the peer's uid, gid, pid and, where the kernel reports
// them, its supplementary groups.
func Credentials(c *net.UnixConn) (policy.Caller, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return policy.Caller{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	var (
		caller  policy.Caller
		credErr error
	)
	err = rc.Control(func(fd uintptr) { caller, credErr = FromFD(int(fd), true) })
	if err != nil {
		return policy.Caller{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	return caller, credErr
}

// FromFD returns the credentials of the peer of the UNIX socket fd, with
// its supplementary groups when groups is set (one more system call: a
// front door whose rules match no group does without).
func FromFD(fd int, groups bool) (policy.Caller, error) {
	cred, err := rawsys.PeerCred(fd) // getsockopt never waits
	if err != nil {
		return policy.Caller{}, fmt.Errorf("reading peer credentials: %w", os.NewSyscallError("getsockopt SO_PEERCRED", err))
	}
	c := policy.Caller{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
	if groups {
		c.Groups = peerGroups(fd)
	}
	return c, nil
}

// peerGroups returns the supplementary groups the peer had at connect time
// (SO_PEERGROUPS, Linux 4.13), or nil when the kernel cannot tell.
func peerGroups(fd int) []uint32 {
	buf := make([]uint32, 64)
	for range 3 {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch e {
		case 0:
			return buf[:n/4]
		case unix.ERANGE:
			// n now holds the size needed.
			buf = make([]uint32, n/4+1)
		default:
			return nil
		}
	}
	return nil
}
