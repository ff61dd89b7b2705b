package sockfactory

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// SocketStatus describes one socket the daemon holds.
type SocketStatus struct {
	// Network is "tcp" or "udp"; Addr the bound address.
	Network string `json:"network"`
	Addr    string `json:"addr"`
	// Refs counts references, pending tokens included.
	Refs int `json:"refs"`
	// Age is how long the daemon has held the socket.
	Age time.Duration `json:"age_ns"`
	// Linger is how long the daemon keeps it after the last reference.
	Linger time.Duration `json:"linger_ns"`
	// Lingering, when not zero, is how long it has had no references.
	Lingering time.Duration `json:"lingering_ns,omitempty"`
	// Netns is the name the socket's network namespace was asked by
	// ("caller", a name under /run/netns) and NetnsID its identity
	// (device:inode of its nsfs file); both empty for the daemon's own.
	Netns   string `json:"netns,omitempty"`
	NetnsID string `json:"netns_id,omitempty"`
	// Holders are the references.
	Holders []HolderStatus `json:"holders"`
}

// HolderStatus describes one reference.
type HolderStatus struct {
	// Share and Name are its share mode and share name.
	Share string `json:"share"`
	Name  string `json:"name,omitempty"`
	// UID, PID and App identify the holding caller (for a pending token,
	// the one that asked for it).
	UID uint32 `json:"uid"`
	PID int32  `json:"pid"`
	App string `json:"app,omitempty"`
	// Pending is true for a token not yet picked up.
	Pending bool `json:"pending,omitempty"`
	// Token is set for the caller's own references, and for all when the
	// caller is an admin.
	Token string `json:"token,omitempty"`
}

// DaemonStats describes the daemon's own resources (admins only).
type DaemonStats struct {
	// PID is the daemon's process ID.
	PID int `json:"pid"`
	// Goroutines, FDs and HeapBytes are its goroutines, open descriptors
	// and live heap.
	Goroutines int    `json:"goroutines"`
	FDs        int    `json:"fds"`
	HeapBytes  uint64 `json:"heap_bytes"`
	// Sessions counts native client connections.
	Sessions int `json:"sessions"`
	// Sockets and Refs count cached sockets and their references.
	Sockets int `json:"sockets"`
	Refs    int `json:"refs"`
}

// Status lists the sockets the daemon holds that this caller has
// references in; an admin caller sees all.
//
// One reply carries at most what fits in a protocol packet (64 KiB, some
// hundreds of sockets, 64 holders each); a longer listing is cut, and
// ErrTruncated is returned with the part that fits.
func (c *Client) Status(ctx context.Context) ([]SocketStatus, error) {
	st, _, err := c.status(ctx)
	return st, err
}

// ErrTruncated is returned by Status with a listing cut to fit one reply.
var ErrTruncated = errors.New("sockfactory: status listing truncated")

// Stats returns the daemon's own resource counts. Only admins get them;
// others get ErrDenied.
func (c *Client) Stats(ctx context.Context) (*DaemonStats, error) {
	_, d, err := c.status(ctx)
	if errors.Is(err, ErrTruncated) {
		err = nil // the statistics are whole
	}
	if err == nil && d == nil {
		err = &Error{Op: "status", Code: string(wire.CodeDenied), Message: "daemon statistics are for admins (a rule with admin = true)"}
	}
	return d, err
}

// Reload makes the daemon re-read its configuration, as SIGHUP does. Only
// admins may; a broken configuration is refused (ErrInvalidRequest, with
// the file's error) and the running one kept.
func (c *Client) Reload(ctx context.Context) error {
	rep, fds, err := c.roundTrip(ctx, &wire.Request{Op: wire.OpReload})
	if err != nil {
		return err
	}
	fds.close()
	if rep.Error != nil {
		return fromWire("reload", rep.Error)
	}
	return nil
}

// Upgrade asks the daemon to replace itself with the executable now on
// disk at its own path, handing every socket, reference, token and client
// connection to the new process (admins only; docs/operations.md). It
// returns once the new daemon serves, which answers on this same
// connection; on failure the old daemon keeps serving and the error says
// why. Give ctx a deadline of more than the daemon's upgrade bound (30 s).
func (c *Client) Upgrade(ctx context.Context) (UpgradeResult, error) {
	rep, fds, err := c.roundTrip(ctx, &wire.Request{Op: wire.OpUpgrade})
	if err != nil {
		return UpgradeResult{}, err
	}
	fds.close()
	if rep.Error != nil {
		return UpgradeResult{}, fromWire("upgrade", rep.Error)
	}
	if rep.Upgrade == nil {
		return UpgradeResult{}, fmt.Errorf("upgrade: %w: the reply carries no upgrade result", ErrProtocol)
	}
	u := rep.Upgrade
	return UpgradeResult{OldPID: u.OldPID, NewPID: u.NewPID, Version: u.Version, Took: time.Duration(u.TookMS) * time.Millisecond}, nil
}

// UpgradeResult describes a live upgrade that succeeded.
type UpgradeResult struct {
	// OldPID is the replaced daemon's process ID, NewPID the one serving
	// now.
	OldPID, NewPID int
	// Version is the new daemon's version.
	Version string
	// Took is how long the upgrade took, from the request's arrival to
	// the new daemon serving.
	Took time.Duration
}

func (c *Client) status(ctx context.Context) ([]SocketStatus, *DaemonStats, error) {
	rep, fds, err := c.roundTrip(ctx, &wire.Request{Op: wire.OpStatus, Status: &wire.StatusRequest{}})
	if err != nil {
		return nil, nil, err
	}
	fds.close()
	if rep.Error != nil {
		return nil, nil, fromWire("status", rep.Error)
	}
	if rep.Status == nil {
		return nil, nil, fmt.Errorf("%w: status reply without a status", ErrProtocol)
	}
	var truncErr error
	if rep.Status.Truncated {
		truncErr = fmt.Errorf("%w: %d sockets shown of %d", ErrTruncated, len(rep.Status.Sockets), rep.Status.Total)
	}
	var d *DaemonStats
	if s := rep.Status.Daemon; s != nil {
		d = &DaemonStats{PID: s.PID, Goroutines: s.Goroutines, FDs: s.FDs, HeapBytes: s.HeapBytes, Sessions: s.Sessions, Sockets: s.Sockets, Refs: s.Refs}
	}
	out := make([]SocketStatus, 0, len(rep.Status.Sockets))
	for _, s := range rep.Status.Sockets {
		st := SocketStatus{Network: s.Network, Addr: s.Local, Refs: s.Refs, Age: ms(s.AgeMS), Linger: ms(s.LingerMS), Lingering: ms(s.LingeringMS), Netns: s.Netns, NetnsID: s.NetnsID}
		for _, h := range s.Holders {
			st.Holders = append(st.Holders, HolderStatus{Share: h.Share, Name: h.Name, UID: h.UID, PID: h.PID, App: h.App, Pending: h.Pending, Token: h.Token})
		}
		out = append(out, st)
	}
	return out, d, truncErr
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
