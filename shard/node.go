package shard

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/hashicorp/memberlist"

	"github.com/tenurehq/tenure/membership"
)

// Config configures a Node. New copies it and fills defaults; it never
// modifies the caller's value.
type Config struct {
	// NodeID is the node's stable name: 1–64 characters from [A-Za-z0-9._-].
	// Required.
	NodeID string
	// Cluster is the cluster name; nodes of other clusters are refused.
	// Default "tenure".
	Cluster string
	// Shards is P, fixed for the life of the cluster and checked on join.
	// Required, 1..MaxShards.
	Shards int

	// GossipAddr is the host:port gossip binds to. Port 0 picks a free
	// port (see Node.GossipAddr). Default "0.0.0.0:7946".
	GossipAddr string
	// GossipAdvertiseAddr is the ip:port peers should use when it differs
	// from GossipAddr. Optional.
	GossipAdvertiseAddr string
	// Seeds are gossip addresses of nodes to join. Empty starts a cluster.
	Seeds []string
	// GRPCAddr is the address clients use to reach this node. It is what
	// Lookup returns for shards this node owns. Optional.
	GRPCAddr string
	// Zone is the node's failure domain. Optional.
	Zone string
	// Weight is the node's relative capacity. Default 1.
	Weight int
	// NoShards makes the node own no shards (a dedicated voter, say).
	NoShards bool
	// Profile is the gossip timing profile. Default membership.LAN.
	Profile membership.Profile
	// GossipKeys enable gossip encryption; see membership.Config.SecretKeys.
	GossipKeys [][]byte

	// Load is the bounded-load factor of the assignment; see AssignConfig.
	// Default 1.25.
	Load float64
	// ReplicationFactor is the number of ring points per node; see
	// AssignConfig. Default 20.
	ReplicationFactor int

	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger
	// Rand supplies jitter. Default: seeded from the runtime. The node owns
	// it after New: do not share it.
	Rand *rand.Rand
	// GossipTransport replaces the gossip network transport (tests use
	// membership/faultnet). Optional.
	GossipTransport memberlist.Transport
}

func (c Config) membership() membership.Config {
	return membership.Config{
		NodeID:        c.NodeID,
		Cluster:       c.Cluster,
		Shards:        c.Shards,
		BindAddr:      c.GossipAddr,
		AdvertiseAddr: c.GossipAdvertiseAddr,
		Seeds:         c.Seeds,
		GRPCAddr:      c.GRPCAddr,
		Zone:          c.Zone,
		Weight:        c.Weight,
		NoShards:      c.NoShards,
		Profile:       c.Profile,
		SecretKeys:    c.GossipKeys,
		Logger:        c.Logger,
		Rand:          c.Rand,
		Transport:     c.GossipTransport,
	}
}

func (c Config) assign() AssignConfig {
	return AssignConfig{Shards: c.Shards, Load: c.Load, ReplicationFactor: c.ReplicationFactor}
}

// Validate reports the first invalid field of c by name.
func (c Config) Validate() error {
	if err := c.membership().Validate(); err != nil {
		return err
	}
	return c.assign().Validate()
}

// Node is one member of a Tenure cluster embedded in an application: it
// keeps gossip membership and publishes the shard table that Lookup reads.
// Its methods are safe for concurrent use.
type Node struct {
	cfg Config
	log *slog.Logger
	dir Directory

	mem *membership.Membership

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every publish
	version uint64

	wg   sync.WaitGroup
	once sync.Once
}

// New validates cfg and returns a stopped node. Start runs it.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Seeds = slices.Clone(cfg.Seeds)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("node", cfg.NodeID)
	n := &Node{cfg: cfg, log: cfg.Logger, changed: make(chan struct{})}
	// Until gossip reports members, no shard has an owner.
	a, err := Assign(cfg.assign(), nil)
	if err != nil {
		return nil, err
	}
	n.publish(a)
	return n, nil
}

