package sequencer

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeLease is a lease the test controls.
type fakeLease struct {
	epoch    uint64
	deadline time.Time
	ctx      context.Context
}

func (l *fakeLease) Epoch() uint64            { return l.epoch }
func (l *fakeLease) Deadline() time.Time      { return l.deadline }
func (l *fakeLease) Context() context.Context { return l.ctx }

// fakeNode leads the shards in leases.
type fakeNode struct{ leases map[uint32]*fakeLease }

func (n *fakeNode) lease(s uint32) lease {
	if l := n.leases[s]; l != nil {
		return l
	}
	return nil
}

func (n *fakeNode) notLeader(s uint32) error {
	return &shard.NotLeaderError{Shard: s, Leader: "other", Addr: "other:7000", Epoch: 9}
}

var t0 = time.Unix(1_000_000, 0)

func live(epoch uint64) *fakeLease {
	return &fakeLease{epoch: epoch, deadline: t0.Add(time.Second), ctx: context.Background()}
}

// call is one Next on shard 0, after an optional change of the lease.
type call struct {
	set     func(n *fakeNode, q *Sequencer) // before the call
	wantID  uint64
	wantErr error
}

func TestNext(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	lease := func(l *fakeLease) func(*fakeNode, *Sequencer) {
		return func(n *fakeNode, _ *Sequencer) { n.leases[0] = l }
	}
	renewed := live(3)
	older := live(3)
	tests := []struct {
		name  string
		calls []call
	}{
		{name: "first IDs of a leadership", calls: []call{
			{set: lease(live(3)), wantID: 3 << 40},
			{wantID: 3<<40 | 1},
			{wantID: 3<<40 | 2},
		}},
		{name: "not leader", calls: []call{
			{wantErr: shard.ErrNotLeader},
		}},
		{name: "lease context ended", calls: []call{
			{set: lease(&fakeLease{epoch: 3, deadline: t0.Add(time.Second), ctx: ended}), wantErr: shard.ErrNotLeader},
		}},
		{name: "deadline passed", calls: []call{
			{set: lease(&fakeLease{epoch: 3, deadline: t0, ctx: context.Background()}), wantErr: shard.ErrNotLeader},
		}},
		{name: "a renewed lease starts its epoch's counter", calls: []call{
			{set: lease(renewed), wantID: 3 << 40},
			{wantID: 3<<40 | 1},
			{set: func(*fakeNode, *Sequencer) { renewed.epoch = 4 }, wantID: 4 << 40},
		}},
		{name: "a later leadership of this node", calls: []call{
			{set: lease(live(3)), wantID: 3 << 40},
			{set: func(n *fakeNode, _ *Sequencer) { delete(n.leases, 0) }, wantErr: shard.ErrNotLeader},
			{set: lease(live(6)), wantID: 6 << 40},
		}},
		{name: "an older lease after a newer one issued", calls: []call{
			{set: lease(live(6)), wantID: 6 << 40},
			{set: lease(older), wantErr: shard.ErrNotLeader},
		}},
		{name: "exhausted: refuse, never wrap", calls: []call{
			{set: lease(live(3)), wantID: 3 << 40},
			{set: func(_ *fakeNode, q *Sequencer) { q.shards[0].next = MaxCounter }, wantID: 3<<40 | MaxCounter},
			{wantErr: ErrExhausted},
			{wantErr: ErrExhausted},
			{set: lease(live(4)), wantID: 4 << 40},
		}},
		{name: "the highest epoch fits", calls: []call{
			{set: lease(live(MaxEpoch)), wantID: uint64(MaxEpoch) << 40},
		}},
		{name: "epoch too large", calls: []call{
			{set: lease(live(MaxEpoch + 1)), wantErr: ErrEpochTooLarge},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &fakeNode{leases: map[uint32]*fakeLease{}}
			q := newSequencer(n, func() time.Time { return t0 })
			for i, c := range tt.calls {
				if c.set != nil {
					c.set(n, q)
				}
				id, err := q.Next(context.Background(), 0)
				switch {
				case c.wantErr != nil && !errors.Is(err, c.wantErr):
					t.Fatalf("call %d: Next = %d, %v; want %v", i+1, id, err, c.wantErr)
				case c.wantErr == nil && (err != nil || id != c.wantID):
					t.Fatalf("call %d: Next = %#x, %v; want %#x", i+1, id, err, c.wantID)
				}
			}
		})
	}
}

// TestNextNotLeaderNamesTheLeader: the error redirects.
func TestNextNotLeaderNamesTheLeader(t *testing.T) {
	q := newSequencer(&fakeNode{leases: map[uint32]*fakeLease{}}, time.Now)
	_, err := q.Next(context.Background(), 5)
	var nl *shard.NotLeaderError
	if !errors.As(err, &nl) || nl.Shard != 5 || nl.Leader != "other" || nl.Addr != "other:7000" {
		t.Errorf("Next = %v, want a redirect to other", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Next(ctx, 5); !errors.Is(err, context.Canceled) {
		t.Errorf("Next with a cancelled context = %v", err)
	}
}

// TestLayoutOrders: every ID of a higher epoch is above every ID of a
// lower one, and Split undoes ID.
func TestLayoutOrders(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(limit uint64) uint64 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return limit
		}
		return rng.Uint64N(limit + 1)
	}
	for range 100000 {
		e1 := pick(MaxEpoch - 1)
		e2 := e1 + 1 + pick(MaxEpoch-e1-1)
		c1, c2 := pick(MaxCounter), pick(MaxCounter)
		if a, b := ID(e1, c1), ID(e2, c2); a >= b {
			t.Fatalf("ID(%d, %d) = %#x >= ID(%d, %d) = %#x", e1, c1, a, e2, c2, b)
		}
		if e, c := Split(ID(e1, c1)); e != e1 || c != c1 {
			t.Fatalf("Split(ID(%d, %d)) = %d, %d", e1, c1, e, c)
		}
	}
}
