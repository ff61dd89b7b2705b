package sockfactory

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sockfactory/sockfactory/internal/wire"
)

// A daemon that keeps its sockets in systemd's fd store comes back from a
// crash with every reference its clients held, for a grace period
// (reclaim_grace, 30 s by default), during which each holder may take its
// references back over a new connection with the reclaim secret it got
// with the socket (docs/protocol.md, 7.11). A Client does that by itself:
// while it holds references it watches its connection, and when the daemon
// goes away it connects again (retrying, with a growing pause, for as long
// as it holds any) and reclaims every one before anything else is sent. A
// Listener, a PacketConn, or a program run by `sockfactory exec` thus keeps
// its sockets through a daemon crash without noticing. References the
// daemon no longer knows (it restarted without the fd store, or the grace
// ended) are forgotten.

// remember records a reference this Client holds, with its reclaim
// secret, and makes sure the connection is watched.
func (c *Client) remember(token, secret string) {
	if secret == "" {
		return
	}
	c.keepMu.Lock()
	if c.held == nil {
		c.held = make(map[string]string)
	}
	c.held[token] = secret
	c.keepMu.Unlock()
	c.watch()
}

// forget drops a reference the Client no longer holds.
func (c *Client) forget(token string) {
	c.keepMu.Lock()
	delete(c.held, token)
	c.keepMu.Unlock()
}

// isHeld reports whether the Client still holds token.
func (c *Client) isHeld(token string) bool {
	c.keepMu.Lock()
	defer c.keepMu.Unlock()
	_, ok := c.held[token]
	return ok
}

func (c *Client) holding() map[string]string {
	c.keepMu.Lock()
	defer c.keepMu.Unlock()
	if len(c.held) == 0 {
		return nil
	}
	out := make(map[string]string, len(c.held))
	for t, s := range c.held {
		out[t] = s
	}
	return out
}

// quitChan is closed by Close.
func (c *Client) quitChan() chan struct{} {
	c.quitOnce.Do(func() { c.quit = make(chan struct{}) })
	return c.quit
}

// reclaimAll reclaims, on a new connection not yet in use, every
// reference the Client held on the connection before it. A reference the
// daemon refuses (not_found) is forgotten; one that could not be asked
// for (the connection broke again) is kept for the next try.
func (c *Client) reclaimAll(ctx context.Context, cc *clientConn) error {
	for token, secret := range c.holding() {
		rep, err := c.setup(ctx, cc, &wire.Request{Op: wire.OpReclaim, Reclaim: &wire.ReclaimRequest{Token: token, Secret: secret}})
		if err != nil {
			return err
		}
		if rep.Error != nil {
			c.forget(token) // the daemon no longer has it for us
			continue
		}
		if !c.isHeld(token) {
			// Released while it was being reclaimed: release it here,
			// or this connection would hold it for good.
			if rep, err := c.setup(ctx, cc, &wire.Request{Op: wire.OpRelease, Token: &wire.TokenRequest{Token: token}}); err != nil {
				return err
			} else if rep.Error != nil && rep.Error.Code != wire.CodeNotFound {
				return fromWire("release", rep.Error)
			}
		}
	}
	return nil
}

// watch starts, once per connection, a goroutine that notices the daemon
// closing the live connection while the Client holds references, and
// then connects again (which reclaims them). It waits in poll(2), on a
// thread of its own, for the hang-up alone (POLLRDHUP) on a duplicate of
// the connection's descriptor and for an eventfd the connection's close
// writes: replies arriving wake nothing, so requests cost no extra
// wake-up or system call. It reads nothing: replies are left to the
// requests that wait for them.
func (c *Client) watch() {
	cc := c.live.Load()
	if cc == nil || !cc.watched.CompareAndSwap(false, true) {
		return
	}
	fd := -1
	var derr error
	if err := cc.rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil || fd < 0 {
		// The connection is closed already, or no descriptor is left:
		// no watch; connect again now if it broke.
		c.rejoinLater()
		return
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(fd)
		return // no watch: the next request reconnects and reclaims
	}
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		unix.Close(fd)
		unix.Close(stop)
		c.rejoinLater()
		return
	}
	cc.watchStop = stop
	cc.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}, {Fd: int32(stop), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(p, -1); err != unix.EINTR {
				break
			}
		}
		hup := p[1].Revents == 0 && p[0].Revents&(unix.POLLHUP|unix.POLLRDHUP|unix.POLLERR) != 0
		cc.mu.Lock()
		cc.watchStop = -1 // close must not write to it once closed
		cc.mu.Unlock()
		unix.Close(stop)
		unix.Close(fd)
		if hup {
			// Replies the daemon sent before it closed may still be
			// queued: let the requests waiting for them read them (and
			// the end after them, which closes the connection) rather
			// than throw them away.
			for i := 0; i < 200 && cc.waiting(); i++ {
				time.Sleep(5 * time.Millisecond)
			}
			cc.close(fmt.Errorf("%w: daemon closed the connection", ErrUnavailable))
		}
		c.rejoin()
	}()
}

// rejoinLater runs rejoin on a goroutine of the Client's.
func (c *Client) rejoinLater() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.rejoin()
	}()
}

// rejoin connects again, with a growing pause between tries, for as long
// as the Client holds references and is not closed; the new connection
// reclaims them (connect) and is watched in turn.
func (c *Client) rejoin() {
	quit := c.quitChan()
	pause := 20 * time.Millisecond
	for {
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed || c.holding() == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.conn(ctx)
		cancel()
		if err == nil {
			c.watch()
			return
		}
		// With jitter: after a crash, every client comes back at once.
		select {
		case <-quit:
			return
		case <-time.After(pause/2 + rand.N(pause)):
		}
		pause = min(2*pause, time.Second)
	}
}
