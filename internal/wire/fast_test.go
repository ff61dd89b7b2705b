package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// The fast decoders and encoders are checked against the strict reference
// paths (decodeRequestStrict, decodeReplyStrict, encodeStrict), which are
// encoding/json with the package's extra checks: same values, same errors,
// same bytes.

// agreeRequest fails t unless DecodeRequest and decodeRequestStrict give the
// same request and the same error for b, and unless whatever the fast path
// accepts the strict decoder accepts with the same value. It reports whether
// the fast path took b.
func agreeRequest(t *testing.T, b []byte) bool {
	t.Helper()
	got, gotErr := DecodeRequest(b)
	want, wantErr := decodeRequestStrict(b)
	if !reflect.DeepEqual(gotErr, wantErr) {
		t.Fatalf("DecodeRequest(%q) error = %#v; the strict path says %#v", b, gotErr, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeRequest(%q) = %s; the strict path says %s", b, dump(got), dump(want))
	}
	fast := decodeRequestFast(b)
	if fast == nil {
		return false
	}
	var ref Request
	if err := decodeStrict(b, &ref); err != nil {
		t.Fatalf("fast path accepted %q = %s, but the strict decoder says %v", b, dump(fast), err)
	}
	if !reflect.DeepEqual(fast, &ref) {
		t.Fatalf("fast path read %q as %s; the strict decoder as %s", b, dump(fast), dump(&ref))
	}
	return true
}

// agreeReply is agreeRequest for replies.
func agreeReply(t *testing.T, b []byte) bool {
	t.Helper()
	got, gotErr := DecodeReply(b)
	want, wantErr := decodeReplyStrict(b)
	if !reflect.DeepEqual(gotErr, wantErr) {
		t.Fatalf("DecodeReply(%q) error = %v; the strict path says %v", b, gotErr, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeReply(%q) = %s; the strict path says %s", b, dump(got), dump(want))
	}
	fast := decodeReplyFast(b)
	if fast == nil {
		return false
	}
	var ref Reply
	if err := decodeStrict(b, &ref); err != nil {
		t.Fatalf("fast path accepted %q = %s, but the strict decoder says %v", b, dump(fast), err)
	}
	if !reflect.DeepEqual(fast, &ref) {
		t.Fatalf("fast path read %q as %s; the strict decoder as %s", b, dump(fast), dump(&ref))
	}
	return true
}

// dump shows a message with its nested pointers followed.
func dump(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// agreeEncode fails t unless Encode and encodeStrict give the same bytes or
// the same error for v, and AppendRequest or AppendReply appends those
// bytes to a buffer without touching what it held.
func agreeEncode(t *testing.T, v any) {
	t.Helper()
	var want []byte
	var wantErr error
	if r, ok := v.(*Reply); ok && r == nil {
		// encodeStrict dereferences a nil *Reply (it panics); Encode
		// writes null, as json.Marshal does.
		want, wantErr = json.Marshal(v)
	} else {
		want, wantErr = encodeStrict(v)
	}
	got, gotErr := Encode(v)
	if !errors.Is(gotErr, wantErr) || !bytes.Equal(got, want) {
		t.Fatalf("Encode(%s) = %q, %v; json.Marshal gives %q, %v", dump(v), got, gotErr, want, wantErr)
	}
	prefix := []byte("prefix")
	var out []byte
	var err error
	switch m := v.(type) {
	case *Request:
		out, err = AppendRequest(prefix, m)
	case *Reply:
		out, err = AppendReply(prefix, m)
	default:
		return
	}
	if !errors.Is(err, wantErr) || !bytes.Equal(out, append([]byte("prefix"), want...)) {
		t.Fatalf("Append(%q, %s) = %q, %v; want %q followed by %q, %v", "prefix", dump(v), out, err, "prefix", want, wantErr)
	}
}

func TestDecodeRequestFast(t *testing.T) {
	const connect = `"connect":{"network":"tcp","address":"a:1"}`
	tests := []struct {
		name string
		in   string
		fast bool // whether the fast path should take it
	}{
		{"connect", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"example.net:443","timeout_ms":5000}}`, true},
		{"connect netns", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"example.net:443","netns":"signalling"}}`, true},
		{"bind netns", `{"v":1,"id":9,"op":"bind","bind":{"network":"udp","address":":53","netns":"caller"}}`, true},
		{"hello", `{"v":1,"id":1,"op":"hello","hello":{"app":"web"}}`, true},
		{"bind", `{"v":1,"id":2,"op":"bind","bind":{"network":"udp6","address":"[::]:53","share":"same-name","name":"dns","token_only":true}}`, true},
		{"bind with every option", `{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":":443","options":{"reuseaddr":false,"reuseport":true,"v6only":false,"freebind":true,"transparent":false,"rcvbuf":65536,"sndbuf":0,"bind_to_device":"eth0","pmtud_off":true,"fastopen":16,"defer_accept":-1,"backlog":4096,"listen":false}}}`, true},
		{"bind with null options", `{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":":443","options":{"reuseaddr":null,"rcvbuf":null,"bind_to_device":null}}}`, true},
		{"pickup", `{"v":1,"id":3,"op":"pickup","token":{"token":"0123456789abcdef"}}`, true},
		{"release", `{"v":1,"id":4,"op":"release","token":{"token":"0123456789abcdef"}}`, true},
		{"status", `{"v":1,"id":5,"op":"status","status":{}}`, true},
		{"status with space", `{"v":1,"id":5,"op":"status","status":{ }}`, true},
		{"status without object", `{"v":1,"id":5,"op":"status"}`, true},
		{"reload", `{"v":1,"id":6,"op":"reload"}`, true},
		{"upgrade", `{"v":1,"id":7,"op":"upgrade"}`, true},
		{"reclaim", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"0123456789abcdef0123456789abcdef","secret":"fedcba9876543210fedcba9876543210"}}`, true},
		{"reclaim reordered", `{"reclaim":{"secret":"s","token":"t"},"op":"reclaim","id":8,"v":1}`, true},
		{"reclaim nulls", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":null,"secret":null}}`, true},
		{"reclaim empty", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"","secret":""}}`, true},
		{"reclaim secret missing", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t"}}`, true},
		{"reclaim object missing", `{"v":1,"id":8,"op":"reclaim"}`, true},
		{"reclaim object empty", `{"v":1,"id":8,"op":"reclaim","reclaim":{ }}`, true},
		{"reclaim non-ASCII", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":"ü<&>"}}`, true},
		{"empty object", `{}`, true},
		{"empty object with space", " {\t}\n", true},
		{"whitespace everywhere", " \t\r\n{ \"v\" : 1 ,\n\"id\"\t:\r9 , \"op\":\"connect\" ,\"connect\" : { \"network\" : \"tcp\" , \"address\" : \"a:1\" } } \n", true},
		{"fields reordered", `{"connect":{"address":"a:1","network":"tcp"},"op":"connect","id":9,"v":1}`, true},
		{"every op parameter at once", `{"v":1,"id":1,"op":"hello",` + connect + `,"hello":{"app":"x"},"bind":{"network":"tcp","address":":1"},"token":{"token":"t"},"status":{},"reclaim":{"token":"t","secret":"s"}}`, true},
		{"nulls", `{"v":null,"id":null,"op":null,"connect":null,"hello":null,"bind":null,"token":null,"status":null,"reclaim":null}`, true},
		{"null inside", `{"v":1,"id":1,"op":"connect","connect":{"network":null,"address":null,"timeout_ms":null}}`, true},
		{"empty nested objects", `{"v":1,"id":1,"op":"bind","connect":{},"hello":{},"bind":{},"token":{},"reclaim":{}}`, true},
		{"unknown op", `{"v":1,"id":1,"op":"dance"}`, true},
		{"unknown network", `{"v":1,"id":1,"op":"connect","connect":{"network":"sctp","address":"a:1"}}`, true},
		{"wrong version", `{"v":2,"id":9,"op":"connect",` + connect + `}`, true},
		{"negative version", `{"v":-1,"id":9,"op":"connect",` + connect + `}`, true},
		{"minus zero", `{"v":-0,"id":9,"op":"connect",` + connect + `}`, true},
		{"zero ID", `{"v":1,"id":0,"op":"reload"}`, true},
		{"max ID", `{"v":1,"id":18446744073709551615,"op":"reload"}`, true},
		{"max timeout", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":9223372036854775807}}`, true},
		{"min timeout", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":-9223372036854775808}}`, true},
		{"negative timeout", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":-1}}`, true},
		{"max int option", `{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":":1","options":{"backlog":9223372036854775807,"rcvbuf":-9223372036854775808}}}`, true},
		{"non-ASCII", `{"v":1,"id":1,"op":"hello","hello":{"app":"bücher 😀"}}`, true},
		{"U+2028 and U+FFFD unescaped", "{\"v\":1,\"id\":1,\"op\":\"hello\",\"hello\":{\"app\":\"a\u2028b\u2029c\ufffd\"}}", true},
		{"DEL", "{\"v\":1,\"id\":1,\"op\":\"hello\",\"hello\":{\"app\":\"\x7f\"}}", true},
		{"HTML characters", `{"v":1,"id":1,"op":"hello","hello":{"app":"<a&b>"}}`, true},
		{"empty strings", `{"v":1,"id":1,"op":"","hello":{"app":""}}`, true},

		// The strict path, with its own values and messages.
		{"escaped string", `{"v":1,"id":9,"op":"conn\u0065ct",` + connect + `}`, false},
		{"escaped quote", `{"v":1,"id":1,"op":"hello","hello":{"app":"a\"b"}}`, false},
		{"escaped surrogate", `{"v":1,"id":1,"op":"hello","hello":{"app":"\ud800"}}`, false},
		{"escaped key", `{"\u0076":1,"id":1,"op":"reload"}`, false},
		{"upper-case key", `{"V":1,"id":1,"op":"reload"}`, false},
		{"Kelvin sign key", "{\"v\":1,\"id\":1,\"op\":\"release\",\"to\u212aen\":{\"token\":\"t\"}}", false},
		{"unknown key", `{"v":1,"id":9,"op":"connect",` + connect + `,"fds":1}`, false},
		{"unknown nested key", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","port":1}}`, false},
		{"key of another message", `{"v":1,"id":9,"op":"reload","ok":true}`, false},
		{"non-empty status", `{"v":1,"id":5,"op":"status","status":{"sockets":[]}}`, false},
		{"upgrade with an object", `{"v":1,"id":7,"op":"upgrade","upgrade":{}}`, false},
		{"upgrade with a result", `{"v":1,"id":7,"op":"upgrade","upgrade":{"old_pid":1,"new_pid":2,"version":"v","took_ms":3}}`, false},
		{"unknown reclaim member", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":"s","fds":1}}`, false},
		{"reclaim member of another object", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":"s","network":"tcp"}}`, false},
		{"reclaim secret upper case key", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","Secret":"s"}}`, false},
		{"duplicate reclaim secret", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":"s","secret":"s"}}`, false},
		{"duplicate reclaim object", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":"s"},"reclaim":null}`, false},
		{"escaped reclaim secret", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":"\u0061"}}`, false},
		{"reclaim secret as number", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":1}}`, false},
		{"reclaim as string", `{"v":1,"id":8,"op":"reclaim","reclaim":"t"}`, false},
		{"reclaim as array", `{"v":1,"id":8,"op":"reclaim","reclaim":["t","s"]}`, false},
		{"reclaim unclosed", `{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":"s"`, false},
		{"duplicate key", `{"v":1,"id":1,"id":2,"op":"reload"}`, false},
		{"duplicate null key", `{"v":1,"id":null,"id":2,"op":"reload"}`, false},
		{"duplicate nested key", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","address":"b:1"}}`, false},
		{"duplicate option", `{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":":1","options":{"listen":true,"listen":false}}}`, false},
		{"duplicate object", `{"v":1,"id":9,"op":"connect",` + connect + `,` + connect + `}`, false},
		{"version as float", `{"v":1.0,"id":9,"op":"reload"}`, false},
		{"version with exponent", `{"v":1e0,"id":9,"op":"reload"}`, false},
		{"version with leading zero", `{"v":01,"id":9,"op":"reload"}`, false},
		{"version as string", `{"v":"1","id":9,"op":"reload"}`, false},
		{"version as bool", `{"v":true,"id":9,"op":"reload"}`, false},
		{"version overflows", `{"v":9223372036854775808,"id":9,"op":"reload"}`, false},
		{"negative ID", `{"v":1,"id":-9,"op":"reload"}`, false},
		{"minus zero ID", `{"v":1,"id":-0,"op":"reload"}`, false},
		{"ID overflows", `{"v":1,"id":18446744073709551616,"op":"reload"}`, false},
		{"ID far too large", `{"v":1,"id":99999999999999999999999,"op":"reload"}`, false},
		{"lone minus", `{"v":-,"id":9,"op":"reload"}`, false},
		{"timeout overflows", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":9223372036854775808}}`, false},
		{"timeout underflows", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":-9223372036854775809}}`, false},
		{"op as number", `{"v":1,"id":9,"op":1,` + connect + `}`, false},
		{"connect as array", `{"v":1,"id":9,"op":"connect","connect":[]}`, false},
		{"connect as string", `{"v":1,"id":9,"op":"connect","connect":"a:1"}`, false},
		{"bool misspelt", `{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":":1","token_only":tru}}`, false},
		{"bool with tail", `{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":":1","token_only":truex}}`, false},
		{"null misspelt", `{"v":1,"id":9,"op":"connect","connect":nul}`, false},
		{"null upper case", `{"v":1,"id":9,"op":"connect","connect":NULL}`, false},
		{"empty", ``, false},
		{"whitespace only", " \n", false},
		{"null message", `null`, false},
		{"array", `[{"v":1}]`, false},
		{"trailing comma", `{"v":1,"id":9,"op":"reload",}`, false},
		{"leading comma", `{,"v":1}`, false},
		{"missing colon", `{"v" 1}`, false},
		{"missing comma", `{"v":1 "id":9}`, false},
		{"truncated", `{"v":1,"id":9,"op":"rel`, false},
		{"truncated after key", `{"v"`, false},
		{"truncated after colon", `{"v":`, false},
		{"truncated after value", `{"v":1`, false},
		{"unclosed nested", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp"`, false},
		{"trailing garbage", `{"v":1,"id":9,"op":"reload"}x`, false},
		{"two objects", `{"v":1,"id":9,"op":"reload"}{}`, false},
		{"trailing NUL", "{\"v\":1,\"id\":9,\"op\":\"reload\"}\x00", false},
		{"trailing vertical tab", "{\"v\":1,\"id\":9,\"op\":\"reload\"}\v", false},
		{"trailing NBSP", "{\"v\":1,\"id\":9,\"op\":\"reload\"}\u00a0", false},
		{"leading BOM", "\ufeff{\"v\":1,\"id\":9,\"op\":\"reload\"}", false},
		{"form feed between tokens", "{\"v\":1,\f\"id\":9,\"op\":\"reload\"}", false},
		{"control character in string", "{\"v\":1,\"id\":1,\"op\":\"hello\",\"hello\":{\"app\":\"a\tb\"}}", false},
		{"NUL in string", "{\"v\":1,\"id\":1,\"op\":\"hello\",\"hello\":{\"app\":\"a\x00b\"}}", false},
		{"invalid UTF-8", "{\"v\":1,\"id\":9,\"op\":\"connect\",\"connect\":{\"network\":\"tcp\",\"address\":\"\xff:80\"}}", false},
		{"encoded surrogate", "{\"v\":1,\"id\":9,\"op\":\"connect\",\"connect\":{\"network\":\"tcp\",\"address\":\"\xed\xa0\x80:80\"}}", false},
		{"overlong encoding", "{\"v\":1,\"id\":9,\"op\":\"connect\",\"connect\":{\"network\":\"tcp\",\"address\":\"\xc0\xaf:80\"}}", false},
		{"truncated sequence", "{\"v\":1,\"id\":9,\"op\":\"connect\",\"connect\":{\"network\":\"tcp\",\"address\":\"\xe2\x82\"}}", false},
		{"invalid UTF-8 in a key", "{\"v\xff\":1}", false},
		{"invalid UTF-8 after the object", "{\"v\":1,\"id\":9,\"op\":\"reload\"}\xff", false},
		{"comment", `/* hi */{"v":1,"id":9,"op":"reload"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast := agreeRequest(t, []byte(tt.in)); fast != tt.fast {
				t.Errorf("fast path taken for %q: %v, want %v", tt.in, fast, tt.fast)
			}
		})
	}
}

func TestDecodeRequestFastSizes(t *testing.T) {
	for _, n := range []int{shareStringsMax - 1, shareStringsMax, shareStringsMax + 1, MaxMessageSize, MaxMessageSize + 1} {
		pad := n - len(`{"v":1,"id":9,"op":"hello","hello":{"app":""}}`)
		b := []byte(`{"v":1,"id":9,"op":"hello","hello":{"app":"` + strings.Repeat("é", pad/2) + strings.Repeat("a", pad%2) + `"}}`)
		if len(b) != n {
			t.Fatalf("built %d bytes, want %d", len(b), n)
		}
		if fast, want := agreeRequest(t, b), n <= MaxMessageSize; fast != want {
			t.Errorf("fast path taken for %d bytes: %v, want %v", n, fast, want)
		}
	}
}

// A receiver reuses its packet buffer: what was decoded from it must not
// change when the buffer does.
func TestDecodeFastCopiesStrings(t *testing.T) {
	for _, size := range []int{0, 2 * shareStringsMax} {
		b := []byte(`{"v":1,"id":1,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:53","name":"dns` + strings.Repeat(" ", size) + `"}}`)
		req, err := DecodeRequest(b)
		if err != nil {
			t.Fatal(err)
		}
		want := *req.Bind
		for i := range b {
			b[i] = 'x'
		}
		if !reflect.DeepEqual(*req.Bind, want) {
			t.Errorf("%d-byte packet: after overwriting the packet, bind = %+v, want %+v", len(b), *req.Bind, want)
		}
	}
	b := []byte(`{"v":1,"id":1,"error":{"code":"x_y","message":"m"}}`)
	rep, err := DecodeReply(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'z'
	}
	if rep.Error.Code != "x_y" || rep.Error.Message != "m" {
		t.Errorf("after overwriting the packet, error = %+v, want x_y: m", rep.Error)
	}
}

func TestDecodeReplyFast(t *testing.T) {
	tests := []struct {
		name string
		in   string
		fast bool
	}{
		{"connected", `{"v":1,"id":3,"fds":1,"connect":{"local":"192.0.2.2:1","remote":"192.0.2.1:2"}}`, true},
		{"bound", `{"v":1,"id":123456,"fds":1,"bind":{"token":"0123456789abcdef","local":"127.0.0.1:40000","network":"tcp","shared":true}}`, true},
		{"token only", `{"v":1,"id":1,"bind":{"token":"t","local":"[::]:53","network":"udp","expires_ms":30000}}`, true},
		{"bound with reclaim secret", `{"v":1,"id":2,"fds":1,"bind":{"token":"0123456789abcdef0123456789abcdef","local":"127.0.0.1:53","network":"udp","reclaim":"fedcba9876543210fedcba9876543210"}}`, true},
		{"reclaimed", `{"v":1,"id":8,"bind":{"token":"0123456789abcdef0123456789abcdef","local":"127.0.0.1:53","network":"udp","shared":true,"reclaim":"fedcba9876543210fedcba9876543210"}}`, true},
		{"upgraded", `{"v":1,"id":7,"upgrade":{"old_pid":2134,"new_pid":2201,"version":"v1.4.0 (go1.26)","took_ms":182}}`, true},
		{"upgrade reordered", `{"upgrade":{"took_ms":0,"version":"","new_pid":-1,"old_pid":9223372036854775807},"id":7,"v":1}`, true},
		{"upgrade empty", `{"v":1,"id":7,"upgrade":{}}`, true},
		{"upgrade max took", `{"v":1,"id":7,"upgrade":{"old_pid":1,"new_pid":2,"version":"v","took_ms":-9223372036854775808}}`, true},
		{"error", `{"v":1,"id":3,"error":{"code":"denied","message":"no","errno":13,"unseen":true}}`, true},
		{"error with every code", `{"v":1,"id":3,"error":{"code":"bind_failed","message":"in use: \u003cx\u003e"}}`, false},
		{"unknown code", `{"v":1,"id":3,"error":{"code":"new_code","message":"m"}}`, true},
		{"ok", `{"v":1,"id":3,"ok":true}`, true},
		{"ok false", `{"v":1,"id":3,"ok":false}`, true},
		{"nulls", `{"v":1,"id":null,"fds":null,"error":null,"connect":null,"bind":null,"status":null,"upgrade":null,"ok":null}`, true},
		{"nulls inside", `{"v":1,"id":3,"error":{"code":null,"message":null,"errno":null,"unseen":null},"connect":{"local":null,"remote":null},"bind":{"token":null,"local":null,"network":null,"expires_ms":null,"shared":null,"reclaim":null},"upgrade":{"old_pid":null,"new_pid":null,"version":null,"took_ms":null}}`, true},
		{"too many fds", `{"v":1,"id":3,"fds":17}`, true},
		{"negative fds", `{"v":1,"id":3,"fds":-1}`, true},
		{"wrong version", `{"v":2,"id":3}`, true},
		{"version missing", `{"id":3}`, true},

		{"status", `{"v":1,"id":3,"status":{"sockets":[{"network":"tcp","local":"127.0.0.1:53","refs":1,"age_ms":5,"holders":[{"share":"any","uid":0,"pid":1}]}],"truncated":true,"total":4}}`, false},
		{"empty status", `{"v":1,"id":3,"status":{}}`, false},
		{"escaped message", `{"v":1,"id":3,"error":{"code":"denied","message":"a\nb"}}`, false},
		{"unknown field", `{"v":1,"id":3,"extra":true}`, false},
		{"key of a request", `{"v":1,"id":3,"op":"x"}`, false},
		{"unknown error field", `{"v":1,"id":3,"error":{"code":"denied","message":"no","hint":"x"}}`, false},
		{"unknown result field", `{"v":1,"id":3,"connect":{"local":"a","remote":"b","fd":3}}`, false},
		{"duplicate", `{"v":1,"id":3,"ok":true,"ok":true}`, false},
		{"duplicate nested", `{"v":1,"id":3,"bind":{"token":"a","token":"b"}}`, false},
		{"duplicate reclaim secret", `{"v":1,"id":3,"bind":{"token":"a","reclaim":"b","reclaim":"c"}}`, false},
		{"duplicate upgrade", `{"v":1,"id":3,"upgrade":{},"upgrade":{}}`, false},
		{"duplicate upgrade member", `{"v":1,"id":3,"upgrade":{"new_pid":1,"new_pid":1}}`, false},
		{"unknown upgrade member", `{"v":1,"id":3,"upgrade":{"old_pid":1,"new_pid":2,"version":"v","took_ms":3,"pid":4}}`, false},
		{"upgrade member of another object", `{"v":1,"id":3,"upgrade":{"old_pid":1,"token":"t"}}`, false},
		{"request member in a reply", `{"v":1,"id":3,"reclaim":{"token":"t","secret":"s"}}`, false},
		{"escaped version", `{"v":1,"id":3,"upgrade":{"version":"v1\u002e4"}}`, false},
		{"took_ms float", `{"v":1,"id":3,"upgrade":{"took_ms":1.5}}`, false},
		{"took_ms overflows", `{"v":1,"id":3,"upgrade":{"took_ms":9223372036854775808}}`, false},
		{"pid as string", `{"v":1,"id":3,"upgrade":{"old_pid":"1"}}`, false},
		{"reclaim secret as bool", `{"v":1,"id":3,"bind":{"token":"a","reclaim":true}}`, false},
		{"upgrade as array", `{"v":1,"id":3,"upgrade":[]}`, false},
		{"wrong type", `{"v":1,"id":3,"fds":"1"}`, false},
		{"fds float", `{"v":1,"id":3,"fds":1.0}`, false},
		{"ok as number", `{"v":1,"id":3,"ok":1}`, false},
		{"trailing garbage", `{"v":1,"id":3}x`, false},
		{"trailing NBSP", "{\"v\":1,\"id\":3}\u00a0", false},
		{"two objects", `{"v":1,"id":3}{"v":1,"id":4}`, false},
		{"invalid UTF-8", "{\"v\":1,\"id\":3,\"error\":{\"code\":\"denied\",\"message\":\"\xff\"}}", false},
		{"empty", ``, false},
		{"null", `null`, false},
		{"too large", `{"v":1,"id":3}` + strings.Repeat(" ", MaxMessageSize), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast := agreeReply(t, []byte(tt.in)); fast != tt.fast {
				t.Errorf("fast path taken for %q: %v, want %v", tt.in, fast, tt.fast)
			}
		})
	}
}

func TestEncodeFast(t *testing.T) {
	yes, no, n, dev := true, false, 7, "eth0"
	every := &SocketOptions{
		ReuseAddr: &no, ReusePort: &yes, V6Only: &no, FreeBind: &yes, Transparent: &no,
		RcvBuf: &n, SndBuf: &n, BindToDevice: &dev, PMTUDiscOff: &yes, FastOpen: &n,
		DeferAccept: &n, Backlog: &n, Listen: &no,
	}
	// Cutting an error message: the cut falls inside a multi-byte rune.
	cutInRune := strings.Repeat("a", MaxErrorMessage-1) + "é" + strings.Repeat("b", 10)
	tests := []struct {
		name string
		msg  any
	}{
		{"nil request", (*Request)(nil)},
		{"nil reply", (*Reply)(nil)},
		{"zero request", &Request{}},
		{"zero reply", &Reply{}},
		{"connect", &Request{V: 1, ID: 1<<64 - 1, Op: OpConnect, Connect: &ConnectRequest{Network: "tcp", Address: "a:1", TimeoutMS: -1 << 63}}},
		{"hello", &Request{V: -1, ID: 1, Op: OpHello, Hello: &HelloRequest{App: "web"}}},
		{"bind", &Request{V: 1, Op: OpBind, Bind: &BindRequest{Network: "udp", Address: ":53", Share: "any", Name: "n", TokenOnly: true, Options: every}}},
		{"bind empty options", &Request{V: 1, Op: OpBind, Bind: &BindRequest{Options: &SocketOptions{}}}},
		{"token and status", &Request{V: 1, Op: OpRelease, Token: &TokenRequest{Token: "t"}, Status: &StatusRequest{}}},
		{"upgrade", &Request{V: 1, ID: 7, Op: OpUpgrade}},
		{"reclaim", &Request{V: 1, ID: 8, Op: OpReclaim, Reclaim: &ReclaimRequest{Token: "0123456789abcdef0123456789abcdef", Secret: "fedcba9876543210fedcba9876543210"}}},
		{"reclaim empty", &Request{V: 1, Op: OpReclaim, Reclaim: &ReclaimRequest{}}},
		{"reclaim escapes", &Request{V: 1, Op: OpReclaim, Reclaim: &ReclaimRequest{Token: "<\\\"\n>", Secret: "\u2028\xff&"}}},
		{"every parameter", &Request{Connect: &ConnectRequest{}, Hello: &HelloRequest{}, Bind: &BindRequest{}, Token: &TokenRequest{}, Status: &StatusRequest{}, Reclaim: &ReclaimRequest{}}},
		{"escapes", &Request{Op: "\"\\/<>&\b\f\n\r\t\x00\x01\x1f\x7f \u2028\u2029\ufffd é😀"}},
		{"invalid UTF-8", &Request{Op: "a\xffb\xc0\xafc\xed\xa0\x80d\xe2\x82"}},
		{"invalid UTF-8 at the end", &Request{Op: "a\xe2\x82"}},
		{"error", &Reply{V: 1, ID: 3, Error: &Error{Code: CodeDenied, Message: "no <x>", Errno: -13, Unseen: true}}},
		{"error cut", &Reply{V: 1, Error: &Error{Code: CodeInternal, Message: strings.Repeat("x", MaxErrorMessage+1)}}},
		{"error at the limit", &Reply{V: 1, Error: &Error{Code: CodeInternal, Message: strings.Repeat("<", MaxErrorMessage)}}},
		{"error cut inside a rune", &Reply{V: 1, Error: &Error{Message: cutInRune}}},
		{"error cut with invalid UTF-8", &Reply{V: 1, Error: &Error{Message: strings.Repeat("\xff", 2*MaxErrorMessage)}}},
		{"connect reply", &Reply{V: 1, ID: 3, FDs: 1, Connect: &ConnectResult{Local: "a", Remote: "b"}}},
		{"bind reply", &Reply{V: 1, ID: 3, FDs: -1, Bind: &BindResult{Token: "t", Local: "l", Network: "tcp", ExpiresMS: 5, Shared: true}}},
		{"bind reply with reclaim secret", &Reply{V: 1, ID: 3, FDs: 1, Bind: &BindResult{Token: "t", Local: "l", Network: "udp", Reclaim: "fedcba9876543210fedcba9876543210"}}},
		{"reclaim reply", &Reply{V: 1, ID: 8, Bind: &BindResult{Token: "t", Local: "l", Network: "tcp", Shared: true, Reclaim: "<&>\u2028"}}},
		{"upgrade reply", &Reply{V: 1, ID: 7, Upgrade: &UpgradeResult{OldPID: 2134, NewPID: 2201, Version: "v1.4.0 <dev>", TookMS: 182}}},
		{"upgrade reply extremes", &Reply{V: 1, ID: 7, Upgrade: &UpgradeResult{OldPID: math.MinInt, NewPID: math.MaxInt, Version: "\xff\x00", TookMS: -1 << 63}}},
		{"empty upgrade reply", &Reply{Upgrade: &UpgradeResult{}}},
		{"status reply", &Reply{V: 1, ID: 3, OK: true, Status: &StatusResult{
			Sockets:   []SocketStatus{{Network: "tcp", Local: "<a>", Refs: 1, Holders: []HolderStatus{{Share: "any", App: "&"}}}},
			Truncated: true, Total: 3, Daemon: &DaemonStats{PID: 1},
		}}},
		{"empty status reply", &Reply{Status: &StatusResult{}}},
		{"everything", &Reply{V: 1, ID: 1, FDs: 2, Error: &Error{}, Connect: &ConnectResult{}, Bind: &BindResult{}, Status: &StatusResult{}, Upgrade: &UpgradeResult{}, OK: true}},
		{"other value", map[string]int{"a": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agreeEncode(t, tt.msg)
		})
	}
}

func TestEncodeFastSizeLimit(t *testing.T) {
	// Escaping counts toward the limit: each '<' is six bytes encoded.
	base := len(`{"v":1,"id":1,"op":""}`)
	for _, n := range []int{MaxMessageSize - 1, MaxMessageSize, MaxMessageSize + 1} {
		pad := n - base
		op := strings.Repeat("<", pad/6) + strings.Repeat("a", pad%6)
		req := &Request{V: 1, ID: 1, Op: Op(op)}
		agreeEncode(t, req)
		b, err := AppendRequest(nil, req)
		if n <= MaxMessageSize && (err != nil || len(b) != n) {
			t.Errorf("AppendRequest(%d-byte encoding) = %d bytes, %v; want %d bytes", n, len(b), err, n)
		}
		if n > MaxMessageSize && !errors.Is(err, ErrTooLarge) {
			t.Errorf("AppendRequest(%d-byte encoding) error = %v, want %v", n, err, ErrTooLarge)
		}
	}
	rep := &Reply{V: 1, Connect: &ConnectResult{Local: strings.Repeat("&", MaxMessageSize/6)}}
	agreeEncode(t, rep)
	if _, err := AppendReply(nil, rep); !errors.Is(err, ErrTooLarge) {
		t.Errorf("AppendReply(oversize reply) error = %v, want %v", err, ErrTooLarge)
	}
}

func FuzzDecodeRequestFast(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"example.net:443","timeout_ms":5000}}`,
		`{"v":1,"id":1,"op":"hello","hello":{"app":"web"}}`,
		`{"v":1,"id":2,"op":"bind","bind":{"network":"udp6","address":"[::]:53","share":"same-name","name":"dns","token_only":true}}`,
		`{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":":443","options":{"reuseaddr":false,"reuseport":true,"v6only":null,"freebind":true,"transparent":false,"rcvbuf":65536,"sndbuf":0,"bind_to_device":"eth0","pmtud_off":true,"fastopen":16,"defer_accept":-1,"backlog":4096,"listen":false}}}`,
		`{"v":1,"id":3,"op":"pickup","token":{"token":"0123456789abcdef"}}`,
		`{"v":1,"id":5,"op":"status","status":{ }}`,
		`{"v":1,"id":7,"op":"upgrade"}`,
		`{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"0123456789abcdef0123456789abcdef","secret":"fedcba9876543210fedcba9876543210"}}`,
		`{"v":1,"id":8,"op":"reclaim","reclaim":{"token":null,"secret":""}}`,
		`{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"t","secret":"s","secret":"s"}}`,
		`{"v":1,"id":7,"op":"upgrade","upgrade":{}}`,
		` {"v" : -0 , "id":18446744073709551615,"op":null,"connect":null} `,
		`{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":-9223372036854775808}}`,
		`{"v":1,"id":18446744073709551616,"op":"reload"}`,
		`{"v":1.0,"id":01,"op":"reload"}`,
		`{"v":1,"id":1,"id":2,"op":"reload"}`,
		`{"V":1,"id":1,"op":"reload"}`,
		`{"v":1,"id":1,"op":"hello","hello":{"app":"b\u00fccher\ud800"}}`,
		"{\"v\":1,\"id\":1,\"op\":\"hello\",\"hello\":{\"app\":\"bücher\xff\u2028\"}}",
		`{"v":1,"id":2,"op":"bind","bind":{"network":"tcp","address":":1","token_only":truex}}`,
		`{"v":1,"id":9,"op":"reload"}{}`,
		`{"v":1,"id":9,"op":"reload",}`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		agreeRequest(t, b)
	})
}

func FuzzDecodeReplyFast(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":3,"fds":1,"connect":{"local":"192.0.2.2:1","remote":"192.0.2.1:2"}}`,
		`{"v":1,"id":123456,"fds":1,"bind":{"token":"0123456789abcdef","local":"127.0.0.1:40000","network":"tcp","expires_ms":30000,"shared":true}}`,
		`{"v":1,"id":3,"error":{"code":"denied","message":"no","errno":13,"unseen":true}}`,
		`{"v":1,"id":3,"ok":true,"status":null}`,
		`{"v":1,"id":2,"fds":1,"bind":{"token":"0123456789abcdef0123456789abcdef","local":"127.0.0.1:53","network":"udp","reclaim":"fedcba9876543210fedcba9876543210"}}`,
		`{"v":1,"id":7,"upgrade":{"old_pid":2134,"new_pid":2201,"version":"v1.4.0","took_ms":182}}`,
		`{"v":1,"id":7,"upgrade":{"old_pid":null,"new_pid":-1,"version":"\u00fc","took_ms":1e3}}`,
		`{"v":1,"id":3,"fds":17}`,
		`{"v":1,"id":3,"fds":-9223372036854775808}`,
		`{"v":1,"id":3,"status":{"sockets":[],"total":1}}`,
		`{"v":1,"id":3,"error":{"code":"denied","message":"a\u003cb"}}`,
		`{"v":1,"id":3,"ok":true,"OK":true}`,
		`{"v":1,"id":3}{"v":1,"id":4}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		agreeReply(t, b)
	})
}

// FuzzAppendRequest builds requests from the fuzzer's values; sel chooses
// which parameters are set.
func FuzzAppendRequest(f *testing.F) {
	f.Add(uint32(0), 0, uint64(0), int64(0), "", "", "", "")
	f.Add(uint32(1), 1, uint64(9), int64(5000), "connect", "tcp", "example.net:443", "")
	f.Add(uint32(0xffffffff), -1, uint64(1<<64-1), int64(-1<<63), "bind", "udp6", "[::]:53", "dns")
	f.Add(uint32(0x7c), 1, uint64(2), int64(1), "bind", "tcp", "<&>", "\u2028\xff\x00\x7f")
	f.Add(uint32(1<<23), 1, uint64(8), int64(0), "reclaim", "", "fedcba9876543210fedcba9876543210", "0123456789abcdef0123456789abcdef")
	f.Add(uint32(1<<23), 1, uint64(8), int64(0), "reclaim", "", "", "")
	f.Add(uint32(0), 1, uint64(7), int64(0), "upgrade", "", "", "")
	f.Fuzz(func(t *testing.T, sel uint32, v int, id uint64, n int64, s1, s2, s3, s4 string) {
		r := buildRequest(sel, v, id, n, s1, s2, s3, s4)
		agreeEncode(t, r)
		// What we write, the decoders must read alike.
		if b, err := AppendRequest(nil, r); err == nil {
			agreeRequest(t, b)
		}
	})
}

func buildRequest(sel uint32, v int, id uint64, n int64, s1, s2, s3, s4 string) *Request {
	bit := func(i uint) bool { return sel&(1<<i) != 0 }
	r := &Request{V: v, ID: id, Op: Op(s1)}
	if bit(0) {
		r.Connect = &ConnectRequest{Network: s2, Address: s3, TimeoutMS: n}
	}
	if bit(1) {
		r.Hello = &HelloRequest{App: s4}
	}
	if bit(2) {
		r.Bind = &BindRequest{Network: s2, Address: s3, TokenOnly: bit(3)}
		if bit(4) {
			r.Bind.Share = s4
		}
		if bit(5) {
			r.Bind.Name = s1
		}
		if bit(6) {
			o := &SocketOptions{}
			k := int(n)
			b := bit(7)
			bools := []**bool{&o.ReuseAddr, &o.ReusePort, &o.V6Only, &o.FreeBind, &o.Transparent, &o.PMTUDiscOff, &o.Listen}
			for i, p := range bools {
				if bit(uint(8 + i)) {
					*p = &b
				}
			}
			ints := []**int{&o.RcvBuf, &o.SndBuf, &o.FastOpen, &o.DeferAccept, &o.Backlog}
			for i, p := range ints {
				if bit(uint(15 + i)) {
					*p = &k
				}
			}
			if bit(20) {
				o.BindToDevice = &s4
			}
			r.Bind.Options = o
		}
	}
	if bit(21) {
		r.Token = &TokenRequest{Token: s4}
	}
	if bit(22) {
		r.Status = &StatusRequest{}
	}
	if bit(23) {
		r.Reclaim = &ReclaimRequest{Token: s4, Secret: s3}
	}
	return r
}

// FuzzAppendReply builds replies from the fuzzer's values; sel chooses
// which results are set, and reps repeats the error message (to cross
// MaxErrorMessage).
func FuzzAppendReply(f *testing.F) {
	f.Add(uint32(0), 0, uint64(0), 0, int64(0), uint16(0), "", "", "", "")
	f.Add(uint32(1), 1, uint64(3), 111, int64(0), uint16(1), "connect_failed", "connection refused", "", "")
	f.Add(uint32(0xffffffff), -1, uint64(1<<64-1), -1, int64(-1<<63), uint16(400), "x", "ab\xe2\x82", "<&>", "\u2029")
	f.Add(uint32(0x3e), 1, uint64(7), 1, int64(30000), uint16(0), "tok", "127.0.0.1:1", "tcp", "")
	f.Add(uint32(1<<5|1<<2|1<<12), 1, uint64(2), 1, int64(0), uint16(0), "tok", "127.0.0.1:53", "udp", "fedcba9876543210fedcba9876543210")
	f.Add(uint32(1<<11), 1, uint64(7), 2134, int64(182), uint16(0), "", "", "", "v1.4.0 <dev>")
	f.Fuzz(func(t *testing.T, sel uint32, v int, id uint64, k int, n int64, reps uint16, s1, s2, s3, s4 string) {
		bit := func(i uint) bool { return sel&(1<<i) != 0 }
		r := &Reply{V: v, ID: id, OK: bit(1)}
		if bit(2) {
			r.FDs = k
		}
		if bit(0) {
			msg := s2
			if reps > 1 && len(s2) > 0 && len(s2)*int(reps) <= 4*MaxErrorMessage {
				msg = strings.Repeat(s2, int(reps))
			}
			r.Error = &Error{Code: Code(s1), Message: msg, Errno: k, Unseen: bit(3)}
		}
		if bit(4) {
			r.Connect = &ConnectResult{Local: s2, Remote: s3}
		}
		if bit(5) {
			r.Bind = &BindResult{Token: s1, Local: s2, Network: s3, ExpiresMS: n, Shared: bit(6)}
			if bit(12) {
				r.Bind.Reclaim = s4
			}
		}
		if bit(11) {
			r.Upgrade = &UpgradeResult{OldPID: k, NewPID: v, Version: s4, TookMS: n}
		}
		if bit(7) {
			r.Status = &StatusResult{Truncated: bit(8), Total: k}
			if bit(9) {
				r.Status.Sockets = []SocketStatus{{Network: s3, Local: s2, Refs: k, AgeMS: n, Holders: []HolderStatus{{Share: s4, Name: s1, App: s2, Token: s3, Pending: bit(10)}}}}
			}
		}
		agreeEncode(t, r)
		if b, err := AppendReply(nil, r); err == nil {
			agreeReply(t, b)
		}
	})
}
