package server

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// maxEventEntries bounds the entries of one WatchEvent. An entry with the
// longest strings a node accepts takes about 420 bytes on the wire, so
// 4096 of them stay under 2 MB, half of gRPC's default 4 MB receive limit;
// a reset of a large table is split into several events (WatchEvent.more).
const maxEventEntries = 4096

// minHistoryEntries is the changed entries the history may keep however
// small the table: with 2P alone, a table of 128 shards kept 256, and a
// client away during one node's restart (each handoff changes an entry
// several times) came back to a reset. 4096 is one Watch event's worth.
const minHistoryEntries = 4096

// delta is what changed from one table version the feed saw to the next.
type delta struct {
	from, to uint64
	changed  []shard.Entry // sorted by shard
}

// tableSource is what the feed follows: a *shard.Node.
type tableSource interface {
	Table() *shard.Table
	Changed() <-chan struct{}
}

// feed follows the node's table and keeps the changes of its recent
// versions, computed once and shared by every Watch stream. Streams never
// wait for each other or hold the node back: each reads the history at its
// own pace, and one that fell out of it gets a reset.
type feed struct {
	node        tableSource
	maxVersions int

	mu      sync.Mutex
	cur     *shard.Table
	deltas  []delta // oldest first; deltas[i].to == deltas[i+1].from
	entries int     // changed entries in deltas, bounded by 2P
	wake    chan struct{}
}

func newFeed(node tableSource, maxVersions int) *feed {
	f := &feed{node: node, maxVersions: maxVersions, wake: make(chan struct{})}
	// A node publishes its first table in shard.New, so there always is
	// one to start from.
	f.cur = node.Table()
	return f
}

// run follows the node's table until stop is closed. It is the only
// writer of the history.
func (f *feed) run(stop <-chan struct{}) {
	for {
		// Take the channel before reading the table, so that a table
		// published in between closes it and is not missed.
		changed := f.node.Changed()
		f.observe(f.node.Table())
		select {
		case <-changed:
		case <-stop:
			return
		}
	}
}

// observe records t as the current table. Versions the feed never saw
// (published between two wake-ups) are simply absent from the history: a
// client at one of them gets a reset, which is always correct.
func (f *feed) observe(t *shard.Table) {
	f.mu.Lock()
	prev := f.cur
	f.mu.Unlock()
	if t == prev {
		return
	}
	// Only run calls observe, so prev stays current while the diff, O(P),
	// is computed without the lock.
	var d *delta
	if t.Shards() == prev.Shards() && t.Version() > prev.Version() {
		d = &delta{from: prev.Version(), to: t.Version(), changed: diff(prev, t)}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = t
	if d == nil {
		f.deltas, f.entries = nil, 0
	} else {
		f.deltas = append(f.deltas, *d)
		f.entries += len(d.changed)
		// The history costs at most two tables' worth of entries (or
		// minHistoryEntries, for small tables); a client
		// that is further behind gets a reset, which is never larger than
		// the merged changes would be.
		// Trimming only moves the slice's start: streams read the deltas
		// they took without the lock, so no element is ever written again
		// (not even zeroed). The dropped ones are freed when append
		// outgrows the shrinking capacity and copies the rest.
		for len(f.deltas) > f.maxVersions || (len(f.deltas) > 1 && f.entries > max(2*t.Shards(), minHistoryEntries)) {
			f.entries -= len(f.deltas[0].changed)
			f.deltas = f.deltas[1:]
		}
	}
	close(f.wake)
	f.wake = make(chan struct{})
}

// diff returns the entries of b that differ from a's, in shard order.
func diff(a, b *shard.Table) []shard.Entry {
	var out []shard.Entry
	for i := range b.Shards() {
		x, _ := a.Shard(int64(i))
		y, _ := b.Shard(int64(i))
		if x != y {
			out = append(out, y)
		}
	}
	return out
}

// update is what a Watch client must apply to reach version.
type update struct {
	version uint64
	reset   bool
	changed []shard.Entry
}

// since returns the update that takes a client at version from (resumable
// says its origin is this server's) to the current table, or ok false when
// it is current; and a channel closed when the table next changes.
func (f *feed) since(from uint64, resumable bool) (u update, ok bool, wake <-chan struct{}) {
	f.mu.Lock()
	cur, deltas, wake := f.cur, f.deltas, f.wake
	f.mu.Unlock()
	u.version = cur.Version()
	if resumable && from == u.version {
		return update{}, false, wake
	}
	i := len(deltas)
	if resumable {
		for j, d := range deltas {
			if d.from == from {
				i = j
				break
			}
		}
	}
	if i == len(deltas) {
		return update{version: u.version, reset: true, changed: cur.Entries()}, true, wake
	}
	// The deltas are never modified once appended (trimming replaces the
	// slice header), so they are read here without the lock.
	u.changed = merge(deltas[i:])
	return u, true, wake
}

// merge returns the latest entry of every shard some delta changed, in
// shard order.
func merge(ds []delta) []shard.Entry {
	if len(ds) == 1 {
		return ds[0].changed
	}
	latest := make(map[shard.ID]shard.Entry)
	for _, d := range ds {
		for _, e := range d.changed {
			latest[e.Shard] = e
		}
	}
	out := make([]shard.Entry, 0, len(latest))
	for _, e := range latest {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b shard.Entry) int { return cmp.Compare(a.Shard, b.Shard) })
	return out
}

