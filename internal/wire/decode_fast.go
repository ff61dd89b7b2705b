package wire

import (
	"math"
	"unicode/utf8"
)

// The fast decoders read the common shapes of a request or reply in one pass
// over the packet, without reflection. They accept a strict subset of what
// decodeStrict accepts and give the same values for it: a single JSON object
// of the message's fields, each spelled exactly and at most once, whose
// values are strings without escapes, integers without fraction or exponent
// within the field's range, true, false, null and the nested objects of the
// known fields. On anything else (an escape, a number such as 1.0, an unknown
// or repeated key, a type mismatch, a status result, bad UTF-8, a syntax
// error) they give up and return nil, and the caller takes the strict path,
// which then produces today's error or value. Giving up is always safe;
// accepting is only allowed where encoding/json would produce the same value.
//
// null is handled as encoding/json does: it leaves the field as it was, and
// since no key may repeat, that is the zero value (a nil pointer).

// shareStringsMax is the size up to which one packet's strings share a
// single copy of the packet, so that decoding allocates once for all of
// them. Larger packets copy each string on its own, so that a small string
// kept for long does not pin a large packet.
const shareStringsMax = 1024

// fastDecoder is a cursor over one packet.
type fastDecoder struct {
	b []byte
	i int
	// s is string(b) once a string needed it (packets up to
	// shareStringsMax only).
	s      string
	shared bool
}

// memberStatus is what member found.
type memberStatus int

const (
	memberFail memberStatus = iota // give up
	memberKey                      // a key and its colon; the value is next
	memberEnd                      // the closing brace
)

func (d *fastDecoder) skipSpace() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// open consumes optional whitespace and '{'.
func (d *fastDecoder) open() bool {
	d.skipSpace()
	if d.i < len(d.b) && d.b[d.i] == '{' {
		d.i++
		return true
	}
	return false
}

// member reads up to the next member's value: the separator (for all but the
// first member, n == 0), the key and the colon, with whitespace around each;
// or the object's closing brace. A key is plain ASCII with no escape: any
// other key is unknown, and the strict path reports it.
func (d *fastDecoder) member(n int) ([]byte, memberStatus) {
	d.skipSpace()
	if d.i >= len(d.b) {
		return nil, memberFail
	}
	if d.b[d.i] == '}' {
		d.i++
		return nil, memberEnd
	}
	if n > 0 {
		if d.b[d.i] != ',' {
			return nil, memberFail
		}
		d.i++
		d.skipSpace()
		if d.i >= len(d.b) {
			return nil, memberFail
		}
	}
	if d.b[d.i] != '"' {
		return nil, memberFail
	}
	start := d.i + 1
	j := start
	for ; j < len(d.b); j++ {
		c := d.b[j]
		if c == '"' {
			break
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return nil, memberFail
		}
	}
	if j >= len(d.b) {
		return nil, memberFail
	}
	key := d.b[start:j]
	d.i = j + 1
	d.skipSpace()
	if d.i >= len(d.b) || d.b[d.i] != ':' {
		return nil, memberFail
	}
	d.i++
	d.skipSpace()
	if d.i >= len(d.b) {
		return nil, memberFail
	}
	return key, memberKey
}

// seen marks field bit of an object as read, and reports false if it was
// already: a repeated key.
func seen(mask *uint32, bit uint32) bool {
	if *mask&bit != 0 {
		return false
	}
	*mask |= bit
	return true
}

