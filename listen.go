package sockfactory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// ListenOptions configure a bound socket. The zero value asks for a socket
// nobody else may share (share mode none), with the daemon's defaults:
// TCP listening with the system's maximum backlog and SO_REUSEADDR on,
// UDP and NoListen TCP sockets with SO_REUSEADDR off, IPV6_V6ONLY on for
// IPv6. Every option set must be allowed by the daemon's policy; what each
// one exposes to other users is in docs/configuration.md (Bind grants).
type ListenOptions struct {
	// Share is the share mode: "" or "none" (nobody else may hold the
	// socket), "same-name" (holders with the same Name may), or "any".
	Share string
	// Name is the share name; empty means the Client's App.
	Name string
	// ReusePort sets SO_REUSEPORT: other sockets of the daemon's user
	// (only those: the kernel checks) may bind the same port and take a
	// share of its traffic.
	ReusePort bool
	// ReuseAddr turns SO_REUSEADDR on where it is off by default: on a
	// UDP socket, or a TCP socket with NoListen. Any process of any user
	// may then bind the same address and port with SO_REUSEADDR and take
	// its datagrams (or, for TCP, listen there first), so the daemon's
	// rule must list reuseaddr in bind_options. On a listening TCP socket
	// it is the default and needs no grant.
	ReuseAddr bool
	// NoReuseAddr turns SO_REUSEADDR off on a listening TCP socket, the
	// one socket where it is on by default; a restarted listener may then
	// fail to bind while old connections are in TIME_WAIT. It wins over
	// ReuseAddr.
	NoReuseAddr bool
	// DualStack turns IPV6_V6ONLY off on an IPv6 socket, so that it also
	// takes IPv4. An empty host on "tcp"/"udp" is dual-stack already.
	DualStack bool
	// FreeBind sets IP_FREEBIND: bind an address not (yet) configured.
	FreeBind bool
	// Transparent sets IP_TRANSPARENT.
	Transparent bool
	// RcvBuf and SndBuf set SO_RCVBUF and SO_SNDBUF in bytes; 0 leaves the
	// kernel's default.
	RcvBuf, SndBuf int
	// BindToDevice sets SO_BINDTODEVICE; empty means none.
	BindToDevice string
	// PMTUDiscOff turns path-MTU discovery off (UDP servers such as DNS).
	PMTUDiscOff bool
	// FastOpen sets TCP_FASTOPEN with this queue length; 0 leaves it off.
	FastOpen int
	// DeferAccept sets TCP_DEFER_ACCEPT; 0 leaves it off.
	DeferAccept time.Duration
	// Backlog is the listen backlog; 0 means the system's maximum.
	Backlog int
	// NoListen delivers a TCP socket bound but not listening.
	NoListen bool
	// Netns names the network namespace the socket is bound in: a name
	// under /run/netns, "caller" for this process's own (a container's),
	// or "" for the daemon's own. The daemon's policy must grant it (a
	// rule's netns). The same address and port in two namespaces are two
	// sockets.
	Netns string
}

func (o *ListenOptions) wire(network, address string, tokenOnly bool) *wire.BindRequest {
	r := &wire.BindRequest{Network: network, Address: address, TokenOnly: tokenOnly}
	if o == nil {
		return r
	}
	r.Share, r.Name, r.Netns = o.Share, o.Name, o.Netns
	var so wire.SocketOptions
	set := false
	on, off := true, false
	flag := func(b bool, dst **bool, v *bool) {
		if b {
			*dst, set = v, true
		}
	}
	num := func(n int, dst **int) {
		if n != 0 {
			*dst, set = &n, true
		}
	}
	flag(o.ReusePort, &so.ReusePort, &on)
	flag(o.ReuseAddr, &so.ReuseAddr, &on)
	flag(o.NoReuseAddr, &so.ReuseAddr, &off)
	flag(o.DualStack, &so.V6Only, &off)
	flag(o.FreeBind, &so.FreeBind, &on)
	flag(o.Transparent, &so.Transparent, &on)
	flag(o.PMTUDiscOff, &so.PMTUDiscOff, &on)
	flag(o.NoListen, &so.Listen, &off)
	num(o.RcvBuf, &so.RcvBuf)
	num(o.SndBuf, &so.SndBuf)
	num(o.FastOpen, &so.FastOpen)
	num(int(o.DeferAccept/time.Second), &so.DeferAccept)
	num(o.Backlog, &so.Backlog)
	if o.BindToDevice != "" {
		so.BindToDevice, set = &o.BindToDevice, true
	}
	if set {
		r.Options = &so
	}
	return r
}

