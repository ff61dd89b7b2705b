package wire

// The strict reference paths, for the benchmarks in package wire_test.
var (
	DecodeRequestStrict = decodeRequestStrict
	DecodeReplyStrict   = decodeReplyStrict
	EncodeStrict        = encodeStrict
)