// null consumes a null literal if one is next.
func (d *fastDecoder) null() bool {
	if d.b[d.i] == 'n' && len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// object reports whether an object is next; a nested object's field is
// filled only then, null having been handled by the caller.
func (d *fastDecoder) object() bool {
	return d.b[d.i] == '{'
}

// boolean reads true or false.
func (d *fastDecoder) boolean() (v, ok bool) {
	rest := d.b[d.i:]
	if len(rest) >= 4 && string(rest[:4]) == "true" {
		d.i += 4
		return true, true
	}
	if len(rest) >= 5 && string(rest[:5]) == "false" {
		d.i += 5
		return false, true
	}
	return false, false
}

// rawString reads a string without escapes or control characters and with
// valid UTF-8, and returns the offsets of its contents.
func (d *fastDecoder) rawString() (start, end int, ok bool) {
	if d.b[d.i] != '"' {
		return 0, 0, false
	}
	start = d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		c := d.b[j]
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(d.b[start:j]) {
				return 0, 0, false
			}
			d.i = j + 1
			return start, j, true
		case c == '\\' || c < 0x20:
			return 0, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return 0, 0, false
}

// str returns b[start:end] as a string.
func (d *fastDecoder) str(start, end int) string {
	if start == end {
		return ""
	}
	if !d.shared && len(d.b) <= shareStringsMax {
		d.s = string(d.b)
		d.shared = true
	}
	if d.shared {
		return d.s[start:end]
	}
	return string(d.b[start:end])
}

// string reads a string value.
func (d *fastDecoder) string() (string, bool) {
	start, end, ok := d.rawString()
	if !ok {
		return "", false
	}
	return d.str(start, end), true
}

// word reads a string value that is usually one of a few constants, and
// returns the constant without allocating when it is.
func (d *fastDecoder) word() (string, bool) {
	start, end, ok := d.rawString()
	if !ok {
		return "", false
	}
	switch w := d.b[start:end]; string(w) {
	case "connect":
		return "connect", true
	case "hello":
		return "hello", true
	case "bind":
		return "bind", true
	case "pickup":
		return "pickup", true
	case "release":
		return "release", true
	case "status":
		return "status", true
	case "reload":
		return "reload", true
	case "upgrade":
		return "upgrade", true
	case "reclaim":
		return "reclaim", true
	case "tcp":
		return "tcp", true
	case "tcp4":
		return "tcp4", true
	case "tcp6":
		return "tcp6", true
	case "udp":
		return "udp", true
	case "udp4":
		return "udp4", true
	case "udp6":
		return "udp6", true
	case "none":
		return "none", true
	case "same-name":
		return "same-name", true
	case "any":
		return "any", true
	}
	return d.str(start, end), true
}

// knownCodes are the codes code returns without allocating.
var knownCodes = [...]Code{
	CodeInvalidRequest, CodeUnsupportedVersion, CodeDenied, CodeResolveFailed,
	CodeConnectFailed, CodeTimeout, CodeLimitExceeded, CodeInternal,
	CodeShareConflict, CodeNotFound, CodeBindFailed,
}

// code reads an error code.
func (d *fastDecoder) code() (Code, bool) {
	start, end, ok := d.rawString()
	if !ok {
		return "", false
	}
	w := d.b[start:end]
	for _, c := range knownCodes {
		if string(w) == string(c) {
			return c, true
		}
	}
	return Code(d.str(start, end)), true
}

// digits reads the unsigned decimal digits of a JSON integer: no leading
// zero but for 0 itself. It reports false on no digits, a leading zero or a
// value above max. What follows the digits is the caller's to check: a
// fraction or exponent fails there, as anything but a separator does.
func (d *fastDecoder) digits(max uint64) (uint64, bool) {
	start := d.i
	var v uint64
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c < '0' || c > '9' {
			break
		}
		if v > (max-uint64(c-'0'))/10 {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
		d.i++
	}
	switch n := d.i - start; {
	case n == 0:
		return 0, false
	case n > 1 && d.b[start] == '0':
		return 0, false
	}
	return v, true
}

// uint64 reads an unsigned integer.
func (d *fastDecoder) uint64() (uint64, bool) {
	return d.digits(math.MaxUint64)
}

// int64 reads a signed integer in [min, max].
func (d *fastDecoder) int64(min, max int64) (int64, bool) {
	if d.b[d.i] == '-' {
		d.i++
		v, ok := d.digits(uint64(-(min + 1)) + 1)
		// -int64(v) is min itself when v is -min, which int64 cannot
		// hold: two's complement wraps it to the right value.
		return -int64(v), ok
	}
	v, ok := d.digits(uint64(max))
	return int64(v), ok
}

// int reads an int.
func (d *fastDecoder) int() (int, bool) {
	v, ok := d.int64(math.MinInt, math.MaxInt)
	return int(v), ok
}

// end consumes trailing whitespace and reports whether the packet ends.
func (d *fastDecoder) end() bool {
	d.skipSpace()
	return d.i == len(d.b)
}

// requestBlock holds a request and the parameters of its common ops, so
// that decoding one allocates once for all of them. A reclaim's parameters
// are allocated on their own: reclaim is sent only after a daemon restart,
// and every other request would pay for the room.
type requestBlock struct {
	req     Request
	connect ConnectRequest
	hello   HelloRequest
	bind    BindRequest
	token   TokenRequest
}

// decodeRequestFast decodes a request if it has a common shape, and returns
// nil to send the caller to decodeRequestStrict otherwise.
func decodeRequestFast(b []byte) *Request {
	if len(b) > MaxMessageSize {
		return nil
	}
	d := fastDecoder{b: b}
	if !d.open() {
		return nil
	}
	blk := new(requestBlock)
	r := &blk.req
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st == memberEnd {
			break
		}
		if st == memberFail {
			return nil
		}
		ok := true
		switch string(key) {
		case "v":
			ok = seen(&mask, 1<<0) && (d.null() || d.intTo(&r.V))
		case "id":
			ok = seen(&mask, 1<<1) && (d.null() || d.uint64To(&r.ID))
		case "op":
			ok = seen(&mask, 1<<2)
			if ok && !d.null() {
				var op string
				op, ok = d.word()
				r.Op = Op(op)
			}
		case "connect":
			ok = seen(&mask, 1<<3)
			if ok && !d.null() {
				r.Connect = &blk.connect
				ok = d.object() && d.connectRequest(r.Connect)
			}
		case "hello":
			ok = seen(&mask, 1<<4)
			if ok && !d.null() {
				r.Hello = &blk.hello
				ok = d.object() && d.helloRequest(r.Hello)
			}
		case "bind":
			ok = seen(&mask, 1<<5)
			if ok && !d.null() {
				r.Bind = &blk.bind
				ok = d.object() && d.bindRequest(r.Bind)
			}
		case "token":
			ok = seen(&mask, 1<<6)
			if ok && !d.null() {
				r.Token = &blk.token
				ok = d.object() && d.tokenRequest(r.Token)
			}
		case "status":
			ok = seen(&mask, 1<<7)
			if ok && !d.null() {
				r.Status = new(StatusRequest)
				ok = d.object() && d.emptyObject()
			}
		case "reclaim":
			ok = seen(&mask, 1<<8)
			if ok && !d.null() {
				r.Reclaim = new(ReclaimRequest)
				ok = d.object() && d.reclaimRequest(r.Reclaim)
			}
		default:
			ok = false
		}
		if !ok {
			return nil
		}
	}
	if !d.end() {
		return nil
	}
	return r
}

