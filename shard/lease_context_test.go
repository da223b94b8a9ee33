package shard_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// heldPlanner is rebalance.Policy, except that while a gate is set every
// call waits for it to close: the node that runs it is stuck in its
// planner, as a node planning a large cluster is for a while.
type heldPlanner struct {
	gate    *atomic.Pointer[chan struct{}]
	entered chan<- struct{}
}

func (p heldPlanner) Target(n int, cur []string, m []shard.Member) ([]string, error) {
	if g := p.gate.Load(); g != nil {
		select {
		case p.entered <- struct{}{}:
		default:
		}
		<-*g
	}
	return rebalance.Policy{}.Target(n, cur, m)
}

// A lease's context ends at the lease's deadline however busy the node is:
// node-1's loop, which also plans and serves Plan, is stuck in its planner
// while its leases run out and other nodes take its shards, and its
// application's contexts end at their deadlines all the same.
func TestLeaseContextEndsAtDeadlineWhenLoopIsBusy(t *testing.T) {
	var gate atomic.Pointer[chan struct{}]
	entered := make(chan struct{}, 1)
	c := shardtest.NewLeaseCluster(t, 0, 3, 8, testLease)
	c.Configure = func(cfg *shard.Config) {
		cfg.Planner = rebalance.Policy{}
		if cfg.NodeID == "node-1" {
			cfg.Planner = heldPlanner{gate: &gate, entered: entered}
		}
	}
	for i := 1; i <= 3; i++ {
		c.Add(fmt.Sprintf("node-%d", i))
	}
	shardtest.Eventually(t, converge, func() bool {
		return c.AllLedOnceBy(c.IDs()...) && len(c.Node("node-1").Leases()) > 0
	}, "every shard led, node-1 leading some")
	n1 := c.Node("node-1")
	leases := n1.Leases()

	// Each lease's Done channel, taken now: while node-1's loop is stuck
	// only the lease itself can close it.
	var mu sync.Mutex
	late := map[uint32]time.Duration{}
	for s, l := range leases {
		context.AfterFunc(l.Context(), func() {
			mu.Lock()
			defer mu.Unlock()
			late[s] = time.Since(l.Deadline())
		})
	}
	g := make(chan struct{})
	gate.Store(&g)
	planned := make(chan struct{})
	go func() {
		defer close(planned)
		_, _ = n1.Plan() // runs the planner on node-1's loop
	}()
	defer func() {
		gate.Store(nil)
		close(g)
		<-planned
	}()
	<-entered

	checked := 0
	shardtest.Eventually(t, converge, func() bool {
		for s, l := range leases {
			dl := l.Deadline()
			now := time.Now()
			if l.Context().Err() == nil && now.After(dl) {
				t.Fatalf("shard %d: node-1's lease context is live %v after its deadline", s, now.Sub(dl))
			}
			checked++
		}
		mu.Lock()
		defer mu.Unlock()
		return len(late) == len(leases) && allLedOnceAmong(c, []string{"node-2", "node-3"})
	}, "node-1's %d lease contexts end and node-2 and node-3 lead every shard while node-1's loop is stuck", len(leases))
	mu.Lock()
	defer mu.Unlock()
	for s, d := range late {
		if d > slack {
			t.Errorf("shard %d: node-1's lease context ended %v after its deadline", s, d)
		}
	}
	t.Logf("%d leases ended while node-1's loop was stuck (%d checks); latest end after its deadline: %v", len(leases), checked, maxDuration(late))
}

func maxDuration(m map[uint32]time.Duration) time.Duration {
	var out time.Duration
	for _, d := range m {
		out = max(out, d)
	}
	return out
}
