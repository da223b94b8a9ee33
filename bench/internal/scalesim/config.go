package scalesim

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// Config describes one simulated cluster. New copies it and fills defaults;
// zero fields take them.
type Config struct {
	// Seed drives every random choice: the same Config replays exactly.
	Seed uint64
	// Nodes is the number of members that lead shards at the start (N).
	// Required, ≥ 2.
	Nodes int
	// Shards is P. Default 65536; at most shard.MaxShards and more than
	// Nodes.
	Shards int
	// Voters is the number of voters: 1, 3 or 5. Default 3. Voters are
	// dedicated processes: they lead no shards and take no part in gossip.
	Voters int

	// LeaseDuration is LD; the holders use their defaults for the rest of
	// the lease timing (keep-alive every LD/4, margin LD/20). Default 1 s,
	// as shard.Config.
	LeaseDuration time.Duration
	// MaxClockDrift is ρ: every process's clock runs at a rate drawn from
	// [1−ρ, 1+ρ]. Default 0.001, as shard.Config.
	MaxClockDrift float64
	// Tick is how often a node's loop ticks its holder. Default 10 ms, as
	// shard.Node.
	Tick time.Duration
	// PlanEvery is the planning round: a node whose inputs changed
	// replans at the next round. Default 50 ms, shard.Node's bound on how
	// often it replans.
	PlanEvery time.Duration
	// PlansPerRound caps the distinct plans computed in one round; nodes
	// whose view would need another wait for a later round (the oldest
	// waiting views go first). rebalance.Plan costs about 0.7 s at 1000
	// members and 65536 shards, so without a cap a burst of differing
	// views costs minutes. Default 4; −1 means no cap.
	PlansPerRound int
	// LatencyMin and LatencyMax bound every message's one-way delay,
	// drawn uniformly. Defaults 200 µs and 1 ms (a LAN).
	LatencyMin, LatencyMax time.Duration
	// FsyncDelay is how long a voter's reply waits when it changed
	// records: the voter store commits before it answers. Default 1 ms.
	FsyncDelay time.Duration

	// JoinSettle, MaxConcurrentHandoffs, HandoffTimeout and QuiesceTimeout
	// are shard.Config's, with its defaults: 2 LD, 4, 5 s, 1 s.
	JoinSettle            time.Duration
	MaxConcurrentHandoffs int
	HandoffTimeout        time.Duration
	QuiesceTimeout        time.Duration
	// Policy is the planner every node runs. Default the zero Policy.
	Policy rebalance.Policy

	// Gossip is the membership profile the gossip model follows. Default
	// memberlist's LAN profile (shard.Config's default).
	Gossip *memberlist.Config

	// Quiet is how long the assignment must stay settled before a phase
	// ends. Default 2 LD.
	Quiet time.Duration
	// PhaseLimit bounds each phase in virtual time; a phase that does not
	// settle within it is reported unsettled. Default 120 s.
	PhaseLimit time.Duration

	// Bug plants a deliberate bug in the simulated nodes, for tests that
	// prove the safety checker catches it. Zero for none.
	Bug Bug
}

// Bug is a deliberate defect of the simulated driver.
type Bug uint8

// The bugs a test can plant.
const (
	NoBug Bug = iota
	// BugEarlyForward: a handoff's source tells the target to lead (with
	// the target's own generations, which it read off the wire) as soon as
	// the target is prepared, and sends its Transfer only after a 50 ms
	// quiesce: step 4 of docs/design.md §4 before step 3. Both lead meanwhile.
	BugEarlyForward
)

// Node timing that shard.Node uses and the model copies.
const (
	claimRefresh   = 2 * time.Second // shard.claimRefresh
	drainFactor    = 8               // a draining node runs 8 × MaxConcurrentHandoffs
	earlyForwardBy = 50 * time.Millisecond
)

func (c Config) withDefaults() Config {
	if c.Shards == 0 {
		c.Shards = 65536
	}
	if c.Voters == 0 {
		c.Voters = 3
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = time.Second
	}
	if c.MaxClockDrift == 0 {
		c.MaxClockDrift = 0.001
	}
	if c.Tick == 0 {
		c.Tick = 10 * time.Millisecond
	}
	if c.PlanEvery == 0 {
		c.PlanEvery = 50 * time.Millisecond
	}
	if c.PlansPerRound == 0 {
		c.PlansPerRound = 4
	}
	if c.LatencyMin == 0 && c.LatencyMax == 0 {
		c.LatencyMin, c.LatencyMax = 200*time.Microsecond, time.Millisecond
	}
	if c.FsyncDelay == 0 {
		c.FsyncDelay = time.Millisecond
	}
	if c.JoinSettle == 0 {
		c.JoinSettle = 2 * c.LeaseDuration
	}
	if c.MaxConcurrentHandoffs == 0 {
		c.MaxConcurrentHandoffs = 4
	}
	if c.HandoffTimeout == 0 {
		c.HandoffTimeout = 5 * time.Second
	}
	if c.QuiesceTimeout == 0 {
		c.QuiesceTimeout = time.Second
	}
	if c.Gossip == nil {
		c.Gossip = memberlist.DefaultLANConfig()
	}
	if c.Quiet == 0 {
		c.Quiet = 2 * c.LeaseDuration
	}
	if c.PhaseLimit == 0 {
		c.PhaseLimit = 120 * time.Second
	}
	return c
}

