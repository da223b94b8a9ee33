package shard_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/membership/faultnet"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// voterCut cuts one node's gRPC links to the voters, keeping its gossip:
// the node stays a member but has no session at any voter.
type voterCut struct {
	voters map[string]bool
	mu     sync.Mutex
	on     bool
	conns  []net.Conn
}

// cutFromVoters returns cfg with its gRPC links to c's voters under the
// returned cut.
func cutFromVoters(c *shardtest.Cluster, cfg shard.Config) (shard.Config, *voterCut) {
	x := &voterCut{voters: map[string]bool{}}
	for _, v := range c.Voters {
		x.voters[v.Addr] = true
	}
	dial := cfg.Dial
	cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		if !x.voters[addr] {
			return dial(ctx, addr)
		}
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.on {
			return nil, errors.New("test: cut off from the voters")
		}
		conn, err := dial(ctx, addr)
		if err == nil {
			x.conns = append(x.conns, conn)
		}
		return conn, err
	}
	return cfg, x
}

// set cuts the links (closing those open) or lets them be dialled again.
func (x *voterCut) set(on bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.on = on
	if on {
		for _, conn := range x.conns {
			conn.Close()
		}
		x.conns = nil
	}
}

// plannedOnto returns the nodes among ids whose table names id as the
// desired owner of some shard.
func plannedOnto(c *shardtest.Cluster, id string, ids ...string) []string {
	var out []string
	for _, other := range ids {
		if n := c.Node(other); n != nil && n.Table().DesiredCounts()[id] > 0 {
			out = append(out, other)
		}
	}
	return out
}

// seesActive reports whether every node in ids sees member id active.
func seesActive(c *shardtest.Cluster, id string, ids ...string) bool {
	for _, other := range ids {
		if !slices.ContainsFunc(c.Node(other).Members(), func(m membership.Member) bool {
			return m.NodeID == id && m.State == membership.Active
		}) {
			return false
		}
	}
	return true
}

// holdWhile polls check for d: a window in which a property must keep
// holding (check fails the test when it does not).
func holdWhile(d time.Duration, check func()) {
	shardtest.Within(d, func() bool { check(); return false })
}

// A member that cannot reach the voters is in gossip, active and settled,
// yet no node plans shards onto it — every Transfer to it would be refused
// and leave the shard unled — and no node hands it one. Once it reaches the
// voters, it receives its share.
func TestMemberWithoutVoterSessionGetsNoShards(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 3, 3, 16, testLease)
	shardtest.Eventually(t, converge, func() bool { return c.AllLedOnceBy(c.IDs()...) }, "every shard led")
	cfg, cut := cutFromVoters(c, c.Config("node-4"))
	cut.set(true)
	n4 := c.AddWith(cfg)
	all := []string{"node-1", "node-2", "node-3", "node-4"}
	shardtest.Eventually(t, converge, func() bool { return seesActive(c, "node-4", all...) }, "every node sees node-4 active")

	// Long enough for node-4 to settle everywhere and for a handoff to it
	// to have started and failed.
	holdWhile(4*c.Config("node-4").JoinSettle+2*testLease, func() {
		if by := plannedOnto(c, "node-4", all...); len(by) > 0 {
			t.Fatalf("%v plan shards onto node-4, which has no session at any voter", by)
		}
		if l := n4.Leases(); len(l) > 0 {
			t.Fatalf("node-4 leads %d shards without reaching a voter", len(l))
		}
	})
	if !c.AllLedOnceBy("node-1", "node-2", "node-3") {
		t.Fatalf("shards unled or led twice while node-4 is cut off: %v", c.Leaders())
	}
	// An operator's Transfer to it is refused before anything moves.
	var s uint32
	for sh := range c.Node("node-1").Leases() {
		s = sh
		break
	}
	if err := c.Node("node-1").Transfer(context.Background(), s, "node-4"); !errors.Is(err, shard.ErrUnknownNode) {
		t.Fatalf("Transfer to node-4 = %v, want ErrUnknownNode", err)
	}
	if l := c.Node("node-1").Leases()[s]; l == nil || l.Context().Err() != nil {
		t.Fatalf("node-1 lost shard %d to a refused transfer", s)
	}

	cut.set(false)
	shardtest.Eventually(t, converge, func() bool {
		return len(n4.Leases()) > 0 && c.AllLedOnceBy(c.IDs()...)
	}, "node-4 receives shards once it reaches the voters")
}

