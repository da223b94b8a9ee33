package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/membership"
	peerv1 "github.com/tenurehq/tenure/proto/peer/v1"
)

// VoterAddr names one voter: its NodeID and the gRPC address it serves the
// voter protocol on.
type VoterAddr struct {
	ID   string
	Addr string
}

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
	// GRPCAddr is the address clients and peers use to reach this node's
	// gRPC service, and what Lookup returns for shards it leads. Required
	// when the node is a voter.
	GRPCAddr string
	// GRPCListen is the address the gRPC server binds to. Default GRPCAddr.
	// A node serves gRPC when it has Voters (peers hand shards to it there)
	// or RegisterGRPC is set.
	GRPCListen string
	// Zone is the node's failure domain. Optional.
	Zone string
	// Weight is the node's relative capacity. Default 1.
	Weight int
	// NoShards makes the node lead no shards (a dedicated voter, say).
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

	// Voters is the static voter set, identical on every node: 1, 3 or 5.
	// With no voters the node only computes the assignment and leads
	// nothing (a lookup-only member).
	Voters []VoterAddr
	// LeaseDuration (LD) is how long a voter keeps a node's session after
	// its last keep-alive: a crashed leader's shards are led again about LD
	// after the crash, and a leader survives a stall of about LD minus the
	// keep-alive interval. Same value on every node. Default 1 s.
	LeaseDuration time.Duration
	// MaxClockDrift bounds any clock's rate error (0.001 = 1 ms/s).
	// Default 0.001.
	MaxClockDrift float64
	// SafetyMargin is cut from every lease on top of the drift bound, to
	// cover the application noticing its end. Default LD/20.
	SafetyMargin time.Duration
	// KeepAliveInterval is how often each voter hears from the node.
	// Default LD/4.
	KeepAliveInterval time.Duration
	// DataDir holds the voter store when this node is a voter (required
	// then), and on every node that has one the file DataDir/incarnation:
	// the last incarnation a process of this node took, written and
	// fsynced before use, so that the next start takes a higher one even
	// if the wall clock stepped back meanwhile. Optional on other nodes:
	// without it the incarnation is the wall clock at start, and a node
	// that restarts after a backward step takes one above what the
	// voters report (once; see lease.Holder.Inc).
	DataDir string
	// InitVoterStore creates the voter store: required on a voter's very
	// first start, refused when a store exists (see package voterstore).
	InitVoterStore bool
	// Handler is told when this node gains and loses shards. Optional.
	Handler Handler
	// Registerer receives the node's Prometheus metrics (tenure_*, with a
	// "node" label). Optional; nil registers nothing.
	Registerer prometheus.Registerer

	// Planner chooses the leader each shard should have. Set it to a
	// rebalance.Policy (the zero value is good): it moves only what the
	// load bounds require — on a leave only the leaver's shards, on a join
	// about P/(N+1). Default: the ring assignment alone (consistent hashing
	// with bounded loads), which moves 1.06–1.27 × the ideal and also moves
	// shards between members that stay.
	Planner Planner
	// JoinSettle is how long a member must be active in this node's view
	// before it receives shards, so that a node that bounces does not make
	// shards flap. A member that already leads shards counts as settled.
	// Default 2 × LeaseDuration.
	JoinSettle time.Duration
	// MaxConcurrentHandoffs bounds the graceful handoffs this node runs at
	// once as a source, and among them those past their Prepare
	// (quiescing, transferring, the target not yet leading). Default 4, or
	// Shards/256 if that is more (64 at 16,384 shards). A
	// draining node prepares up to 8 × this at once, so that slow Preparer
	// hooks do not stretch the drain, and still switches this many at a
	// time; with a slow Quiescer, a higher value drains faster.
	MaxConcurrentHandoffs int
	// HandoffTimeout bounds each whole handoff: the target's Prepare, the
	// source's Quiesce and the voter round. Default 5 s.
	HandoffTimeout time.Duration
	// QuiesceTimeout bounds the source's Quiesce; work still running then
	// is cancelled with the lease. Default 1 s.
	QuiesceTimeout time.Duration

	// GRPCServerOptions are added to the node's gRPC server (TLS
	// credentials, interceptors). Optional.
	GRPCServerOptions []grpc.ServerOption
	// GRPCDialOptions are added to the node's connections to voters and
	// peers (TLS credentials). Default: insecure transport.
	GRPCDialOptions []grpc.DialOption
	// RegisterGRPC registers the application's own services on the node's
	// gRPC server before it serves (the daemon adds the public API, health
	// and reflection). Optional.
	RegisterGRPC func(*grpc.Server)

	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger
	// Rand supplies jitter. Default: seeded from the runtime. The node owns
	// it after New: do not share it.
	Rand *rand.Rand
	// GossipTransport replaces the gossip network transport (tests use
	// membership/faultnet). Optional.
	GossipTransport memberlist.Transport
	// Listen and Dial replace the gRPC listener and dialer (tests use
	// membership/faultnet). Optional.
	Listen func(addr string) (net.Listener, error)
	Dial   func(ctx context.Context, addr string) (net.Conn, error)

	// wallClock replaces time.Now where the node reads the wall clock for
	// its incarnation (tests step it back). Default time.Now.
	wallClock func() time.Time
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
		Voter:         c.isVoter(),
		VoterSet:      c.voterSet(),
		Profile:       c.Profile,
		SecretKeys:    c.GossipKeys,
		Logger:        c.Logger,
		Rand:          c.Rand,
		Transport:     c.GossipTransport,
	}
}

func (n *Node) membershipConfig() membership.Config {
	mc := n.cfg.membership()
	mc.Gossip, mc.Incarnation = n.gossip, n.inc.Load()
	return mc
}

func (c Config) assign() AssignConfig {
	return AssignConfig{Shards: c.Shards, Load: c.Load, ReplicationFactor: c.ReplicationFactor}
}

func (c Config) isVoter() bool {
	return slices.ContainsFunc(c.Voters, func(v VoterAddr) bool { return v.ID == c.NodeID })
}

