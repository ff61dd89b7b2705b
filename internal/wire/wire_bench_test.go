package wire_test

import (
	"testing"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// The request path of a cached-socket handoff: decode a bind request,
// encode its reply; then the release pair. The connect pair is in
// wire_test.go (BenchmarkDecodeRequest, BenchmarkEncodeReply). These measure
// the public functions, which take the one-pass paths for these messages;
// the ...Strict benchmarks measure the encoding/json reference paths
// (decodeRequestStrict, decodeReplyStrict, encodeStrict) on the same
// messages, for comparison.

const (
	bindRequest    = `{"v":1,"id":123456,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:40000","share":"any"}}`
	releaseRequest = `{"v":1,"id":123457,"op":"release","token":{"token":"0123456789abcdef0123456789abcdef"}}`
	bindReply      = `{"v":1,"id":123456,"fds":1,"bind":{"token":"0123456789abcdef0123456789abcdef","local":"127.0.0.1:40000","network":"tcp","shared":true}}`
	// escapedRequest takes the strict path: the cost of falling back.
	escapedRequest = `{"v":1,"id":123456,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:40000","name":"caf\u00e9"}}`
)

var bindResult = &wire.Reply{V: wire.Version, ID: 123456, FDs: 1, Bind: &wire.BindResult{
	Token: "0123456789abcdef0123456789abcdef", Local: "127.0.0.1:40000", Network: "tcp", Shared: true,
}}

func benchDecodeRequest(b *testing.B, msg string, decode func([]byte) (*wire.Request, error)) {
	in := []byte(msg)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := decode(in); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecodeReply(b *testing.B, msg string, decode func([]byte) (*wire.Reply, error)) {
	in := []byte(msg)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := decode(in); err != nil {
			b.Fatal(err)
		}
	}
}

func benchEncode(b *testing.B, v any, encode func(any) ([]byte, error)) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encode(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBindRequest(b *testing.B) {
	benchDecodeRequest(b, bindRequest, wire.DecodeRequest)
}

func BenchmarkDecodeBindRequestStrict(b *testing.B) {
	benchDecodeRequest(b, bindRequest, wire.DecodeRequestStrict)
}

func BenchmarkDecodeEscapedRequest(b *testing.B) {
	benchDecodeRequest(b, escapedRequest, wire.DecodeRequest)
}

func BenchmarkDecodeReleaseRequest(b *testing.B) {
	benchDecodeRequest(b, releaseRequest, wire.DecodeRequest)
}

func BenchmarkEncodeBindReply(b *testing.B) {
	benchEncode(b, bindResult, wire.Encode)
}

func BenchmarkEncodeBindReplyStrict(b *testing.B) {
	benchEncode(b, bindResult, wire.EncodeStrict)
}

// AppendReply into a reused buffer: what a sender that keeps one buffer
// per connection pays.
func BenchmarkAppendBindReply(b *testing.B) {
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = wire.AppendReply(buf[:0], bindResult); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeOKReply(b *testing.B) {
	benchEncode(b, &wire.Reply{V: wire.Version, ID: 123457, OK: true}, wire.Encode)
}

// The client's side: decoding the daemon's reply to a bind.
func BenchmarkDecodeBindReply(b *testing.B) {
	benchDecodeReply(b, bindReply, wire.DecodeReply)
}

func BenchmarkDecodeBindReplyStrict(b *testing.B) {
	benchDecodeReply(b, bindReply, wire.DecodeReplyStrict)
}