// Start joins the cluster and starts maintaining the table. It returns an
// error if gossip cannot start or the cluster refuses this node (another
// cluster name, shard count or protocol version); unreachable seeds are
// retried in the background. Start must be called once; Stop releases the
// node even if Start failed.
func (n *Node) Start(ctx context.Context) error {
	mem, err := membership.Start(n.cfg.membership())
	if err != nil {
		return fmt.Errorf("shard: node %s: %w", n.cfg.NodeID, err)
	}
	n.mu.Lock()
	n.mem = mem
	n.mu.Unlock()
	n.wg.Add(1)
	go n.loop(mem)
	return nil
}

// loop applies membership events to the table until the events end.
func (n *Node) loop(mem *membership.Membership) {
	defer n.wg.Done()
	view := make(map[string]membership.Member)
	for ev := range mem.Events() {
		n.apply(view, ev)
		// Coalesce a burst of events into one recomputation.
	drain:
		for {
			select {
			case ev, ok := <-mem.Events():
				if !ok {
					break drain
				}
				n.apply(view, ev)
			default:
				break drain
			}
		}
		n.recompute(view)
	}
}

func (n *Node) apply(view map[string]membership.Member, ev membership.Event) {
	n.log.Debug("membership", "event", ev.Type.String(), "member", ev.Member.NodeID, "state", ev.Member.State.String())
	switch ev.Type {
	case membership.Joined, membership.Updated:
		view[ev.Member.NodeID] = ev.Member
	case membership.Left, membership.Failed:
		delete(view, ev.Member.NodeID)
	}
}

func (n *Node) recompute(view map[string]membership.Member) {
	var active []Member
	for _, m := range view {
		if m.State == membership.Active {
			active = append(active, Member{ID: m.NodeID, Addr: m.GRPCAddr, Zone: m.Zone, Weight: int(m.Weight)})
		}
	}
	a, err := Assign(n.cfg.assign(), active)
	if err != nil {
		// Members come from gossip, which refused duplicates and
		// incompatible nodes; an error here is a bug worth shouting about,
		// and the previous table stays in place.
		n.log.Error("assignment failed; keeping the previous table", "err", err)
		return
	}
	if cur := n.dir.Current(); cur != nil && cur.SameAssignment(TableFromAssignment(0, a)) {
		return
	}
	n.publish(a)
	n.log.Info("assignment changed", "active", len(active), "version", n.dir.Current().Version())
}

func (n *Node) publish(a *Assignment) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.version++
	n.dir.Publish(TableFromAssignment(n.version, a))
	close(n.changed)
	n.changed = make(chan struct{})
}

// Changed returns a channel that is closed the next time the table changes.
// Call it again after each close to keep watching.
func (n *Node) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

// Lookup returns the entry of key's shard: lock-free and allocation-free.
func (n *Node) Lookup(key []byte) Entry { return n.dir.Lookup(key) }

// LookupString is Lookup for a string key.
func (n *Node) LookupString(key string) Entry { return n.dir.LookupString(key) }

// Table returns the current table snapshot.
func (n *Node) Table() *Table { return n.dir.Current() }

// ID returns the node's NodeID.
func (n *Node) ID() string { return n.cfg.NodeID }

// GossipAddr returns the gossip address peers use to reach this node, or ""
// before Start.
func (n *Node) GossipAddr() string {
	if mem := n.membership(); mem != nil {
		return mem.Addr()
	}
	return ""
}

// Members returns the live members this node sees, sorted by NodeID, or nil
// before Start.
func (n *Node) Members() []membership.Member {
	if mem := n.membership(); mem != nil {
		return mem.Members()
	}
	return nil
}

func (n *Node) membership() *membership.Membership {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mem
}

// Leave announces a graceful departure, so peers drop this node at once
// instead of waiting for failure detection, then stops the node. ctx bounds
// the wait for the announcement.
func (n *Node) Leave(ctx context.Context) error {
	var err error
	if mem := n.membership(); mem != nil {
		err = mem.Leave(ctx)
	}
	n.Stop()
	return err
}

// Stop stops the node without announcing it: peers detect a failure. It
// waits for the node's goroutines and is idempotent.
func (n *Node) Stop() {
	n.once.Do(func() {
		if mem := n.membership(); mem != nil {
			mem.Stop() // closes Events, which ends loop
		}
		n.wg.Wait()
	})
}
