package wire

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// AppendRequest appends the encoding of r to dst and returns the extended
// buffer: byte for byte what Encode(r) returns, which is what json.Marshal
// gives. A nil r is encoded as null. If the encoding is larger than
// MaxMessageSize, it returns dst unchanged and ErrTooLarge.
func AppendRequest(dst []byte, r *Request) ([]byte, error) {
	start := len(dst)
	if r == nil {
		return append(dst, "null"...), nil
	}
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(r.V), 10)
	dst = append(dst, `,"id":`...)
	dst = strconv.AppendUint(dst, r.ID, 10)
	dst = append(dst, `,"op":`...)
	dst = appendString(dst, string(r.Op))
	if c := r.Connect; c != nil {
		dst = append(dst, `,"connect":{"network":`...)
		dst = appendString(dst, c.Network)
		dst = append(dst, `,"address":`...)
		dst = appendString(dst, c.Address)
		if c.TimeoutMS != 0 {
			dst = append(dst, `,"timeout_ms":`...)
			dst = strconv.AppendInt(dst, c.TimeoutMS, 10)
		}
		if c.Netns != "" {
			dst = append(dst, `,"netns":`...)
			dst = appendString(dst, c.Netns)
		}
		dst = append(dst, '}')
	}
	if h := r.Hello; h != nil {
		dst = append(dst, `,"hello":{"app":`...)
		dst = appendString(dst, h.App)
		dst = append(dst, '}')
	}
	if b := r.Bind; b != nil {
		dst = append(dst, `,"bind":`...)
		dst = appendBindRequest(dst, b)
	}
	if t := r.Token; t != nil {
		dst = append(dst, `,"token":{"token":`...)
		dst = appendString(dst, t.Token)
		dst = append(dst, '}')
	}
	if r.Status != nil {
		dst = append(dst, `,"status":{}`...)
	}
	if c := r.Reclaim; c != nil {
		dst = append(dst, `,"reclaim":{"token":`...)
		dst = appendString(dst, c.Token)
		dst = append(dst, `,"secret":`...)
		dst = appendString(dst, c.Secret)
		dst = append(dst, '}')
	}
	dst = append(dst, '}')
	if len(dst)-start > MaxMessageSize {
		return dst[:start], ErrTooLarge
	}
	return dst, nil
}

func appendBindRequest(dst []byte, b *BindRequest) []byte {
	dst = append(dst, `{"network":`...)
	dst = appendString(dst, b.Network)
	dst = append(dst, `,"address":`...)
	dst = appendString(dst, b.Address)
	if b.Share != "" {
		dst = append(dst, `,"share":`...)
		dst = appendString(dst, b.Share)
	}
	if b.Name != "" {
		dst = append(dst, `,"name":`...)
		dst = appendString(dst, b.Name)
	}
	if o := b.Options; o != nil {
		dst = append(dst, `,"options":`...)
		dst = appendSocketOptions(dst, o)
	}
	if b.TokenOnly {
		dst = append(dst, `,"token_only":true`...)
	}
	if b.Netns != "" {
		dst = append(dst, `,"netns":`...)
		dst = appendString(dst, b.Netns)
	}
	return append(dst, '}')
}

// appendSocketOptions writes the options in field order; every field is a
// pointer with omitempty, so exactly the non-nil ones appear.
func appendSocketOptions(dst []byte, o *SocketOptions) []byte {
	dst = append(dst, '{')
	first := true
	key := func(name string) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, '"')
		dst = append(dst, name...)
		dst = append(dst, '"', ':')
	}
	boolField := func(name string, p *bool) {
		if p != nil {
			key(name)
			dst = strconv.AppendBool(dst, *p)
		}
	}
	intField := func(name string, p *int) {
		if p != nil {
			key(name)
			dst = strconv.AppendInt(dst, int64(*p), 10)
		}
	}
	boolField("reuseaddr", o.ReuseAddr)
	boolField("reuseport", o.ReusePort)
	boolField("v6only", o.V6Only)
	boolField("freebind", o.FreeBind)
	boolField("transparent", o.Transparent)
	intField("rcvbuf", o.RcvBuf)
	intField("sndbuf", o.SndBuf)
	if o.BindToDevice != nil {
		key("bind_to_device")
		dst = appendString(dst, *o.BindToDevice)
	}
	boolField("pmtud_off", o.PMTUDiscOff)
	intField("fastopen", o.FastOpen)
	intField("defer_accept", o.DeferAccept)
	intField("backlog", o.Backlog)
	boolField("listen", o.Listen)
	return append(dst, '}')
}

