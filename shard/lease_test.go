package shard_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

const testLease = time.Second

// slack is what the node's 10 ms tick and a loaded test machine may add
// to a lease before a test calls its end late.
const slack = 400 * time.Millisecond

// ledBy returns the shards id leads, from the cluster's lease view.
func ledBy(c *shardtest.Cluster, id string) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for s, l := range c.Node(id).Leases() {
		out[s] = l.Epoch()
	}
	return out
}

func TestLeaseClusterLeadsEveryShardOnce(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 5, 3, 64, testLease)
	shardtest.Eventually(t, converge, c.Settled, "every shard led by its desired owner")
	// Every node's table names every shard's leader and epoch, learned
	// from the leaders through gossip.
	shardtest.Eventually(t, converge, func() bool {
		leaders := c.Leaders()
		for _, id := range c.IDs() {
			tab := c.Node(id).Table()
			for s := range uint32(64) {
				e, err := tab.Shard(int64(s))
				if err != nil || e.State != shard.Led || leaders[s][e.Leader] != e.Epoch || e.Epoch == 0 {
					return false
				}
				if want := c.Node(e.Leader).Table(); want == nil {
					return false
				}
			}
		}
		return true
	}, "every table shows every shard's leader and epoch")
	e := c.Node("node-1").LookupString("customer/1001")
	if e.Addr == "" || e.Leader == "" {
		t.Fatalf("lookup: %+v", e)
	}
}

func TestKilledLeaderFailsOverWithHigherEpochs(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 5, 3, 64, testLease)
	shardtest.Eventually(t, converge, c.Settled, "every shard led by its desired owner")
	victim := ledBy(c, "node-4")
	if len(victim) == 0 {
		t.Fatal("node-4 leads nothing")
	}
	began := time.Now()
	c.Crash("node-4")
	shardtest.Eventually(t, converge, func() bool {
		if !c.AllLedOnceBy(c.IDs()...) {
			return false
		}
		leaders := c.Leaders()
		for s, old := range victim {
			for _, e := range leaders[s] {
				if e <= old {
					t.Fatalf("shard %d led again at epoch %d, not above %d", s, e, old)
				}
			}
		}
		return true
	}, "node-4's %d shards led elsewhere at higher epochs", len(victim))
	t.Logf("failover of %d shards took %v (lease %v)", len(victim), time.Since(began), testLease)
}

func TestIsolatedNodeStopsLeadingWithinItsLease(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 5, 3, 64, testLease)
	shardtest.Eventually(t, converge, c.Settled, "every shard led by its desired owner")
	if len(ledBy(c, "node-5")) == 0 {
		t.Fatal("node-5 leads nothing")
	}
	ctxs := []*shard.Lease{}
	for _, l := range c.Node("node-5").Leases() {
		ctxs = append(ctxs, l)
	}
	began := time.Now()
	c.Net.Isolate("node-5")
	// Its own clock ends its leases: within LD of the last answered
	// keep-alive, so within LD of the cut.
	shardtest.Eventually(t, 2*testLease, func() bool { return len(ledBy(c, "node-5")) == 0 }, "node-5 stops leading")
	stopped := time.Since(began)
	if stopped > testLease+slack {
		t.Fatalf("node-5 stopped leading %v after the cut, lease is %v", stopped, testLease)
	}
	// Its leases run out, unless its own (partitioned) view of the
	// assignment moved a shard away first.
	expired := 0
	for _, l := range ctxs {
		var ended *shard.LeaseEndedError
		if !errors.As(contextCause(l), &ended) {
			t.Fatalf("lease on shard %d ended with %v", l.Shard(), contextCause(l))
		}
		switch ended.Reason {
		case shard.ReasonLeaseExpired:
			expired++
		case shard.ReasonRebalance:
		default:
			t.Fatalf("lease on shard %d ended with %v, want lease expired", l.Shard(), ended)
		}
	}
	if expired == 0 {
		t.Fatal("no lease of the isolated node ran out")
	}
	majority := []string{"node-1", "node-2", "node-3", "node-4"}
	shardtest.Eventually(t, converge, func() bool { return allLedOnceAmong(c, majority) }, "the majority side leads every shard")
	t.Logf("isolated leader stopped after %v", stopped)
}

// contextCause waits for l's context to end and returns why it did.
func contextCause(l *shard.Lease) error {
	<-l.Context().Done()
	return context.Cause(l.Context())
}

