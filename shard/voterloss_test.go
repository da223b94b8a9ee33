package shard_test

import (
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// endLog records, per node, the leases that ended and why, as each node's
// Handler hears it. Safe for concurrent use.
type endLog struct {
	mu   sync.Mutex
	ends []leaseEnd
}

type leaseEnd struct {
	node   string
	shard  uint32
	epoch  uint64
	reason shard.Reason
	at     time.Time
}

func (e leaseEnd) String() string {
	return fmt.Sprintf("%s shard %d epoch %d %q at %s", e.node, e.shard, e.epoch, e.reason, e.at.Format("15:04:05.000"))
}

// handler returns rec's Handler for node id, which also logs its lease ends.
func (g *endLog) handler(rec *shardtest.Recorder, id string) shard.Handler {
	inner := rec.For(id)
	return shard.HandlerFuncs{
		OnAcquired: inner.Acquired,
		OnReleased: func(l *shard.Lease, r shard.Reason) {
			inner.Released(l, r)
			g.mu.Lock()
			defer g.mu.Unlock()
			g.ends = append(g.ends, leaseEnd{node: id, shard: l.Shard(), epoch: l.Epoch(), reason: r, at: time.Now()})
		},
	}
}

// unplanned returns the ends after since, on nodes other than faulted, for
// a reason no voter's loss may cause there: the survivors still reach two
// voters of three.
func (g *endLog) unplanned(faulted string, since time.Time) []leaseEnd {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []leaseEnd
	for _, e := range g.ends {
		if e.node == faulted || e.at.Before(since) {
			continue
		}
		if e.reason == shard.ReasonLeaseExpired || e.reason == shard.ReasonQuorumLost {
			out = append(out, e)
		}
	}
	return out
}

// voterFault takes voter id away from cluster c in one way, and returns
// the function that brings it back.
type voterFault struct {
	name  string
	apply func(t *testing.T, c *shardtest.Cluster, id string) (restore func())
}

var voterFaults = []voterFault{
	{name: "crash", apply: func(t *testing.T, c *shardtest.Cluster, id string) func() {
		c.Crash(id)
		return func() { c.Restart(id) }
	}},
	{name: "drain and stop", apply: func(t *testing.T, c *shardtest.Cluster, id string) func() {
		if err := c.Drain(id); err != nil {
			t.Fatalf("drain %s: %v", id, err)
		}
		return func() { c.Restart(id) }
	}},
	{name: "cut off", apply: func(t *testing.T, c *shardtest.Cluster, id string) func() {
		// Gossip and voter links alike, as a container cut off: the
		// voter, a node too, goes on acquiring shards at its own voter
		// meanwhile.
		c.Net.Isolate(id)
		return func() {
			c.Net.Heal()
			// A node cut off longer than failure detection does not always
			// merge back into gossip here (node-1 has no seeds); a new
			// process joins through its seeds. Not what this test is about.
			c.Crash(id)
			c.Restart(id)
		}
	}},
}

// Losing one voter of three, however it goes — a crash, a graceful stop,
// a cut network — ends no lease on the nodes that still reach the other
// two: a lease granted by a bare majority is topped up to every voter
// (docs/design.md §2.6), so once the cluster is quiet each lease survives
// the loss of any one voter. The faulted node's own leases may end; no
// other node's may end as "lease expired" or "quorum lost", whether its
// holder ends it or its Lease's deadline passes first. The voters here
// lead shards too, as in the Docker chaos suite: a voter cut off acquires
// at its own voter meanwhile, and concurrent acquisitions leave records of
// losing rivals at some voters, which is what a top-up must get past. The
// failure was intermittent, so each fault is repeated, on every voter in
// turn.
func TestLosingOneVoterEndsNoLeaseElsewhere(t *testing.T) {
	if testing.Short() {
		t.Skip("a voter fault round takes seconds")
	}
	for _, f := range voterFaults {
		t.Run(f.name, func(t *testing.T) {
			loseVoterRepeatedly(t, 64, f, 2)
		})
	}
}

func loseVoterRepeatedly(t *testing.T, shards int, f voterFault, rounds int) {
	rec, ends := shardtest.NewRecorder(), &endLog{}
	c := shardtest.NewLeaseCluster(t, 0, 3, shards, testLease)
	c.Configure = func(cfg *shard.Config) {
		// The daemon's planner: it moves only what the load bounds require.
		cfg.Planner = rebalance.Policy{}
		cfg.Handler = ends.handler(rec, cfg.NodeID)
	}
	all := []string{"node-1", "node-2", "node-3", "node-4", "node-5"}
	for _, id := range all {
		c.Add(id)
	}
	for round := range rounds {
		// Each round faults another voter.
		voter := c.Voters[round%len(c.Voters)].ID
		// A lease granted by a bare majority is topped up a keep-alive
		// interval later: fault a cluster whose leaders and epochs have
		// not changed for a lease duration.
		if !shardtest.Within(3*converge, quietFor(c, testLease)) {
			t.Fatalf("round %d: the cluster is not steady after %v:%s", round, 3*converge, c.Describe())
		}
		var others []string
		for _, id := range all {
			if id != voter {
				others = append(others, id)
			}
		}
		at := time.Now()
		restore := f.apply(t, c, voter)
		gone := time.Now()
		// Every lease that rested on the lost voter has run out a lease
		// duration after the fault (the last keep-alive it answered left
		// before it); until then, and until the others lead every shard,
		// no lease may end elsewhere.
		failed := func() bool { return len(ends.unplanned(voter, at)) > 0 }
		over := func() bool {
			return time.Since(gone) > 2*testLease && c.AllLedOnceBy(others...)
		}
		if !shardtest.Within(converge, func() bool { return failed() || over() }) {
			t.Fatalf("round %d (%s %s): the others do not lead every shard:%s", round, f.name, voter, c.Describe())
		}
		if bad := ends.unplanned(voter, at); len(bad) > 0 {
			var b strings.Builder
			for _, e := range bad {
				fmt.Fprintf(&b, "\n  %v (%v after the fault)", e, e.at.Sub(at).Round(time.Millisecond))
			}
			t.Fatalf("round %d (%s %s): %d leases ended on nodes that still reach two voters:%s", round, f.name, voter, len(bad), b.String())
		}
		restore()
		checkNoViolations(t, rec)
	}
}

// quietFor returns a condition that holds once c is settled, its planners
// content, and no shard has changed leader or epoch for d.
func quietFor(c *shardtest.Cluster, d time.Duration) func() bool {
	var last map[uint32]map[string]uint64
	var since time.Time
	return func() bool {
		if !c.Settled() || !everyoneLeads(c) || !noMoves(c) {
			last = nil
			return false
		}
		now := c.Leaders()
		if !maps.EqualFunc(now, last, maps.Equal) {
			last, since = now, time.Now()
		}
		return time.Since(since) >= d
	}
}