// AppendReply appends the encoding of r to dst and returns the extended
// buffer: byte for byte what Encode(r) returns, which is what json.Marshal
// gives once an error message longer than MaxErrorMessage is cut (r itself
// is not changed). A nil r is encoded as null. If the encoding is larger
// than MaxMessageSize, it returns dst unchanged and ErrTooLarge.
func AppendReply(dst []byte, r *Reply) ([]byte, error) {
	start := len(dst)
	if r == nil {
		return append(dst, "null"...), nil
	}
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(r.V), 10)
	dst = append(dst, `,"id":`...)
	dst = strconv.AppendUint(dst, r.ID, 10)
	if r.FDs != 0 {
		dst = append(dst, `,"fds":`...)
		dst = strconv.AppendInt(dst, int64(r.FDs), 10)
	}
	if e := r.Error; e != nil {
		msg := e.Message
		if len(msg) > MaxErrorMessage {
			msg = strings.ToValidUTF8(msg[:MaxErrorMessage], "") + "…"
		}
		dst = append(dst, `,"error":{"code":`...)
		dst = appendString(dst, string(e.Code))
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, msg)
		if e.Errno != 0 {
			dst = append(dst, `,"errno":`...)
			dst = strconv.AppendInt(dst, int64(e.Errno), 10)
		}
		if e.Unseen {
			dst = append(dst, `,"unseen":true`...)
		}
		dst = append(dst, '}')
	}
	if c := r.Connect; c != nil {
		dst = append(dst, `,"connect":{"local":`...)
		dst = appendString(dst, c.Local)
		dst = append(dst, `,"remote":`...)
		dst = appendString(dst, c.Remote)
		dst = append(dst, '}')
	}
	if b := r.Bind; b != nil {
		dst = append(dst, `,"bind":{"token":`...)
		dst = appendString(dst, b.Token)
		dst = append(dst, `,"local":`...)
		dst = appendString(dst, b.Local)
		dst = append(dst, `,"network":`...)
		dst = appendString(dst, b.Network)
		if b.ExpiresMS != 0 {
			dst = append(dst, `,"expires_ms":`...)
			dst = strconv.AppendInt(dst, b.ExpiresMS, 10)
		}
		if b.Shared {
			dst = append(dst, `,"shared":true`...)
		}
		if b.Reclaim != "" {
			dst = append(dst, `,"reclaim":`...)
			dst = appendString(dst, b.Reclaim)
		}
		dst = append(dst, '}')
	}
	if r.Status != nil {
		// Status replies are not on the hot path: encoding/json writes
		// the result, as it would inside the whole reply. It cannot fail
		// on these types.
		s, err := json.Marshal(r.Status)
		if err != nil {
			return dst[:start], err
		}
		dst = append(dst, `,"status":`...)
		dst = append(dst, s...)
	}
	if u := r.Upgrade; u != nil {
		dst = append(dst, `,"upgrade":{"old_pid":`...)
		dst = strconv.AppendInt(dst, int64(u.OldPID), 10)
		dst = append(dst, `,"new_pid":`...)
		dst = strconv.AppendInt(dst, int64(u.NewPID), 10)
		dst = append(dst, `,"version":`...)
		dst = appendString(dst, u.Version)
		dst = append(dst, `,"took_ms":`...)
		dst = strconv.AppendInt(dst, u.TookMS, 10)
		dst = append(dst, '}')
	}
	if r.OK {
		dst = append(dst, `,"ok":true`...)
	}
	dst = append(dst, '}')
	if len(dst)-start > MaxMessageSize {
		return dst[:start], ErrTooLarge
	}
	return dst, nil
}

// htmlSafe[c] is true for the ASCII bytes encoding/json writes unescaped
// when it escapes HTML, as json.Marshal does: printable, except for ", \,
// <, > and &.
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = !strings.ContainsRune("\"\\<>&", rune(c))
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string exactly as json.Marshal writes
// it: ", \ and control characters escaped (\b, \f, \n, \r, \t by name, the
// others as \u00XX), <, > and & as \u003c, \u003e and \u0026, U+2028 and
// U+2029 as \u2028 and \u2029, and each byte of invalid UTF-8 as \ufffd.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if htmlSafe[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
