package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// The sink is a TCP listener on 127.0.0.1 that accepts connections and
// closes them at once: the destination of the connect modes and their
// floor. It must never be what limits them, so it runs as a process of its
// own (this program started with ServeSinkArg, the listening socket passed
// as fd 3): inside the tool its accepting goroutines would queue for the Go
// runtime's processors behind hundreds of clients, its accept queue would
// overflow, and clients would wait a second for SYN retransmissions. Its
// accepting threads get real-time priority (SCHED_FIFO) where the system
// allows, as for root, else the lowest nice value allowed.

// ServeSinkArg is the argument that makes cmd/sockfactory-bench run the
// TCP sink on the listening socket it inherits as fd 3.
const ServeSinkArg = "-serve-sink"

// sinkAcceptors is the number of accepting threads.
const sinkAcceptors = 2

// ServeSink accepts and closes connections on the listening socket fd
// until ctx is done; it logs to w how its threads are scheduled.
func ServeSink(ctx context.Context, fd int, w io.Writer) error {
	var wg sync.WaitGroup
	for range sinkAcceptors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The priority belongs to the thread: keep the thread for this
			// loop, and let it end with the goroutine rather than go back
			// to the runtime's pool with a changed priority.
			runtime.LockOSThread()
			fmt.Fprintln(w, "sink acceptor scheduling:", raisePriority())
			for {
				nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
				switch {
				case err == nil:
					unix.Close(nfd)
				case err == unix.EINTR || err == unix.ECONNABORTED || err == unix.EMFILE || err == unix.ENFILE:
				default:
					return // shut down
				}
			}
		}()
	}
	<-ctx.Done()
	unix.Shutdown(fd, unix.SHUT_RDWR) // wakes the blocked accepts
	wg.Wait()
	return nil
}

// raisePriority gives the calling thread real-time priority, or failing
// that the lowest nice value allowed, and says which it got.
func raisePriority() string {
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 1}, 0); err == nil {
		return "SCHED_FIFO"
	}
	for nice := -20; nice <= 0; nice += 5 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice); err == nil {
			return fmt.Sprintf("nice %d", nice)
		}
	}
	return "nice 0"
}

// listenTCP4 returns a blocking, close-on-exec TCP socket listening on
// 127.0.0.1 with a port the system picks, and that port.
func listenTCP4(backlog int) (int, int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, os.NewSyscallError("socket", err)
	}
	fail := func(what string, err error) (int, int, error) {
		unix.Close(fd)
		return -1, 0, os.NewSyscallError(what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt SO_REUSEADDR", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	return fd, sa.(*unix.SockaddrInet4).Port, nil
}

// ServeFDPassArg is the argument that makes cmd/sockfactory-bench run the
// fd-passing floor server (followed by the socket path) instead of a
// benchmark. The tool starts itself that way, so that the floor is a process
// of its own, like the daemon.
const ServeFDPassArg = "-serve-fdpass"

// ServeFDPass is the minimal fd-passing server, the floor of the handoff
// modes: it listens on a SOCK_SEQPACKET socket at path and answers every
// packet of every connection with one byte and one fixed fd (a TCP socket
// listening on 127.0.0.1) as SCM_RIGHTS, with no parsing and no policy, one
// goroutine per connection, through the same Go runtime machinery as the
// daemon. It returns when ctx is done, having closed everything it opened.
func ServeFDPass(ctx context.Context, path string) error {
	fd, _, err := listenTCP4(1)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return err
	}
	return serveFDPass(ctx, ln, fd)
}

// serveFDPass serves ln until ctx is done, then closes it and every
// connection and waits for their goroutines.
func serveFDPass(ctx context.Context, ln *net.UnixListener, fd int) error {
	oob := unix.UnixRights(fd)
	var (
		mu    sync.Mutex
		conns = map[*net.UnixConn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			var buf [1]byte
			for {
				n, _, _, _, err := c.ReadMsgUnix(buf[:], nil)
				if err != nil || n == 0 {
					return
				}
				if _, _, err := c.WriteMsgUnix(buf[:1], oob, nil); err != nil {
					return
				}
			}
		}()
	}
}
