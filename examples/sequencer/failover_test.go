package sequencer

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// checker sees the IDs that clients get, per shard in the order they got
// them, and records every violation: an ID not above the shard's previous
// one, or one epoch's IDs from two nodes. Safe for concurrent use.
type checker struct {
	mu         sync.Mutex
	last       map[uint32]uint64
	holder     map[uint32]map[uint64]string // shard → epoch → the node whose IDs carried it
	seen       int
	violations []string
}

func newChecker() *checker {
	return &checker{last: map[uint32]uint64{}, holder: map[uint32]map[uint64]string{}}
}

func (c *checker) see(s uint32, node string, id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen++
	if last, ok := c.last[s]; ok && id <= last {
		c.violations = append(c.violations, fmt.Sprintf("shard %d: %s gave %#x after %#x", s, node, id, last))
	}
	c.last[s] = id
	epoch, _ := Split(id)
	if c.holder[s] == nil {
		c.holder[s] = map[uint64]string{}
	}
	if h, ok := c.holder[s][epoch]; ok && h != node {
		c.violations = append(c.violations, fmt.Sprintf("shard %d: epoch %d from %s and %s", s, epoch, h, node))
	}
	c.holder[s][epoch] = node
}

// issuer returns the node that handed out shard s's latest ID, and its
// epoch.
func (c *checker) issuer(s uint32) (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, _ := Split(c.last[s])
	return c.holder[s][e], e
}

func (c *checker) result() (seen int, violations []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen, slices.Clone(c.violations)
}