// voterIDs returns the IDs of the configured voters, in configured order.
func (c Config) voterIDs() []string {
	ids := make([]string, len(c.Voters))
	for i, v := range c.Voters {
		ids[i] = v.ID
	}
	return ids
}

// voterSet is lease.VoterSetID of the configured voters; 0 without voters.
func (c Config) voterSet() uint64 { return lease.VoterSetID(c.voterIDs()) }

func (c Config) withDefaults() Config {
	if c.LeaseDuration == 0 {
		c.LeaseDuration = time.Second
	}
	if c.GRPCListen == "" {
		c.GRPCListen = c.GRPCAddr
	}
	if c.Cluster == "" {
		c.Cluster = membership.DefaultCluster
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = c.LeaseDuration / 4
	}
	if c.MaxClockDrift == 0 {
		c.MaxClockDrift = 0.001
	}
	if c.SafetyMargin == 0 {
		c.SafetyMargin = c.LeaseDuration / 20
	}
	if c.Load == 0 {
		c.Load = DefaultLoad
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.JoinSettle == 0 {
		c.JoinSettle = 2 * c.LeaseDuration
	}
	if c.MaxConcurrentHandoffs == 0 {
		// Enough that a rebalance takes a bounded number of rounds of
		// handoffs whatever P: a third of 65,536 shards moving back to a
		// restarted node at 4 at a time took minutes.
		c.MaxConcurrentHandoffs = max(4, c.Shards/256)
	}
	if c.HandoffTimeout == 0 {
		c.HandoffTimeout = 5 * time.Second
	}
	if c.QuiesceTimeout == 0 {
		c.QuiesceTimeout = time.Second
	}
	if c.wallClock == nil {
		c.wallClock = time.Now
	}
	c.Seeds = slices.Clone(c.Seeds)
	c.Voters = slices.Clone(c.Voters)
	return c
}

func (c Config) holder(inc uint64, r *rand.Rand) lease.HolderConfig {
	var ids []string
	for _, v := range c.Voters {
		ids = append(ids, v.ID)
	}
	return lease.HolderConfig{
		ID: c.NodeID, Inc: inc, Voters: ids,
		LeaseDuration: c.LeaseDuration, MaxClockDrift: c.MaxClockDrift,
		SafetyMargin: c.SafetyMargin, KeepAliveInterval: c.KeepAliveInterval,
		Rand: r,
	}
}

// Validate reports the first invalid field of c by name.
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := c.membership().Validate(); err != nil {
		return err
	}
	if err := c.assign().Validate(); err != nil {
		return err
	}
	switch {
	case c.JoinSettle < 0:
		return fmt.Errorf("shard: Config.JoinSettle must not be negative, got %v", c.JoinSettle)
	case c.MaxConcurrentHandoffs < 0:
		return fmt.Errorf("shard: Config.MaxConcurrentHandoffs must not be negative, got %d", c.MaxConcurrentHandoffs)
	case c.HandoffTimeout < 10*time.Millisecond || c.HandoffTimeout > time.Minute:
		return fmt.Errorf("shard: Config.HandoffTimeout must be in [10ms, 1m], got %v", c.HandoffTimeout)
	case c.QuiesceTimeout < 0 || c.QuiesceTimeout >= c.HandoffTimeout:
		return fmt.Errorf("shard: Config.QuiesceTimeout must be in [0, HandoffTimeout=%v), got %v", c.HandoffTimeout, c.QuiesceTimeout)
	}
	if len(c.Voters) == 0 {
		return nil
	}
	for i, v := range c.Voters {
		if v.ID == "" {
			return fmt.Errorf("shard: Config.Voters[%d] has no ID", i)
		}
		if _, _, err := net.SplitHostPort(v.Addr); err != nil {
			return fmt.Errorf("shard: Config.Voters[%d] (%s) address %q: %w", i, v.ID, v.Addr, err)
		}
	}
	if err := c.holder(1, c.Rand).Validate(); err != nil {
		return fmt.Errorf("shard: Config: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.GRPCListen); err != nil {
		return fmt.Errorf("shard: Config.GRPCListen %q: node %s has voters and must serve gRPC (peers hand shards to it there): %w", c.GRPCListen, c.NodeID, err)
	}
	if c.isVoter() && c.DataDir == "" {
		return fmt.Errorf("shard: Config.DataDir is required: node %s is a voter", c.NodeID)
	}
	return nil
}

// Node is one member of a Tenure cluster embedded in an application: it
// keeps gossip membership, computes the desired assignment, holds leases on
// the shards it should lead, tells the Handler, and publishes the table
// that Lookup reads. Its methods are safe for concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	dir   Directory
	start time.Time // origin of the node's monotonic lease clock
	// quorumUntil is the holder's QuorumDeadline, shared with every lease
	// all voters back (Lease.until).
	quorumUntil atomic.Int64
	// inc is the incarnation this process advertises (gossip, handoffs):
	// taken at Start, raised with the holder's (see afterStep).
	inc atomic.Uint64
	// raising serialises persisting and advertising raised incarnations,
	// so that neither the file nor gossip ever goes back to an older one.
	raising sync.Mutex
	// superseded is set once a voter reported a newer process with this
	// NodeID: this one leads nothing again and refuses handoffs.
	superseded atomic.Bool
	// holderRand is the lease holder's own jitter source: cfg.Rand belongs
	// to gossip's rejoin goroutine.
	holderRand *rand.Rand

	mu       sync.Mutex
	mem      *membership.Membership
	changed  chan struct{} // closed and replaced on every publish
	version  uint64
	leases   map[uint32]*Lease // current leases, read by Leases
	handlers *handlerQueue

	// notConverging mirrors tenure_shards_not_converging for NotConverging.
	notConverging atomic.Int64

	// expiredShards lists shards whose lease ended since reconcile last
	// looked (leaseEnded); it may hold duplicates and shards whose lease
	// was replaced or removed since.
	expiredMu     sync.Mutex
	expiredShards []uint32

	rpc     *rpcPlane
	peers   *peers
	gossip  *leaderGossip
	metrics *metrics
	planner Planner
	stop    chan struct{}
	// ctl carries closures to run on the loop (see do).
	ctl chan func(*loopState)
	// switching holds one token per handoff from its quiesce until it
	// ends: MaxConcurrentHandoffs, also while draining, when more
	// handoffs prepare at once (see runHandoff).
	switching chan struct{}
	// runCtx ends when the node stops; background work (handoffs) runs
	// under it and bg waits for it.
	runCtx    context.Context
	runCancel context.CancelFunc
	bg        sync.WaitGroup
	ready     atomic.Bool
	draining  atomic.Bool
	history   transitions
	loopWG    sync.WaitGroup
	handlWG   sync.WaitGroup
	once      sync.Once
	// leave asks the loop to release every lease; it closes the channel
	// it is sent once the releases are queued.
	leave chan chan struct{}
}

