package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
)

// signedRecord is a crash record memfd named name: a record with one
// holder of uid, written at written, with sequence seq.
func signedRecord(t *testing.T, name string, seq int, written string, uid int) *os.File {
	t.Helper()
	body := fmt.Sprintf(`{"version":1,"Seq":%d,"written":%q,"state":{"holders":[{"uid":%d}],"sockets":[],"reclaim_key":"%064d"},"option_sets":[],"options":[],"names":[]}`, seq, written, uid, 0)
	sum := sha256.Sum256([]byte(body))
	return namedMemfd(t, name, []byte(hex.EncodeToString(sum[:])+"\n"+body))
}

// TestRecoverPicksNewestRecord: of one daemon's two records the higher
// sequence wins, even when the clock stepped back between the writes; of
// two daemons' (after an upgrade), the one written later.
func TestRecoverPicksNewestRecord(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := &notifier{log: log}
	for _, tc := range []struct {
		name    string
		records [][4]any // name, seq, written, uid
		wantUID uint32
	}{
		{"same daemon, clock stepped back", [][4]any{
			{"sf-state-7-0", 1, "2026-01-01T00:00:10Z", 1},
			{"sf-state-7-1", 2, "2026-01-01T00:00:05Z", 2},
		}, 2},
		{"same daemon, in order", [][4]any{
			{"sf-state-7-1", 4, "2026-01-01T00:00:11Z", 4},
			{"sf-state-7-0", 3, "2026-01-01T00:00:10Z", 3},
		}, 4},
		{"two daemons", [][4]any{
			{"sf-state-7-0", 9, "2026-01-01T00:00:10Z", 9},
			{"sf-state-8-0", 1, "2026-01-01T00:00:20Z", 1},
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var files []*os.File
			for _, r := range tc.records {
				files = append(files, signedRecord(t, r[0].(string), r[1].(int), r[2].(string), r[3].(int)))
			}
			rec := recoverStore(n, log, files)
			if rec.state == nil || len(rec.state.Holders) != 1 {
				t.Fatalf("no record taken: %+v", rec)
			}
			if got := rec.state.Holders[0].UID; got != tc.wantUID {
				t.Errorf("took the record of uid %d, want %d", got, tc.wantUID)
			}
		})
	}
}
