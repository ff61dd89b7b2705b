package bench

import (
	"os"
	"testing"
	"time"
)

func TestParsePerfCount(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"# started on Thu Dec  3 2026\n\n29669,,raw_syscalls:sys_enter,483420279,100.00,,\n", 29669, false},
		{"<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n", 0, false},
		{"<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n", 0, true},
		{"12,,cycles,1,100.00,,\n", 0, true},
		{"", 0, true},
	} {
		got, err := parsePerfCount([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parsePerfCount(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseStraceTotal(t *testing.T) {
	const summary = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ------------------
 60.00    0.000600           3       200           recvmsg
 40.00    0.000400           2       150        10 futex
------ ----------- ----------- --------- --------- ------------------
100.00    0.001000           2       350        10 total
`
	if got, err := parseStraceTotal([]byte(summary)); err != nil || got != 350 {
		t.Errorf("parseStraceTotal = %d, %v; want 350", got, err)
	}
	noErrors := "100.00    0.001000           2       351           total\n"
	if got, err := parseStraceTotal([]byte(noErrors)); err != nil || got != 351 {
		t.Errorf("parseStraceTotal without errors column = %d, %v; want 351", got, err)
	}
	if _, err := parseStraceTotal([]byte("strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n")); err == nil {
		t.Error("parseStraceTotal accepted output with no total line")
	}
}

func TestProcWakeups(t *testing.T) {
	if got := statusField([]byte("Name:\tx\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n"), "voluntary_ctxt_switches:"); got != 42 {
		t.Errorf("statusField = %d, want 42", got)
	}
	before := procWakeups(os.Getpid())
	done := make(chan struct{})
	go func() { close(done) }()
	for range 50 {
		// Each sleep puts this thread to sleep: a voluntary switch.
		<-done
		sleepBriefly()
	}
	if after := procWakeups(os.Getpid()); after <= before {
		t.Errorf("wake-ups went from %d to %d across 50 sleeps", before, after)
	}
	if procWakeups(0) != 0 {
		t.Error("procWakeups(0) counted something")
	}
}

func sleepBriefly() { time.Sleep(100 * time.Microsecond) }