// New validates cfg and returns a stopped node. Start runs it.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Logger = cfg.Logger.With("node", cfg.NodeID)
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger,
		start:   time.Now(),
		changed: make(chan struct{}),
		leases:  make(map[uint32]*Lease),
		stop:    make(chan struct{}),
		leave:   make(chan chan struct{}),
		ctl:     make(chan func(*loopState)),
		planner: cfg.Planner,
	}
	n.switching = make(chan struct{}, cfg.MaxConcurrentHandoffs)
	if n.planner == nil {
		n.planner = ringPlanner{cfg.assign()}
	}
	n.runCtx, n.runCancel = context.WithCancel(context.Background())
	n.holderRand = rand.New(rand.NewPCG(cfg.Rand.Uint64(), cfg.Rand.Uint64()))
	n.gossip = newLeaderGossip(cfg.NodeID, cfg.GRPCAddr)
	var err error
	if n.metrics, err = newMetrics(cfg.Registerer, cfg.NodeID, cfg.voterIDs()); err != nil {
		return nil, fmt.Errorf("shard: Config.Registerer: %w", err)
	}
	// Until gossip reports members, no shard has an owner.
	n.publish(&loopState{planState: planState{target: make([]string, cfg.Shards)}})
	return n, nil
}

// now reads the node's monotonic lease clock.
func (n *Node) now() lease.Time { return lease.Time(time.Since(n.start)) }

// Start serves gRPC (the voter protocol when this node is a voter), joins
// the cluster and starts leading the shards assigned to it. It returns an
// error if a listener or the voter store cannot be opened, or if the
// cluster refuses this node (another cluster name, shard count or protocol
// version); unreachable seeds are retried in the background. Start must be
// called once; Stop releases the node even if Start failed.
func (n *Node) Start(ctx context.Context) error {
	if n.cfg.Shards > MeasuredShards {
		n.log.Warn("this shard count is above the largest measured to settle; 65,536 shards on 3 nodes do not settle yet (docs/design-notes.md, notes 40 and 41)",
			"shards", n.cfg.Shards, "measured", MeasuredShards)
	}
	inc, err := takeIncarnation(n.cfg.DataDir, n.cfg.wallClock())
	if err != nil {
		return fmt.Errorf("shard: node %s: %w", n.cfg.NodeID, err)
	}
	n.inc.Store(inc)
	var h *lease.Holder
	if len(n.cfg.Voters) > 0 {
		if h, err = lease.NewHolder(n.cfg.holder(inc, n.holderRand)); err != nil {
			return fmt.Errorf("shard: node %s: %w", n.cfg.NodeID, err)
		}
	}
	if len(n.cfg.Voters) > 0 || n.cfg.RegisterGRPC != nil {
		rp, err := startRPC(n.cfg, n.log, n.metrics, func(g *grpc.Server) {
			if h != nil {
				peerv1.RegisterPeerServer(g, peerServer{n: n})
			}
		})
		if err != nil {
			return fmt.Errorf("shard: node %s: %w", n.cfg.NodeID, err)
		}
		n.rpc = rp
		n.peers = newPeers(rp.dialOpts)
	}
	mem, err := membership.Start(n.membershipConfig())
	if err != nil {
		return fmt.Errorf("shard: node %s: %w", n.cfg.NodeID, err)
	}
	n.mu.Lock()
	n.mem = mem
	n.handlers = newHandlerQueue(n.cfg.Handler)
	n.mu.Unlock()
	n.handlWG.Add(1)
	go func() { defer n.handlWG.Done(); n.handlers.run() }()
	n.loopWG.Add(1)
	go n.loop(mem, h)
	return nil
}

// planEvery bounds how often the loop replans for claims and lease
// changes alone.
const planEvery = 50 * time.Millisecond

// planShare bounds the CPU that plans for churn (not membership changes)
// take: the next such plan waits at least planShare times what a plan
// takes (a moving average), about a fifth of a core at large P.
const planShare = 5

// claimRefresh is how often a node resends all its leadership claims to
// every peer, repairing messages lost on the way.
const claimRefresh = 2 * time.Second

// loopState is what the node's loop goroutine owns.
type loopState struct {
	view   map[string]membership.Member
	holder *lease.Holder // nil without voters
	// sessions[node][voter] is the latest session news a voter gave of
	// node: the generation and whether it expired.
	sessions map[string]map[string]sessionNews
	// answered[voter] is when this node last received a reply from voter
	// that kept its own session there (not stale, not refused): at a
	// majority within vouchWindow, the voters vouch for this node.
	answered map[string]lease.Time
	// vouched: a majority of voters answered this node lately, so it may
	// be planned shards (see vouched); superseded: a voter reported a
	// newer process with this NodeID.
	vouched, superseded bool
	// refreshedAt is when every lease's deadline was last refreshed.
	refreshedAt lease.Time
	// behind holds the shards planned here and not led at the last
	// convergence check, made at convergedAt (checkConverging).
	behind      map[uint32]bool
	convergedAt time.Time
	// replanNow asks for a plan once what the loop is doing is sent;
	// publishNow for a publish within the budget (see followUp).
	replanNow, publishNow bool
	planState
}

