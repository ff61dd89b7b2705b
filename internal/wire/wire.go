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
	"strconv"
	"strings"
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
	// OpHello declares the client's application name for the connection.
	OpHello Op = "hello"
	// OpBind asks for a bound (and, for TCP, listening) socket, shared
	// through the daemon's cache when share modes allow.
	OpBind Op = "bind"
	// OpPickup exchanges a token from a token-only bind for the socket.
	OpPickup Op = "pickup"
	// OpRelease drops the reference a token stands for.
	OpRelease Op = "release"
	// OpStatus lists held sockets.
	OpStatus Op = "status"
	// OpReload makes the daemon re-read its configuration (admins only).
	OpReload Op = "reload"
	// OpUpgrade makes the daemon replace itself with the executable now
	// at its own path, handing every socket, reference, token and client
	// connection over to the new process (admins only). It has no
	// parameter member; the result is Reply.Upgrade.
	OpUpgrade Op = "upgrade"
	// OpReclaim takes back, over a new connection, a reference whose
	// connection was lost when the daemon restarted with its sockets
	// kept; the parameters are Request.Reclaim, the result Reply.Bind
	// without a file descriptor.
	OpReclaim Op = "reclaim"
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
	CodeShareConflict      Code = "share_conflict"
	CodeNotFound           Code = "not_found"
	CodeBindFailed         Code = "bind_failed"
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
	// Hello holds the parameters of an OpHello request.
	Hello *HelloRequest `json:"hello,omitempty"`
	// Bind holds the parameters of an OpBind request.
	Bind *BindRequest `json:"bind,omitempty"`
	// Token holds the token of an OpPickup or OpRelease request.
	Token *TokenRequest `json:"token,omitempty"`
	// Status holds the parameters of an OpStatus request.
	Status *StatusRequest `json:"status,omitempty"`
	// Reclaim holds the parameters of an OpReclaim request.
	Reclaim *ReclaimRequest `json:"reclaim,omitempty"`
}

// HelloRequest names the client application. The name is the default share
// name of the connection's bind requests and appears in status and logs.
type HelloRequest struct {
	// App is 1 to 64 printable ASCII characters.
	App string `json:"app"`
}

// BindRequest asks for a socket bound to an address.
type BindRequest struct {
	// Network is one of tcp, tcp4, tcp6, udp, udp4, udp6.
	Network string `json:"network"`
	// Address is host:port with a numeric host (IPv6 in brackets); an
	// empty host means all addresses. Port 0 picks a free port.
	Address string `json:"address"`
	// Share is none (the default), same-name or any.
	Share string `json:"share,omitempty"`
	// Name is the share name; empty means the connection's app name.
	Name string `json:"name,omitempty"`
	// Options are socket options; nil means the defaults.
	Options *SocketOptions `json:"options,omitempty"`
	// TokenOnly asks for a token to pick the socket up with later, by
	// this or another connection, instead of the socket.
	TokenOnly bool `json:"token_only,omitempty"`
	// Netns names the network namespace the socket is made in: a name
	// under /run/netns, "caller" for the calling process's own, or empty
	// (or "daemon") for the daemon's own. The policy must grant it.
	Netns string `json:"netns,omitempty"`
}

// SocketOptions are the options a bind request may set. Every field is
// optional; absent fields take the documented default. Each option used
// must be allowed by the policy rule that grants the bind.
type SocketOptions struct {
	// ReuseAddr sets SO_REUSEADDR. Default true for a TCP socket that
	// listens (the kernel then refuses the port to any other socket), false
	// for UDP and for TCP with listen false, where it would let any local
	// user bind the same address and port; true there needs the rule's
	// grant (docs/protocol.md, section 7.3).
	ReuseAddr *bool `json:"reuseaddr,omitempty"`
	// ReusePort sets SO_REUSEPORT.
	ReusePort *bool `json:"reuseport,omitempty"`
	// V6Only sets IPV6_V6ONLY on IPv6 sockets; default true, except for an
	// empty host on tcp/udp, which means both families.
	V6Only *bool `json:"v6only,omitempty"`
	// FreeBind sets IP_FREEBIND (bind to an address not yet configured).
	FreeBind *bool `json:"freebind,omitempty"`
	// Transparent sets IP_TRANSPARENT (needs CAP_NET_ADMIN).
	Transparent *bool `json:"transparent,omitempty"`
	// RcvBuf and SndBuf set SO_RCVBUF and SO_SNDBUF in bytes.
	RcvBuf *int `json:"rcvbuf,omitempty"`
	SndBuf *int `json:"sndbuf,omitempty"`
	// BindToDevice sets SO_BINDTODEVICE to an interface name.
	BindToDevice *string `json:"bind_to_device,omitempty"`
	// PMTUDiscOff turns path-MTU discovery off (IP_MTU_DISCOVER /
	// IPV6_MTU_DISCOVER = IP_PMTUDISC_OMIT), BIND's default for UDP.
	PMTUDiscOff *bool `json:"pmtud_off,omitempty"`
	// FastOpen sets TCP_FASTOPEN with this queue length (TCP only).
	FastOpen *int `json:"fastopen,omitempty"`
	// DeferAccept sets TCP_DEFER_ACCEPT in seconds (TCP only).
	DeferAccept *int `json:"defer_accept,omitempty"`
	// Backlog is the listen backlog; default the system's maximum
	// (net.core.somaxconn). TCP only.
	Backlog *int `json:"backlog,omitempty"`
	// Listen false delivers a TCP socket bound but not listening.
	Listen *bool `json:"listen,omitempty"`
}

