package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/config"
	"github.com/sockfactory/sockfactory/internal/server"
)

// FrontDoors are the daemon's own listening sockets: the native one and
// each Clearwater one, in configuration order.
type FrontDoors struct {
	Native     *net.UnixListener
	Clearwater []*net.UnixListener
	// Activated is true when systemd passed any of them (LISTEN_FDS).
	Activated bool
	// Owned says, per listener in All's order, whether the daemon made
	// its socket file and removes it when it stops for good: false for
	// systemd's, and for a root parent's (which removes them itself).
	// Nil means none is.
	Owned []bool
	// Stored are descriptors systemd kept in its fd store for the
	// daemon's previous run and passed back (see crash recovery), by
	// name; the daemon owns them.
	Stored []*os.File
}

// All returns every listener: the native one first.
func (d *FrontDoors) All() []*net.UnixListener {
	return append([]*net.UnixListener{d.Native}, d.Clearwater...)
}

// Close closes every listener and stored descriptor.
func (d *FrontDoors) Close() {
	for _, l := range d.All() {
		if l != nil {
			l.Close()
		}
	}
	for _, f := range d.Stored {
		f.Close()
	}
}

// FDName values the daemon recognises in LISTEN_FDNAMES (systemd's
// FileDescriptorName= of a .socket unit): the native socket and the
// Clearwater listeners, which are told apart by path. Names beginning
// with StoredPrefix are fd store entries (see crash recovery).
const (
	NameNative     = "native"
	NameClearwater = "clearwater"
	StoredPrefix   = "sf-"
)

// OpenFrontDoors returns the front doors: those systemd passed (socket
// activation, when LISTEN_PID is this process), completed with any it did
// not pass, which are opened here. A passed socket that matches no front
// door of the configuration is an error that names it, and so is one of
// the wrong kind.
func OpenFrontDoors(cfg *config.Config) (*FrontDoors, error) {
	files := activation.Files(true)
	d := &FrontDoors{Clearwater: make([]*net.UnixListener, len(cfg.Clearwater))}
	fail := func(err error) (*FrontDoors, error) {
		d.Close()
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for i, f := range files {
		files[i] = nil
		if strings.HasPrefix(f.Name(), StoredPrefix) {
			d.Stored = append(d.Stored, f)
			continue
		}
		if err := d.place(cfg, f); err != nil {
			f.Close()
			return fail(err)
		}
		f.Close()
		d.Activated = true
	}
	if d.Native == nil {
		ln, err := server.Listen("unixpacket", cfg.Socket, cfg.SocketMode, cfg.SocketGID)
		if err != nil {
			return fail(err)
		}
		d.Native = ln
		d.own(0)
	}
	for i, c := range cfg.Clearwater {
		if d.Clearwater[i] != nil {
			continue
		}
		l, err := server.Listen("unix", c.Socket, c.SocketMode, c.SocketGID)
		if err != nil {
			return fail(fmt.Errorf("clearwater listener: %w", err))
		}
		d.Clearwater[i] = l
		d.own(1 + i)
	}
	return d, nil
}

// own marks listener i (in All's order) as the daemon's own.
func (d *FrontDoors) own(i int) {
	if d.Owned == nil {
		d.Owned = make([]bool, 1+len(d.Clearwater))
	}
	d.Owned[i] = true
}

// owned reports whether the daemon owns listener i's file.
func (d *FrontDoors) owned(i int) bool { return i < len(d.Owned) && d.Owned[i] }

// place puts one passed socket where it belongs: by its name when it has
// one the daemon knows, else by its type and path.
func (d *FrontDoors) place(cfg *config.Config, f *os.File) error {
	typ, path, err := describe(f)
	desc := fmt.Sprintf("passed socket %q (fd %d, %s %s)", f.Name(), fileFD(f), typ, path)
	if err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	name := f.Name()
	native := name == NameNative || (name != NameClearwater && typ == "unixpacket" && path == cfg.Socket)
	if native {
		if typ != "unixpacket" {
			return fmt.Errorf("%s is named %s but is not a SOCK_SEQPACKET socket: set ListenSequentialPacket= in its .socket unit", desc, NameNative)
		}
		if d.Native != nil {
			return fmt.Errorf("%s: a native socket was passed already", desc)
		}
		l, err := listener(f)
		if err != nil {
			return fmt.Errorf("%s: %w", desc, err)
		}
		d.Native = l
		return nil
	}
	for i, c := range cfg.Clearwater {
		if path != c.Socket {
			continue
		}
		if typ != "unix" {
			return fmt.Errorf("%s is the Clearwater listener %s but not a SOCK_STREAM socket: set ListenStream= in its .socket unit", desc, c.Socket)
		}
		if d.Clearwater[i] != nil {
			return fmt.Errorf("%s: the Clearwater listener %s was passed already", desc, c.Socket)
		}
		l, err := listener(f)
		if err != nil {
			return fmt.Errorf("%s: %w", desc, err)
		}
		d.Clearwater[i] = l
		return nil
	}
	return fmt.Errorf("%s matches no front door of the configuration (native socket %s, %d Clearwater listeners): name it %q or %q (FileDescriptorName=) and give its path in the configuration, or remove it from the .socket unit",
		desc, cfg.Socket, len(cfg.Clearwater), NameNative, NameClearwater)
}

// describe returns a passed socket's type ("unixpacket", "unix") and
// path, and fails for anything but a listening UNIX socket with a path.
func describe(f *os.File) (string, string, error) {
	fd := fileFD(f)
	if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_UNIX {
		return "?", "?", errors.New("not a UNIX socket")
	}
	sa, err := unix.Getsockname(fd)
	path := "?"
	if u, ok := sa.(*unix.SockaddrUnix); ok && err == nil {
		path = u.Name
	}
	typ := "?"
	switch t, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); t {
	case unix.SOCK_SEQPACKET:
		typ = "unixpacket"
	case unix.SOCK_STREAM:
		typ = "unix"
	case unix.SOCK_DGRAM:
		return "unixgram", path, errors.New("a datagram socket cannot be a front door")
	}
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc == 0 {
		return typ, path, errors.New("not listening")
	}
	return typ, path, nil
}

// listener makes a *net.UnixListener of f (which stays the caller's to
// close) that never removes the socket file: it belongs to whoever
// created it.
func listener(f *os.File) (*net.UnixListener, error) {
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, errors.New("not a UNIX listener")
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}
