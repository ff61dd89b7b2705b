package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
)

// Memory is what the growth measurements found about the daemon's memory.
// RSS is VmRSS from /proc/PID/status; heap is Stats.HeapBytes (the Go
// heap's live and not yet collected objects, without goroutine stacks).
type Memory struct {
	// IdleConns is the number of idle client connections opened;
	// IdleRSSBefore/After and IdleHeapBefore/After frame them.
	IdleConns      int    `json:"idle_conns,omitempty"`
	IdleRSSBefore  int64  `json:"idle_rss_before_bytes,omitempty"`
	IdleRSSAfter   int64  `json:"idle_rss_after_bytes,omitempty"`
	IdleHeapBefore uint64 `json:"idle_heap_before_bytes,omitempty"`
	IdleHeapAfter  uint64 `json:"idle_heap_after_bytes,omitempty"`
	// RSSPerIdleConn and HeapPerIdleConn are the differences divided
	// by IdleConns, in bytes.
	RSSPerIdleConn  float64 `json:"rss_bytes_per_idle_conn,omitempty"`
	HeapPerIdleConn float64 `json:"heap_bytes_per_idle_conn,omitempty"`
	// Held samples the daemon at each level of held sockets, before the
	// runs at that level.
	Held []HeldSample `json:"held,omitempty"`
	// RSSPerHeldSocket and HeapPerHeldSocket are the growth from the
	// first to the last level divided by the sockets added, in bytes.
	RSSPerHeldSocket  float64 `json:"rss_bytes_per_held_socket,omitempty"`
	HeapPerHeldSocket float64 `json:"heap_bytes_per_held_socket,omitempty"`
	// HoldRate is how fast the held sockets were bound (binds per second
	// through the holding clients).
	HoldRate float64 `json:"hold_binds_per_sec,omitempty"`
	// StatsAtMaxHeld is what asking for Stats at the last level gave:
	// "ok", or the error.
	StatsAtMaxHeld string `json:"stats_at_max_held,omitempty"`
}

// HeldSample is the daemon's state with Held sockets held.
type HeldSample struct {
	Held int   `json:"held"`
	RSS  int64 `json:"rss_bytes"`
	// Heap and FDs come from Stats, read after RSS (the status request
	// itself allocates); zero if the daemon did not answer it.
	Heap uint64 `json:"heap_bytes,omitempty"`
	FDs  int    `json:"fds,omitempty"`
}

// settle is how long the daemon is left alone before its memory is read.
const settle = time.Second

// stats asks the daemon for its own counts, within timeout.
func (e *env) stats(ctx context.Context, timeout time.Duration) (*sockfactory.DaemonStats, error) {
	c := &sockfactory.Client{Socket: e.socket}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.Stats(ctx)
}

