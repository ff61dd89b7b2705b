package sockfactory

import (
	"context"
	"fmt"
	"time"

	"sockfactory/internal/wire"
)

// SocketStatus describes one socket the daemon holds.
type SocketStatus struct {
	// Network is "tcp" or "udp"; Addr the bound address.
	Network, Addr string
	// Refs counts references, pending tokens included.
	Refs int
	// Age is how long the daemon has held the socket.
	Age time.Duration
	// Linger is how long the daemon keeps it after the last reference.
	Linger time.Duration
	// Lingering, when not zero, is how long it has had no references.
	Lingering time.Duration
	// Holders are the references.
	Holders []HolderStatus
}

// HolderStatus describes one reference.
type HolderStatus struct {
	// Share and Name are its share mode and share name.
	Share, Name string
	// UID, PID and App identify the holding caller (for a pending token,
	// the one that asked for it).
	UID uint32
	PID int32
	App string
	// Pending is true for a token not yet picked up.
	Pending bool
	// Token is set for the caller's own references, and for all when the
	// caller is an admin.
	Token string
}

// Status lists the sockets the daemon holds that this caller has
// references in; an admin caller sees all.
func (c *Client) Status(ctx context.Context) ([]SocketStatus, error) {
	rep, files, err := c.roundTrip(ctx, &wire.Request{Op: wire.OpStatus, Status: &wire.StatusRequest{}})
	if err != nil {
		return nil, err
	}
	closeFiles(files)
	if rep.Error != nil {
		return nil, fromWire("status", rep.Error)
	}
	if rep.Status == nil {
		return nil, fmt.Errorf("%w: status reply without a status", ErrProtocol)
	}
	out := make([]SocketStatus, 0, len(rep.Status.Sockets))
	for _, s := range rep.Status.Sockets {
		st := SocketStatus{Network: s.Network, Addr: s.Local, Refs: s.Refs, Age: ms(s.AgeMS), Linger: ms(s.LingerMS), Lingering: ms(s.LingeringMS)}
		for _, h := range s.Holders {
			st.Holders = append(st.Holders, HolderStatus{Share: h.Share, Name: h.Name, UID: h.UID, PID: h.PID, App: h.App, Pending: h.Pending, Token: h.Token})
		}
		out = append(out, st)
	}
	return out, nil
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
