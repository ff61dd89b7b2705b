package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// notifySocket listens as a service manager would, reading as they come
// (a unixgram queue holds only a few datagrams), and counts WATCHDOG=1
// messages; count stops the reading.
func notifySocket(t *testing.T) (string, func() int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := make(chan int, 1)
	go func() {
		got := 0
		buf := make([]byte, 4096)
		for {
			m, err := c.Read(buf)
			if err != nil {
				n <- got
				return
			}
			if strings.Contains(string(buf[:m]), "WATCHDOG=1") {
				got++
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	return path, func() int {
		c.Close()
		return <-n
	}
}

// fakeDaemon serves the native socket at path: it answers hello when
// answer is set, and otherwise reads requests and never replies (a stuck
// request path).
func fakeDaemon(t *testing.T, path string, answer bool) {
	t.Helper()
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, wire.MaxMessageSize)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					req, err := wire.DecodeRequest(buf[:n])
					if err != nil || !answer {
						continue
					}
					b, _ := wire.Encode(&wire.Reply{V: wire.Version, ID: req.ID, OK: true})
					c.Write(b)
				}
			}()
		}
	}()
}

// TestWatchdogFollowsTheRequestPath: WATCHDOG=1 goes out only while a
// hello through the native socket is answered; a daemon that accepts but
// never answers gets none, however long it runs.
func TestWatchdogFollowsTheRequestPath(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  bool
		atLeast int
	}{
		{"answering", true, 3},
		{"stuck", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, count := notifySocket(t)
			t.Setenv("NOTIFY_SOCKET", addr)
			t.Setenv("WATCHDOG_USEC", "100000")
			t.Setenv("WATCHDOG_PID", "")
			os.Unsetenv("WATCHDOG_PID")
			sock := filepath.Join(t.TempDir(), "native.sock")
			fakeDaemon(t, sock, tc.answer)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
			defer cancel()
			watchdog(ctx, newNotifier(log), log, sock, func(*net.UnixConn) { t.Error("fell back to a socketpair") })
			got := count()
			if tc.atLeast == 0 && got != 0 {
				t.Errorf("%d WATCHDOG=1 from a daemon that never answers; want none", got)
			}
			if got < tc.atLeast {
				t.Errorf("%d WATCHDOG=1 in 600 ms at WATCHDOG_USEC=100ms; want at least %d", got, tc.atLeast)
			}
		})
	}
}