// allLedOnceAmong is AllLedOnceBy counting only the given nodes' leases.
func allLedOnceAmong(c *shardtest.Cluster, ids []string) bool {
	count := map[uint32]int{}
	for _, id := range ids {
		for s := range c.Node(id).Leases() {
			count[s]++
		}
	}
	for s := range uint32(c.Shards) {
		if count[s] != 1 {
			return false
		}
	}
	return true
}

// A voter that is cut off costs nothing: the other two are a majority. The
// cut voter is a dedicated one (it owns no shards), so that the assignment
// does not change either.
func TestOneVoterCutOffStopsNothing(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 0, 3, 64, testLease)
	c.Configure = func(cfg *shard.Config) { cfg.NoShards = cfg.NodeID == "node-1" }
	for _, id := range []string{"node-1", "node-2", "node-3", "node-4", "node-5"} {
		c.Add(id)
	}
	leaders := []string{"node-2", "node-3", "node-4", "node-5"}
	shardtest.Eventually(t, converge, c.Settled, "every shard led by its desired owner")
	before := c.Leaders()
	var lost sync.Map
	for _, id := range leaders {
		for s, l := range c.Node(id).Leases() {
			go func() {
				<-l.Context().Done()
				lost.Store(s, context.Cause(l.Context()))
			}()
		}
	}
	for _, id := range leaders {
		if got := c.Node(id).VotersReachable(); got != 3 {
			t.Errorf("%s reaches %d voters before the cut, want 3", id, got)
		}
	}
	c.Net.Isolate("node-1")
	shardtest.Eventually(t, converge, func() bool {
		for _, id := range leaders {
			if c.Node(id).VotersReachable() != 2 {
				return false
			}
		}
		return true
	}, "every leader reaches 2 voters once node-1 is cut off")
	// Wait until node-1's session has expired at the others' view of it
	// and gossip has dropped it; leases must have lived through it all.
	shardtest.Eventually(t, converge, func() bool {
		for _, id := range leaders {
			for _, m := range c.Node(id).Members() {
				if m.NodeID == "node-1" {
					return false
				}
			}
		}
		return true
	}, "everyone drops node-1")
	holdFault(2 * testLease)
	lost.Range(func(s, cause any) bool {
		t.Errorf("shard %v lease ended when one voter was cut off: %v", s, cause)
		return true
	})
	if after := c.Leaders(); !maps.EqualFunc(before, after, maps.Equal) {
		t.Fatalf("leadership changed: before %v, after %v", before, after)
	}
}

func TestLosingTwoVotersStopsEveryLeaderUntilOneReturns(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 5, 3, 32, testLease)
	shardtest.Eventually(t, converge, c.Settled, "every shard led by its desired owner")
	c.Crash("node-1")
	began := time.Now()
	c.Crash("node-2")
	shardtest.Eventually(t, 3*testLease, func() bool { return len(c.Leaders()) == 0 }, "no node leads anything")
	if d := time.Since(began); d > testLease+slack {
		t.Fatalf("leaders kept leading %v after losing the voter majority (lease %v)", d, testLease)
	}
	c.Restart("node-2")
	shardtest.Eventually(t, converge, func() bool { return c.AllLedOnceBy(c.IDs()...) }, "every shard led again after a voter returned")
	t.Logf("live nodes: %v, leaders: %v", c.IDs(), slices.Sorted(maps.Keys(c.Leaders())))
}

