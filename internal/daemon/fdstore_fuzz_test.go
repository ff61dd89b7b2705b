package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// memfdWith returns a memfd holding b, named as a crash record.
func memfdWith(t testing.TB, b []byte) *os.File {
	return namedMemfd(t, StoredPrefix+"state-1-0", b)
}

// namedMemfd returns a memfd holding b, as the file name.
func namedMemfd(t testing.TB, name string, b []byte) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("record", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, b, 0); err != nil && len(b) > 0 {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), name)
}

// FuzzCrashRecord feeds recoverStore crash records whose checksum is
// right but whose JSON is anything: a record is read back after a crash
// from systemd's store, and one a bug or an attacker with root wrote must
// be refused or taken without a panic. Raw (unchecksummed) input is tried
// too: it must be refused.
func FuzzCrashRecord(f *testing.F) {
	f.Add([]byte(`{"version":1,"Seq":1,"written":"2026-01-01T00:00:00Z","state":{"holders":[{"uid":1}],"sockets":[{"fd":-1,"proto":"tcp","addr":"127.0.0.1:80","refs":[{"token":"00112233445566778899aabbccddeeff","share":2,"holder":0}]}],"reclaim_key":"0000000000000000000000000000000000000000000000000000000000000000"},"option_sets":[{}],"options":[0],"names":["sf-tcp-80-127.0.0.1"]}`))
	f.Add([]byte(`{"version":1,"state":{"holders":[],"sockets":[]},"option_sets":[],"options":[],"names":[]}`))
	f.Add([]byte(`{"version":2}`))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := &notifier{log: log} // no manager: nothing is sent
	f.Fuzz(func(t *testing.T, body []byte) {
		sum := sha256.Sum256(body)
		signed := append([]byte(hex.EncodeToString(sum[:])+"\n"), body...)
		for _, b := range [][]byte{signed, body} {
			rec := recoverStore(n, log, []*os.File{memfdWith(t, b)})
			if rec.state != nil && len(rec.state.Sockets) != 0 {
				t.Fatalf("a record with no stored socket restored %d sockets", len(rec.state.Sockets))
			}
			if len(rec.fds) != 0 {
				t.Fatalf("descriptors from nowhere: %v", rec.fds)
			}
			if rec.state != nil {
				for _, h := range rec.state.Holders {
					if h.Orphan {
						t.Fatalf("recovery left a holder marked orphan with the record's grace")
					}
				}
			}
		}
		if rec := recoverStore(n, log, []*os.File{memfdWith(t, body)}); rec.state != nil {
			t.Fatalf("a record without its checksum line was taken")
		}
	})
}