// Binding describes a reference to a bound socket.
type Binding struct {
	// Token identifies the reference: pass it to Release, or (token-only)
	// to Pickup. Treat it as a secret: whoever holds it and is granted the
	// address may pick the socket up.
	Token string
	// Network is "tcp" or "udp".
	Network string
	// Addr is the bound address, with the real port when 0 was asked.
	Addr string
	// Shared is true when another holder already had the socket.
	Shared bool
	// Expires is, for a token-only binding, how long the token may be
	// picked up.
	Expires time.Duration
	// reclaim is the reference's reclaim secret (see reclaim.go).
	reclaim string
}

// BindFile asks the daemon for a socket bound to address on network (tcp,
// tcp4, tcp6, udp, udp4, udp6; address host:port with a numeric host, empty
// for all addresses; port 0 for any free one). TCP sockets come listening
// unless o.NoListen. The caller owns the returned file (blocking mode) and
// must close it; the daemon counts the reference until Release, or until
// this Client's connection closes.
func (c *Client) BindFile(ctx context.Context, network, address string, o *ListenOptions) (*os.File, *Binding, error) {
	rep, fds, err := c.roundTrip(ctx, &wire.Request{Op: wire.OpBind, Bind: o.wire(network, address, false)})
	f, b, err := bindReply("bind", rep, fds, err, true)
	if err == nil {
		c.remember(b.Token, b.reclaim)
	}
	return f, b, err
}

// BindToken asks for a token only (the first phase of a two-phase bind):
// the daemon creates or reuses the socket and keeps it for the token, which
// any connection whose caller is granted the address may Pickup once
// before it expires. The pending token counts as a holder for sharing.
func (c *Client) BindToken(ctx context.Context, network, address string, o *ListenOptions) (*Binding, error) {
	rep, fds, err := c.roundTrip(ctx, &wire.Request{Op: wire.OpBind, Bind: o.wire(network, address, true)})
	_, b, err := bindReply("bind", rep, fds, err, false)
	return b, err
}

// Pickup exchanges a token from BindToken for the socket; the reference is
// then held by this Client's connection. The caller owns the file.
func (c *Client) Pickup(ctx context.Context, token string) (*os.File, *Binding, error) {
	rep, fds, err := c.roundTrip(ctx, &wire.Request{Op: wire.OpPickup, Token: &wire.TokenRequest{Token: token}})
	f, b, err := bindReply("pickup", rep, fds, err, true)
	if err == nil {
		c.remember(b.Token, b.reclaim)
	}
	return f, b, err
}

// Release drops the reference token stands for. Only the connection that
// holds it may (or an admin). Sockets already received stay open in this
// process; the daemon closes its copy when the last reference goes.
func (c *Client) Release(ctx context.Context, token string) error {
	// Whatever the outcome, this Client no longer reclaims the
	// reference: if the daemon is down, the reference it kept goes when
	// its reclaim grace ends.
	c.forget(token)
	rep, fds, err := c.roundTrip(ctx, &wire.Request{Op: wire.OpRelease, Token: &wire.TokenRequest{Token: token}})
	if err != nil {
		return err
	}
	fds.close()
	if rep.Error != nil {
		return fromWire("release", rep.Error)
	}
	return nil
}

func bindReply(op string, rep *wire.Reply, fds fdSet, err error, wantFile bool) (*os.File, *Binding, error) {
	if err != nil {
		return nil, nil, err
	}
	if rep.Error != nil {
		fds.close()
		return nil, nil, fromWire(op, rep.Error)
	}
	if rep.Bind == nil || (fds.n == 1) != wantFile || fds.n > 1 {
		fds.close()
		return nil, nil, fmt.Errorf("%w: %s reply without the expected socket", ErrProtocol, op)
	}
	b := &Binding{Token: rep.Bind.Token, Network: rep.Bind.Network, Addr: rep.Bind.Local, Shared: rep.Bind.Shared,
		Expires: time.Duration(rep.Bind.ExpiresMS) * time.Millisecond, reclaim: rep.Bind.Reclaim}
	if !wantFile {
		return nil, b, nil
	}
	return fds.file(), b, nil
}