// Validate reports the first field of c (after defaults) that cannot work,
// by name.
func (c Config) Validate() error {
	c = c.withDefaults()
	g := c.Gossip
	switch {
	case c.Nodes < 2:
		return fmt.Errorf("scalesim: Config.Nodes must be at least 2, got %d", c.Nodes)
	case c.Shards < 1 || c.Shards > shard.MaxShards:
		return fmt.Errorf("scalesim: Config.Shards must be in [1, %d], got %d", shard.MaxShards, c.Shards)
	case c.Shards <= c.Nodes+1:
		return fmt.Errorf("scalesim: Config.Shards (%d) must exceed Config.Nodes + 1 (%d): every member, the joiner too, needs shards", c.Shards, c.Nodes+1)
	case c.Voters != 1 && c.Voters != 3 && c.Voters != 5:
		return fmt.Errorf("scalesim: Config.Voters must be 1, 3 or 5, got %d", c.Voters)
	case c.LeaseDuration <= 0:
		return fmt.Errorf("scalesim: Config.LeaseDuration must be positive, got %v", c.LeaseDuration)
	case c.MaxClockDrift < 0 || c.MaxClockDrift >= 0.2:
		return fmt.Errorf("scalesim: Config.MaxClockDrift must be in [0, 0.2), got %v", c.MaxClockDrift)
	case c.Tick <= 0 || c.Tick > c.LeaseDuration/10:
		return fmt.Errorf("scalesim: Config.Tick must be in (0, LeaseDuration/10], got %v", c.Tick)
	case c.PlanEvery < c.Tick:
		return fmt.Errorf("scalesim: Config.PlanEvery (%v) must be at least Config.Tick (%v)", c.PlanEvery, c.Tick)
	case c.PlansPerRound < -1:
		return fmt.Errorf("scalesim: Config.PlansPerRound must be −1 (no cap) or positive, got %d", c.PlansPerRound)
	case c.LatencyMin < 0 || c.LatencyMax < c.LatencyMin:
		return fmt.Errorf("scalesim: Config.LatencyMin (%v) and LatencyMax (%v) must satisfy 0 ≤ min ≤ max", c.LatencyMin, c.LatencyMax)
	case c.LatencyMax > c.LeaseDuration/10:
		return fmt.Errorf("scalesim: Config.LatencyMax (%v) must be at most LeaseDuration/10: this models a LAN", c.LatencyMax)
	case c.FsyncDelay < 0:
		return fmt.Errorf("scalesim: Config.FsyncDelay must not be negative, got %v", c.FsyncDelay)
	case c.JoinSettle < 0:
		return fmt.Errorf("scalesim: Config.JoinSettle must not be negative, got %v", c.JoinSettle)
	case c.MaxConcurrentHandoffs < 1:
		return fmt.Errorf("scalesim: Config.MaxConcurrentHandoffs must be positive, got %d", c.MaxConcurrentHandoffs)
	case c.QuiesceTimeout < 0 || c.QuiesceTimeout >= c.HandoffTimeout:
		return fmt.Errorf("scalesim: Config.QuiesceTimeout must be in [0, HandoffTimeout=%v), got %v", c.HandoffTimeout, c.QuiesceTimeout)
	case g.GossipInterval <= 0 || g.GossipNodes < 1 || g.RetransmitMult < 1:
		return fmt.Errorf("scalesim: Config.Gossip needs a positive GossipInterval, GossipNodes and RetransmitMult")
	case g.ProbeInterval <= 0 || g.SuspicionMult < 1 || g.SuspicionMaxTimeoutMult < 1 || g.PushPullInterval <= 0:
		return fmt.Errorf("scalesim: Config.Gossip needs a positive ProbeInterval, SuspicionMult, SuspicionMaxTimeoutMult and PushPullInterval")
	case c.Quiet <= 0:
		return fmt.Errorf("scalesim: Config.Quiet must be positive, got %v", c.Quiet)
	case c.PhaseLimit <= c.Quiet:
		return fmt.Errorf("scalesim: Config.PhaseLimit (%v) must exceed Config.Quiet (%v)", c.PhaseLimit, c.Quiet)
	}
	if err := c.Policy.Validate(); err != nil {
		return fmt.Errorf("scalesim: Config.Policy: %w", err)
	}
	return nil
}
