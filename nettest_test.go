package sockfactory_test

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"

	"github.com/sockfactory/sockfactory"
)

// TestConnConformance runs the net.Conn conformance suite on connections
// made through the daemon: what a Dialer returns must behave as a socket
// the program made itself, deadlines and concurrent use included.
func TestConnConformance(t *testing.T) {
	checkFDs(t)
	path := startServer(t)
	tests := []struct {
		network, address string
	}{
		{"tcp4", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
	}
	for _, tt := range tests {
		t.Run(tt.network, func(t *testing.T) {
			listen(t, tt.network, tt.address).Close() // skips without IPv6
			d := &sockfactory.Dialer{Socket: path}
			t.Cleanup(func() { d.Close() })
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				l, err := net.Listen(tt.network, tt.address)
				if err != nil {
					return nil, nil, nil, err
				}
				defer l.Close()
				c1, err = d.DialContext(t.Context(), tt.network, l.Addr().String())
				if err != nil {
					return nil, nil, nil, err
				}
				c2, err = l.Accept()
				if err != nil {
					c1.Close()
					return nil, nil, nil, err
				}
				return c1, c2, func() { c1.Close(); c2.Close() }, nil
			})
		})
	}
}
