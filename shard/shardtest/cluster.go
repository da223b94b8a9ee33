package shardtest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/membership/faultnet"
	"github.com/tenurehq/tenure/shard"
)

// Cluster is an in-process cluster of shard.Nodes on loopback, using the
// fast Local gossip profile and a faultnet.Network so that tests can cut
// links. It is not safe for concurrent use; its nodes are.
type Cluster struct {
	// Net is the fault-injecting network all nodes send through.
	Net *faultnet.Network
	// Shards is the cluster's P.
	Shards int
	// Configure, when set, adjusts each node's config before it starts.
	Configure func(*shard.Config)

	t     testing.TB
	nodes map[string]*shard.Node // live nodes
}

// NewCluster starts nodes "node-1" … "node-n" with the given P and stops them
// when the test ends.
func NewCluster(t testing.TB, n, shards int) *Cluster {
	t.Helper()
	c := &Cluster{Net: faultnet.New(), Shards: shards, t: t, nodes: make(map[string]*shard.Node)}
	t.Cleanup(c.StopAll)
	for i := 1; i <= n; i++ {
		c.Add(fmt.Sprintf("node-%d", i))
	}
	return c
}

// Config returns the config Add uses for id, seeded with every live node.
func (c *Cluster) Config(id string) shard.Config {
	var seeds []string
	for _, id := range c.IDs() {
		seeds = append(seeds, c.nodes[id].GossipAddr())
	}
	cfg := shard.Config{
		NodeID:     id,
		Cluster:    "test",
		Shards:     c.Shards,
		GossipAddr: "127.0.0.1:0",
		Seeds:      seeds,
		GRPCAddr:   id + ".test:7000",
		Profile:    membership.Local,
		Logger:     Logger().With("node", id),
	}
	if c.Configure != nil {
		c.Configure(&cfg)
	}
	return cfg
}

// Add starts a node with Config(id) and returns it.
func (c *Cluster) Add(id string) *shard.Node {
	c.t.Helper()
	return c.AddWith(c.Config(id))
}

// AddWith starts a node with cfg; its gossip goes through c.Net.
func (c *Cluster) AddWith(cfg shard.Config) *shard.Node {
	c.t.Helper()
	tr, err := c.Net.Transport(cfg.NodeID, "127.0.0.1", 0, nil)
	if err != nil {
		c.t.Fatalf("transport for %s: %v", cfg.NodeID, err)
	}
	cfg.GossipTransport = tr
	n, err := shard.New(cfg)
	if err != nil {
		_ = tr.Shutdown()
		c.t.Fatalf("new %s: %v", cfg.NodeID, err)
	}
	if err := n.Start(context.Background()); err != nil {
		n.Stop()
		c.t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	c.nodes[cfg.NodeID] = n
	return n
}

// Node returns the live node id, or nil.
func (c *Cluster) Node(id string) *shard.Node { return c.nodes[id] }

// IDs returns the live nodes' IDs, sorted.
func (c *Cluster) IDs() []string { return slices.Sorted(maps.Keys(c.nodes)) }

// Crash stops id without leaving: peers must detect the failure.
func (c *Cluster) Crash(id string) {
	c.nodes[id].Stop()
	delete(c.nodes, id)
}

// Leave makes id leave gracefully and stop.
func (c *Cluster) Leave(id string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.nodes[id].Leave(ctx); err != nil {
		c.t.Fatalf("leave %s: %v", id, err)
	}
	delete(c.nodes, id)
}

// StopAll stops every live node.
func (c *Cluster) StopAll() {
	for _, id := range c.IDs() {
		c.Crash(id)
	}
}

// Agree reports whether every node in ids has the same assignment, and
// whether the desired owners in it are exactly the nodes in owners (every
// owner owns at least one shard, nobody else owns any).
func (c *Cluster) Agree(ids, owners []string) bool {
	var first *shard.Table
	for _, id := range ids {
		n := c.nodes[id]
		if n == nil {
			return false
		}
		tab := n.Table()
		if first == nil {
			first = tab
			got := slices.Sorted(maps.Keys(tab.DesiredCounts()))
			if !slices.Equal(got, slices.Sorted(slices.Values(owners))) {
				return false
			}
			continue
		}
		if !first.SameAssignment(tab) {
			return false
		}
	}
	return true
}

// WaitAgree fails the test unless every node in ids agrees, within d, on a
// table whose owners are exactly ids.
func (c *Cluster) WaitAgree(d time.Duration, ids ...string) {
	c.t.Helper()
	Eventually(c.t, d, func() bool { return c.Agree(ids, ids) }, "nodes %v agree on a table owned by exactly them", ids)
}