// Watch streams the node's table changes; see the proto for the contract.
//
// The events are sent by a goroutine of the server's while the handler
// waits for it, the client or Close: a handler blocked in Send on a client
// that reads nothing could otherwise not be ended by Close, and the node's
// gRPC server would wait for it when stopping. Returning from the handler
// ends the RPC, which unblocks the sender.
func (s *Server) Watch(req *tenurev1.WatchRequest, stream grpc.ServerStreamingServer[tenurev1.WatchEvent]) error {
	if !s.track() {
		return errClosed
	}
	select {
	case <-s.draining:
		s.wg.Done()
		return s.errDraining()
	default:
	}
	ctx := stream.Context()
	done := make(chan error, 1)
	go func() {
		defer s.wg.Done()
		done <- s.sendEvents(ctx, req, stream)
	}()
	select {
	case err := <-done:
		return err
	case <-s.stop:
		return errClosed
	case <-s.draining:
		return s.errDraining()
	}
}

func (s *Server) errDraining() error {
	return tenurev1.ToStatus(fmt.Errorf("node %s: %w; watch another node", s.node.ID(), shard.ErrDraining))
}

// sendEvents sends the node's table changes on stream until ctx ends, the
// server closes or a send fails.
func (s *Server) sendEvents(ctx context.Context, req *tenurev1.WatchRequest, stream grpc.ServerStreamingServer[tenurev1.WatchEvent]) error {
	from := req.GetFromVersion()
	resumable := from != 0 && req.GetOrigin() == s.origin
	for {
		u, ok, wake := s.feed.since(from, resumable)
		if ok {
			if err := s.send(stream, u); err != nil {
				return err
			}
			from, resumable = u.version, true
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return tenurev1.ToStatus(ctx.Err())
		case <-s.stop:
			return errClosed
		case <-s.draining:
			return s.errDraining()
		}
	}
}

// send sends u as one event, or several of at most maxEventEntries entries
// linked by more.
func (s *Server) send(stream grpc.ServerStreamingServer[tenurev1.WatchEvent], u update) error {
	changed := u.changed
	first := true
	for first || len(changed) > 0 {
		n := min(len(changed), maxEventEntries)
		ev := &tenurev1.WatchEvent{
			Version: u.version,
			Origin:  s.origin,
			Reset_:  u.reset && first,
			More:    n < len(changed),
			Changed: make([]*tenurev1.ShardEntry, n),
		}
		pbs := make([]tenurev1.ShardEntry, n)
		for i, e := range changed[:n] {
			fillEntry(&pbs[i], e)
			ev.Changed[i] = &pbs[i]
		}
		if err := stream.Send(ev); err != nil {
			return err
		}
		changed, first = changed[n:], false
	}
	return nil
}
