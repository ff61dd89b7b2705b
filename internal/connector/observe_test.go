package connector

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// lookupFunc is a Lookup of a function.
type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f lookupFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// TestObserveLookup: every lookup is reported once, with its error; one
// that finds only addresses of the other family is a not-found error.
func TestObserveLookup(t *testing.T) {
	found := lookupFunc(func(context.Context, string, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	})
	broken := lookupFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "server misbehaving", Name: host}
	})
	v6 := Network{Proto: "tcp", Family: 6}
	cases := []struct {
		name     string
		r        Lookup
		n        Network
		notFound bool
		fails    bool
	}{
		{"found", found, Network{Proto: "tcp"}, false, false},
		{"wrong family", found, v6, true, true},
		{"failed", broken, Network{Proto: "tcp"}, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls int
			var got error
			c := &Connector{Resolver: tc.r, ObserveLookup: func(err error, took time.Duration) {
				calls++
				got = err
				if took < 0 {
					t.Errorf("took %v; want >= 0", took)
				}
			}}
			_, err := c.Resolve(context.Background(), tc.n, "example.test")
			if calls != 1 {
				t.Fatalf("ObserveLookup called %d times; want 1", calls)
			}
			if !errors.Is(got, err) || (got != nil) != tc.fails {
				t.Fatalf("observed %v, Resolve returned %v; want failure %v", got, err, tc.fails)
			}
			var de *net.DNSError
			if tc.fails && (!errors.As(got, &de) || de.IsNotFound != tc.notFound) {
				t.Fatalf("observed %v; want a DNSError with IsNotFound %v", got, tc.notFound)
			}
		})
	}
}