// loop is the node's one goroutine of protocol logic: membership events,
// voter replies and ticks all pass through it, so the lease state needs no
// locks.
func (n *Node) loop(mem *membership.Membership, h *lease.Holder) {
	defer n.loopWG.Done()
	st := &loopState{view: make(map[string]membership.Member), holder: h,
		sessions: make(map[string]map[string]sessionNews), answered: make(map[string]lease.Time),
		planState: newPlanState()}
	st.since[n.cfg.NodeID] = time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var replies <-chan lease.Reply
	if n.rpc != nil {
		replies = n.rpc.replies
	}
	events := mem.Events()
	lastRefresh := time.Now()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				n.endAll(st, ReasonShutdown)
				return
			}
			n.apply(st, ev)
			// Coalesce a burst of events into one recomputation.
		drain:
			for {
				select {
				case ev, ok := <-events:
					if !ok {
						break drain
					}
					n.apply(st, ev)
				default:
					break drain
				}
			}
			n.countMembers(st)
			n.plan(st)
		case f := <-n.ctl:
			f(st)
			if st.sendNow {
				n.sendNow(st, replies)
			}
		case rep := <-replies:
			n.step(st, rep)
			// Replies that already wait are applied before the leases'
			// deadlines are refreshed once for all of them: each refresh
			// visits every lease.
		more:
			for range coalesceLimit {
				select {
				case rep := <-replies:
					n.step(st, rep)
				default:
					break more
				}
			}
			n.refreshDeadlines(st)
			n.checkVouched(st)
		case <-tick.C:
			if h != nil {
				// Deadlines do not move with time alone (each lease's
				// timer ends it at its deadline): replies move them, and
				// the holder's changes end leases.
				n.reconcile(st)
				n.send(st)
				n.checkVouched(st)
				if time.Since(st.convergedAt) >= convergeEvery {
					n.checkConverging(st)
				}
			}
			msgs := n.gossip.flush()
			if time.Since(lastRefresh) >= claimRefresh {
				msgs, lastRefresh = append(msgs, n.gossip.refresh()...), time.Now()
			}
			for _, msg := range msgs {
				if err := mem.SendToAll(msg); err != nil {
					n.log.Error("leadership gossip", "err", err)
				}
			}
			if n.gossip.takeDirty() {
				st.dirty, st.republish = true, true
			}
			// Replan at most every planEvery: a burst of claims and lease
			// changes (every handoff changes every node's table) would
			// otherwise replan every node on every tick, and that CPU is
			// taken from the handoffs themselves. Membership changes and
			// voters' news of a dead leader still replan at once.
			if (st.dirty && time.Since(st.lastPlan) >= max(planEvery, planShare*st.planCost)) || (!st.settleAt.IsZero() && !time.Now().Before(st.settleAt)) ||
				(!st.retryPlanAt.IsZero() && !time.Now().Before(st.retryPlanAt)) {
				n.plan(st)
			} else if st.republish && !time.Now().Before(st.nextPublish) {
				// Who leads changed: the table says so now, between plans.
				n.publish(st)
			}
		case done := <-n.leave:
			n.releaseAll(st, ReasonShutdown)
			close(done)
		case <-n.stop:
			n.endAll(st, ReasonShutdown)
			return
		}
		n.followUp(st)
	}
}

// followUp plans or publishes when what the loop just did asked for it:
// after the loop's requests have left, so that a slow planner delays no
// keep-alive.
func (n *Node) followUp(st *loopState) {
	switch {
	case st.replanNow:
		n.plan(st)
	case st.publishNow && !time.Now().Before(st.nextPublish):
		// This node's own leases changed: its table says so now,
		// within the publish budget, rather than at the next tick.
		n.publish(st)
	}
	st.publishNow = false
}

// step applies a voter's reply.
func (n *Node) step(st *loopState, rep lease.Reply) {
	h := st.holder
	now := n.now()
	h.Step(rep, now)
	if !rep.Stale && rep.Mismatch == "" && rep.Gen != 0 && !h.Superseded() {
		st.answered[rep.Voter] = now
	}
	n.afterStep(st)
}

// send runs the holder's Tick and sends the requests it returns — after
// applying the changes that the Tick and the calls before it reported: a
// lease that a Transfer or a Release ends has its context cancelled
// before the request leaves (docs/design.md §2.4, rule 1: the lease ends when the
// node sends).
func (n *Node) send(st *loopState) {
	envs := st.holder.Tick(n.now())
	n.afterStep(st)
	n.refreshDeadlines(st)
	n.rpc.send(envs)
}

// coalesceLimit bounds how many waiting calls and replies the loop
// handles before it sends a request that st.sendNow asked for.
const coalesceLimit = 64

// sendNow sends the holder's requests at once, after handling the calls
// and replies that already wait for the loop (at most coalesceLimit): a
// burst of handoffs then leaves as one request per voter carrying every
// transfer, instead of one request per handoff that queue behind each
// other for the voters' in-flight window. An idle loop finds nothing
// waiting and sends at once.
func (n *Node) sendNow(st *loopState, replies <-chan lease.Reply) {
	h := st.holder
	for range coalesceLimit {
		select {
		case f := <-n.ctl:
			f(st)
			continue
		case rep := <-replies:
			n.step(st, rep)
			continue
		default:
		}
		break
	}
	st.sendNow = false
	if h == nil {
		return
	}
	n.send(st)
}

func (n *Node) apply(st *loopState, ev membership.Event) {
	n.log.Debug("membership", "event", ev.Type.String(), "member", ev.Member.NodeID, "state", ev.Member.State.String())
	id := ev.Member.NodeID
	st.dirty = true
	switch ev.Type {
	case membership.Joined, membership.Updated:
		old, had := st.view[id]
		st.view[id] = ev.Member
		if had && old.BootID != ev.Member.BootID {
			// A new process: the old one's claims are void.
			delete(st.drainingPeers, id)
			n.gossip.forget(id)
		}
		// Session news stays: a voter's generations only grow, so the
		// news of the new process's session (Started) outranks any late
		// expiry of the old one, in whatever order they arrive — whereas
		// forgetting it here would let a late expiry of the old session,
		// arriving after the new one's Started, keep the node out.
		active := ev.Member.State == membership.Active
		if active && (!had || old.State != membership.Active || old.BootID != ev.Member.BootID) && id != n.cfg.NodeID {
			st.since[id] = time.Now()
		}
		if !active && id != n.cfg.NodeID {
			delete(st.since, id)
		}
	case membership.Left, membership.Failed:
		delete(st.view, id)
		delete(st.since, id)
		delete(st.drainingPeers, id)
		n.gossip.forget(id)
	}
}

