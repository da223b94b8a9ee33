package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/tenurehq/tenure/internal/loopback"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// cluster is an in-process Tenure cluster on loopback: real gossip, real
// gRPC between nodes and voters, voter stores on disk with fsync.
type cluster struct {
	shards  int
	profile membership.Profile
	ld      time.Duration
	voters  []shard.VoterAddr
	gossip  map[string]string // fixed gossip address per node, kept across restarts
	grpc    map[string]string // fixed gRPC address per node
	// rec sees every lease of every node (one-leader check, gaps).
	rec     *shardtest.Recorder
	dirs    map[string]string
	root    string
	started map[string]bool
	log     *slog.Logger

	// attach, when set, is called for each node before it is created: it
	// may adjust the config (RegisterGRPC, to serve more services on the
	// node's gRPC server) and returns a function called with the node
	// once it is created, before it starts.
	attach func(id string, cfg *shard.Config) func(*shard.Node) error

	mu    sync.Mutex
	nodes map[string]*shard.Node
}

// freeAddr returns a free loopback address (see loopback.FreeAddr).
func freeAddr() (string, error) { return loopback.FreeAddr() }

func newCluster(nodes, voters, shards int, profile membership.Profile, ld time.Duration, logger *slog.Logger) (*cluster, error) {
	return newClusterWith(nil, nodes, voters, shards, profile, ld, logger)
}

// newClusterWith is newCluster with an attach hook (see cluster.attach).
func newClusterWith(attach func(string, *shard.Config) func(*shard.Node) error, nodes, voters, shards int, profile membership.Profile, ld time.Duration, logger *slog.Logger) (*cluster, error) {
	root, err := os.MkdirTemp("", "tenure-bench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{
		shards: shards, profile: profile, ld: ld, root: root, log: logger,
		gossip: map[string]string{}, grpc: map[string]string{}, dirs: map[string]string{}, started: map[string]bool{},
		nodes: map[string]*shard.Node{}, rec: shardtest.NewRecorder(), attach: attach,
	}
	for i := 1; i <= nodes; i++ {
		id := fmt.Sprintf("node-%d", i)
		if c.gossip[id], err = freeAddr(); err != nil {
			return nil, err
		}
		if c.grpc[id], err = freeAddr(); err != nil {
			return nil, err
		}
		if i <= voters {
			addr := c.grpc[id]
			c.voters = append(c.voters, shard.VoterAddr{ID: id, Addr: addr})
			c.dirs[id] = fmt.Sprintf("%s/%s", root, id)
		}
	}
	for i := 1; i <= nodes; i++ {
		if err := c.start(fmt.Sprintf("node-%d", i)); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func (c *cluster) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.nodes))
}

func (c *cluster) node(id string) *shard.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *cluster) start(id string) error {
	var seeds []string
	for _, other := range slices.Sorted(maps.Keys(c.gossip)) {
		if other != id {
			seeds = append(seeds, c.gossip[other])
		}
	}
	cfg := shard.Config{
		NodeID: id, Cluster: "bench", Shards: c.shards,
		GossipAddr: c.gossip[id], Seeds: seeds, Profile: c.profile,
		GRPCAddr: c.grpc[id],
		Voters:   c.voters, LeaseDuration: c.ld,
		Logger: c.log.With("node", id),
		// The product's planner: sticky, moves only what the bounds need.
		Planner: rebalance.Policy{},
		Handler: c.rec.For(id),
	}
	if i := slices.IndexFunc(c.voters, func(v shard.VoterAddr) bool { return v.ID == id }); i >= 0 {
		cfg.GRPCAddr, cfg.DataDir, cfg.InitVoterStore = c.voters[i].Addr, c.dirs[id], !c.started[id]
	}
	var created func(*shard.Node) error
	if c.attach != nil {
		created = c.attach(id, &cfg)
	}
	n, err := shard.New(cfg)
	if err != nil {
		return err
	}
	if created != nil {
		if err := created(n); err != nil {
			return err
		}
	}
	if err := n.Start(context.Background()); err != nil {
		n.Stop()
		return err
	}
	c.mu.Lock()
	c.nodes[id] = n
	c.started[id] = true
	c.mu.Unlock()
	return nil
}

func (c *cluster) isVoter(id string) bool {
	return slices.ContainsFunc(c.voters, func(v shard.VoterAddr) bool { return v.ID == id })
}

// crash stops id without Leave or release: a kill -9 as the cluster sees it.
func (c *cluster) crash(id string) { c.detach(id).Stop() }

// detach removes id from the cluster's view and returns it, still running.
func (c *cluster) detach(id string) *shard.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[id]
	delete(c.nodes, id)
	return n
}

func (c *cluster) close() {
	for _, id := range c.ids() {
		c.crash(id)
	}
	os.RemoveAll(c.root)
}

// leaders returns, per shard, the nodes whose lease on it is valid now.
func (c *cluster) leaders(now time.Time) map[uint32]map[string]uint64 {
	out := map[uint32]map[string]uint64{}
	for _, id := range c.ids() {
		n := c.node(id)
		if n == nil {
			continue
		}
		for s, l := range n.Leases() {
			if l.Context().Err() != nil || !l.Deadline().After(now) {
				continue
			}
			if out[s] == nil {
				out[s] = map[string]uint64{}
			}
			out[s][id] = l.Epoch()
		}
	}
	return out
}

