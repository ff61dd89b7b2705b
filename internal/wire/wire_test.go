package wire_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// validConnect is a well-formed connect request with ID 9.
const validConnect = `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"example.net:443"}}`

func wantRequest(id uint64, network, address string, timeoutMS int64) *wire.Request {
	return &wire.Request{V: wire.Version, ID: id, Op: wire.OpConnect, Connect: &wire.ConnectRequest{
		Network: network, Address: address, TimeoutMS: timeoutMS,
	}}
}

// withAddress returns a connect request with ID 9 whose address is raw,
// inserted without escaping.
func withAddress(raw string) string {
	return `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"` + raw + `"}}`
}

// padTo returns a valid connect request of exactly n bytes, padding its
// address.
func padTo(tb testing.TB, n int) []byte {
	tb.Helper()
	pad := n - len(withAddress(""))
	if pad < 0 {
		tb.Fatalf("cannot pad a %d-byte request to %d bytes", len(withAddress("")), n)
	}
	return []byte(withAddress(strings.Repeat("a", pad)))
}

func wireError(tb testing.TB, err error) *wire.Error {
	tb.Helper()
	var we *wire.Error
	if !errors.As(err, &we) {
		tb.Fatalf("error %v (%T) is not a *wire.Error", err, err)
	}
	return we
}

func TestRequestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		req  *wire.Request
	}{
		{"minimal", wantRequest(1, "tcp", "example.net:443", 0)},
		{"zero ID", wantRequest(0, "tcp", "192.0.2.1:80", 0)},
		{"max ID", wantRequest(1<<64-1, "udp", "192.0.2.1:53", 0)},
		{"timeout", wantRequest(7, "tcp4", "192.0.2.1:80", 1500)},
		{"max timeout", wantRequest(7, "tcp6", "[2001:db8::1]:443", 1<<63-1)},
		{"udp6", wantRequest(8, "udp6", "[fe80::1%eth0]:53", 0)},
		{"non-ASCII", wantRequest(9, "tcp", "bücher.example:80", 0)},
		{"characters JSON escapes", wantRequest(10, "tcp", "\"\\<>&\u2028\u2029\t\x00:1", 0)},
		{"upgrade", &wire.Request{V: wire.Version, ID: 11, Op: wire.OpUpgrade}},
		{"reclaim", &wire.Request{V: wire.Version, ID: 12, Op: wire.OpReclaim, Reclaim: &wire.ReclaimRequest{
			Token: "0123456789abcdef0123456789abcdef", Secret: "fedcba9876543210fedcba9876543210"}}},
		{"reclaim with escapes", &wire.Request{V: wire.Version, ID: 13, Op: wire.OpReclaim, Reclaim: &wire.ReclaimRequest{
			Token: "<tok\"en>", Secret: "s\u2028é"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := wire.Encode(tt.req)
			if err != nil {
				t.Fatalf("Encode(%+v): %v", tt.req, err)
			}
			got, err := wire.DecodeRequest(b)
			if err != nil {
				t.Fatalf("DecodeRequest(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.req) {
				t.Errorf("DecodeRequest(Encode(req)) = %+v %+v, want %+v %+v", got, got.Connect, tt.req, tt.req.Connect)
			}
		})
	}
}

func TestReplyRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rep  *wire.Reply
	}{
		{"connected", &wire.Reply{V: wire.Version, ID: 3, FDs: 1, Connect: &wire.ConnectResult{Local: "192.0.2.2:40000", Remote: "192.0.2.1:443"}}},
		{"connected IPv6", &wire.Reply{V: wire.Version, ID: 1<<64 - 1, FDs: 1, Connect: &wire.ConnectResult{Local: "[2001:db8::2]:40000", Remote: "[2001:db8::1]:443"}}},
		{"most fds", &wire.Reply{V: wire.Version, ID: 4, FDs: wire.MaxFDs}},
		{"error with errno", &wire.Reply{V: wire.Version, ID: 5, Error: &wire.Error{Code: wire.CodeConnectFailed, Message: "connection refused", Errno: 111}}},
		{"error without ID", &wire.Reply{V: wire.Version, Error: wire.Errorf(wire.CodeInvalidRequest, "bad %s", "thing")}},
		{"bound with reclaim secret", &wire.Reply{V: wire.Version, ID: 7, FDs: 1, Bind: &wire.BindResult{
			Token: "0123456789abcdef0123456789abcdef", Local: "127.0.0.1:53", Network: "udp", Shared: true,
			Reclaim: "fedcba9876543210fedcba9876543210"}}},
		{"token only, no reclaim secret", &wire.Reply{V: wire.Version, ID: 8, Bind: &wire.BindResult{
			Token: "0123456789abcdef0123456789abcdef", Local: "[::]:53", Network: "tcp", ExpiresMS: 30000}}},
		{"reclaimed, no fd", &wire.Reply{V: wire.Version, ID: 9, Bind: &wire.BindResult{
			Token: "0123456789abcdef0123456789abcdef", Local: "127.0.0.1:53", Network: "udp",
			Reclaim: "fedcba9876543210fedcba9876543210"}}},
		{"upgraded", &wire.Reply{V: wire.Version, ID: 10, Upgrade: &wire.UpgradeResult{
			OldPID: 2134, NewPID: 2201, Version: "1.4.0 (go1.26.0)", TookMS: 182}}},
		{"upgraded, zero values", &wire.Reply{V: wire.Version, ID: 11, Upgrade: &wire.UpgradeResult{}}},
	}
	for _, code := range []wire.Code{
		wire.CodeInvalidRequest, wire.CodeUnsupportedVersion, wire.CodeDenied, wire.CodeResolveFailed,
		wire.CodeConnectFailed, wire.CodeTimeout, wire.CodeLimitExceeded, wire.CodeInternal,
	} {
		tests = append(tests, struct {
			name string
			rep  *wire.Reply
		}{"code " + string(code), &wire.Reply{V: wire.Version, ID: 6, Error: &wire.Error{Code: code, Message: "m"}}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := wire.Encode(tt.rep)
			if err != nil {
				t.Fatalf("Encode(%+v): %v", tt.rep, err)
			}
			got, err := wire.DecodeReply(b)
			if err != nil {
				t.Fatalf("DecodeReply(%s): %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.rep) {
				t.Errorf("DecodeReply(Encode(rep)) = %+v, want %+v", got, tt.rep)
			}
		})
	}
}

