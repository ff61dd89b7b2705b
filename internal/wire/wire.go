// Package wire defines the native sockfactory protocol: message types, the
// error codes, and encoding and decoding of one message per packet.
//
// The protocol runs over an AF_UNIX SOCK_SEQPACKET socket. Every packet holds
// exactly one JSON object; a reply that carries file descriptors carries them
// as SCM_RIGHTS control data of that same packet, and says how many in its
// "fds" field so that a receiver can tell when the kernel dropped some.
//
// This package holds types and framing only. It makes no policy decisions and
// performs no syscalls; see docs/protocol.md for the specification.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Version is the protocol version this package speaks. A request carrying
// another version is answered with CodeUnsupportedVersion.
const Version = 1

// MaxMessageSize is the largest packet either side may send, in bytes.
// A larger request is answered with CodeInvalidRequest and never parsed.
const MaxMessageSize = 64 << 10

// MaxFDs is the largest number of file descriptors one reply may carry.
// Receivers size their control buffers for it.
const MaxFDs = 16

// Op names a request type.
type Op string

// Request operations.
const (
	// OpConnect asks for a connected socket (TCP or connected UDP).
	OpConnect Op = "connect"
)

// Code is a machine-readable error class carried in a reply.
type Code string

// Error codes. Clients branch on these; the human message may change.
const (
	CodeInvalidRequest     Code = "invalid_request"
	CodeUnsupportedVersion Code = "unsupported_version"
	CodeDenied             Code = "denied"
	CodeResolveFailed      Code = "resolve_failed"
	CodeConnectFailed      Code = "connect_failed"
	CodeTimeout            Code = "timeout"
	CodeLimitExceeded      Code = "limit_exceeded"
	CodeInternal           Code = "internal"
)

// Request is one client request. Exactly one of the op-specific fields is set,
// the one Op names.
type Request struct {
	// V is the protocol version; it must equal Version.
	V int `json:"v"`
	// ID is chosen by the client and echoed in the reply. Requests in flight
	// on one connection should have distinct IDs.
	ID uint64 `json:"id"`
	// Op is the operation.
	Op Op `json:"op"`
	// Connect holds the parameters of an OpConnect request.
	Connect *ConnectRequest `json:"connect,omitempty"`
}

// ConnectRequest asks the daemon to resolve and connect, and hand over the
// connected socket.
type ConnectRequest struct {
	// Network is one of tcp, tcp4, tcp6, udp, udp4, udp6.
	Network string `json:"network"`
	// Address is host:port; host is an IPv4 address, a bracketed IPv6
	// address or a DNS name.
	Address string `json:"address"`
	// TimeoutMS bounds the whole request (resolution and every connect
	// attempt) in milliseconds. Zero means the daemon's default; a larger
	// value than the daemon's default is lowered to it.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// Reply answers exactly one request. Either Error is set, or the result field
// for the request's op is.
type Reply struct {
	// V is the protocol version.
	V int `json:"v"`
	// ID echoes the request's ID (0 when the request could not be parsed
	// far enough to read it).
	ID uint64 `json:"id"`
	// FDs is the number of file descriptors in this packet's control data.
	FDs int `json:"fds,omitempty"`
	// Error is set when the request failed.
	Error *Error `json:"error,omitempty"`
	// Connect is the result of a successful OpConnect; the socket is the
	// single file descriptor of the packet.
	Connect *ConnectResult `json:"connect,omitempty"`
}

// ConnectResult describes a connected socket handed over with a reply.
type ConnectResult struct {
	// Local is the socket's local address (ip:port).
	Local string `json:"local"`
	// Remote is the address it is connected to (ip:port).
	Remote string `json:"remote"`
}

// Error is a typed failure.
type Error struct {
	// Code is the machine-readable class.
	Code Code `json:"code"`
	// Message is for people.
	Message string `json:"message"`
	// Errno is the Linux errno behind the failure, or 0.
	Errno int `json:"errno,omitempty"`
}

func (e *Error) Error() string {
	return string(e.Code) + ": " + e.Message
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrTooLarge reports a message larger than MaxMessageSize.
var ErrTooLarge = fmt.Errorf("message exceeds %d bytes", MaxMessageSize)

// DecodeRequest parses one request packet. It rejects anything but a single
// JSON object of known fields with valid UTF-8, and checks the version and
// that the op's parameters are present. On failure it returns the request ID
// when it could be read, so that the error reply can name it, and an *Error.
func DecodeRequest(b []byte) (*Request, error) {
	var req Request
	if err := decodeStrict(b, &req); err != nil {
		// Read the ID leniently so that the error reply can name the
		// request; a message too broken for that gets ID 0.
		var id struct {
			ID uint64 `json:"id"`
		}
		if len(b) <= MaxMessageSize && json.Unmarshal(b, &id) != nil {
			id.ID = 0
		}
		return &Request{ID: id.ID}, &Error{Code: CodeInvalidRequest, Message: err.Error()}
	}
	if req.V != Version {
		return &req, Errorf(CodeUnsupportedVersion, "protocol version %d is not supported; this daemon speaks version %d", req.V, Version)
	}
	switch req.Op {
	case OpConnect:
		if req.Connect == nil {
			return &req, Errorf(CodeInvalidRequest, `op "connect" needs a "connect" object`)
		}
		if req.Connect.TimeoutMS < 0 {
			return &req, Errorf(CodeInvalidRequest, "timeout_ms must not be negative")
		}
	case "":
		return &req, Errorf(CodeInvalidRequest, `missing "op"`)
	default:
		return &req, Errorf(CodeInvalidRequest, "unknown op %q", req.Op)
	}
	return &req, nil
}

// DecodeReply parses one reply packet.
func DecodeReply(b []byte) (*Reply, error) {
	var rep Reply
	if err := decodeStrict(b, &rep); err != nil {
		return nil, err
	}
	if rep.V != Version {
		return &rep, fmt.Errorf("reply has protocol version %d, want %d", rep.V, Version)
	}
	if rep.FDs < 0 || rep.FDs > MaxFDs {
		return &rep, fmt.Errorf("reply announces %d fds; at most %d allowed", rep.FDs, MaxFDs)
	}
	return &rep, nil
}

// Encode marshals a message and checks its size.
func Encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMessageSize {
		return nil, ErrTooLarge
	}
	return b, nil
}

// jsonSpace is the whitespace JSON allows between tokens (RFC 8259).
const jsonSpace = " \t\n\r"

// decodeStrict decodes exactly one JSON object with no unknown fields.
func decodeStrict(b []byte, v any) error {
	if len(b) > MaxMessageSize {
		return ErrTooLarge
	}
	if !utf8.Valid(b) {
		return errors.New("message is not valid UTF-8")
	}
	if t := bytes.TrimLeft(b, jsonSpace); len(t) > 0 && t[0] != '{' {
		return errors.New("malformed message: not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if err == io.EOF {
			return errors.New("empty message")
		}
		return fmt.Errorf("malformed message: %w", err)
	}
	if len(bytes.TrimLeft(b[dec.InputOffset():], jsonSpace)) != 0 {
		return errors.New("malformed message: data after the JSON object")
	}
	return nil
}