// measureIdleConns opens n client connections that send nothing, and
// reads the daemon's memory before and after.
func (e *env) measureIdleConns(ctx context.Context, n int, m *Memory) error {
	before, err := e.stats(ctx, 10*time.Second)
	if err != nil {
		return fmt.Errorf("idle connections: Stats: %w", err)
	}
	time.Sleep(settle)
	rss0, err := procRSS(e.daemonPID)
	if err != nil {
		return err
	}
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for range n {
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		fds = append(fds, s)
		if err := unix.Connect(s, &unix.SockaddrUnix{Name: e.socket}); err != nil {
			return fmt.Errorf("idle connection %d: %w", len(fds), os.NewSyscallError("connect", err))
		}
	}
	// Wait until the daemon serves them all.
	deadline := time.Now().Add(30 * time.Second)
	var after *sockfactory.DaemonStats
	for {
		if after, err = e.stats(ctx, 10*time.Second); err != nil {
			return fmt.Errorf("idle connections: Stats: %w", err)
		}
		if after.Sessions >= before.Sessions+n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("idle connections: the daemon serves %d sessions, want %d", after.Sessions, before.Sessions+n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(settle)
	rss1, err := procRSS(e.daemonPID)
	if err != nil {
		return err
	}
	if after, err = e.stats(ctx, 10*time.Second); err != nil {
		return fmt.Errorf("idle connections: Stats: %w", err)
	}
	m.IdleConns = n
	m.IdleRSSBefore, m.IdleRSSAfter = rss0, rss1
	m.IdleHeapBefore, m.IdleHeapAfter = before.HeapBytes, after.HeapBytes
	m.RSSPerIdleConn = float64(rss1-rss0) / float64(n)
	m.HeapPerIdleConn = (float64(after.HeapBytes) - float64(before.HeapBytes)) / float64(n)
	return nil
}

// Held sockets are TCP sockets bound, not listening, to 127.0.0.2 and up,
// on ports from heldPortLo to heldPortHi: outside the ephemeral port range
// (a bound port there is one connect() elsewhere on the machine can no
// longer pick) and without blocking anyone's listen on the same port (every
// held socket has SO_REUSEADDR and none listens).
const (
	heldPortLo   = 10000
	heldPortHi   = 32767
	heldPerAddr  = heldPortHi - heldPortLo + 1
	heldMaxAddrs = 200 // 127.0.0.2 to 127.0.0.201
	heldHolders  = 4   // clients holding them
	heldWorkers  = 32  // binds in flight
)

// holdUpTo makes the daemon hold level sockets in all, through a few
// clients of its own, then samples its memory.
func (e *env) holdUpTo(ctx context.Context, level int, m *Memory) error {
	if len(e.holders) == 0 {
		for range heldHolders {
			e.holders = append(e.holders, &sockfactory.Client{Socket: e.socket})
		}
	}
	if want := level - e.held; want > 0 {
		var (
			claimed  atomic.Int64 // binds started or done
			slot     atomic.Int64 // next address slot to try
			wg       sync.WaitGroup
			errMu    sync.Mutex
			firstErr error
		)
		fail := func(err error) {
			errMu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			errMu.Unlock()
		}
		slot.Store(int64(e.slot))
		lo := &sockfactory.ListenOptions{NoListen: true}
		start := time.Now()
		for w := range heldWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := e.holders[w%len(e.holders)]
				for claimed.Add(1) <= int64(want) {
					i := int(slot.Add(1) - 1)
					if i >= heldPerAddr*heldMaxAddrs {
						fail(errors.New("ran out of loopback addresses and ports for held sockets"))
						return
					}
					addr := fmt.Sprintf("127.0.0.%d:%d", 2+i/heldPerAddr, heldPortLo+i%heldPerAddr)
					f, _, err := c.BindFile(ctx, "tcp", addr, lo)
					if errors.Is(err, unix.EADDRINUSE) {
						claimed.Add(-1) // another program has it: take the next
						continue
					}
					if err != nil {
						fail(fmt.Errorf("holding %s: %w", addr, err))
						return
					}
					f.Close() // the daemon keeps its copy until the client closes
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		e.slot = int(slot.Load())
		e.held = level
		if d := time.Since(start); d > 0 && m != nil {
			m.HoldRate = float64(want) / d.Seconds()
		}
	}
	if m == nil {
		return nil
	}
	time.Sleep(settle)
	rss, err := procRSS(e.daemonPID)
	if err != nil {
		return err
	}
	s := HeldSample{Held: e.held, RSS: rss}
	if st, err := e.stats(ctx, 10*time.Second); err == nil {
		s.Heap, s.FDs = st.HeapBytes, st.FDs
	}
	m.Held = append(m.Held, s)
	return nil
}

// finishMemory derives the per-socket figures and asks for Stats once more
// at the largest level, to record whether the daemon still answers it.
func (e *env) finishMemory(ctx context.Context, m *Memory) {
	if n := len(m.Held); n >= 2 {
		first, last := m.Held[0], m.Held[n-1]
		if d := last.Held - first.Held; d > 0 {
			m.RSSPerHeldSocket = float64(last.RSS-first.RSS) / float64(d)
			if first.Heap > 0 && last.Heap > 0 {
				m.HeapPerHeldSocket = (float64(last.Heap) - float64(first.Heap)) / float64(d)
			}
		}
	}
	if _, err := e.stats(ctx, 10*time.Second); err != nil {
		m.StatsAtMaxHeld = fmt.Sprintf("with %d sockets held: %v", e.held, err)
	} else {
		m.StatsAtMaxHeld = "ok"
	}
}