func (d *fastDecoder) intTo(p *int) bool {
	v, ok := d.int()
	*p = v
	return ok
}

func (d *fastDecoder) int64To(p *int64) bool {
	v, ok := d.int64(math.MinInt64, math.MaxInt64)
	*p = v
	return ok
}

func (d *fastDecoder) uint64To(p *uint64) bool {
	v, ok := d.uint64()
	*p = v
	return ok
}

func (d *fastDecoder) boolTo(p *bool) bool {
	v, ok := d.boolean()
	*p = v
	return ok
}

func (d *fastDecoder) stringTo(p *string) bool {
	v, ok := d.string()
	*p = v
	return ok
}

func (d *fastDecoder) wordTo(p *string) bool {
	v, ok := d.word()
	*p = v
	return ok
}

// emptyObject reads {} (with any whitespace inside): StatusRequest has no
// fields.
func (d *fastDecoder) emptyObject() bool {
	d.i++ // '{'
	_, st := d.member(0)
	return st == memberEnd
}

func (d *fastDecoder) connectRequest(c *ConnectRequest) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		ok := true
		switch string(key) {
		case "network":
			ok = seen(&mask, 1<<0) && (d.null() || d.wordTo(&c.Network))
		case "address":
			ok = seen(&mask, 1<<1) && (d.null() || d.stringTo(&c.Address))
		case "timeout_ms":
			ok = seen(&mask, 1<<2) && (d.null() || d.int64To(&c.TimeoutMS))
		case "netns":
			ok = seen(&mask, 1<<3) && (d.null() || d.stringTo(&c.Netns))
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

func (d *fastDecoder) helloRequest(h *HelloRequest) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		if string(key) != "app" || !seen(&mask, 1) || !(d.null() || d.stringTo(&h.App)) {
			return false
		}
	}
}