// leaseDead reports whether a majority of voters said node id's session
// expired: its leases are provably over even if gossip has not noticed.
func (n *Node) leaseDead(st *loopState, id string) bool {
	expired := 0
	for _, news := range st.sessions[id] {
		if news.expired {
			expired++
		}
	}
	return expired > len(n.cfg.Voters)/2
}

// vouched reports whether the voters vouch for member id: for a majority
// of them, the latest news of id is a session that started and has not
// expired (for this node itself: a majority answered its own keep-alives
// lately, see checkVouched). Only such members may be planned shards
// (docs/design.md §2.6). "No news" is not "alive": a member that cannot
// reach the voters, or a process superseded by a newer one with its
// NodeID, would be planned shards that every Transfer to it is refused,
// for as long as it stays in gossip. Without voters every member is
// vouched for.
//
// News of another member comes in the holder's notices: a voter lists
// every live session in its first reply to this node (and again whenever
// it forgot this node, as after its restart), and the sessions that start
// and expire after it in later ones.
// applyNotices records the voters' news of other members' sessions, and
// acts on members whose standing changed over the whole batch: a dead
// leader's shards fail over now, and a member the voters vouch for again
// settles before it receives shards.
//
// A Reset notice drops what its voter said of live sessions: the notices
// after it list every session live there now. A member it no longer lists
// (say one cut off from the voters across the voter's restart) would
// otherwise stay vouched for on news nobody renews. Expiries stay: they
// are final for their generation.
func (n *Node) applyNotices(st *loopState, notices []lease.Notice) {
	if len(notices) == 0 {
		return
	}
	type standing struct{ dead, vouched bool }
	before := make(map[string]standing)
	remember := func(id string) {
		if _, ok := before[id]; !ok {
			before[id] = standing{n.leaseDead(st, id), n.vouched(st, id)}
		}
	}
	for _, x := range notices {
		if x.Reset {
			for id, byVoter := range st.sessions {
				if news, ok := byVoter[x.Voter]; ok && !news.expired {
					remember(id)
					delete(byVoter, x.Voter)
				}
			}
			continue
		}
		if x.Node == n.cfg.NodeID {
			continue
		}
		remember(x.Node)
		if st.sessions[x.Node] == nil {
			st.sessions[x.Node] = make(map[string]sessionNews)
		}
		// Generations only grow at a voter, so the news of the highest
		// one is the latest, whatever order the notices came in.
		if cur, ok := st.sessions[x.Node][x.Voter]; !ok || x.Gen > cur.gen || (x.Gen == cur.gen && x.Expired) {
			st.sessions[x.Node][x.Voter] = sessionNews{gen: x.Gen, expired: x.Expired}
		}
	}
	for id, b := range before {
		if n.leaseDead(st, id) != b.dead {
			// A dead leader's shards are failed over now, not at the
			// next tick.
			n.log.Info("voters report a node's session", "member", id, "expired", !b.dead)
			st.replanNow = true
		}
		if v := n.vouched(st, id); v != b.vouched {
			n.log.Info("voters vouch for a member", "member", id, "vouched", v)
			st.replanNow = true
			if m, ok := st.view[id]; v && ok && m.State == membership.Active {
				// It settles again before it receives shards, so that a
				// member whose sessions come and go does not make
				// shards flap.
				st.since[id] = time.Now()
			}
		}
	}
}

func (n *Node) vouched(st *loopState, id string) bool {
	switch {
	case len(n.cfg.Voters) == 0:
		return true
	case id == n.cfg.NodeID:
		return st.vouched
	}
	live := 0
	for _, news := range st.sessions[id] {
		if !news.expired {
			live++
		}
	}
	return live > len(n.cfg.Voters)/2
}

// checkVouched updates whether the voters vouch for this node: it becomes
// so when a majority answered it, and stops being so when fewer did within
// vouchWindow (time alone ends it) or a newer process took its NodeID. A
// change replans.
func (n *Node) checkVouched(st *loopState) {
	h := st.holder
	if h == nil {
		return
	}
	now := n.now()
	answered := 0
	for _, at := range st.answered {
		if now.Sub(at) < vouchWindow*n.cfg.LeaseDuration {
			answered++
		}
	}
	v := !h.Superseded() && answered > len(n.cfg.Voters)/2
	if v != st.vouched {
		st.vouched, st.replanNow = v, true
		n.log.Info("voters vouch for this node", "vouched", v, "answered", answered)
	}
}

// vouchWindow, in LeaseDurations, is how long this node counts a voter's
// answer as the voter vouching for it. Peers stop counting it one
// LeaseDuration after the voter last heard from it; this node lets the
// answers of a loaded or briefly cut-off moment age twice as long before
// it plans itself out of its own shards (its leases end on their own, by
// the lease rule, and peers plan by what the voters tell them).
const vouchWindow = 2

type sessionNews struct {
	gen     uint64
	expired bool
}

// countMembers updates the members gauge from the view.
func (n *Node) countMembers(st *loopState) {
	states := map[membership.State]int{}
	for _, m := range st.view {
		states[m.State]++
	}
	for _, s := range []membership.State{membership.Joining, membership.Active, membership.Draining, membership.Leaving} {
		n.metrics.members.WithLabelValues(s.String()).Set(float64(states[s]))
	}
}