// A node that joins learns from its first voter replies which members have
// a live session, so it plans nothing onto a member whose session expired
// before it started (no expiry notice will ever reach it).
func TestJoinerIgnoresMemberWhoseSessionExpiredBeforeIt(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 3, 3, 16, testLease)
	cfg, cut := cutFromVoters(c, c.Config("node-4"))
	n4 := c.AddWith(cfg)
	shardtest.Eventually(t, converge, func() bool { return len(n4.Leases()) > 0 && c.Settled() }, "node-4 leads its share")

	cut.set(true)
	old := []string{"node-1", "node-2", "node-3"}
	shardtest.Eventually(t, converge, func() bool {
		return len(n4.Leases()) == 0 && allLedOnceAmong(c, old) && len(plannedOnto(c, "node-4", old...)) == 0
	}, "node-4's session expires, its shards are led elsewhere, nobody plans onto it")

	n5 := c.Add("node-5")
	owners := []string{"node-1", "node-2", "node-3", "node-5"}
	shardtest.Eventually(t, converge, func() bool {
		if n5.Table().DesiredCounts()["node-4"] > 0 {
			t.Fatal("node-5 plans shards onto node-4, whose session expired before node-5 started")
		}
		return c.Agree(owners, owners) && len(n5.Leases()) > 0 && allLedOnceAmong(c, owners)
	}, "node-5 agrees with the others on a table owned by %v and leads its share", owners)
	if !seesActive(c, "node-4", "node-5") {
		t.Fatal("node-5 does not see node-4 in gossip: the test shows nothing")
	}
}

// A process superseded by a newer one with the same NodeID (here one that
// reaches the voters but not gossip) leads nothing again: its shards fail
// over, and no node plans shards onto it while gossip still shows it.
func TestSupersededProcessGetsNoShards(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 4, 3, 16, testLease)
	shardtest.Eventually(t, converge, func() bool { return len(c.Node("node-4").Leases()) > 0 && c.Settled() }, "node-4 leads its share")
	p1 := c.Node("node-4")

	// The newer process: same NodeID, a higher incarnation (started
	// later), its own gossip network, the cluster's voters.
	cfg := c.Config("node-4")
	cfg.Seeds, cfg.NoShards = nil, true
	tr, err := faultnet.New().Transport("node-4", "127.0.0.1", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.GossipTransport = tr
	p2, err := shard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p2.Stop()

	old := []string{"node-1", "node-2", "node-3"}
	shardtest.Eventually(t, converge, func() bool {
		return len(p1.Leases()) == 0 && allLedOnceAmong(c, old) && len(plannedOnto(c, "node-4", old...)) == 0
	}, "node-4's first process leads nothing, its shards are led by the others, nobody plans onto it")
	if err := c.Node("node-1").Transfer(context.Background(), firstShard(c.Node("node-1")), "node-4"); !errors.Is(err, shard.ErrUnknownNode) {
		t.Fatalf("Transfer to the superseded node-4 = %v, want ErrUnknownNode", err)
	}
	holdWhile(2*testLease, func() {
		if by := plannedOnto(c, "node-4", old...); len(by) > 0 {
			t.Fatalf("%v plan shards onto the superseded node-4", by)
		}
	})
}

// firstShard returns the lowest shard n leads.
func firstShard(n *shard.Node) uint32 {
	var out []uint32
	for s := range n.Leases() {
		out = append(out, s)
	}
	return slices.Min(out)
}