func (d *fastDecoder) tokenRequest(t *TokenRequest) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		if string(key) != "token" || !seen(&mask, 1) || !(d.null() || d.stringTo(&t.Token)) {
			return false
		}
	}
}

func (d *fastDecoder) reclaimRequest(c *ReclaimRequest) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		ok := true
		switch string(key) {
		case "token":
			ok = seen(&mask, 1<<0) && (d.null() || d.stringTo(&c.Token))
		case "secret":
			ok = seen(&mask, 1<<1) && (d.null() || d.stringTo(&c.Secret))
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

func (d *fastDecoder) bindRequest(b *BindRequest) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		ok := true
		switch string(key) {
		case "network":
			ok = seen(&mask, 1<<0) && (d.null() || d.wordTo(&b.Network))
		case "address":
			ok = seen(&mask, 1<<1) && (d.null() || d.stringTo(&b.Address))
		case "share":
			ok = seen(&mask, 1<<2) && (d.null() || d.wordTo(&b.Share))
		case "name":
			ok = seen(&mask, 1<<3) && (d.null() || d.stringTo(&b.Name))
		case "options":
			ok = seen(&mask, 1<<4)
			if ok && !d.null() {
				b.Options = new(SocketOptions)
				ok = d.object() && d.socketOptions(b.Options)
			}
		case "token_only":
			ok = seen(&mask, 1<<5) && (d.null() || d.boolTo(&b.TokenOnly))
		case "netns":
			ok = seen(&mask, 1<<6) && (d.null() || d.stringTo(&b.Netns))
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

// boolPtr reads a boolean into a new *bool, or null.
func (d *fastDecoder) boolPtr(p **bool) bool {
	if d.null() {
		return true
	}
	v, ok := d.boolean()
	if ok {
		*p = &v
	}
	return ok
}

// intPtr reads an int into a new *int, or null.
func (d *fastDecoder) intPtr(p **int) bool {
	if d.null() {
		return true
	}
	v, ok := d.int()
	if ok {
		*p = &v
	}
	return ok
}

func (d *fastDecoder) socketOptions(o *SocketOptions) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		ok := true
		switch string(key) {
		case "reuseaddr":
			ok = seen(&mask, 1<<0) && d.boolPtr(&o.ReuseAddr)
		case "reuseport":
			ok = seen(&mask, 1<<1) && d.boolPtr(&o.ReusePort)
		case "v6only":
			ok = seen(&mask, 1<<2) && d.boolPtr(&o.V6Only)
		case "freebind":
			ok = seen(&mask, 1<<3) && d.boolPtr(&o.FreeBind)
		case "transparent":
			ok = seen(&mask, 1<<4) && d.boolPtr(&o.Transparent)
		case "rcvbuf":
			ok = seen(&mask, 1<<5) && d.intPtr(&o.RcvBuf)
		case "sndbuf":
			ok = seen(&mask, 1<<6) && d.intPtr(&o.SndBuf)
		case "bind_to_device":
			ok = seen(&mask, 1<<7)
			if ok && !d.null() {
				var s string
				if ok = d.stringTo(&s); ok {
					o.BindToDevice = &s
				}
			}
		case "pmtud_off":
			ok = seen(&mask, 1<<8) && d.boolPtr(&o.PMTUDiscOff)
		case "fastopen":
			ok = seen(&mask, 1<<9) && d.intPtr(&o.FastOpen)
		case "defer_accept":
			ok = seen(&mask, 1<<10) && d.intPtr(&o.DeferAccept)
		case "backlog":
			ok = seen(&mask, 1<<11) && d.intPtr(&o.Backlog)
		case "listen":
			ok = seen(&mask, 1<<12) && d.boolPtr(&o.Listen)
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

// replyBlock holds a reply and its common results, so that decoding one
// allocates once for all of them. An upgrade result is allocated on its
// own: it is rare, and every other reply would pay for the room.
type replyBlock struct {
	rep     Reply
	err     Error
	connect ConnectResult
	bind    BindResult
}

// decodeReplyFast decodes a reply if it has a common shape, and returns nil
// to send the caller to decodeReplyStrict otherwise. A status result always
// goes to the strict path; an upgrade result does not.
func decodeReplyFast(b []byte) *Reply {
	if len(b) > MaxMessageSize {
		return nil
	}
	d := fastDecoder{b: b}
	if !d.open() {
		return nil
	}
	blk := new(replyBlock)
	r := &blk.rep
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st == memberEnd {
			break
		}
		if st == memberFail {
			return nil
		}
		ok := true
		switch string(key) {
		case "v":
			ok = seen(&mask, 1<<0) && (d.null() || d.intTo(&r.V))
		case "id":
			ok = seen(&mask, 1<<1) && (d.null() || d.uint64To(&r.ID))
		case "fds":
			ok = seen(&mask, 1<<2) && (d.null() || d.intTo(&r.FDs))
		case "error":
			ok = seen(&mask, 1<<3)
			if ok && !d.null() {
				r.Error = &blk.err
				ok = d.object() && d.errorResult(r.Error)
			}
		case "connect":
			ok = seen(&mask, 1<<4)
			if ok && !d.null() {
				r.Connect = &blk.connect
				ok = d.object() && d.connectResult(r.Connect)
			}
		case "bind":
			ok = seen(&mask, 1<<5)
			if ok && !d.null() {
				r.Bind = &blk.bind
				ok = d.object() && d.bindResult(r.Bind)
			}
		case "status":
			ok = seen(&mask, 1<<6) && d.null()
		case "upgrade":
			ok = seen(&mask, 1<<8)
			if ok && !d.null() {
				r.Upgrade = new(UpgradeResult)
				ok = d.object() && d.upgradeResult(r.Upgrade)
			}
		case "ok":
			ok = seen(&mask, 1<<7) && (d.null() || d.boolTo(&r.OK))
		default:
			ok = false
		}
		if !ok {
			return nil
		}
	}
	if !d.end() {
		return nil
	}
	return r
}

func (d *fastDecoder) errorResult(e *Error) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		ok := true
		switch string(key) {
		case "code":
			ok = seen(&mask, 1<<0)
			if ok && !d.null() {
				e.Code, ok = d.code()
			}
		case "message":
			ok = seen(&mask, 1<<1) && (d.null() || d.stringTo(&e.Message))
		case "errno":
			ok = seen(&mask, 1<<2) && (d.null() || d.intTo(&e.Errno))
		case "unseen":
			ok = seen(&mask, 1<<3) && (d.null() || d.boolTo(&e.Unseen))
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

func (d *fastDecoder) connectResult(c *ConnectResult) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		ok := true
		switch string(key) {
		case "local":
			ok = seen(&mask, 1<<0) && (d.null() || d.stringTo(&c.Local))
		case "remote":
			ok = seen(&mask, 1<<1) && (d.null() || d.stringTo(&c.Remote))
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

func (d *fastDecoder) bindResult(b *BindResult) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		ok := true
		switch string(key) {
		case "token":
			ok = seen(&mask, 1<<0) && (d.null() || d.stringTo(&b.Token))
		case "local":
			ok = seen(&mask, 1<<1) && (d.null() || d.stringTo(&b.Local))
		case "network":
			ok = seen(&mask, 1<<2) && (d.null() || d.wordTo(&b.Network))
		case "expires_ms":
			ok = seen(&mask, 1<<3) && (d.null() || d.int64To(&b.ExpiresMS))
		case "shared":
			ok = seen(&mask, 1<<4) && (d.null() || d.boolTo(&b.Shared))
		case "reclaim":
			ok = seen(&mask, 1<<5) && (d.null() || d.stringTo(&b.Reclaim))
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}

func (d *fastDecoder) upgradeResult(u *UpgradeResult) bool {
	d.i++ // '{'
	var mask uint32
	for n := 0; ; n++ {
		key, st := d.member(n)
		if st != memberKey {
			return st == memberEnd
		}
		ok := true
		switch string(key) {
		case "old_pid":
			ok = seen(&mask, 1<<0) && (d.null() || d.intTo(&u.OldPID))
		case "new_pid":
			ok = seen(&mask, 1<<1) && (d.null() || d.intTo(&u.NewPID))
		case "version":
			ok = seen(&mask, 1<<2) && (d.null() || d.stringTo(&u.Version))
		case "took_ms":
			ok = seen(&mask, 1<<3) && (d.null() || d.int64To(&u.TookMS))
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
}