// afterStep acts on what the holder reported: lease transitions go to the
// leases, the Handler, the table and the rebalancer, session notices to the
// plan, a raised incarnation to gossip. It neither plans nor publishes: it
// asks followUp to, so that its callers send first.
func (n *Node) afterStep(st *loopState) {
	h := st.holder
	if h == nil {
		return
	}
	for _, c := range h.TakeChanges() {
		switch c.Kind {
		case lease.Gained:
			delete(st.expecting, c.Shard)
			if since, ok := st.orphaned[c.Shard]; ok {
				n.metrics.failoverSeconds.Observe(time.Since(since).Seconds())
				delete(st.orphaned, c.Shard)
			}
			n.gossip.lead(c.Shard, c.Epoch)
			n.metrics.transitions.WithLabelValues("acquired", "").Inc()
			now := n.now()
			d, ok := h.Deadline(c.Shard, now)
			if !ok {
				d = now // it is over already: the lease starts ended
			}
			l := newLease(c.Shard, c.Epoch, n.start, d, n.leaseEnded, &n.quorumUntil)
			n.setLease(c.Shard, l)
			n.history.add(Transition{Shard: c.Shard, Epoch: c.Epoch, Event: "acquired"})
			n.log.Info("leading shard", "shard", c.Shard, "epoch", c.Epoch)
			n.handlers.push(func(hd Handler) { hd.Acquired(l) })
			st.dirty, st.republish, st.publishNow = true, true, true
		case lease.Renewed:
			n.gossip.lead(c.Shard, c.Epoch)
			n.metrics.transitions.WithLabelValues("renewed", "").Inc()
			if l := n.getLease(c.Shard); l != nil {
				l.epoch.Store(c.Epoch)
			}
			n.history.add(Transition{Shard: c.Shard, Epoch: c.Epoch, Event: "renewed"})
			n.log.Info("lease renewed at a higher epoch", "shard", c.Shard, "epoch", c.Epoch)
			st.dirty, st.republish, st.publishNow = true, true, true
		case lease.Lost:
			n.gossip.unlead(c.Shard, c.Epoch)
			r, peer := reasonOf(c.Reason), ""
			if hf := st.handoffs[c.Shard]; hf != nil && c.Reason == lease.ReasonHandoff {
				peer = hf.to
				if hf.draining {
					r = ReasonDrain
				}
			}
			n.endLease(c.Shard, r, peer)
			st.dirty, st.republish, st.publishNow = true, true, true
		case lease.Transferred:
			n.transferred(st, c)
		case lease.TransferFailed:
			n.transferFailed(st, c)
		}
	}
	n.applyNotices(st, h.TakeNotices())
	if h.Superseded() && !st.superseded {
		n.supersede(st)
	}
	if inc := h.Inc(); inc != n.inc.Load() {
		// Answers to the old incarnation vouch for nothing now, and a
		// handoff prepared under it is addressed to it: the voters would
		// refuse its Transfer. The holder already dropped its hold-offs.
		clear(st.answered)
		clear(st.expecting)
		n.checkVouched(st)
		n.raiseIncarnation(inc)
	}
}

// supersede reacts to a voter's report that a newer process with this
// NodeID runs: the holder has ended every lease and sends nothing again.
// This process refuses handoffs (it could not lead them) and advertises
// that it drains, so that peers plan nothing onto it while gossip shows it
// rather than its successor.
func (n *Node) supersede(st *loopState) {
	st.superseded = true
	n.superseded.Store(true)
	n.ready.Store(false)
	n.log.Warn("a newer process with this node's ID runs; this one leads nothing again", "incarnation", n.inc.Load())
	mem := n.membership()
	if mem == nil {
		return
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		ctx, cancel := context.WithTimeout(n.runCtx, n.cfg.LeaseDuration)
		defer cancel()
		if err := mem.SetState(ctx, membership.Draining); err != nil {
			n.log.Warn("advertising the draining state of a superseded process", "err", err)
		}
	}()
}

// raiseIncarnation follows the holder, which took an incarnation above one
// a voter reported for this NodeID (this process's own was read from a
// wall clock that stepped back): handoff targets are named by the
// incarnation gossip shows, so gossip must show the new one, and the
// data directory remembers it for the next start.
func (n *Node) raiseIncarnation(inc uint64) {
	old := n.inc.Swap(inc)
	n.log.Warn("incarnation raised above the one the voters know for this node's ID (the wall clock stepped back, or the process that took it stopped and a disk lost the counter's last write; leases held under the old one ended)", "from", old, "to", inc)
	mem := n.membership()
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		n.raising.Lock()
		defer n.raising.Unlock()
		// A later raise may have overtaken this one: take the newest.
		inc := n.inc.Load()
		if n.cfg.DataDir != "" {
			// Under the lock, raiseIncarnationFile's read and write are
			// one step: the file only grows.
			if err := raiseIncarnationFile(n.cfg.DataDir, inc); err != nil {
				n.log.Error("persisting the raised incarnation", "err", err)
			}
		}
		if mem == nil {
			return
		}
		ctx, cancel := context.WithTimeout(n.runCtx, n.cfg.LeaseDuration)
		defer cancel()
		if err := mem.SetIncarnation(ctx, inc); err != nil {
			n.log.Warn("advertising the raised incarnation", "incarnation", inc, "err", err)
		}
	}()
}

// refreshDeadlines moves leases' deadlines to the holder's: back at once
// for the leases the holder reports shortened (a voter stopped protecting
// them), forward at most every refreshEvery for those whose deadline is
// near. A lease the holder no longer counts ends now; the holder's Lost
// change follows at the next Tick. The loop calls it after each burst of
// replies, once their changes were applied (a lease a change ended hears
// the change's reason), and on every tick.
func (n *Node) refreshDeadlines(st *loopState) {
	h := st.holder
	if h == nil {
		return
	}
	short, all := h.TakeShortened()
	now := n.now()
	// Not only after replies: a lease whose deadline was left for later
	// must still be extended to the holder's when no reply comes (the
	// voters were cut off), or it ends before the holder's lease does.
	full := all || now.Sub(st.refreshedAt) >= n.refreshEvery()
	defer n.shareQuorumDeadline(h, now)
	if !full && len(short) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	// A deadline that moved earlier is applied at once, on a periodic
	// pass too (whose own test below would skip a lease whose deadline is
	// far): the voter that stopped counting may grant someone else now.
	for _, s := range short {
		if l := n.leases[s]; l != nil {
			n.refreshDeadline(h, s, l, now)
		}
	}
	if !full {
		return
	}
	st.refreshedAt = now
	soon := now.Add(n.cfg.KeepAliveInterval)
	for s, l := range n.leases {
		// Only deadlines that come soon need extending now: a later one
		// is earlier than the holder's (what shortens one is applied at
		// once, above), so it is safe to keep until then.
		if all || lease.Time(l.deadline.Load()) <= soon {
			n.refreshDeadline(h, s, l, now)
		}
	}
}

