package sockfactory

import (
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FuzzParseRights checks parseRights against x/sys/unix's parser: where it
// accepts control data, it finds the same descriptors in the same order.
func FuzzParseRights(f *testing.F) {
	f.Add([]byte{})
	f.Add(unix.UnixRights(3))
	f.Add(unix.UnixRights(3, 4, 5))
	f.Add(append(unix.UnixRights(7), unix.UnixRights(8, 9)...))
	f.Add(unix.UnixCredentials(&unix.Ucred{Pid: 1, Uid: 2, Gid: 3}))
	f.Add(append(unix.UnixRights(3), unix.UnixCredentials(&unix.Ucred{})...))
	f.Add(unix.UnixRights(3)[:unix.CmsgLen(4)]) // the last message unpadded, as the kernel may leave it
	f.Add(unix.UnixRights(3)[:10])
	f.Add([]byte("\x11\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x000")) // 1 byte of rights
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []int
		err := parseRights(data, func(fd int) { got = append(got, fd) })
		if err != nil {
			return
		}
		// x/sys reads headers in place: give it aligned memory.
		var want []int
		if len(data) > 0 {
			words := make([]uint64, (len(data)+7)/8)
			b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(data))
			copy(b, data)
			msgs, err := unix.ParseSocketControlMessage(b)
			if err != nil {
				t.Fatalf("parseRights accepted %x, x/sys/unix refuses it: %v", data, err)
			}
			for i := range msgs {
				if len(msgs[i].Data)%4 != 0 {
					return // x/sys/unix reads past such data (v0.49.0)
				}
				fds, err := unix.ParseUnixRights(&msgs[i])
				if err != nil {
					t.Fatalf("parseRights accepted %x, x/sys/unix refuses message %d: %v", data, i, err)
				}
				want = append(want, fds...)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("parseRights(%x) found %v, x/sys/unix %v", data, got, want)
		}
	})
}

func TestParseRightsErrors(t *testing.T) {
	tests := []struct {
		name    string
		oob     []byte
		wantFDs []int
	}{
		{"header cut short", unix.UnixRights(3)[:10], nil},
		{"length beyond the data", func() []byte {
			b := unix.UnixRights(3, 4)
			return b[:unix.CmsgLen(4)]
		}(), nil},
		{"credentials", unix.UnixCredentials(&unix.Ucred{Pid: 1}), nil},
		{"rights then credentials", append(unix.UnixRights(5, 6), unix.UnixCredentials(&unix.Ucred{})...), []int{5, 6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			err := parseRights(tt.oob, func(fd int) { got = append(got, fd) })
			if err == nil {
				t.Errorf("parseRights(%x): no error, want one", tt.oob)
			}
			if !slices.Equal(got, tt.wantFDs) {
				t.Errorf("parseRights(%x) found %v, want %v: every descriptor must reach the caller", tt.oob, got, tt.wantFDs)
			}
		})
	}
}