// Listen asks the daemon for a listening TCP socket (network tcp, tcp4 or
// tcp6) and returns it as a listener whose Close also releases the
// reference. The listener is a *Listener, which embeds *net.TCPListener.
func (c *Client) Listen(ctx context.Context, network, address string, o *ListenOptions) (*Listener, error) {
	f, b, err := c.BindFile(ctx, network, address, o)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		c.Release(context.Background(), b.Token)
		return nil, &net.OpError{Op: "listen", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	tl, ok := l.(*net.TCPListener)
	if !ok {
		l.Close()
		c.Release(context.Background(), b.Token)
		return nil, &net.OpError{Op: "listen", Net: network, Addr: stringAddr{network, address}, Err: fmt.Errorf("%w: not a TCP listener", ErrProtocol)}
	}
	return &Listener{TCPListener: tl, Binding: b, release: c.releaser(b.Token)}, nil
}

// ListenPacket asks the daemon for a bound UDP socket (network udp, udp4
// or udp6) whose Close also releases the reference. The result is a
// *PacketConn, which embeds *net.UDPConn.
func (c *Client) ListenPacket(ctx context.Context, network, address string, o *ListenOptions) (*PacketConn, error) {
	f, b, err := c.BindFile(ctx, network, address, o)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		c.Release(context.Background(), b.Token)
		return nil, &net.OpError{Op: "listen", Net: network, Addr: stringAddr{network, address}, Err: err}
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		c.Release(context.Background(), b.Token)
		return nil, &net.OpError{Op: "listen", Net: network, Addr: stringAddr{network, address}, Err: fmt.Errorf("%w: not a UDP socket", ErrProtocol)}
	}
	return &PacketConn{UDPConn: uc, Binding: b, release: c.releaser(b.Token)}, nil
}

// releaser returns a function releasing token, once however often it is
// called. A broken daemon connection has released it already, so
// ErrUnavailable, and ErrNotFound after a reconnect, are not errors.
func (c *Client) releaser(token string) func() error {
	var (
		once sync.Once
		err  error
	)
	return func() error {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = c.Release(ctx, token)
			if errors.Is(err, ErrUnavailable) || errors.Is(err, net.ErrClosed) || errors.Is(err, ErrNotFound) {
				err = nil
			}
		})
		return err
	}
}

// Listener is a listening socket from the daemon. Close closes it and
// releases the daemon's reference.
type Listener struct {
	*net.TCPListener
	// Binding describes the reference.
	Binding *Binding
	release func() error // releases once, however often called
}

// Close closes the listener and releases the reference. Other holders of
// a shared socket keep it. It is safe to call more than once, concurrently.
func (l *Listener) Close() error {
	err := l.TCPListener.Close()
	if rerr := l.release(); err == nil {
		err = rerr
	}
	return err
}

// PacketConn is a bound UDP socket from the daemon. Close closes it and
// releases the daemon's reference.
type PacketConn struct {
	*net.UDPConn
	// Binding describes the reference.
	Binding *Binding
	release func() error // releases once, however often called
}

// Close closes the socket and releases the reference. It is safe to call
// more than once, concurrently.
func (p *PacketConn) Close() error {
	err := p.UDPConn.Close()
	if rerr := p.release(); err == nil {
		err = rerr
	}
	return err
}

var (
	_ net.Listener   = (*Listener)(nil)
	_ net.PacketConn = (*PacketConn)(nil)
)

// Listen is Client.Listen on a Client of its own, connected to
// DefaultSocketPath(): the reference lives exactly as long as the listener
// (closing it, or this process dying, releases it).
func Listen(ctx context.Context, network, address string, o *ListenOptions) (*Listener, error) {
	c := &Client{}
	l, err := c.Listen(ctx, network, address, o)
	if err != nil {
		c.Close()
		return nil, err
	}
	release := l.release
	l.release = func() error { err := release(); c.Close(); return err } // Client.Close is idempotent
	return l, nil
}

// ListenPacket is Client.ListenPacket on a Client of its own, like Listen.
func ListenPacket(ctx context.Context, network, address string, o *ListenOptions) (*PacketConn, error) {
	c := &Client{}
	p, err := c.ListenPacket(ctx, network, address, o)
	if err != nil {
		c.Close()
		return nil, err
	}
	release := p.release
	p.release = func() error { err := release(); c.Close(); return err }
	return p, nil
}