// TestCheckerCatches: the checker is shown to fail on what it looks for.
func TestCheckerCatches(t *testing.T) {
	tests := []struct {
		name string
		ids  []struct {
			node string
			id   uint64
		}
		wantViolations int
	}{
		{name: "increasing across epochs", ids: []struct {
			node string
			id   uint64
		}{{"a", ID(1, 0)}, {"a", ID(1, 1)}, {"b", ID(2, 0)}}},
		{name: "an ID repeated", wantViolations: 1, ids: []struct {
			node string
			id   uint64
		}{{"a", ID(1, 0)}, {"a", ID(1, 0)}}},
		{name: "a deposed leader after the new one", wantViolations: 1, ids: []struct {
			node string
			id   uint64
		}{{"a", ID(1, 5)}, {"b", ID(2, 0)}, {"a", ID(1, 6)}}},
		{name: "one epoch from two nodes", wantViolations: 1, ids: []struct {
			node string
			id   uint64
		}{{"a", ID(1, 0)}, {"b", ID(1, 1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newChecker()
			for _, x := range tt.ids {
				c.see(0, x.node, x.id)
			}
			if _, v := c.result(); len(v) != tt.wantViolations {
				t.Errorf("violations %q, want %d", v, tt.wantViolations)
			}
		})
	}
}

// clients asks for IDs of every shard, one goroutine per shard, each
// asking the node that answered last first and the others after it.
type clients struct {
	mu    sync.Mutex
	nodes map[string]*Sequencer // the live nodes' sequencers
	chk   *checker
	wg    sync.WaitGroup
	stop  context.CancelFunc
}

func startClients(shards int, nodes map[string]*Sequencer) *clients {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &clients{nodes: nodes, chk: newChecker(), stop: cancel}
	for s := range uint32(shards) {
		cl.wg.Add(1)
		go func() {
			defer cl.wg.Done()
			cl.run(ctx, s)
		}()
	}
	return cl
}

func (cl *clients) run(ctx context.Context, s uint32) {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	prefer := ""
	for {
		cl.mu.Lock()
		ids := slices.Sorted(maps.Keys(cl.nodes))
		seqs := maps.Clone(cl.nodes)
		cl.mu.Unlock()
		if i := slices.Index(ids, prefer); i > 0 {
			ids[0], ids[i] = ids[i], ids[0]
		}
		for _, id := range ids {
			if v, err := seqs[id].Next(ctx, s); err == nil {
				cl.chk.see(s, id, v)
				prefer = id
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// forget stops asking node id (it is about to crash).
func (cl *clients) forget(id string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	delete(cl.nodes, id)
}

func (cl *clients) close() {
	cl.stop()
	cl.wg.Wait()
}

// TestIDsIncreaseAcrossFailovers runs four nodes (three voters) with a
// Sequencer each, and clients that check every shard's IDs as they get
// them, while a leader crashes, a shard is handed off and a leader is cut
// off from the network. The IDs of every shard strictly increase. The same
// clients, asking sequencers that leave the epoch out of the ID (a planted
// bug), see IDs go back: the test can fail.
func TestIDsIncreaseAcrossFailovers(t *testing.T) {
	const shards = 12
	c := shardtest.NewLeaseCluster(t, 4, 3, shards, time.Second)
	c.WaitAgree(20*time.Second, c.IDs()...) // every node owns a shard
	shardtest.Eventually(t, 20*time.Second, c.Settled, "every shard led by its desired owner")
	good, broken := map[string]*Sequencer{}, map[string]*Sequencer{}
	for _, id := range c.IDs() {
		good[id] = New(c.Node(id))
		broken[id] = New(c.Node(id))
		broken[id].id = func(_, counter uint64) uint64 { return counter }
	}
	cl := startClients(shards, good)
	bad := startClients(shards, broken)
	defer bad.close()
	defer cl.close()
	// waitMoved waits until every shard in moved gave an ID at a higher
	// epoch than before, from a node other than from.
	waitMoved := func(what, from string, moved map[uint32]uint64) {
		t.Helper()
		shardtest.Eventually(t, 20*time.Second, func() bool {
			for s, e := range moved {
				if node, epoch := cl.chk.issuer(s); node == from || epoch <= e {
					return false
				}
			}
			return true
		}, "%s: IDs of shards %v from another node at a higher epoch", what, slices.Sorted(maps.Keys(moved)))
	}
	led := func(id string) map[uint32]uint64 {
		out := map[uint32]uint64{}
		for s, l := range c.Node(id).Leases() {
			out[s] = l.Epoch()
		}
		if len(out) == 0 {
			t.Fatalf("%s leads nothing", id)
		}
		return out
	}
	shardtest.Eventually(t, 10*time.Second, func() bool {
		for s := range uint32(shards) {
			if node, _ := cl.chk.issuer(s); node == "" {
				return false
			}
		}
		return true
	}, "IDs of every shard")

	// A leader crashes (node-4: not a voter, so that two voters remain for
	// the cut below).
	crashed := led("node-4")
	cl.forget("node-4")
	bad.forget("node-4")
	c.Crash("node-4")
	waitMoved("crash of node-4", "node-4", crashed)
	shardtest.Eventually(t, 20*time.Second, func() bool { return c.AllLedOnceBy("node-1", "node-2", "node-3") }, "every shard led by the others")

	// A graceful handoff, from whichever of node-1 and node-2 leads a
	// shard to the other.
	from, to := "node-1", "node-2"
	if len(c.Node(from).Leases()) == 0 {
		from, to = to, from
	}
	var s uint32
	for s = range led(from) {
		break
	}
	e := c.Node(from).Leases()[s].Epoch()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Node(from).Transfer(ctx, s, to); err != nil {
		t.Fatalf("transfer of shard %d from %s to %s: %v", s, from, to, err)
	}
	waitMoved("handoff", from, map[uint32]uint64{s: e})

	// A leader cut off from every other node keeps its leases until they
	// run out, and the clients keep asking it first. Two voters remain.
	victim := "node-3"
	if len(c.Node(victim).Leases()) == 0 {
		victim = from
	}
	cut := led(victim)
	c.Net.Isolate(victim)
	waitMoved(victim+" cut off", victim, cut)
	c.Net.Heal()

	cl.close()
	bad.close()
	seen, violations := cl.chk.result()
	if len(violations) > 0 {
		t.Errorf("%d violations in %d IDs: %q", len(violations), seen, violations[:min(10, len(violations))])
	}
	badSeen, badViolations := bad.chk.result()
	if len(badViolations) == 0 {
		t.Fatalf("IDs without the epoch: no violation in %d IDs", badSeen)
	}
	t.Logf("%d IDs, strictly increasing per shard across a crash, a handoff and a cut; without the epoch, %d violations in %d IDs (first: %s)",
		seen, len(badViolations), badSeen, badViolations[0])
}

var _ lease = (*shard.Lease)(nil)
