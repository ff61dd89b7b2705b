// Command godriver is the Go client library's driver for the client
// behaviour suite (internal/clientsuite): it reads the commands of
// internal/clientsuite/DRIVER.md on stdin, carries each out with the public
// API of package sockfactory, the way an application would, and writes one
// reply line per command on stdout. Diagnostics go to stderr.
//
// It must not reach into the library's internals: what it reports is what a
// user of the library sees. Error codes come from the library's typed errors
// (errors.As with *sockfactory.Error, errors.Is with ErrUnavailable and
// ErrProtocol), never from messages.
//
// Every descriptor the driver holds is an *os.File in the table of handles;
// the driver closes it on closefd, close and quit. It inspects and uses them
// through SyscallConn, never Fd, so that their blocking mode stays what the
// library delivered.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory"
)

// commandTimeout bounds each library call; the suite's own timeout per
// command is shorter, so this only keeps a forgotten driver from hanging
// forever.
const commandTimeout = 60 * time.Second

// handle is a descriptor the driver holds, with the token of the
// reference it came with ("" for a connected socket).
type handle struct {
	f     *os.File
	token string
}

// driver is the state of one driver process: one library client and the
// handles.
type driver struct {
	client  *sockfactory.Client
	handles map[int]*handle
	next    int // the last handle number given out
}

func main() {
	d := &driver{client: &sockfactory.Client{}, handles: map[int]*handle{}}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	reply := func(s string) {
		out.WriteString(s + "\n")
		if err := out.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, "godriver: writing a reply:", err)
			os.Exit(1)
		}
	}
	for in.Scan() {
		line := in.Text()
		if line == "quit" {
			d.closeAll()
			reply("ok")
			return
		}
		reply(d.run(strings.Split(line, " ")))
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "godriver: reading commands:", err)
	}
	d.closeAll() // end of file is quit
}

// closeAll closes every handle and the client.
func (d *driver) closeAll() {
	for n, h := range d.handles {
		h.f.Close()
		delete(d.handles, n)
	}
	d.client.Close()
}

// run carries out one command and returns its reply line.
func (d *driver) run(w []string) string {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	args := w[1:]
	need := func(n int) bool { return len(args) == n }
	switch w[0] {
	case "connect":
		if !need(2) {
			return "bad connect wants NETWORK ADDRESS"
		}
		f, err := d.client.ConnectFile(ctx, args[0], args[1], 0)
		if err != nil {
			return errReply(err)
		}
		return "ok " + d.add(f, "")
	case "bind", "bindtoken":
		if !need(4) {
			return "bad " + w[0] + " wants NETWORK ADDRESS SHARE APP"
		}
		o, ok := listenOptions(args[2], args[3])
		if !ok {
			return "bad unknown share mode " + args[2]
		}
		if w[0] == "bindtoken" {
			b, err := d.client.BindToken(ctx, args[0], args[1], o)
			if err != nil {
				return errReply(err)
			}
			return "ok " + b.Token
		}
		f, b, err := d.client.BindFile(ctx, args[0], args[1], o)
		if err != nil {
			return errReply(err)
		}
		return "ok " + d.add(f, b.Token) + " " + b.Token
	case "pickup":
		if !need(1) {
			return "bad pickup wants TOKEN"
		}
		f, b, err := d.client.Pickup(ctx, args[0])
		if err != nil {
			return errReply(err)
		}
		return "ok " + d.add(f, b.Token) + " " + b.Token
	case "release":
		if !need(1) {
			return "bad release wants TOKEN"
		}
		if err := d.client.Release(ctx, args[0]); err != nil {
			return errReply(err)
		}
		return "ok"
	case "closefd", "close":
		if !need(1) {
			return "bad " + w[0] + " wants H"
		}
		n, h := d.handle(args[0])
		if h == nil {
			return "bad no handle " + args[0]
		}
		delete(d.handles, n)
		var err error
		if w[0] == "close" && h.token != "" {
			err = release(ctx, d.client, h.token)
		}
		if cerr := h.f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return errReply(err)
		}
		return "ok"
	case "sockname", "fdinfo", "echo", "serve":
		want := 1
		if w[0] == "echo" {
			want = 2
		}
		if !need(want) {
			return "bad " + w[0] + " wants H" + strings.Repeat(" DATA", want-1)
		}
		_, h := d.handle(args[0])
		if h == nil {
			return "bad no handle " + args[0]
		}
		var res string
		var err error
		switch w[0] {
		case "sockname":
			res, err = sockname(h.f)
		case "fdinfo":
			res, err = fdinfo(h.f)
		case "echo":
			res, err = echo(h.f, args[1])
		case "serve":
			err = serve(h.f)
		}
		if err != nil {
			return errReply(err)
		}
		return strings.TrimSuffix("ok "+res, " ")
	case "status":
		if !need(0) {
			return "bad status takes no words"
		}
		st, err := d.client.Status(ctx)
		if err != nil {
			return errReply(err)
		}
		return "ok " + strconv.Itoa(len(st))
	case "reconnect":
		if !need(0) {
			return "bad reconnect takes no words"
		}
		d.client.Close()
		d.client = &sockfactory.Client{}
		return "ok"
	case "fds":
		if !need(0) {
			return "bad fds takes no words"
		}
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return errReply(err)
		}
		return "ok " + strconv.Itoa(len(ents)-1) // less the directory being read
	}
	return "bad unknown command " + w[0]
}

