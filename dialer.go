package sockfactory

import (
	"context"
	"net"
	"sync"
	"time"
)

// Dialer makes connections through a sockfactory daemon. Its DialContext
// plugs into http.Transport.DialContext, grpc.WithContextDialer and anything
// else that takes a dial function.
//
// The zero value is ready to use: it opens its own connection to the daemon
// at DefaultSocketPath() on first use. A Dialer is safe for concurrent use
// and must not be copied after first use.
type Dialer struct {
	// Client carries the requests. Nil means a Client private to this
	// Dialer, connected to Socket and closed by Close.
	Client *Client
	// Socket is the daemon's socket path, used only when Client is nil.
	// Empty means DefaultSocketPath().
	Socket string
	// Timeout bounds each dial: the daemon's resolution and connect
	// attempts. Zero means the daemon's default (10 s unless configured).
	// A context deadline that is sooner wins.
	Timeout time.Duration
	// Netns names the network namespace connections are made from (see
	// ConnectOptions.Netns); empty means the daemon's own.
	Netns string

	once sync.Once
	own  *Client
}

func (d *Dialer) client() *Client {
	if d.Client != nil {
		return d.Client
	}
	d.once.Do(func() { d.own = &Client{Socket: d.Socket} })
	return d.own
}

// DialContext connects to address (host:port; IPv6 hosts in brackets; host
// may be a DNS name, resolved by the daemon) on network (tcp, tcp4, tcp6,
// udp, udp4, udp6). The caller owns the returned connection.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return dial(ctx, d.client(), network, address, &ConnectOptions{Timeout: d.Timeout, Netns: d.Netns})
}

// Dial is DialContext with context.Background().
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// Close closes the Dialer's private Client, if it made one. Connections it
// returned stay open. A shared Client set in the Client field is left open.
func (d *Dialer) Close() error {
	if d.Client != nil {
		return nil
	}
	// Make the private client if there is none yet, so that dials after
	// Close fail with net.ErrClosed instead of connecting again.
	return d.client().Close()
}
