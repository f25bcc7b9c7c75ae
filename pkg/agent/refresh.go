package agent

import (
	"context"
	"time"
)

// Looking for new creds: Run (rotatord), WatchFile and WatchVault check
// every interval, and at once when the servers refuse a key the client
// uses. An emergency rotation of a signing key makes the servers drop every
// user it signed, and rotatord has new creds for each: waiting for the next
// interval would keep the agent off the network for up to that long.

// Quick looks while the servers refuse every key held.
const (
	firstQuickLook = 250 * time.Millisecond
	maxQuickLook   = 30 * time.Second
)

// wakeLocked tells the pollers to look now.
func (c *Client) wakeLocked() {
	close(c.wake)
	c.wake = make(chan struct{})
}

// woken returns a channel closed at the next refusal of a key in use.
func (c *Client) woken() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wake
}

// lockedOut reports whether the servers refuse every key the client holds.
func (c *Client) lockedOut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.allRefusedLocked()
}

// poll runs check now, then every interval until ctx ends; at once when a
// key in use is refused, and with a short, growing delay while every key
// held is refused.
func (c *Client) poll(ctx context.Context, interval time.Duration, check func()) {
	c.mu.Lock()
	c.pollers++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.pollers--
		last := c.pollers == 0
		c.mu.Unlock()
		if last {
			// No one left to look: a reconnect waiting for a look goes.
			c.lookDone()
		}
	}()
	var quick time.Duration
	for {
		wake := c.woken() // before check: a refusal during it counts
		check()
		c.lookDone()
		next := interval
		if c.lockedOut() {
			c.probe()
			if quick == 0 {
				quick = firstQuickLook
			} else {
				quick = min(quick*2, maxQuickLook)
			}
			next = min(next, quick)
		} else {
			quick = 0
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-wake:
			t.Stop()
		}
	}
}

// probe makes nats.go try the servers again now, while every key held is
// refused and the connection is down: with a poller, its reconnect delay
// waits for the looks (reconnectDelay), so a refusal that was temporary
// (an account a server had not loaded yet) is found out after each look.
func (c *Client) probe() {
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc != nil && nc.IsReconnecting() {
		if err := nc.ForceReconnect(); err != nil {
			c.cfg.Log.Debug("probe the servers", "agent", c.cfg.Name, "err", err)
		}
	}
}
