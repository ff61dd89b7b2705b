package sockfactory

import "testing"

// TestListenOptionsReuseAddr: ReuseAddr asks for SO_REUSEADDR on,
// NoReuseAddr for off (and wins when both are set), neither leaves it to
// the daemon's default.
func TestListenOptionsReuseAddr(t *testing.T) {
	tests := []struct {
		name string
		o    *ListenOptions
		want *bool // nil: not sent
	}{
		{"nil options", nil, nil},
		{"zero options", &ListenOptions{}, nil},
		{"ReuseAddr", &ListenOptions{ReuseAddr: true}, new(true)},
		{"NoReuseAddr", &ListenOptions{NoReuseAddr: true}, new(false)},
		{"both", &ListenOptions{ReuseAddr: true, NoReuseAddr: true}, new(false)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.o.wire("udp", "127.0.0.1:0", false)
			var got *bool
			if r.Options != nil {
				got = r.Options.ReuseAddr
			}
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("reuseaddr sent: got %v, want %v", showReuse(got), showReuse(tt.want))
			}
		})
	}
}

func showReuse(b *bool) string {
	if b == nil {
		return "absent"
	}
	if *b {
		return "true"
	}
	return "false"
}