// The encoding is the protocol: clients in other languages are written from
// docs/protocol.md, so field names and omitted zero fields must not drift.
func TestEncodeWireFormat(t *testing.T) {
	tests := []struct {
		name string
		msg  any
		want string
	}{
		{"request", wantRequest(7, "tcp", "example.net:443", 0),
			`{"v":1,"id":7,"op":"connect","connect":{"network":"tcp","address":"example.net:443"}}`},
		{"request with timeout", wantRequest(7, "udp", "192.0.2.1:53", 250),
			`{"v":1,"id":7,"op":"connect","connect":{"network":"udp","address":"192.0.2.1:53","timeout_ms":250}}`},
		{"connected reply", &wire.Reply{V: 1, ID: 7, FDs: 1, Connect: &wire.ConnectResult{Local: "192.0.2.2:1", Remote: "192.0.2.1:2"}},
			`{"v":1,"id":7,"fds":1,"connect":{"local":"192.0.2.2:1","remote":"192.0.2.1:2"}}`},
		{"error reply", &wire.Reply{V: 1, ID: 7, Error: &wire.Error{Code: wire.CodeDenied, Message: "no"}},
			`{"v":1,"id":7,"error":{"code":"denied","message":"no"}}`},
		{"error reply with errno", &wire.Reply{V: 1, ID: 7, Error: &wire.Error{Code: wire.CodeConnectFailed, Message: "refused", Errno: 111}},
			`{"v":1,"id":7,"error":{"code":"connect_failed","message":"refused","errno":111}}`},
		{"upgrade request", &wire.Request{V: 1, ID: 7, Op: wire.OpUpgrade},
			`{"v":1,"id":7,"op":"upgrade"}`},
		{"upgrade reply", &wire.Reply{V: 1, ID: 7, Upgrade: &wire.UpgradeResult{OldPID: 2134, NewPID: 2201, Version: "1.4.0", TookMS: 182}},
			`{"v":1,"id":7,"upgrade":{"old_pid":2134,"new_pid":2201,"version":"1.4.0","took_ms":182}}`},
		{"upgrade reply, zero values kept", &wire.Reply{V: 1, ID: 7, Upgrade: &wire.UpgradeResult{}},
			`{"v":1,"id":7,"upgrade":{"old_pid":0,"new_pid":0,"version":"","took_ms":0}}`},
		{"reclaim request", &wire.Request{V: 1, ID: 8, Op: wire.OpReclaim, Reclaim: &wire.ReclaimRequest{Token: "0123456789abcdef0123456789abcdef", Secret: "fedcba9876543210fedcba9876543210"}},
			`{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"0123456789abcdef0123456789abcdef","secret":"fedcba9876543210fedcba9876543210"}}`},
		{"bind reply with reclaim secret", &wire.Reply{V: 1, ID: 2, FDs: 1, Bind: &wire.BindResult{Token: "26af6c2467817a5b36384a4486525a5a", Local: "127.0.0.1:5353", Network: "udp", Reclaim: "9b1e0c6d2f4a8b7c3e5d1f0a2b4c6d8e"}},
			`{"v":1,"id":2,"fds":1,"bind":{"token":"26af6c2467817a5b36384a4486525a5a","local":"127.0.0.1:5353","network":"udp","reclaim":"9b1e0c6d2f4a8b7c3e5d1f0a2b4c6d8e"}}`},
		{"reclaim reply", &wire.Reply{V: 1, ID: 3, Bind: &wire.BindResult{Token: "26af6c2467817a5b36384a4486525a5a", Local: "127.0.0.1:5353", Network: "udp", Reclaim: "9b1e0c6d2f4a8b7c3e5d1f0a2b4c6d8e"}},
			`{"v":1,"id":3,"bind":{"token":"26af6c2467817a5b36384a4486525a5a","local":"127.0.0.1:5353","network":"udp","reclaim":"9b1e0c6d2f4a8b7c3e5d1f0a2b4c6d8e"}}`},
		{"bind reply without reclaim secret", &wire.Reply{V: 1, ID: 3, Bind: &wire.BindResult{Token: "t", Local: "l", Network: "tcp", ExpiresMS: 30000}},
			`{"v":1,"id":3,"bind":{"token":"t","local":"l","network":"tcp","expires_ms":30000}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := wire.Encode(tt.msg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if string(b) != tt.want {
				t.Errorf("Encode = %s, want %s", b, tt.want)
			}
		})
	}
}

func TestDecodeRequestAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *wire.Request
	}{
		{"canonical", validConnect, wantRequest(9, "tcp", "example.net:443", 0)},
		{"fields reordered", `{"connect":{"address":"example.net:443","network":"tcp"},"op":"connect","id":9,"v":1}`,
			wantRequest(9, "tcp", "example.net:443", 0)},
		{"JSON whitespace around and inside", " \t\r\n{ \"v\" : 1 ,\n\"id\":9,\"op\":\"connect\",\"connect\":{\"network\":\"tcp\",\"address\":\"example.net:443\"}}\r\n\t ",
			wantRequest(9, "tcp", "example.net:443", 0)},
		{"explicit zero timeout", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":0}}`,
			wantRequest(9, "tcp", "a:1", 0)},
		{"timeout", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":30000}}`,
			wantRequest(9, "tcp", "a:1", 30000)},
		{"ID omitted", `{"v":1,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`,
			wantRequest(0, "tcp", "a:1", 0)},
		{"max ID", `{"v":1,"id":18446744073709551615,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`,
			wantRequest(1<<64-1, "tcp", "a:1", 0)},
		{"escaped string", `{"v":1,"id":9,"op":"conn\u0065ct","connect":{"network":"tcp","address":"b\u00fccher.example:80"}}`,
			wantRequest(9, "tcp", "bücher.example:80", 0)},
		{"upgrade", `{"v":1,"id":9,"op":"upgrade"}`, &wire.Request{V: 1, ID: 9, Op: wire.OpUpgrade}},
		{"upgrade with another op's parameters", `{"v":1,"id":9,"op":"upgrade","status":{}}`,
			&wire.Request{V: 1, ID: 9, Op: wire.OpUpgrade, Status: &wire.StatusRequest{}}},
		{"reclaim", `{"v":1,"id":9,"op":"reclaim","reclaim":{"token":"0123456789abcdef0123456789abcdef","secret":"fedcba9876543210fedcba9876543210"}}`,
			&wire.Request{V: 1, ID: 9, Op: wire.OpReclaim, Reclaim: &wire.ReclaimRequest{Token: "0123456789abcdef0123456789abcdef", Secret: "fedcba9876543210fedcba9876543210"}}},
		{"reclaim escaped", `{"v":1,"id":9,"op":"r\u0065claim","reclaim":{"secret":"\u0066edc","token":"01\u00323"}}`,
			&wire.Request{V: 1, ID: 9, Op: wire.OpReclaim, Reclaim: &wire.ReclaimRequest{Token: "0123", Secret: "fedc"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wire.DecodeRequest([]byte(tt.in))
			if err != nil {
				t.Fatalf("DecodeRequest(%q) error = %v, want nil", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeRequest(%q) = %+v %+v, want %+v %+v", tt.in, got, got.Connect, tt.want, tt.want.Connect)
			}
		})
	}
}

func TestDecodeRequestMaxMessageSize(t *testing.T) {
	if got, err := wire.DecodeRequest(padTo(t, wire.MaxMessageSize)); err != nil || got.ID != 9 {
		t.Errorf("DecodeRequest(%d bytes) = %+v, %v; want ID 9, nil", wire.MaxMessageSize, got, err)
	}
	got, err := wire.DecodeRequest(padTo(t, wire.MaxMessageSize+1))
	if err == nil {
		t.Fatalf("DecodeRequest(%d bytes) error = nil, want %s", wire.MaxMessageSize+1, wire.CodeInvalidRequest)
	}
	if we := wireError(t, err); we.Code != wire.CodeInvalidRequest {
		t.Errorf("DecodeRequest(%d bytes) code = %s, want %s", wire.MaxMessageSize+1, we.Code, wire.CodeInvalidRequest)
	}
	// An oversize message is never parsed, not even for its ID.
	if got == nil || got.ID != 0 {
		t.Errorf("DecodeRequest(%d bytes) = %+v, want a request with ID 0", wire.MaxMessageSize+1, got)
	}
}

func TestDecodeRequestRejects(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantCode wire.Code
		wantID   uint64
	}{
		// Not one JSON object.
		{"empty", ``, wire.CodeInvalidRequest, 0},
		{"whitespace only", " \n\t", wire.CodeInvalidRequest, 0},
		{"null", `null`, wire.CodeInvalidRequest, 0},
		{"array", `[1]`, wire.CodeInvalidRequest, 0},
		{"string", `"connect"`, wire.CodeInvalidRequest, 0},
		{"number", `1`, wire.CodeInvalidRequest, 0},
		{"truncated", validConnect[:len(validConnect)-1], wire.CodeInvalidRequest, 0},
		{"trailing garbage", validConnect + `x`, wire.CodeInvalidRequest, 0},
		{"trailing comma", validConnect + `,`, wire.CodeInvalidRequest, 0},
		{"two objects", validConnect + validConnect, wire.CodeInvalidRequest, 0},
		{"two objects with space", validConnect + " " + validConnect, wire.CodeInvalidRequest, 0},
		{"trailing NUL", validConnect + "\x00", wire.CodeInvalidRequest, 0},
		// Only JSON's four whitespace characters may follow the object.
		{"trailing vertical tab", validConnect + "\v", wire.CodeInvalidRequest, 0},
		{"trailing form feed", validConnect + "\f", wire.CodeInvalidRequest, 0},
		{"trailing NBSP", validConnect + "\u00a0", wire.CodeInvalidRequest, 0},
		{"trailing NEL", validConnect + "\u0085", wire.CodeInvalidRequest, 0},
		{"leading BOM", "\ufeff" + validConnect, wire.CodeInvalidRequest, 0},
		{"comment", `/* hi */` + validConnect, wire.CodeInvalidRequest, 0},

		// Invalid UTF-8, even where a lenient reader could recover the ID.
		{"invalid UTF-8 in a string", withAddress("\xff:80"), wire.CodeInvalidRequest, 9},
		{"overlong encoding", withAddress("\xc0\xaf:80"), wire.CodeInvalidRequest, 9},
		{"encoded surrogate", withAddress("\xed\xa0\x80:80"), wire.CodeInvalidRequest, 9},
		{"truncated sequence", withAddress("\xe2\x82:80"), wire.CodeInvalidRequest, 9},

		// Unknown fields: the ID is still recovered.
		{"unknown top-level field", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"},"fds":1}`, wire.CodeInvalidRequest, 9},
		{"unknown connect field", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","port":1}}`, wire.CodeInvalidRequest, 9},
		// A newer client's unknown fields: the version is the problem.
		{"unknown field with wrong version", `{"v":2,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"},"x":1}`, wire.CodeUnsupportedVersion, 9},

		// Wrong types: the ID is recovered unless it is the ID that is wrong.
		{"version as string", `{"v":"1","id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 9},
		{"version as float", `{"v":1.5,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 9},
		{"op as number", `{"v":1,"id":9,"op":1,"connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 9},
		{"connect as array", `{"v":1,"id":9,"op":"connect","connect":[]}`, wire.CodeInvalidRequest, 9},
		{"connect as string", `{"v":1,"id":9,"op":"connect","connect":"example.net:443"}`, wire.CodeInvalidRequest, 9},
		{"address as number", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":443}}`, wire.CodeInvalidRequest, 9},
		{"timeout as string", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":"5"}}`, wire.CodeInvalidRequest, 9},
		{"timeout as float", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":1.5}}`, wire.CodeInvalidRequest, 9},
		{"timeout overflows", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":9223372036854775808}}`, wire.CodeInvalidRequest, 9},
		{"ID as string", `{"v":1,"id":"9","op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 0},
		{"negative ID", `{"v":1,"id":-9,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 0},
		{"fractional ID", `{"v":1,"id":9.5,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 0},
		{"ID overflows", `{"v":1,"id":18446744073709551616,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 0},

		// Versions other than 1, with the ID echoed.
		{"version 2", `{"v":2,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeUnsupportedVersion, 9},
		{"version 0", `{"v":0,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeUnsupportedVersion, 9},
		{"negative version", `{"v":-1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeUnsupportedVersion, 9},
		{"version missing", `{"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeUnsupportedVersion, 9},
		{"future version with unknown op", `{"v":2,"id":9,"op":"bind"}`, wire.CodeUnsupportedVersion, 9},

		// Ops and their parameters.
		{"unknown op", `{"v":1,"id":9,"op":"bind","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 9},
		{"op in upper case", `{"v":1,"id":9,"op":"CONNECT","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 9},
		{"op missing", `{"v":1,"id":9,"connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 9},
		{"op empty", `{"v":1,"id":9,"op":"","connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 9},
		{"op null", `{"v":1,"id":9,"op":null,"connect":{"network":"tcp","address":"a:1"}}`, wire.CodeInvalidRequest, 9},
		{"connect missing", `{"v":1,"id":9,"op":"connect"}`, wire.CodeInvalidRequest, 9},
		{"connect null", `{"v":1,"id":9,"op":"connect","connect":null}`, wire.CodeInvalidRequest, 9},
		{"negative timeout", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":-1}}`, wire.CodeInvalidRequest, 9},
		{"most negative timeout", `{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":-9223372036854775808}}`, wire.CodeInvalidRequest, 9},
		{"upgrade with an object", `{"v":1,"id":9,"op":"upgrade","upgrade":{}}`, wire.CodeInvalidRequest, 9},
		{"upgrade in upper case", `{"v":1,"id":9,"op":"UPGRADE"}`, wire.CodeInvalidRequest, 9},
		{"upgrade wrong version", `{"v":2,"id":9,"op":"upgrade"}`, wire.CodeUnsupportedVersion, 9},
		{"reclaim missing", `{"v":1,"id":9,"op":"reclaim"}`, wire.CodeInvalidRequest, 9},
		{"reclaim null", `{"v":1,"id":9,"op":"reclaim","reclaim":null}`, wire.CodeInvalidRequest, 9},
		{"reclaim with a token object", `{"v":1,"id":9,"op":"reclaim","token":{"token":"0123456789abcdef0123456789abcdef"}}`, wire.CodeInvalidRequest, 9},
		{"reclaim secret missing", `{"v":1,"id":9,"op":"reclaim","reclaim":{"token":"0123456789abcdef0123456789abcdef"}}`, wire.CodeInvalidRequest, 9},
		{"reclaim token empty", `{"v":1,"id":9,"op":"reclaim","reclaim":{"token":"","secret":"fedcba9876543210fedcba9876543210"}}`, wire.CodeInvalidRequest, 9},
		{"reclaim secret as number", `{"v":1,"id":9,"op":"reclaim","reclaim":{"token":"t","secret":123}}`, wire.CodeInvalidRequest, 9},
		{"reclaim unknown member", `{"v":1,"id":9,"op":"reclaim","reclaim":{"token":"t","secret":"s","uid":0}}`, wire.CodeInvalidRequest, 9},
		{"reclaim duplicate secret", `{"v":1,"id":9,"op":"reclaim","reclaim":{"token":"t","secret":"s","secret":"s"}}`, wire.CodeInvalidRequest, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wire.DecodeRequest([]byte(tt.in))
			if err == nil {
				t.Fatalf("DecodeRequest(%q) = %+v, nil; want a %s error", tt.in, got, tt.wantCode)
			}
			we := wireError(t, err)
			if we.Code != tt.wantCode {
				t.Errorf("DecodeRequest(%q) code = %s (%v), want %s", tt.in, we.Code, we, tt.wantCode)
			}
			if we.Message == "" {
				t.Errorf("DecodeRequest(%q) error has no message", tt.in)
			}
			if got == nil {
				t.Fatalf("DecodeRequest(%q) request = nil, want one carrying ID %d", tt.in, tt.wantID)
			}
			if got.ID != tt.wantID {
				t.Errorf("DecodeRequest(%q) ID = %d, want %d", tt.in, got.ID, tt.wantID)
			}
		})
	}
}

// A version mismatch returns the request as read, not only its ID, so that
// the daemon can log what a newer client asked for.
func TestDecodeRequestWrongVersionKeepsRequest(t *testing.T) {
	in := `{"v":2,"id":77,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`
	got, err := wire.DecodeRequest([]byte(in))
	if we := wireError(t, err); we.Code != wire.CodeUnsupportedVersion {
		t.Fatalf("code = %s, want %s", we.Code, wire.CodeUnsupportedVersion)
	}
	want := wantRequest(77, "tcp", "a:1", 0)
	want.V = 2
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeRequest(%s) = %+v, want %+v", in, got, want)
	}
}

func TestDecodeReply(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *wire.Reply // nil: an error is wanted
		wantRep bool        // with an error, whether the reply read so far is returned
	}{
		{"connected", `{"v":1,"id":3,"fds":1,"connect":{"local":"192.0.2.2:1","remote":"192.0.2.1:2"}}`,
			&wire.Reply{V: 1, ID: 3, FDs: 1, Connect: &wire.ConnectResult{Local: "192.0.2.2:1", Remote: "192.0.2.1:2"}}, false},
		{"error", `{"v":1,"id":3,"error":{"code":"denied","message":"no","errno":13}}`,
			&wire.Reply{V: 1, ID: 3, Error: &wire.Error{Code: wire.CodeDenied, Message: "no", Errno: 13}}, false},
		{"unknown code passes through", `{"v":1,"id":3,"error":{"code":"new_code","message":"m"}}`,
			&wire.Reply{V: 1, ID: 3, Error: &wire.Error{Code: "new_code", Message: "m"}}, false},
		{"zero fds", `{"v":1,"id":3,"fds":0}`, &wire.Reply{V: 1, ID: 3}, false},
		{"max fds", `{"v":1,"id":3,"fds":16}`, &wire.Reply{V: 1, ID: 3, FDs: 16}, false},
		{"trailing JSON whitespace", "{\"v\":1,\"id\":3} \r\n\t", &wire.Reply{V: 1, ID: 3}, false},
		{"upgraded", `{"v":1,"id":3,"upgrade":{"old_pid":2134,"new_pid":2201,"version":"1.4.0","took_ms":182}}`,
			&wire.Reply{V: 1, ID: 3, Upgrade: &wire.UpgradeResult{OldPID: 2134, NewPID: 2201, Version: "1.4.0", TookMS: 182}}, false},
		{"upgraded, escaped version", `{"v":1,"id":3,"upgrade":{"old_pid":1,"new_pid":2,"version":"1.4.0 \u003cdev\u003e","took_ms":0}}`,
			&wire.Reply{V: 1, ID: 3, Upgrade: &wire.UpgradeResult{OldPID: 1, NewPID: 2, Version: "1.4.0 <dev>"}}, false},
		{"reclaimed", `{"v":1,"id":3,"bind":{"token":"t","local":"127.0.0.1:53","network":"udp","reclaim":"fedcba9876543210fedcba9876543210"}}`,
			&wire.Reply{V: 1, ID: 3, Bind: &wire.BindResult{Token: "t", Local: "127.0.0.1:53", Network: "udp", Reclaim: "fedcba9876543210fedcba9876543210"}}, false},

		{"too many fds", `{"v":1,"id":3,"fds":17}`, nil, true},
		{"negative fds", `{"v":1,"id":3,"fds":-1}`, nil, true},
		{"wrong version", `{"v":2,"id":3}`, nil, true},
		{"version missing", `{"id":3}`, nil, true},
		{"empty", ``, nil, false},
		{"null", `null`, nil, false},
		{"unknown field", `{"v":1,"id":3,"extra":true}`, nil, false},
		{"unknown error field", `{"v":1,"id":3,"error":{"code":"denied","message":"no","hint":"x"}}`, nil, false},
		{"unknown result field", `{"v":1,"id":3,"connect":{"local":"a","remote":"b","fd":3}}`, nil, false},
		{"unknown upgrade field", `{"v":1,"id":3,"upgrade":{"old_pid":1,"new_pid":2,"version":"v","took_ms":3,"pid":4}}`, nil, false},
		{"upgrade pid as string", `{"v":1,"id":3,"upgrade":{"old_pid":"1"}}`, nil, false},
		{"reclaim secret as number", `{"v":1,"id":3,"bind":{"token":"t","reclaim":1}}`, nil, false},
		{"wrong type", `{"v":1,"id":3,"fds":"1"}`, nil, false},
		{"trailing garbage", `{"v":1,"id":3}x`, nil, false},
		{"trailing NBSP", "{\"v\":1,\"id\":3}\u00a0", nil, false},
		{"two objects", `{"v":1,"id":3}{"v":1,"id":4}`, nil, false},
		{"invalid UTF-8", "{\"v\":1,\"id\":3,\"error\":{\"code\":\"denied\",\"message\":\"\xff\"}}", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wire.DecodeReply([]byte(tt.in))
			if tt.want != nil {
				if err != nil || !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("DecodeReply(%q) = %+v, %v; want %+v, nil", tt.in, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("DecodeReply(%q) = %+v, nil; want an error", tt.in, got)
			}
			if (got != nil) != tt.wantRep {
				t.Errorf("DecodeReply(%q) reply = %+v, want a reply: %v", tt.in, got, tt.wantRep)
			}
		})
	}
}

func TestDecodeReplyTooLarge(t *testing.T) {
	b := []byte(`{"v":1,"id":3}` + strings.Repeat(" ", wire.MaxMessageSize))
	if got, err := wire.DecodeReply(b); !errors.Is(err, wire.ErrTooLarge) {
		t.Errorf("DecodeReply(%d bytes) = %+v, %v; want %v", len(b), got, err, wire.ErrTooLarge)
	}
	b = b[:wire.MaxMessageSize]
	if got, err := wire.DecodeReply(b); err != nil || got.ID != 3 {
		t.Errorf("DecodeReply(%d bytes) = %+v, %v; want ID 3, nil", len(b), got, err)
	}
}

func TestEncodeTooLarge(t *testing.T) {
	// An error reply always fits: its message is cut, the original kept.
	rep := &wire.Reply{V: 1, ID: 4, Error: &wire.Error{Code: wire.CodeInternal, Message: strings.Repeat("x", wire.MaxMessageSize)}}
	b, err := wire.Encode(rep)
	if err != nil || len(b) > wire.MaxErrorMessage+200 {
		t.Errorf("Encode(reply with a huge error) = %d bytes, %v; want a cut message", len(b), err)
	} else if got, err := wire.DecodeReply(b); err != nil || got.ID != 4 || got.Error.Code != wire.CodeInternal {
		t.Errorf("cut reply decodes to %+v, %v", got, err)
	}
	if len(rep.Error.Message) != wire.MaxMessageSize {
		t.Errorf("Encode changed the caller's reply")
	}
	// Escaping counts: 11k '<' take 66k once encoded as \u003c.
	req := wantRequest(1, "tcp", strings.Repeat("<", 11<<10), 0)
	if b, err := wire.Encode(req); !errors.Is(err, wire.ErrTooLarge) || b != nil {
		t.Errorf("Encode(escaped request) = %d bytes, %v; want nil, %v", len(b), err, wire.ErrTooLarge)
	}
	// Exactly MaxMessageSize is allowed: padTo encodes at the limit.
	if got := len(padTo(t, wire.MaxMessageSize)); got != wire.MaxMessageSize {
		t.Errorf("padded request is %d bytes, want %d", got, wire.MaxMessageSize)
	}
}

func TestEncodeUnsupportedValue(t *testing.T) {
	_, err := wire.Encode(make(chan int))
	if err == nil || errors.Is(err, wire.ErrTooLarge) {
		t.Errorf("Encode(chan) error = %v, want a marshalling error", err)
	}
}

func TestError(t *testing.T) {
	e := wire.Errorf(wire.CodeDenied, "uid %d may not connect to %s", 1000, "192.0.2.1:443")
	want := &wire.Error{Code: wire.CodeDenied, Message: "uid 1000 may not connect to 192.0.2.1:443"}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("Errorf = %+v, want %+v", e, want)
	}
	if got, want := e.Error(), "denied: uid 1000 may not connect to 192.0.2.1:443"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = e
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeDenied {
		t.Errorf("errors.As(%v) = %v, want code %s", err, we, wire.CodeDenied)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		validConnect,
		`{"v":1,"id":18446744073709551615,"op":"connect","connect":{"network":"udp6","address":"[::1]:53","timeout_ms":9223372036854775807}}`,
		`{"v":2,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1"}}`,
		`{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"a:1","timeout_ms":-1}}`,
		`{"v":1,"id":9,"op":"bind"}`,
		`{"v":1,"id":9,"op":"connect","connect":null}`,
		`{"v":"1","id":9}`,
		`{"V":1,"ID":9,"OP":"connect","CONNECT":{"NETWORK":"tcp","ADDRESS":"a:1"}}`,
		`{"v":1,"id":9,"op":"connect","connect":{"network":"tcp","address":"\u00fc\ud83d\ude00<>&"}}`,
		`{"v":1,"id":7,"op":"upgrade"}`,
		`{"v":1,"id":7,"op":"upgrade","upgrade":{}}`,
		`{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"0123456789abcdef0123456789abcdef","secret":"fedcba9876543210fedcba9876543210"}}`,
		`{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"0123456789abcdef0123456789abcdef"}}`,
		`{"v":1,"id":8,"op":"reclaim","reclaim":{"token":"\u0030","secret":null,"SECRET":"x"}}`,
		validConnect + "\u00a0",
		validConnect + validConnect,
		"{\"v\":1,\"id\":9,\"address\":\"\xff\"}",
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := wire.DecodeRequest(b)
		if req == nil {
			t.Fatalf("DecodeRequest(%q) request = nil, err = %v; want a request always", b, err)
		}
		if err != nil {
			we := wireError(t, err)
			if we.Code != wire.CodeInvalidRequest && we.Code != wire.CodeUnsupportedVersion {
				t.Fatalf("DecodeRequest(%q) code = %s, want %s or %s", b, we.Code, wire.CodeInvalidRequest, wire.CodeUnsupportedVersion)
			}
			if len(b) > wire.MaxMessageSize && (req.ID != 0 || we.Code != wire.CodeInvalidRequest) {
				t.Fatalf("DecodeRequest(%d bytes) = ID %d, %s; want ID 0, %s", len(b), req.ID, we.Code, wire.CodeInvalidRequest)
			}
			return
		}
		if req.V != wire.Version || req.Op == wire.OpConnect && (req.Connect == nil || req.Connect.TimeoutMS < 0) {
			t.Fatalf("DecodeRequest(%q) accepted %+v %+v", b, req, req.Connect)
		}
		if req.Op == wire.OpReclaim && (req.Reclaim == nil || req.Reclaim.Token == "" || req.Reclaim.Secret == "") {
			t.Fatalf("DecodeRequest(%q) accepted %+v %+v", b, req, req.Reclaim)
		}
		enc, err := wire.Encode(req)
		if errors.Is(err, wire.ErrTooLarge) {
			return // escaping can grow a message near the limit
		}
		if err != nil {
			t.Fatalf("Encode(%+v): %v", req, err)
		}
		again, err := wire.DecodeRequest(enc)
		if err != nil {
			t.Fatalf("DecodeRequest(%q) = %+v, but its encoding %q does not decode: %v", b, req, enc, err)
		}
		if !reflect.DeepEqual(again, req) {
			t.Fatalf("DecodeRequest(%q) = %+v %+v, but after a round trip %+v %+v", b, req, req.Connect, again, again.Connect)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":3,"fds":1,"connect":{"local":"192.0.2.2:1","remote":"192.0.2.1:2"}}`,
		`{"v":1,"id":3,"error":{"code":"denied","message":"no","errno":13}}`,
		`{"v":1,"id":3,"fds":17}`,
		`{"v":1,"id":3,"fds":-1}`,
		`{"v":1,"id":7,"upgrade":{"old_pid":2134,"new_pid":2201,"version":"1.4.0","took_ms":182}}`,
		`{"v":1,"id":2,"fds":1,"bind":{"token":"t","local":"127.0.0.1:53","network":"udp","reclaim":"fedcba9876543210fedcba9876543210"}}`,
		`{"v":1,"id":3,"bind":{"token":"t","local":"127.0.0.1:53","network":"udp","reclaim":"s"},"upgrade":null}`,
		`{"v":2,"id":3}`,
		`{"v":1,"id":3}{"v":1,"id":4}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := wire.DecodeReply(b)
		if err != nil {
			return
		}
		if rep.V != wire.Version || rep.FDs < 0 || rep.FDs > wire.MaxFDs {
			t.Fatalf("DecodeReply(%q) accepted %+v", b, rep)
		}
		enc, err := wire.Encode(rep)
		if errors.Is(err, wire.ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("Encode(%+v): %v", rep, err)
		}
		again, err := wire.DecodeReply(enc)
		if err != nil || !reflect.DeepEqual(again, rep) {
			t.Fatalf("DecodeReply(%q) = %+v, but after a round trip %+v, %v", b, rep, again, err)
		}
	})
}

func BenchmarkDecodeRequest(b *testing.B) {
	msg := []byte(`{"v":1,"id":123456,"op":"connect","connect":{"network":"tcp","address":"api.example.net:443","timeout_ms":5000}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := wire.DecodeRequest(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeReply(b *testing.B) {
	rep := &wire.Reply{V: wire.Version, ID: 123456, FDs: 1, Connect: &wire.ConnectResult{Local: "192.0.2.2:40312", Remote: "198.51.100.7:443"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.Encode(rep); err != nil {
			b.Fatal(err)
		}
	}
}
