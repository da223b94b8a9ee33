package client

import (
	"context"
	"errors"
	"fmt"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// errProtocol marks a stream that sent something a correct node never
// sends; the client drops its position and starts over with a reset.
var errProtocol = errors.New("client: watch protocol violation")

// follow keeps the local table current until ctx ends: it follows one
// endpoint's Watch stream and, when the stream fails, moves to the next
// endpoint, backing off once every endpoint has failed in a row.
func (c *Client) follow(ctx context.Context) {
	var pos position
	failures := 0
	for i := 0; ctx.Err() == nil; i = (i + 1) % len(c.conns) {
		c.mu.Lock()
		c.endpoint = i
		c.mu.Unlock()
		progressed, err := c.watch(ctx, i, &pos)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errProtocol) {
			pos = position{}
		}
		if progressed {
			failures = 0
		}
		failures++
		c.log.Warn("watch stream ended; trying the next endpoint",
			"endpoint", c.cfg.Endpoints[i], "err", tenurev1.FromStatus(err))
		// Move to the next endpoint at once, as long as some endpoint
		// answered lately; back off once a whole round failed.
		if failures >= len(c.conns) && !sleep(ctx, c.backoff(failures-len(c.conns)+1)) {
			return
		}
	}
}

// position is where the local table stands in a node's history.
type position struct {
	version, origin uint64
}

// watch follows endpoint i's stream from pos until it fails, applying each
// complete update. It reports whether any update was applied.
func (c *Client) watch(ctx context.Context, i int, pos *position) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := tenurev1.NewTenureClient(c.conns[i]).Watch(ctx, &tenurev1.WatchRequest{
		FromVersion: pos.version,
		Origin:      pos.origin,
	})
	if err != nil {
		return false, err
	}
	var u pending
	for {
		ev, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		done, err := u.add(ev)
		if err != nil {
			return progressed, err
		}
		if !done {
			continue
		}
		t, err := u.apply(c.dir.Current(), *pos)
		if err != nil {
			return progressed, err
		}
		c.publish(t)
		*pos = position{version: ev.GetVersion(), origin: ev.GetOrigin()}
		progressed = true
		u = pending{}
	}
}

// pending gathers the events of one update: a WatchEvent and those that
// continue it (more).
type pending struct {
	started bool
	reset   bool
	version uint64
	origin  uint64
	changed []shard.Entry
}

// maxPendingEntries bounds what one update may bring, against a faulty or
// hostile node: a reset holds at most MaxShards entries, a change no more.
const maxPendingEntries = shard.MaxShards

// add validates ev and adds it to the update; done says the update is
// complete.
func (u *pending) add(ev *tenurev1.WatchEvent) (done bool, err error) {
	if !u.started {
		u.started, u.reset, u.version, u.origin = true, ev.GetReset_(), ev.GetVersion(), ev.GetOrigin()
	} else if ev.GetReset_() || ev.GetVersion() != u.version || ev.GetOrigin() != u.origin {
		return false, fmt.Errorf("%w: an event continuing version %d has reset %v, version %d, origin %d",
			errProtocol, u.version, ev.GetReset_(), ev.GetVersion(), ev.GetOrigin())
	}
	if len(u.changed)+len(ev.GetChanged()) > maxPendingEntries {
		return false, fmt.Errorf("%w: an update of more than %d entries", errProtocol, maxPendingEntries)
	}
	for i, m := range ev.GetChanged() {
		e, err := tenurev1.EntryFromPB(m)
		if err != nil {
			return false, fmt.Errorf("%w: WatchEvent.changed[%d]: %w", errProtocol, i, err)
		}
		u.changed = append(u.changed, e)
	}
	return !ev.GetMore(), nil
}

// apply returns the table the complete update u makes of cur, the table
// the client holds at pos.
func (u *pending) apply(cur *shard.Table, pos position) (*shard.Table, error) {
	if u.reset {
		t, err := shard.NewTable(u.version, u.changed)
		if err != nil {
			return nil, fmt.Errorf("%w: reset: %w", errProtocol, err)
		}
		return t, nil
	}
	// A change applies only to the table it was computed from: the one
	// this client holds, from the same origin.
	if cur == nil || pos.version == 0 || u.origin != pos.origin || u.version <= pos.version {
		return nil, fmt.Errorf("%w: a change to version %d (origin %d) of a client at version %d (origin %d)",
			errProtocol, u.version, u.origin, pos.version, pos.origin)
	}
	entries := cur.Entries()
	for _, e := range u.changed {
		if int(e.Shard) >= len(entries) {
			return nil, fmt.Errorf("%w: a change to shard %d of a table of %d", errProtocol, e.Shard, len(entries))
		}
		entries[e.Shard] = e
	}
	t, err := shard.NewTable(u.version, entries)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errProtocol, err)
	}
	return t, nil
}
