// Package sequencer hands out IDs that strictly increase per shard, across
// crashes and handoffs, without storage: the shard's epoch — the fencing
// token Tenure's voters grant, strictly higher with every new leadership —
// is the ID's high bits, and a counter kept in the leader's memory is the
// low bits.
//
//	 63          40 39                      0
//	┌──────────────┬─────────────────────────┐
//	│ epoch (24)   │ counter (40)            │
//	└──────────────┴─────────────────────────┘
//
// A new leader's epoch is higher than every earlier leader's, so its first
// ID (counter 0) is above every ID handed out before, whatever the old
// leader's counter reached and whether or not the old leader wrote it
// down. Within one leadership the counter grows by one per ID.
//
// Limits, enforced rather than wrapped:
//   - 2^40 (≈1.1·10^12) IDs per leadership of a shard. Next then returns
//     ErrExhausted until the shard has a new leadership: wrapping the
//     counter would hand out IDs below earlier ones. A new leadership comes
//     from a handoff, a restart, or a lease renewed at a higher epoch.
//   - epochs below 2^24 (≈16.7 million leaderships per shard). Above,
//     Next returns ErrEpochTooLarge: the shift would lose high bits.
//
// The ordering holds for IDs in the order Next returned them, across
// nodes: a Sequencer issues an ID only while its lease is live by its own
// clock (its context not cancelled and its deadline not passed), and no
// other node can lead the shard before that deadline. A client that asks
// one leader, is redirected (shard.NotLeaderError) and asks the next, sees
// strictly increasing IDs.
//
//	seq := sequencer.New(node)
//	id, err := seq.Next(ctx, shardOfKey)
//	var nl *shard.NotLeaderError
//	if errors.As(err, &nl) { /* ask nl.Addr instead */ }
package sequencer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tenurehq/tenure/shard"
)

// The ID layout: epoch << CounterBits | counter.
const (
	CounterBits = 40
	EpochBits   = 64 - CounterBits
	// MaxCounter is the last counter of a leadership.
	MaxCounter = 1<<CounterBits - 1
	// MaxEpoch is the highest epoch an ID can carry.
	MaxEpoch = 1<<EpochBits - 1
)

// ErrExhausted: the shard's leadership has handed out MaxCounter+1 IDs.
// The shard needs a new leadership (a higher epoch) before more.
var ErrExhausted = errors.New("sequencer: counter exhausted for this leadership")

// ErrEpochTooLarge: the shard's epoch does not fit in EpochBits.
var ErrEpochTooLarge = errors.New("sequencer: epoch too large for the ID layout")

// ID composes an ID. It does not check its arguments' ranges.
func ID(epoch, counter uint64) uint64 { return epoch<<CounterBits | counter }

// Split returns the epoch and counter of id.
func Split(id uint64) (epoch, counter uint64) { return id >> CounterBits, id & MaxCounter }

// lease is what the Sequencer reads of a lease; *shard.Lease has it.
type lease interface {
	Epoch() uint64
	Deadline() time.Time
	Context() context.Context
}

// leader is what the Sequencer reads of a node.
type leader interface {
	// lease returns this node's lease on s, or nil.
	lease(s uint32) lease
	// notLeader returns the error for s, naming the leader this node knows.
	notLeader(s uint32) error
}

// nodeLeader adapts a *shard.Node.
type nodeLeader struct{ n *shard.Node }

func (n nodeLeader) lease(s uint32) lease {
	if l := n.n.Leases()[s]; l != nil {
		return l
	}
	return nil
}

func (n nodeLeader) notLeader(s uint32) error {
	e, err := n.n.Table().Shard(int64(s))
	if err != nil {
		return fmt.Errorf("sequencer: %w", err)
	}
	nl := &shard.NotLeaderError{Shard: s, Leader: e.Leader, Addr: e.Addr, Epoch: e.Epoch}
	if nl.Leader == n.n.ID() {
		// Its own lease just ended: it knows no other leader yet.
		nl.Leader, nl.Epoch = "", 0
	}
	return nl
}

// Sequencer issues IDs for the shards its node leads. Safe for concurrent
// use; it starts no goroutines and needs no cleanup.
type Sequencer struct {
	node leader
	now  func() time.Time
	id   func(epoch, counter uint64) uint64 // ID; tests plant a broken layout

	mu     sync.Mutex
	shards map[uint32]*leadership
}

// leadership is the counter of the shard's current leadership here.
type leadership struct {
	epoch uint64
	next  uint64 // the next counter to hand out
}

// New returns a Sequencer for the shards node leads. Each Next reads the
// node's leases (Node.Leases), so it costs a copy of that map.
func New(node *shard.Node) *Sequencer {
	return newSequencer(nodeLeader{node}, time.Now)
}

func newSequencer(node leader, now func() time.Time) *Sequencer {
	return &Sequencer{node: node, now: now, id: ID, shards: map[uint32]*leadership{}}
}

// Next returns the shard's next ID. It fails with a *shard.NotLeaderError
// (matching shard.ErrNotLeader, naming the leader this node knows) when
// this node does not lead the shard or its lease is ending; with
// ErrExhausted or ErrEpochTooLarge at the layout's limits; or with ctx's
// error. It never blocks.
func (q *Sequencer) Next(ctx context.Context, s uint32) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l := q.node.lease(s)
	if l == nil || !q.live(l) {
		return 0, q.node.notLeader(s)
	}
	q.mu.Lock()
	// The epoch is read under the lock: it only grows (a renewal), so the
	// callers that hold the lock in turn see it in order.
	epoch := l.Epoch()
	if epoch > MaxEpoch {
		q.mu.Unlock()
		return 0, fmt.Errorf("shard %d: epoch %d exceeds %d: %w", s, epoch, uint64(MaxEpoch), ErrEpochTooLarge)
	}
	st := q.shards[s]
	switch {
	case st == nil || epoch > st.epoch:
		// A new leadership, or this one renewed at a higher epoch: any
		// counter is above every ID of the lower epochs.
		st = &leadership{epoch: epoch}
		q.shards[s] = st
	case epoch < st.epoch:
		// l is an older lease of this node, superseded by one that
		// already issued IDs: it has ended.
		q.mu.Unlock()
		return 0, q.node.notLeader(s)
	}
	if st.next > MaxCounter {
		q.mu.Unlock()
		return 0, fmt.Errorf("shard %d: epoch %d handed out %d IDs: %w", s, epoch, uint64(MaxCounter)+1, ErrExhausted)
	}
	id := q.id(epoch, st.next)
	st.next++
	q.mu.Unlock()
	// Checked again after the counter moved: the lease may have ended
	// meanwhile, and an ID handed out after its end could follow a newer
	// leader's. The skipped counter value is simply never used.
	if !q.live(l) {
		return 0, q.node.notLeader(s)
	}
	return id, nil
}

// live reports whether l is still this node's lease by its own clock: no
// other node can lead before its deadline.
func (q *Sequencer) live(l lease) bool {
	return l.Context().Err() == nil && q.now().Before(l.Deadline())
}
