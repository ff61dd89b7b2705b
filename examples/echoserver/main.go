// Command echoserver is the README's stand-in for a real server: it echoes
// every TCP stream and every UDP datagram back to its sender.
//
// It serves the sockets it is handed in the systemd convention (LISTEN_FDS,
// LISTEN_PID: what `sockfactory exec` and systemd socket units pass), and
// the addresses given with -listen (tcp://HOST:PORT or udp://HOST:PORT,
// repeatable), which it binds itself. It prints one "serving ..." line per
// socket, then serves until killed.
//
// The LISTEN_FDS parsing is written out here (a dozen lines) rather than
// taken from a library so that the example shows the whole convention a
// server in any language implements.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// listFlag collects repeated -listen values.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var addrs listFlag
	flag.Var(&addrs, "listen", "`network://host:port` to bind and serve (tcp or udp; repeatable)")
	flag.Parse()
	files, err := activated()
	if err != nil {
		fail(err)
	}
	var wg sync.WaitGroup
	for _, f := range files {
		if err := serveFile(&wg, f); err != nil {
			fail(err)
		}
	}
	for _, a := range addrs {
		if err := serveAddr(&wg, a); err != nil {
			fail(err)
		}
	}
	if len(files)+len(addrs) == 0 {
		fail(errors.New("nothing to serve: give -listen tcp://127.0.0.1:8080, or start me with LISTEN_FDS (sockfactory exec --listen ...)"))
	}
	wg.Wait()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "echoserver:", err)
	os.Exit(1)
}

// activated returns the descriptors passed in the systemd convention:
// LISTEN_FDS of them from fd 3, if LISTEN_PID is this process.
func activated() ([]*os.File, error) {
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("bad LISTEN_FDS=%q", os.Getenv("LISTEN_FDS"))
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	files := make([]*os.File, n)
	for i := range files {
		name := "fd" + strconv.Itoa(3+i)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		files[i] = os.NewFile(uintptr(3+i), name)
	}
	return files, nil
}

func serveFile(wg *sync.WaitGroup, f *os.File) error {
	defer f.Close() // the listener or packet conn below holds its own dup
	if l, err := net.FileListener(f); err == nil {
		serveStream(wg, l)
		return nil
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return fmt.Errorf("descriptor %s is neither a listening stream socket nor a datagram socket: %w", f.Name(), err)
	}
	servePackets(wg, pc)
	return nil
}

func serveAddr(wg *sync.WaitGroup, a string) error {
	network, addr, ok := strings.Cut(a, "://")
	if !ok {
		return fmt.Errorf("-listen %q: want tcp://HOST:PORT or udp://HOST:PORT", a)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
		l, err := net.Listen(network, addr)
		if err != nil {
			return err
		}
		serveStream(wg, l)
	case "udp", "udp4", "udp6":
		pc, err := net.ListenPacket(network, addr)
		if err != nil {
			return err
		}
		servePackets(wg, pc)
	default:
		return fmt.Errorf("-listen %q: network must be tcp or udp", a)
	}
	return nil
}

func serveStream(wg *sync.WaitGroup, l net.Listener) {
	fmt.Println("serving tcp", l.Addr())
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				fmt.Fprintln(os.Stderr, "echoserver: accept:", err)
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	})
}

func servePackets(wg *sync.WaitGroup, pc net.PacketConn) {
	fmt.Println("serving udp", pc.LocalAddr())
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				fmt.Fprintln(os.Stderr, "echoserver: read:", err)
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	})
}