// add puts f in the table and returns its new handle number.
func (d *driver) add(f *os.File, token string) string {
	d.next++
	d.handles[d.next] = &handle{f: f, token: token}
	return strconv.Itoa(d.next)
}

// handle looks up the handle named by word.
func (d *driver) handle(word string) (int, *handle) {
	n, err := strconv.Atoi(word)
	if err != nil {
		return 0, nil
	}
	return n, d.handles[n]
}

// listenOptions maps the SHARE and APP words to ListenOptions.
func listenOptions(share, app string) (*sockfactory.ListenOptions, bool) {
	o := &sockfactory.ListenOptions{}
	switch share {
	case "-":
	case "none", "any":
		o.Share = share
	case "sameapp":
		o.Share = "same-name"
	default:
		return nil, false
	}
	if app != "-" {
		o.Name = app
	}
	return o, true
}

// release drops a reference the way (*sockfactory.Listener).Close does: a
// reference already gone with its connection (ErrUnavailable, ErrNotFound
// after a reconnect, a closed client) is no error.
func release(ctx context.Context, c *sockfactory.Client, token string) error {
	err := c.Release(ctx, token)
	if errors.Is(err, sockfactory.ErrUnavailable) || errors.Is(err, sockfactory.ErrNotFound) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// errReply is the reply line for err: "err CODE ERRNO", with CODE from the
// library's typed errors. An error that is not the library's (a local
// read or write failing) is reported with the code "local".
func errReply(err error) string {
	fmt.Fprintln(os.Stderr, "godriver:", err)
	code := "local"
	var se *sockfactory.Error
	switch {
	case errors.As(err, &se):
		code = se.Code
	case errors.Is(err, sockfactory.ErrUnavailable):
		code = "unavailable"
	case errors.Is(err, sockfactory.ErrProtocol):
		code = "protocol"
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		errno = 0
	}
	return fmt.Sprintf("err %s %d", code, int(errno))
}

// control runs fn on f's descriptor without changing its mode.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// sockname returns f's local address as IP:PORT.
func sockname(f *os.File) (string, error) {
	var res string
	err := control(f, func(fd int) error {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return os.NewSyscallError("getsockname", err)
		}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			res = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
		case *unix.SockaddrInet6:
			res = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
		default:
			return fmt.Errorf("getsockname: address of type %T", sa)
		}
		return nil
	})
	return res, err
}

// fdinfo describes f's descriptor: TYPE FAMILY MODE CLOEXEC.
func fdinfo(f *os.File) (string, error) {
	var res string
	err := control(f, func(fd int) error {
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return os.NewSyscallError("getsockopt SO_TYPE", err)
		}
		dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			return os.NewSyscallError("getsockopt SO_DOMAIN", err)
		}
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			return os.NewSyscallError("fcntl F_GETFL", err)
		}
		fdfl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			return os.NewSyscallError("fcntl F_GETFD", err)
		}
		words := make([]string, 4)
		switch typ {
		case unix.SOCK_STREAM:
			words[0] = "stream"
		case unix.SOCK_DGRAM:
			words[0] = "dgram"
		default:
			words[0] = "type" + strconv.Itoa(typ)
		}
		switch dom {
		case unix.AF_INET:
			words[1] = "inet"
		case unix.AF_INET6:
			words[1] = "inet6"
		default:
			words[1] = "family" + strconv.Itoa(dom)
		}
		words[2] = "blocking"
		if fl&unix.O_NONBLOCK != 0 {
			words[2] = "nonblocking"
		}
		words[3] = "nocloexec"
		if fdfl&unix.FD_CLOEXEC != 0 {
			words[3] = "cloexec"
		}
		res = strings.Join(words, " ")
		return nil
	})
	return res, err
}

// echo writes data on the connected socket f and reads as many bytes back.
// f is used as the library delivered it (blocking), through the file's own
// Read and Write, which loop over short writes and EINTR.
func echo(f *os.File, data string) (string, error) {
	if _, err := io.WriteString(f, data); err != nil {
		return "", err
	}
	buf := make([]byte, len(data))
	if _, err := io.ReadFull(f, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

// serve accepts one connection on the listening socket f, reads until 64
// bytes or a newline, writes that back and closes the connection.
func serve(f *os.File) error {
	var nfd int
	err := control(f, func(fd int) error {
		for {
			var err error
			nfd, _, err = unix.Accept4(fd, unix.SOCK_CLOEXEC)
			switch err {
			case nil:
				return nil
			case unix.EINTR, unix.ECONNABORTED:
				continue
			case unix.EAGAIN:
				// Another holder made the shared socket non-blocking:
				// wait for a connection.
				pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
				if _, err := unix.Poll(pfd, -1); err != nil && err != unix.EINTR {
					return os.NewSyscallError("poll", err)
				}
				continue
			}
			return os.NewSyscallError("accept4", err)
		}
	})
	if err != nil {
		return err
	}
	// accept4 without SOCK_NONBLOCK gives a blocking socket whatever the
	// listener's mode: plain blocking reads and writes on an *os.File.
	c := os.NewFile(uintptr(nfd), "accepted")
	defer c.Close()
	var got []byte
	buf := make([]byte, 64)
	for len(got) < 64 && !strings.Contains(string(got), "\n") {
		n, err := c.Read(buf[:64-len(got)])
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	_, err = c.Write(got)
	return err
}
