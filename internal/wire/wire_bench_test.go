package wire_test

import (
	"testing"

	"sockfactory/internal/wire"
)

// The request path of a cached-socket handoff: decode a bind request,
// encode its reply; then the release pair. The connect pair is in
// wire_test.go (BenchmarkDecodeRequest, BenchmarkEncodeReply).

func BenchmarkDecodeBindRequest(b *testing.B) {
	msg := []byte(`{"v":1,"id":123456,"op":"bind","bind":{"network":"tcp","address":"127.0.0.1:40000","share":"any"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := wire.DecodeRequest(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeReleaseRequest(b *testing.B) {
	msg := []byte(`{"v":1,"id":123457,"op":"release","token":{"token":"0123456789abcdef0123456789abcdef"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := wire.DecodeRequest(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeBindReply(b *testing.B) {
	rep := &wire.Reply{V: wire.Version, ID: 123456, FDs: 1, Bind: &wire.BindResult{
		Token: "0123456789abcdef0123456789abcdef", Local: "127.0.0.1:40000", Network: "tcp", Shared: true,
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.Encode(rep); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeOKReply(b *testing.B) {
	rep := &wire.Reply{V: wire.Version, ID: 123457, OK: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.Encode(rep); err != nil {
			b.Fatal(err)
		}
	}
}

// The client's side: decoding the daemon's reply to a bind.
func BenchmarkDecodeBindReply(b *testing.B) {
	msg := []byte(`{"v":1,"id":123456,"fds":1,"bind":{"token":"0123456789abcdef0123456789abcdef","local":"127.0.0.1:40000","network":"tcp","shared":true}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := wire.DecodeReply(msg); err != nil {
			b.Fatal(err)
		}
	}
}