// refreshDeadline sets lease l of shard s to the holder's deadline, or ends
// it if the holder no longer leads s.
func (n *Node) refreshDeadline(h *lease.Holder, s uint32, l *Lease, now lease.Time) {
	d, ok := h.Deadline(s, now)
	// The lease's own deadline first, judged against the deadline it had
	// (the shared one, while full): clearing full first could end a lease
	// the holder still leads. Until full is cleared the lease keeps the
	// deadline it already had, never a later one.
	if ok {
		l.setDeadline(d)
	} else if !l.expired() {
		l.end(ReasonQuorumLost)
	}
	l.setFull(ok && h.FullQuorum(s))
}

// shareQuorumDeadline publishes the holder's quorum deadline to the leases
// that every voter backs: one store per reply burst extends them all. It
// runs after the burst's shortened deadlines were applied, so no lease a
// withdrawn vote no longer backs is extended by it.
func (n *Node) shareQuorumDeadline(h *lease.Holder, now lease.Time) {
	if d, ok := h.QuorumDeadline(now); ok {
		n.quorumUntil.Store(int64(d))
	} else {
		n.quorumUntil.Store(0)
	}
}

// refreshEvery is how often replies that only extend deadlines refresh
// every lease's: each refresh visits every lease, and a reply burst comes
// every few milliseconds at scale. A deadline applied up to this much late
// is earlier than the true one, never later: a lease then ends no later
// than it must, and with keep-alives every KeepAliveInterval its deadline
// stays far ahead of this lag.
func (n *Node) refreshEvery() time.Duration { return n.cfg.KeepAliveInterval / 8 }

// reconcile replaces the leases whose context ended while the holder still
// leads the shard: the node ran late (its loop, or the whole process,
// starved), the deadline passed, and replies handled since renewed the
// lease in the holder; or a lease ended as quorum lost for a moment and a
// reply made its epoch valid again before the holder reported it lost. A context cannot be revived, so
// the Handler hears that the old lease expired and then receives a new
// Lease at the holder's epoch. No other node can have led the shard in
// between: a voter that still counts for this node now refuses every
// other grant until after this node's renewed deadline (docs/design.md §2.5, why it
// is safe, 3), and such voters are a majority.
func (n *Node) reconcile(st *loopState) {
	h := st.holder
	now := n.now()
	n.expiredMu.Lock()
	maybe := n.expiredShards
	n.expiredShards = nil
	n.expiredMu.Unlock()
	if len(maybe) == 0 {
		return
	}
	n.mu.Lock()
	var ended []uint32
	for _, s := range maybe {
		if l := n.leases[s]; l != nil && l.expired() {
			ended = append(ended, s)
		}
	}
	n.mu.Unlock()
	slices.Sort(ended)
	ended = slices.Compact(ended)
	var pending []uint32
	for _, s := range ended {
		e, ok := h.Leads(s, now)
		d, _ := h.Deadline(s, now)
		if !ok {
			// The holder's Lost change follows at a Tick, unless a reply
			// makes the epoch valid again first: look again then.
			pending = append(pending, s)
			continue
		}
		n.log.Info("lease ended, then renewed: a new lease for the application", "shard", s, "epoch", e)
		n.endLease(s, ReasonLeaseExpired, "")
		l := newLease(s, e, n.start, d, n.leaseEnded, &n.quorumUntil)
		n.setLease(s, l)
		n.metrics.transitions.WithLabelValues("acquired", "").Inc()
		n.history.add(Transition{Shard: s, Epoch: e, Event: "acquired"})
		n.handlers.push(func(hd Handler) { hd.Acquired(l) })
	}
	if len(pending) > 0 {
		n.expiredMu.Lock()
		n.expiredShards = append(n.expiredShards, pending...)
		n.expiredMu.Unlock()
	}
}

// convergeEvery is how often a node checks that the shards it should lead
// are led, and how long they may stay unled before it warns.
const convergeEvery = 10 * time.Second

// checkConverging warns, at most once per convergeEvery, when shards the
// plan gives this node have stayed unled by it since the last check: a
// cold start or a failover that does not converge must not be silent. The
// warning names the holder's backlog and the voters' failures.
func (n *Node) checkConverging(st *loopState) {
	st.convergedAt = time.Now()
	h := st.holder
	if h == nil || len(st.target) != n.cfg.Shards || st.draining || st.superseded {
		st.behind = nil
		return
	}
	now := n.now()
	behind := map[uint32]bool{}
	for s, t := range st.target {
		if t != n.cfg.NodeID {
			continue
		}
		if _, ok := h.Leads(uint32(s), now); !ok && st.handoffs[uint32(s)] == nil {
			behind[uint32(s)] = true
		}
	}
	still := 0
	for s := range behind {
		if st.behind[s] {
			still++
		}
	}
	st.behind = behind
	n.metrics.notConverging.Set(float64(still))
	n.notConverging.Store(int64(still))
	if still == 0 {
		return
	}
	b := h.Backlog()
	n.log.Warn("shards this node should lead are still not led", "unled_for_over", convergeEvery, "shards", still,
		"planned_here", countOf(st.target, n.cfg.NodeID), "led", len(h.Led(now)), "vouched", st.vouched,
		"queued_ops", b.Queued, "acquiring", b.Acquiring, "transferring", b.Transferring, "releasing", b.Releasing,
		"voter_failures", n.rpc.failures())
}

func countOf(target []string, id string) int {
	n := 0
	for _, t := range target {
		if t == id {
			n++
		}
	}
	return n
}

// leaseEnded notes that the lease on shard s ended, for reconcile: at its
// deadline, or as "quorum lost" when the holder stopped counting it for a
// moment (a reply may make the same epoch valid again before the holder's
// Tick reports it lost). Leases call it under their own lock.
func (n *Node) leaseEnded(s uint32) {
	n.expiredMu.Lock()
	n.expiredShards = append(n.expiredShards, s)
	n.expiredMu.Unlock()
}