// TokenRequest names a token.
type TokenRequest struct {
	// Token is a token from a bind reply.
	Token string `json:"token"`
}

// StatusRequest asks for the held sockets the caller may see.
type StatusRequest struct{}

// ReclaimRequest names a reference orphaned by a daemon restart and proves
// its holder's claim to it. Both members are required.
type ReclaimRequest struct {
	// Token is the reference's token, from its bind or pickup result.
	Token string `json:"token"`
	// Secret is the reference's reclaim secret (BindResult.Reclaim) from
	// that same result.
	Secret string `json:"secret"`
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
	// Netns names the network namespace the connection is made from (and
	// a name is resolved in), as in BindRequest.
	Netns string `json:"netns,omitempty"`
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
	// Bind is the result of a successful OpBind, OpPickup or OpReclaim;
	// for a bind that was not token-only and for a pickup, the socket is
	// the packet's single fd; a token-only bind and a reclaim carry none.
	Bind *BindResult `json:"bind,omitempty"`
	// Status is the result of OpStatus.
	Status *StatusResult `json:"status,omitempty"`
	// Upgrade is the result of a successful OpUpgrade, sent by the new
	// daemon.
	Upgrade *UpgradeResult `json:"upgrade,omitempty"`
	// OK is true in the reply to a successful OpHello or OpRelease.
	OK bool `json:"ok,omitempty"`
}

// BindResult describes a bound socket and the reference to it.
type BindResult struct {
	// Token identifies this reference: release it with OpRelease, or
	// (token-only) pick the socket up with OpPickup.
	Token string `json:"token"`
	// Local is the socket's bound address (ip:port), the real port when
	// port 0 was asked for.
	Local string `json:"local"`
	// Network is the socket's protocol: tcp or udp.
	Network string `json:"network"`
	// ExpiresMS, for a token-only reply, is how long the token may be
	// picked up, in milliseconds.
	ExpiresMS int64 `json:"expires_ms,omitempty"`
	// Shared is true when the socket already existed and is now shared.
	Shared bool `json:"shared,omitempty"`
	// Reclaim is the reference's reclaim secret, 128 bits as 32
	// lowercase hexadecimal digits: with Token, what OpReclaim needs to
	// take the reference back after a daemon restart. It is present in
	// the results that make the caller a reference's holder (a bind that
	// delivered the socket, a pickup, a reclaim), not for a token-only
	// bind; it is shown only to the holder, in that result, never in
	// status.
	Reclaim string `json:"reclaim,omitempty"`
}

// UpgradeResult describes a completed live upgrade.
type UpgradeResult struct {
	// OldPID is the process ID of the daemon that was replaced.
	OldPID int `json:"old_pid"`
	// NewPID is the process ID of the daemon now serving.
	NewPID int `json:"new_pid"`
	// Version is the new daemon's version string.
	Version string `json:"version"`
	// TookMS is how long the upgrade took, in milliseconds, from the
	// request's arrival at the old daemon to the new one being ready.
	TookMS int64 `json:"took_ms"`
}

// StatusResult lists held sockets.
type StatusResult struct {
	Sockets []SocketStatus `json:"sockets"`
	// Truncated is true when the list was cut to fit one packet; Total is
	// then the number of sockets there were.
	Truncated bool `json:"truncated,omitempty"`
	Total     int  `json:"total,omitempty"`
	// Daemon is shown to admins only.
	Daemon *DaemonStats `json:"daemon,omitempty"`
}

