package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// System calls and wake-ups per operation are the figures to drive down on
// machines where a system call is expensive (a VM that traps them, say):
// microseconds move with the neighbours, counts do not.
//
// Wake-ups are counted on every run that has a server process: the sum of
// voluntary_ctxt_switches over the server's threads (/proc/PID/task/*/status)
// across the measured part. Each voluntary switch is a thread going to sleep,
// so one later wake-up. Threads that end during the run take their counts
// with them, so this is a lower bound when the server's threads come and go.
//
// System calls are counted when asked for (Options.Syscalls), by one of:
//   - perf: "perf stat -e raw_syscalls:sys_enter -p PID", an in-kernel
//     counter on the system call entry tracepoint, attached for the measured
//     part. It costs the server a little per call, the same for every mode.
//   - strace: "strace -c -f -p PID", where perf or the tracepoint is missing.
//     ptrace stops the server twice per call, so the run's throughput and
//     latency are then not comparable with anything: only its count is.

// Syscall counting methods (Options.Syscalls).
const (
	SyscallsOff    = ""
	SyscallsAuto   = "auto"
	SyscallsPerf   = "perf"
	SyscallsStrace = "strace"
)

// resolveSyscalls turns a method asked for into one that works here, or an
// error saying why it cannot.
func resolveSyscalls(method string) (string, error) {
	switch method {
	case SyscallsOff, "off":
		return SyscallsOff, nil
	case SyscallsPerf:
		if err := perfTracepointWorks(); err != nil {
			return "", err
		}
		return SyscallsPerf, nil
	case SyscallsStrace:
		if _, err := exec.LookPath("strace"); err != nil {
			return "", errors.New("-syscalls strace: strace is not installed")
		}
		return SyscallsStrace, nil
	case SyscallsAuto:
		if perfTracepointWorks() == nil {
			return SyscallsPerf, nil
		}
		if _, err := exec.LookPath("strace"); err == nil {
			return SyscallsStrace, nil
		}
		return "", errors.New("-syscalls auto: neither perf (with the raw_syscalls:sys_enter tracepoint) nor strace works here; install linux-perf or strace")
	}
	return "", fmt.Errorf("-syscalls %q: want auto, perf, strace or off", method)
}

// perfTracepointWorks checks that perf can count the system call entry
// tracepoint (root, or a low perf_event_paranoid, and tracefs).
func perfTracepointWorks() error {
	out, err := exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true").CombinedOutput()
	if err != nil {
		return fmt.Errorf("-syscalls perf: perf stat -e raw_syscalls:sys_enter failed (%v): %s", err, strings.TrimSpace(string(out)))
	}
	if _, err := parsePerfCount(out); err != nil {
		return fmt.Errorf("-syscalls perf: %w", err)
	}
	return nil
}

// syscallCount counts one server's system calls over a run.
type syscallCount struct {
	method   string
	cmd      *exec.Cmd
	out      string
	ctl, ack *os.File // perf's control FIFOs
}

// startSyscallCount attaches a counter to pid and returns once it counts.
// perf starts with its counter disabled and enables it through its control
// FIFO, acknowledged, so that the window is exact; strace counts from
// whenever it has attached to every thread (a moment is allowed for that).
func startSyscallCount(dir, name, method string, pid int) (_ *syscallCount, err error) {
	s := &syscallCount{method: method, out: filepath.Join(dir, name+".syscalls")}
	switch method {
	case SyscallsPerf:
		ctl, ack := filepath.Join(dir, name+".ctl"), filepath.Join(dir, name+".ack")
		for _, p := range []string{ctl, ack} {
			os.Remove(p)
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				return nil, fmt.Errorf("perf control FIFO: %w", err)
			}
		}
		s.cmd = exec.Command("perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(pid), "-D", "-1", "--control", "fifo:"+ctl+","+ack, "-o", s.out)
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting perf: %w", err)
		}
		defer func() {
			if err != nil {
				s.kill()
			}
		}()
		// perf opens both FIFOs at start: these opens wait for it.
		if s.ctl, err = os.OpenFile(ctl, os.O_WRONLY, 0); err != nil {
			return nil, err
		}
		if s.ack, err = os.Open(ack); err != nil {
			return nil, err
		}
		if err := s.control("enable"); err != nil {
			return nil, err
		}
	case SyscallsStrace:
		s.cmd = exec.Command("strace", "-c", "-f", "-q", "-p", strconv.Itoa(pid), "-o", s.out)
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting strace: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	default:
		return nil, fmt.Errorf("unknown syscall counting method %q", method)
	}
	return s, nil
}

// control sends perf a control command and waits for its acknowledgement.
func (s *syscallCount) control(cmd string) error {
	if _, err := s.ctl.WriteString(cmd + "\n"); err != nil {
		return fmt.Errorf("perf control %s: %w", cmd, err)
	}
	s.ack.SetReadDeadline(time.Now().Add(10 * time.Second)) // FIFOs take deadlines
	buf := make([]byte, 16)
	n, err := s.ack.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "ack") {
		return fmt.Errorf("perf did not acknowledge %s: %q %v", cmd, buf[:n], err)
	}
	return nil
}

// pause stops counting: perf disables its counter, strace detaches.
func (s *syscallCount) pause() error {
	if s.method == SyscallsPerf {
		return s.control("disable")
	}
	s.kill()
	return nil
}

func (s *syscallCount) kill() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGINT)
		s.cmd.Wait()
	}
	if s.ctl != nil {
		s.ctl.Close()
	}
	if s.ack != nil {
		s.ack.Close()
	}
}

// result ends the counter (after pause) and returns the calls counted.
func (s *syscallCount) result() (int64, error) {
	s.kill()
	b, err := os.ReadFile(s.out)
	if err != nil {
		return 0, fmt.Errorf("%s wrote no count: %w", s.method, err)
	}
	if s.method == SyscallsStrace {
		return parseStraceTotal(b)
	}
	return parsePerfCount(b)
}

// parsePerfCount reads the count from "perf stat -x," output: a line
// "COUNT,UNIT,EVENT,...".
func parsePerfCount(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) >= 3 && strings.HasPrefix(f[2], "raw_syscalls:sys_enter") {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				if f[0] == "<not counted>" {
					return 0, nil // enabled, but no call came
				}
				return 0, fmt.Errorf("perf counted no system calls (%q): is the tracepoint available?", f[0])
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no raw_syscalls:sys_enter line in perf's output: %q", strings.TrimSpace(string(b)))
}

// parseStraceTotal reads the calls column of the "total" line of
// "strace -c" output.
func parseStraceTotal(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && f[len(f)-1] == "total" {
			// "100.00 SECONDS USECS/CALL CALLS [ERRORS] total"; the
			// usecs/call column is missing on some versions.
			for _, i := range []int{3, 2} {
				if i < len(f)-1 {
					if n, err := strconv.ParseInt(f[i], 10, 64); err == nil {
						return n, nil
					}
				}
			}
		}
	}
	return 0, fmt.Errorf("no total line in strace's summary: %q", strings.TrimSpace(string(b)))
}

// procWakeups returns the sum of voluntary context switches over pid's
// threads: how often they went to sleep, so how often they were woken.
func procWakeups(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name(), "status"))
		if err != nil {
			continue // the thread ended
		}
		n += statusField(b, "voluntary_ctxt_switches:")
	}
	return n
}

// statusField returns the number after name at the start of a line of a
// /proc status file, or 0.
func statusField(b []byte, name string) int64 {
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte(name)); ok {
			n, _ := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}