func (n *Node) setLease(s uint32, l *Lease) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if old := n.leases[s]; old != nil {
		old.end(ReasonLeaseExpired)
	}
	n.leases[s] = l
}

func (n *Node) getLease(s uint32) *Lease {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leases[s]
}

// endLease cancels the lease's context at once, unless its deadline or
// the node did already (the reason it ended for first is the one the
// Handler hears), then tells the Handler.
func (n *Node) endLease(s uint32, r Reason, peer string) {
	n.mu.Lock()
	l := n.leases[s]
	delete(n.leases, s)
	n.mu.Unlock()
	if l == nil {
		return
	}
	r = l.end(r)
	n.history.add(Transition{Shard: s, Epoch: l.Epoch(), Event: "released", Reason: r, Peer: peer})
	n.metrics.transitions.WithLabelValues("released", r.String()).Inc()
	n.log.Info("stopped leading shard", "shard", s, "epoch", l.Epoch(), "reason", r.String())
	n.handlers.push(func(hd Handler) { hd.Released(l, r) })
}

// releaseAll gives every led shard up at the voters, so that the desired
// owners take over at once instead of after a lease. The contexts end
// before the releases leave.
func (n *Node) releaseAll(st *loopState, r Reason) {
	if st.holder == nil {
		return
	}
	st.draining, st.leaving = true, true
	n.draining.Store(true)
	for s, hf := range st.handoffs {
		delete(st.handoffs, s)
		hf.finish(&HandoffError{Shard: s, To: hf.to, Step: "prepare", Err: ErrDraining})
	}
	now := n.now()
	for s := range n.cfg.Shards {
		st.holder.SetDesired(uint32(s), false)
	}
	for _, s := range st.holder.Led(now) {
		st.holder.Release(s, now)
	}
	st.holder.TakeChanges()
	n.endAll(st, r)
	n.rpc.send(st.holder.Tick(now))
}

func (n *Node) endAll(st *loopState, r Reason) {
	n.mu.Lock()
	shards := slices.Sorted(maps.Keys(n.leases))
	n.mu.Unlock()
	for _, s := range shards {
		n.endLease(s, r, "")
	}
}

// Leases returns the shards this node leads now with their leases.
func (n *Node) Leases() map[uint32]*Lease {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.leases)
}

// publishShare bounds the CPU that publishing between plans takes: the
// next publish waits publishShare times what a publish takes (a moving
// average, so that one publish slowed by a GC pause does not hold the next
// one back), and at least one tick, so that with a large P it costs about
// a tenth of a core however fast leadership changes.
const publishShare = 10

// publish makes a new table from the plan, the leadership claims and this
// node's own leases.
func (n *Node) publish(st *loopState) {
	began := time.Now()
	defer func() {
		st.publishCost += (time.Since(began) - st.publishCost) / 8
		st.republish, st.nextPublish = false, time.Now().Add(publishShare*st.publishCost)
	}()
	entries := make([]Entry, n.cfg.Shards)
	planned := len(st.target) == len(entries) // else no plan has succeeded yet
	for s := range entries {
		entries[s] = Entry{Shard: ID(s)}
		if !planned {
			continue
		}
		if t := st.target[s]; t != "" {
			entries[s].Desired = t
			entries[s].Addr = st.view[t].GRPCAddr
		}
	}
	for s, r := range n.gossip.best(len(entries)) {
		if r.node != "" {
			entries[s].Leader, entries[s].Epoch, entries[s].State = r.node, r.epoch, Led
			entries[s].Addr = r.addr
		}
	}
	if h := st.holder; h != nil {
		h.EachLed(n.now(), func(s uint32, e uint64) {
			if e >= entries[s].Epoch {
				entries[s].Leader, entries[s].Epoch, entries[s].State = n.cfg.NodeID, e, Led
				entries[s].Addr = n.cfg.GRPCAddr
			}
		})
		for s := range st.handoffs {
			if entries[s].Leader == n.cfg.NodeID {
				entries[s].State = Moving
			}
		}
	}
	unled := 0
	for i := range entries {
		if entries[i].State == Unled {
			unled++
		}
	}
	t := &Table{entries: entries, p: uint64(len(entries))}
	n.metrics.unled.Set(float64(unled))
	n.mu.Lock()
	defer n.mu.Unlock()
	n.metrics.leases.Set(float64(len(n.leases)))
	n.version++
	t.version = n.version
	n.dir.Publish(t)
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

// Leave releases this node's shards at the voters, so that their new owners
// take over at once, announces the departure to gossip and stops the node.
// ctx bounds the whole.
func (n *Node) Leave(ctx context.Context) error {
	var errs []error
	done := make(chan struct{})
	select {
	case n.leave <- done:
		select {
		case <-done:
		case <-ctx.Done():
		}
		if n.rpc != nil {
			errs = append(errs, n.rpc.flush(ctx))
		}
	case <-n.stop:
	case <-ctx.Done():
	}
	if mem := n.membership(); mem != nil {
		errs = append(errs, mem.Leave(ctx))
	}
	n.Stop()
	return errors.Join(errs...)
}

// Stop stops the node at once, as a crash would look to the cluster: its
// leases end here now (contexts cancelled, Handler told "shutdown") but the
// voters keep them until they expire, so peers take over after about one
// LeaseDuration. It waits for the node's goroutines and is idempotent.
func (n *Node) Stop() {
	n.once.Do(func() {
		close(n.stop)
		n.loopWG.Wait() // the loop ends every lease before it returns
		n.ready.Store(false)
		n.runCancel()
		n.bg.Wait()
		if n.peers != nil {
			n.peers.close()
		}
		if mem := n.membership(); mem != nil {
			mem.Stop()
		}
		if n.rpc != nil {
			n.rpc.close()
		}
		n.mu.Lock()
		hq := n.handlers
		n.mu.Unlock()
		if hq != nil {
			hq.close() // runs what is queued, then ends
		}
		n.handlWG.Wait()
	})
}