// settled reports whether the live nodes agree on the assignment and every
// shard is led by exactly its desired owner.
func (c *cluster) settled() bool {
	ids := c.ids()
	if len(ids) == 0 {
		return false
	}
	first := c.node(ids[0]).Table()
	for _, id := range ids[1:] {
		if !first.SameAssignment(c.node(id).Table()) {
			return false
		}
	}
	if len(first.DesiredCounts()) != len(ids) {
		return false
	}
	leaders := c.leaders(time.Now())
	for s := range uint32(c.shards) {
		e, _ := first.Shard(int64(s))
		if _, ok := leaders[s][e.Desired]; !ok || len(leaders[s]) != 1 {
			return false
		}
	}
	return true
}

// unsettled describes up to five shards that are not led by exactly their
// desired owner, for error messages.
func (c *cluster) unsettled() string {
	ids := c.ids()
	if len(ids) == 0 {
		return "no live nodes"
	}
	first := c.node(ids[0]).Table()
	leaders := c.leaders(time.Now())
	var out []string
	for s := range uint32(c.shards) {
		e, _ := first.Shard(int64(s))
		if _, ok := leaders[s][e.Desired]; !ok || len(leaders[s]) != 1 {
			out = append(out, fmt.Sprintf("shard %d: desired %s, leaders %v", s, e.Desired, leaders[s]))
		}
	}
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return strings.Join(out, "; ")
}

// waitFor polls cond every millisecond until it holds or limit passes:
// for what a scenario times.
func waitFor(limit time.Duration, cond func() bool) bool {
	return pollFor(limit, time.Millisecond, cond)
}

// waitQuiet polls cond every 20 ms until it holds or limit passes: for
// checks that scan every node's table (settled, balanced) while the
// cluster works, so that the harness does not take the CPU that the
// handoffs it measures need.
func waitQuiet(limit time.Duration, cond func() bool) bool {
	return pollFor(limit, 20*time.Millisecond, cond)
}

func pollFor(limit, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
	return true
}

// balanced reports whether the cluster is settled and at rest: every shard
// led by its desired owner, no planner wants to move anything, and every
// node leads its share.
func (c *cluster) balanced() bool {
	if !c.settled() {
		return false
	}
	for _, id := range c.ids() {
		n := c.node(id)
		if n == nil || (c.shards >= len(c.ids()) && len(n.Leases()) == 0) {
			return false
		}
		if mv, err := n.Plan(); err != nil || len(mv) > 0 {
			return false
		}
	}
	return true
}

// clusterFlags are the flags every scenario that runs a cluster shares.
type clusterFlags struct {
	nodes, voters, shards *int
	ld                    *time.Duration
	profile               *string
	asJSON, verbose       *bool
}

func addClusterFlags(fs *flag.FlagSet) *clusterFlags {
	return &clusterFlags{
		nodes:   fs.Int("nodes", 5, "nodes in the cluster"),
		voters:  fs.Int("voters", 3, "voters among them (1, 3 or 5)"),
		shards:  fs.Int("shards", 1024, "shards P"),
		ld:      fs.Duration("lease", time.Second, "lease duration (the default of shard.Config)"),
		profile: fs.String("profile", "lan", "gossip profile: lan (the default of shard.Config), local or wan"),
		asJSON:  fs.Bool("json", false, "print a JSON summary as the last line"),
		verbose: fs.Bool("v", false, "log the nodes' info output to stderr"),
	}
}

// clusterSpec is what the parsed clusterFlags describe.
type clusterSpec struct {
	nodes, voters, shards int
	ld                    time.Duration
	profile               membership.Profile
	asJSON                bool
	logger                *slog.Logger
}

// spec checks the parsed flags.
func (f *clusterFlags) spec() (clusterSpec, error) {
	profile, err := membership.ParseProfile(*f.profile)
	if err != nil {
		return clusterSpec{}, err
	}
	if *f.voters > *f.nodes || *f.nodes < 2 {
		return clusterSpec{}, fmt.Errorf("need -nodes ≥ 2 and -voters ≤ -nodes, got %d and %d", *f.nodes, *f.voters)
	}
	logger := slog.New(slog.DiscardHandler)
	if *f.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return clusterSpec{nodes: *f.nodes, voters: *f.voters, shards: *f.shards, ld: *f.ld,
		profile: profile, asJSON: *f.asJSON, logger: logger}, nil
}

func (sp clusterSpec) String() string {
	return fmt.Sprintf("%d nodes, %d voters, %d shards, lease %v, %s gossip", sp.nodes, sp.voters, sp.shards, sp.ld, sp.profile)
}

// start starts the cluster sp describes.
func (sp clusterSpec) start() (*cluster, error) {
	return newCluster(sp.nodes, sp.voters, sp.shards, sp.profile, sp.ld, sp.logger)
}
