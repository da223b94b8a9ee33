package shardtest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/membership/faultnet"
	"github.com/tenurehq/tenure/shard"
)

// Cluster is an in-process cluster of shard.Nodes on loopback, using the
// fast Local gossip profile and a faultnet.Network for gossip and gRPC, so
// that tests can cut links. It is not safe for concurrent use; its nodes
// are.
type Cluster struct {
	// Net is the fault-injecting network all nodes send through.
	Net *faultnet.Network
	// Shards is the cluster's P.
	Shards int
	// Voters is the voter set every node is configured with (empty: no
	// leases).
	Voters []shard.VoterAddr
	// LeaseDuration is the nodes' LD when Voters is set.
	LeaseDuration time.Duration
	// Configure, when set, adjusts each node's config before it starts.
	Configure func(*shard.Config)

	t         testing.TB
	nodes     map[string]*shard.Node // live nodes
	dirs      map[string]string      // voter data directories, kept across restarts
	listeners map[string]net.Listener
	opened    []net.Listener // non-voters' gRPC listeners, closed at cleanup
	started   map[string]bool
}

// NewCluster starts nodes "node-1" … "node-n" with the given P and no
// voters, and stops them when the test ends.
func NewCluster(t testing.TB, n, shards int) *Cluster {
	t.Helper()
	c := newCluster(t, shards)
	for i := 1; i <= n; i++ {
		c.Add(fmt.Sprintf("node-%d", i))
	}
	return c
}

// NewLeaseCluster starts nodes "node-1" … "node-n", of which the first
// voters are voters, with leases of duration ld.
func NewLeaseCluster(t testing.TB, n, voters, shards int, ld time.Duration) *Cluster {
	t.Helper()
	c := newCluster(t, shards)
	c.LeaseDuration = ld
	for i := 1; i <= voters; i++ {
		id := fmt.Sprintf("node-%d", i)
		lis, err := c.Net.Listen(id, "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen for voter %s: %v", id, err)
		}
		c.listeners[id] = lis
		c.Voters = append(c.Voters, shard.VoterAddr{ID: id, Addr: lis.Addr().String()})
		c.dirs[id] = t.TempDir()
	}
	for i := 1; i <= n; i++ {
		c.Add(fmt.Sprintf("node-%d", i))
	}
	return c
}

func newCluster(t testing.TB, shards int) *Cluster {
	c := &Cluster{
		Net: faultnet.New(), Shards: shards, t: t,
		nodes: make(map[string]*shard.Node), dirs: make(map[string]string),
		listeners: make(map[string]net.Listener), started: make(map[string]bool),
	}
	t.Cleanup(func() {
		c.StopAll()
		for _, l := range c.listeners {
			l.Close()
		}
		for _, l := range c.opened {
			l.Close()
		}
	})
	return c
}

// Config returns the config Add uses for id, seeded with every live node.
func (c *Cluster) Config(id string) shard.Config {
	var seeds []string
	for _, id := range c.IDs() {
		seeds = append(seeds, c.nodes[id].GossipAddr())
	}
	cfg := shard.Config{
		NodeID:        id,
		Cluster:       "test",
		Shards:        c.Shards,
		GossipAddr:    "127.0.0.1:0",
		Seeds:         seeds,
		GRPCAddr:      id + ".test:7000",
		Profile:       membership.Local,
		Logger:        Logger().With("node", id),
		Voters:        c.Voters,
		LeaseDuration: c.LeaseDuration,
		Dial:          c.Net.Dialer(id),
		// The Local gossip profile converges in a few hundred ms.
		JoinSettle: 300 * time.Millisecond,
	}
	if i := slices.IndexFunc(c.Voters, func(v shard.VoterAddr) bool { return v.ID == id }); i >= 0 {
		addr := c.Voters[i].Addr
		cfg.GRPCAddr, cfg.DataDir, cfg.InitVoterStore = addr, c.dirs[id], !c.started[id]
		cfg.Listen = func(string) (net.Listener, error) {
			if l := c.listeners[id]; l != nil {
				delete(c.listeners, id)
				return l, nil
			}
			return c.Net.Listen(id, addr)
		}
	} else if len(c.Voters) > 0 {
		// Every leader serves gRPC: handoffs reach it there.
		l, err := c.Net.Listen(id, "127.0.0.1:0")
		if err != nil {
			c.t.Fatalf("gRPC listener for %s: %v", id, err)
		}
		c.opened = append(c.opened, l)
		cfg.GRPCAddr = l.Addr().String()
		cfg.Listen = func(string) (net.Listener, error) { return l, nil }
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
		_ = tr.Shutdown()
		c.t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	c.nodes[cfg.NodeID] = n
	c.started[cfg.NodeID] = true
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

// Restart starts id again (a new process with the same ID and, for a
// voter, the same data directory and address).
func (c *Cluster) Restart(id string) *shard.Node {
	c.t.Helper()
	return c.Add(id)
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

// Drain drains id (graceful handoff of every shard, then leave) and
// forgets it.
func (c *Cluster) Drain(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.nodes[id].Drain(ctx)
	delete(c.nodes, id)
	return err
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

// Leaders returns, for every shard, the live nodes that hold a lease on it
// now and their epochs.
func (c *Cluster) Leaders() map[uint32]map[string]uint64 {
	out := make(map[uint32]map[string]uint64)
	for _, id := range c.IDs() {
		for s, l := range c.nodes[id].Leases() {
			if out[s] == nil {
				out[s] = make(map[string]uint64)
			}
			out[s][id] = l.Epoch()
		}
	}
	return out
}

// AllLedOnceBy reports whether every shard has exactly one leader, and that
// leader is among ids.
func (c *Cluster) AllLedOnceBy(ids ...string) bool {
	leaders := c.Leaders()
	for s := range uint32(c.Shards) {
		if len(leaders[s]) != 1 {
			return false
		}
		for id := range leaders[s] {
			if !slices.Contains(ids, id) {
				return false
			}
		}
	}
	return true
}

// Settled reports whether the live nodes agree on the assignment and every
// shard is led by exactly one node, its desired owner.
func (c *Cluster) Settled() bool {
	ids := c.IDs()
	if len(ids) == 0 {
		return false
	}
	var owners []string
	for id := range c.nodes[ids[0]].Table().DesiredCounts() {
		owners = append(owners, id)
	}
	if !c.Agree(ids, owners) {
		return false
	}
	tab := c.nodes[ids[0]].Table()
	leaders := c.Leaders()
	for s := range uint32(c.Shards) {
		e, _ := tab.Shard(int64(s))
		if len(leaders[s]) != 1 {
			return false
		}
		if _, ok := leaders[s][e.Desired]; !ok {
			return false
		}
	}
	return true
}

// Describe summarises each live node's view for a failure message: the
// members it sees and their states, the desired owners in its table, the
// leases it holds and its table's unled shards.
func (c *Cluster) Describe() string {
	var b strings.Builder
	for _, id := range c.IDs() {
		n := c.nodes[id]
		tab := n.Table()
		unled := 0
		for _, e := range tab.Entries() {
			if e.State != shard.Led {
				unled++
			}
		}
		var view []string
		for _, m := range n.Members() {
			view = append(view, fmt.Sprintf("%s:%v", m.NodeID, m.State))
		}
		fmt.Fprintf(&b, "\n  %s: sees [%s], desired %v, leads %d, table unled %d", id, strings.Join(view, " "), tab.DesiredCounts(), len(n.Leases()), unled)
	}
	return b.String()
}
