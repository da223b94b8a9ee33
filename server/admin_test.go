package server_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// ledBy returns a shard the node leads, waiting for one: on a loaded
// machine a node may lose its leases for a moment.
func ledBy(t *testing.T, n *shard.Node) uint32 {
	t.Helper()
	var s uint32
	if !shardtest.Within(10*time.Second, func() bool {
		for s = range n.Leases() {
			return true
		}
		return false
	}) {
		t.Fatalf("%s leads nothing; table %+v", n.ID(), n.Table().Entries())
	}
	return s
}

// Transfer sent to a node that does not lead the shard is forwarded to the
// leader, which hands the shard off; the new leader holds it at a higher
// epoch when the call returns. Rebalancing is paused first: the planner
// would otherwise move the shard back if it puts the target above its load
// bound.
func TestTransferIsForwardedToTheLeader(t *testing.T) {
	c := settledCluster(t, 16)
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	if _, err := client.PauseRebalance(ctxFor(t, 10*time.Second), &tenurev1.PauseRebalanceRequest{}); err != nil {
		t.Fatal(err)
	}
	shardtest.Eventually(t, 10*time.Second, func() bool { return c.Node("node-2").RebalancePaused() }, "node-2 paused")
	s := ledBy(t, c.Node("node-2"))
	var before uint64
	if l := c.Node("node-2").Leases()[s]; l != nil {
		before = l.Epoch()
	}

	if _, err := client.Transfer(ctxFor(t, 20*time.Second), &tenurev1.TransferRequest{Shard: s, Node: "node-3"}); err != nil {
		t.Fatalf("Transfer(%d, node-3) through node-1: %v", s, err)
	}
	shardtest.Eventually(t, 10*time.Second, func() bool {
		l, ok := c.Node("node-3").Leases()[s]
		e, _ := c.Node("node-1").Table().Shard(int64(s))
		return ok && l.Epoch() > before && c.Leaders()[s]["node-2"] == 0 && e.Leader == "node-3"
	}, "node-3 leads shard %d above epoch %d, node-2 does not, node-1 knows", s, before)

	// The dry run shows the ring's wish to move it back, and that nothing
	// moves while paused.
	plan, err := client.Plan(ctxFor(t, 10*time.Second), &tenurev1.PlanRequest{})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	back := slices.ContainsFunc(plan.GetMoves(), func(m *tenurev1.Move) bool {
		return m.GetShard() == s && m.GetFrom() == "node-3" && m.GetTo() == "node-2"
	})
	if !back || !plan.GetPaused() || int(plan.GetTotal()) != len(plan.GetMoves()) {
		t.Errorf("Plan = %v; want shard %d node-3 → node-2 among its moves, paused, total = the moves listed", plan, s)
	}
	if l, ok := c.Node("node-3").Leases()[s]; !ok || l.Epoch() <= before {
		t.Errorf("node-3 no longer leads shard %d after the dry run", s)
	}

	// Transferring a shard to its leader does nothing.
	if _, err := client.Transfer(ctxFor(t, 10*time.Second), &tenurev1.TransferRequest{Shard: s, Node: "node-3"}); err != nil {
		t.Errorf("Transfer to the leader: %v", err)
	}
	// A target that is no member is refused by the leader.
	_, err = client.Transfer(ctxFor(t, 10*time.Second), &tenurev1.TransferRequest{Shard: s, Node: "node-9"})
	if !errors.Is(tenurev1.FromStatus(err), shard.ErrUnknownNode) {
		t.Errorf("Transfer to node-9: %v, want ErrUnknownNode", err)
	}
}

// Drain through another node: the node named hands its shards off, ends
// its Watch streams with DRAINING so that clients move on, and stops.
func TestDrainHandsOffEndsWatchesAndStops(t *testing.T) {
	c := settledCluster(t, 16)
	watcher := watch(t, ctxFor(t, 30*time.Second), tenurev1.NewTenureClient(c.Dial(t, "client", "node-3")), 0, 0)
	if _, err := watcher.next(); err != nil {
		t.Fatal(err)
	}
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	if _, err := client.Drain(ctxFor(t, 10*time.Second), &tenurev1.DrainRequest{Node: "node-3"}); err != nil {
		t.Fatalf("Drain(node-3): %v", err)
	}
	for {
		_, err := watcher.next()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable || !errors.Is(tenurev1.FromStatus(err), shard.ErrDraining) {
			t.Fatalf("node-3's Watch ended with %v, want UNAVAILABLE (DRAINING)", err)
		}
		break
	}
	select {
	case <-c.Server("node-3").Drained():
	case <-time.After(20 * time.Second):
		t.Fatal("node-3's drain did not finish")
	}
	shardtest.Eventually(t, 10*time.Second, func() bool { return c.AllLedOnceBy("node-1", "node-2") },
		"every shard led once by node-1 or node-2")
}

// Pause and resume through any node spread to the whole cluster.
func TestPauseAndResumeSpread(t *testing.T) {
	c := settledCluster(t, 16)
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	ctx := ctxFor(t, 20*time.Second)
	if _, err := client.PauseRebalance(ctx, &tenurev1.PauseRebalanceRequest{}); err != nil {
		t.Fatalf("PauseRebalance: %v", err)
	}
	shardtest.Eventually(t, 10*time.Second, func() bool {
		return c.Node("node-2").RebalancePaused() && c.Node("node-3").RebalancePaused()
	}, "every node paused")
	rep, err := tenurev1.NewTenureClient(c.Dial(t, "client", "node-3")).Cluster(ctx, &tenurev1.ClusterRequest{})
	if err != nil || !rep.GetConfig().GetRebalancePaused() {
		t.Errorf("Cluster on node-3 = %v, %v; want rebalance_paused", rep.GetConfig(), err)
	}
	if _, err := client.ResumeRebalance(ctx, &tenurev1.ResumeRebalanceRequest{}); err != nil {
		t.Fatalf("ResumeRebalance: %v", err)
	}
	shardtest.Eventually(t, 10*time.Second, func() bool {
		return !c.Node("node-2").RebalancePaused() && !c.Node("node-3").RebalancePaused()
	}, "every node resumed")
}
