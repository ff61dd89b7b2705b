package sockfactory

import (
	"errors"
	"syscall"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// Sentinel errors for errors.Is. Every error the daemon returns is an *Error
// that matches exactly one of them by its Code.
var (
	// ErrInvalidRequest: the daemon could not accept the request as written.
	ErrInvalidRequest = errors.New("sockfactory: invalid request")
	// ErrUnsupportedVersion: the daemon speaks another protocol version.
	ErrUnsupportedVersion = errors.New("sockfactory: unsupported protocol version")
	// ErrDenied: the policy does not grant the request to this caller.
	ErrDenied = errors.New("sockfactory: denied")
	// ErrResolveFailed: the daemon could not resolve the host name.
	ErrResolveFailed = errors.New("sockfactory: resolve failed")
	// ErrConnectFailed: every connect attempt failed; the errno of the
	// first is reachable with errors.Is (syscall.ECONNREFUSED, ...).
	ErrConnectFailed = errors.New("sockfactory: connect failed")
	// ErrTimeout: the request's time ran out in the daemon.
	ErrTimeout = errors.New("sockfactory: timeout")
	// ErrLimitExceeded: a daemon limit refused the request; retry later.
	ErrLimitExceeded = errors.New("sockfactory: limit exceeded")
	// ErrInternal: the daemon failed for a reason of its own.
	ErrInternal = errors.New("sockfactory: internal error")
	// ErrShareConflict: the socket is held with a share mode (or options)
	// that forbid this request. Nothing changed.
	ErrShareConflict = errors.New("sockfactory: share conflict")
	// ErrNotFound: the token is unknown, expired, already picked up, or
	// not held by this connection.
	ErrNotFound = errors.New("sockfactory: token not found")
	// ErrBindFailed: the daemon could not create or bind the socket; the
	// errno (syscall.EADDRINUSE, syscall.EACCES, ...) is reachable.
	ErrBindFailed = errors.New("sockfactory: bind failed")

	// ErrUnavailable: the daemon could not be reached, or the connection to
	// it broke before the reply. The request may or may not have been
	// carried out; a socket it produced is closed, never leaked.
	ErrUnavailable = errors.New("sockfactory: daemon unavailable")
	// ErrProtocol: the daemon's reply broke the protocol.
	ErrProtocol = errors.New("sockfactory: protocol error")
)

var codeErrors = map[wire.Code]error{
	wire.CodeInvalidRequest:     ErrInvalidRequest,
	wire.CodeUnsupportedVersion: ErrUnsupportedVersion,
	wire.CodeDenied:             ErrDenied,
	wire.CodeResolveFailed:      ErrResolveFailed,
	wire.CodeConnectFailed:      ErrConnectFailed,
	wire.CodeTimeout:            ErrTimeout,
	wire.CodeLimitExceeded:      ErrLimitExceeded,
	wire.CodeInternal:           ErrInternal,
	wire.CodeShareConflict:      ErrShareConflict,
	wire.CodeNotFound:           ErrNotFound,
	wire.CodeBindFailed:         ErrBindFailed,
}

// Error is a failure reported by the daemon.
type Error struct {
	// Op is the request's operation, such as "connect".
	Op string
	// Code is the daemon's machine-readable error class, such as "denied".
	Code string
	// Message is the daemon's explanation, for people.
	Message string
	// Errno is the OS error behind the failure, or 0.
	Errno syscall.Errno
}

func (e *Error) Error() string {
	return "sockfactory " + e.Op + " " + e.Code + ": " + e.Message
}

// Is reports whether target is the sentinel for e's Code, or (when e has an
// errno) that errno.
func (e *Error) Is(target error) bool {
	if s, ok := codeErrors[wire.Code(e.Code)]; ok && s == target {
		return true
	}
	return e.Errno != 0 && target == e.Errno
}

// Unwrap returns the errno, so that errors.As finds a syscall.Errno.
func (e *Error) Unwrap() error {
	if e.Errno != 0 {
		return e.Errno
	}
	return nil
}

// Timeout reports whether the daemon gave up for lack of time, so that
// net.Error-style checks work.
func (e *Error) Timeout() bool { return e.Code == string(wire.CodeTimeout) }

// Temporary reports whether retrying may succeed.
func (e *Error) Temporary() bool {
	return e.Code == string(wire.CodeTimeout) || e.Code == string(wire.CodeLimitExceeded)
}

func fromWire(op string, we *wire.Error) *Error {
	return &Error{Op: op, Code: string(we.Code), Message: we.Message, Errno: syscall.Errno(we.Errno)}
}