// DaemonStats describes the daemon's own resources.
type DaemonStats struct {
	// PID is the daemon's process ID.
	PID int `json:"pid"`
	// Goroutines, FDs and HeapBytes are its goroutines, open file
	// descriptors and live heap.
	Goroutines int    `json:"goroutines"`
	FDs        int    `json:"fds"`
	HeapBytes  uint64 `json:"heap_bytes"`
	// Sessions is the number of native client connections.
	Sessions int `json:"sessions"`
	// Sockets and Refs count cached sockets and their references.
	Sockets int `json:"sockets"`
	Refs    int `json:"refs"`
}

// SocketStatus describes one cached socket.
type SocketStatus struct {
	// Network and Local identify it.
	Network string `json:"network"`
	Local   string `json:"local"`
	// Refs is the number of references, pending tokens included.
	Refs int `json:"refs"`
	// AgeMS is how long the daemon has held it.
	AgeMS int64 `json:"age_ms"`
	// LingerMS is how long it is kept after its last reference goes.
	LingerMS int64 `json:"linger_ms,omitempty"`
	// LingeringMS, when set, is how long it has been without references.
	LingeringMS int64 `json:"lingering_ms,omitempty"`
	// Netns is the name the socket's namespace was asked by ("caller", a
	// name under /run/netns) and NetnsID its identity (dev:ino of the
	// nsfs file); both empty for the daemon's own namespace.
	Netns   string `json:"netns,omitempty"`
	NetnsID string `json:"netns_id,omitempty"`
	// Holders are its references.
	Holders []HolderStatus `json:"holders"`
}