func TestMetricsCountLeases(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 0, 3, 32, testLease)
	reg := prometheus.NewRegistry()
	c.Configure = func(cfg *shard.Config) {
		if cfg.NodeID == "node-2" {
			cfg.Registerer = reg
		}
	}
	for _, id := range []string{"node-1", "node-2", "node-3"} {
		c.Add(id)
	}
	shardtest.Eventually(t, converge, c.Settled, "every shard led by its desired owner")
	held := len(c.Node("node-2").Leases())
	shardtest.Eventually(t, converge, func() bool {
		return gaugeValue(t, reg, "tenure_leases_held") == float64(held)
	}, "tenure_leases_held reports node-2's %d leases", held)
	if got, want := gaugeValue(t, reg, "tenure_voters_reachable"), gaugeValue(t, reg, "tenure_voters"); got != 3 || want != 3 {
		t.Errorf("tenure_voters_reachable = %v of tenure_voters = %v in a settled cluster, want 3 of 3", got, want)
	}
	if got := testutil.CollectAndCount(reg, "tenure_lease_transitions_total"); got == 0 {
		t.Fatal("no lease transitions counted")
	}
	if got := testutil.CollectAndCount(reg, "tenure_voter_request_seconds"); got != 3 {
		t.Fatalf("voter round trips recorded for %d voters, want 3", got)
	}
	// node-2 is a voter: the grants of every lease were committed there.
	if got := histogramCount(t, reg, "tenure_voter_commit_seconds"); got == 0 {
		t.Fatal("no voter store commit observed on node-2, a voter")
	}
	// node-3 crashes; node-2 takes over some of its shards: failovers.
	before := c.Node("node-2").Leases()
	// A failover starts when node-2 sees a leader it knew go: wait until
	// it knows node-3's leaderships.
	shardtest.Eventually(t, converge, func() bool {
		tab := c.Node("node-2").Table()
		for s := range c.Node("node-3").Leases() {
			if e, _ := tab.Shard(int64(s)); e.Leader != "node-3" {
				return false
			}
		}
		return true
	}, "node-2 knows node-3's leaderships")
	c.Crash("node-3")
	shardtest.Eventually(t, converge, func() bool { return c.AllLedOnceBy(c.IDs()...) }, "node-3's shards failed over")
	won := 0
	for s := range c.Node("node-2").Leases() {
		if before[s] == nil {
			won++
		}
	}
	t.Logf("node-2 led %d shards, won %d of node-3's", len(before), won)
	shardtest.Eventually(t, converge, func() bool {
		return histogramCount(t, reg, "tenure_failover_seconds") == uint64(won)
	}, "tenure_failover_seconds counts node-2's %d failovers", won)
}

// histogramCount returns the sample count of the histogram called name
// in reg, or 0.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	return onlyMetric(t, reg, name).GetHistogram().GetSampleCount()
}

// gaugeValue returns the value of the gauge called name in reg, or −1.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	if m := onlyMetric(t, reg, name); m != nil {
		return m.GetGauge().GetValue()
	}
	return -1
}

// onlyMetric returns the single series called name in reg, or nil.
func onlyMetric(t *testing.T, reg *prometheus.Registry, name string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0]
		}
	}
	return nil
}

// The Handler hears every acquisition and release, in order, and a node
// that leaves hands its shards over without their new owners waiting for a
// lease to run out.
func TestHandlerAndGracefulLeave(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 0, 3, 32, testLease)
	var mu sync.Mutex
	held := map[uint32]bool{}
	var events []string
	c.Configure = func(cfg *shard.Config) {
		if cfg.NodeID != "node-4" {
			return
		}
		cfg.Handler = shard.HandlerFuncs{
			OnAcquired: func(l *shard.Lease) {
				mu.Lock()
				defer mu.Unlock()
				if held[l.Shard()] {
					t.Errorf("shard %d acquired twice without a release", l.Shard())
				}
				held[l.Shard()] = true
				events = append(events, "acquired")
			},
			OnReleased: func(l *shard.Lease, r shard.Reason) {
				mu.Lock()
				defer mu.Unlock()
				if !held[l.Shard()] {
					t.Errorf("shard %d released without an acquisition", l.Shard())
				}
				if l.Context().Err() == nil {
					t.Errorf("shard %d released with its context still live", l.Shard())
				}
				delete(held, l.Shard())
				events = append(events, "released:"+r.String())
			},
		}
	}
	for _, id := range []string{"node-1", "node-2", "node-3", "node-4"} {
		c.Add(id)
	}
	shardtest.Eventually(t, converge, c.Settled, "every shard led by its desired owner")
	mine := ledBy(c, "node-4")
	shardtest.Eventually(t, converge, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) == len(mine)
	}, "the handler saw node-4's %d acquisitions", len(mine))
	began := time.Now()
	c.Leave("node-4")
	shardtest.Eventually(t, converge, func() bool {
		leaders := c.Leaders()
		for s := range mine {
			if len(leaders[s]) != 1 {
				return false
			}
		}
		return true
	}, "node-4's shards led elsewhere")
	if d := time.Since(began); d >= testLease {
		t.Fatalf("handover after a graceful leave took %v, as long as a failover", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(held) != 0 {
		t.Fatalf("the handler still holds %d shards after Leave", len(held))
	}
	t.Logf("graceful leave handed %d shards over in %v; handler events: %d", len(mine), time.Since(began), len(events))
}