// HolderStatus describes one reference.
type HolderStatus struct {
	// Share and Name are the reference's share mode and name.
	Share string `json:"share"`
	Name  string `json:"name,omitempty"`
	// UID, PID and App identify the holding connection's caller; for a
	// pending token, the caller that asked for it.
	UID uint32 `json:"uid"`
	PID int32  `json:"pid"`
	App string `json:"app,omitempty"`
	// Pending is true for a token not yet picked up.
	Pending bool `json:"pending,omitempty"`
	// Token is shown to the reference's own caller and to admins.
	Token string `json:"token,omitempty"`
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
	// Unseen is true when the daemon refused the request before looking
	// at it (too many requests in flight on the connection): sending it
	// again once a reply has arrived is safe.
	Unseen bool `json:"unseen,omitempty"`
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
//
// The common shapes of a request are read in one pass (decodeRequestFast);
// anything else takes the strict reference path, decodeRequestStrict, so that
// both accept the same packets with the same results and error messages.
func DecodeRequest(b []byte) (*Request, error) {
	if req := decodeRequestFast(b); req != nil {
		return req, checkRequest(req)
	}
	return decodeRequestStrict(b)
}

// decodeRequestStrict is DecodeRequest built on encoding/json alone: the
// reference that the fast path must agree with.
func decodeRequestStrict(b []byte) (*Request, error) {
	var req Request
	if err := decodeStrict(b, &req); err != nil {
		// Read the ID leniently so that the error reply can name the
		// request; a message too broken for that gets ID 0.
		var probe struct {
			V  json.RawMessage `json:"v"`
			ID uint64          `json:"id"`
		}
		if len(b) <= MaxMessageSize {
			// A type error in another field still fills these two.
			var te *json.UnmarshalTypeError
			if err := json.Unmarshal(b, &probe); err != nil && !errors.As(err, &te) {
				probe.ID, probe.V = 0, nil
			}
		}
		if v, err := strconv.Atoi(string(probe.V)); err == nil && v != Version {
			// A newer client's request may carry fields this version
			// does not know: tell it the version is the problem.
			return &Request{ID: probe.ID, V: v}, Errorf(CodeUnsupportedVersion, "protocol version %d is not supported; this daemon speaks version %d", v, Version)
		}
		return &Request{ID: probe.ID}, &Error{Code: CodeInvalidRequest, Message: err.Error()}
	}
	return &req, checkRequest(&req)
}

// checkRequest checks a decoded request's version, that the op's
// parameters are present, and that their required members are neither
// missing, null nor empty (docs/protocol.md, section 5). It returns nil or
// an *Error. Both decoders end here, so they agree on it.
func checkRequest(req *Request) error {
	if req.V != Version {
		return Errorf(CodeUnsupportedVersion, "protocol version %d is not supported; this daemon speaks version %d", req.V, Version)
	}
	switch req.Op {
	case OpConnect:
		if req.Connect == nil {
			return Errorf(CodeInvalidRequest, `op "connect" needs a "connect" object`)
		}
		if err := required(req.Op, "connect", "network", req.Connect.Network, "address", req.Connect.Address); err != nil {
			return err
		}
		if req.Connect.TimeoutMS < 0 {
			return Errorf(CodeInvalidRequest, "timeout_ms must not be negative")
		}
	case OpHello:
		if req.Hello == nil {
			return Errorf(CodeInvalidRequest, `op "hello" needs a "hello" object`)
		}
		return required(req.Op, "hello", "app", req.Hello.App)
	case OpBind:
		if req.Bind == nil {
			return Errorf(CodeInvalidRequest, `op "bind" needs a "bind" object`)
		}
		return required(req.Op, "bind", "network", req.Bind.Network, "address", req.Bind.Address)
	case OpPickup, OpRelease:
		if req.Token == nil {
			return Errorf(CodeInvalidRequest, `op %q needs a "token" object`, req.Op)
		}
		return required(req.Op, "token", "token", req.Token.Token)
	case OpReclaim:
		if req.Reclaim == nil {
			return Errorf(CodeInvalidRequest, `op "reclaim" needs a "reclaim" object`)
		}
		return required(req.Op, "reclaim", "token", req.Reclaim.Token, "secret", req.Reclaim.Secret)
	case OpStatus, OpReload, OpUpgrade:
	case "":
		return Errorf(CodeInvalidRequest, `missing "op"`)
	default:
		return Errorf(CodeInvalidRequest, "unknown op %q", req.Op)
	}
	return nil
}

// required checks the required string members of op's parameter object
// obj, given as name, value pairs: a member that is missing, null or ""
// (which decode alike) is invalid_request naming the first such member.
func required(op Op, obj string, members ...string) error {
	for i := 0; i+1 < len(members); i += 2 {
		if members[i+1] == "" {
			return Errorf(CodeInvalidRequest, `op %q: the %q object's member %q is required: it must not be missing, null or empty`, op, obj, members[i])
		}
	}
	return nil
}

// DecodeReply parses one reply packet. Like DecodeRequest, it reads the
// common shapes in one pass and everything else, status replies included,
// with the strict reference path.
func DecodeReply(b []byte) (*Reply, error) {
	if rep := decodeReplyFast(b); rep != nil {
		return rep, checkReply(rep)
	}
	return decodeReplyStrict(b)
}

// decodeReplyStrict is DecodeReply built on encoding/json alone: the
// reference that the fast path must agree with.
func decodeReplyStrict(b []byte) (*Reply, error) {
	var rep Reply
	if err := decodeStrict(b, &rep); err != nil {
		return nil, err
	}
	return &rep, checkReply(&rep)
}

// checkReply checks a decoded reply's version and fd count.
func checkReply(rep *Reply) error {
	if rep.V != Version {
		return fmt.Errorf("reply has protocol version %d, want %d", rep.V, Version)
	}
	if rep.FDs < 0 || rep.FDs > MaxFDs {
		return fmt.Errorf("reply announces %d fds; at most %d allowed", rep.FDs, MaxFDs)
	}
	return nil
}

// MaxErrorMessage is the longest error message a reply carries; longer
// ones are cut, so that an error reply always fits in a packet.
const MaxErrorMessage = 1024

// Encode marshals a message and checks its size. An error message longer
// than MaxErrorMessage is cut first. A *Request or *Reply is written by
// AppendRequest or AppendReply; anything else by encoding/json. The result
// is the same either way.
func Encode(v any) ([]byte, error) {
	var buf [512]byte
	var b []byte
	var err error
	switch m := v.(type) {
	case *Request:
		b, err = AppendRequest(buf[:0], m)
	case *Reply:
		b, err = AppendReply(buf[:0], m)
	default:
		return encodeStrict(v)
	}
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// encodeStrict is Encode built on encoding/json alone: the reference that
// AppendRequest and AppendReply must agree with.
func encodeStrict(v any) ([]byte, error) {
	if r, ok := v.(*Reply); ok && r.Error != nil && len(r.Error.Message) > MaxErrorMessage {
		cut := *r.Error
		cut.Message = strings.ToValidUTF8(cut.Message[:MaxErrorMessage], "") + "…"
		rr := *r
		rr.Error = &cut
		v = &rr
	}
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
	if err := checkKeys(b); err != nil {
		return fmt.Errorf("malformed message: %w", err)
	}
	return nil
}
