package shard

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/tenurehq/tenure/membership"
)

// Planner chooses the leader every shard should have. Each node runs it on
// its own view: current[s] is the node that leads shard s now as far as
// this node knows ("" for none or a node that is not an eligible member),
// members are the eligible members (active, settled, not draining, lease
// not expired). It returns the target leader of every shard ("" for none).
//
// It must be a pure, deterministic function of its arguments (member order
// aside): nodes with the same view must compute the same targets, and
// calling it again with the targets it returned must return them unchanged.
// rebalance.Policy is the Planner to use; see Config.Planner.
type Planner interface {
	Target(shards int, current []string, members []Member) ([]string, error)
}

// ringPlanner is the planner without stickiness: the ring assignment alone.
type ringPlanner struct{ cfg AssignConfig }

func (p ringPlanner) Target(shards int, _ []string, members []Member) ([]string, error) {
	a, err := Assign(p.cfg, members)
	if err != nil {
		return nil, err
	}
	out := make([]string, shards)
	for s := range out {
		if m, ok := a.Owner(ID(s)); ok {
			out[s] = m.ID
		}
	}
	return out, nil
}

// Move is one planned change of leader: Shard goes from From ("" when
// nobody leads it) to To.
type Move struct {
	Shard    uint32
	From, To string
}

// Preparer is an optional extension of Handler: a node about to receive a
// shard in a graceful handoff calls Prepare first, so the application can
// warm caches or catch up before it leads. A nil error says ready; an
// error refuses the move, which is retried later with backoff. ctx ends at
// Config.HandoffTimeout. Prepare runs on its own goroutine, possibly
// concurrently with other Prepare calls and with the Handler's methods.
type Preparer interface {
	Prepare(ctx context.Context, shard uint32, epoch uint64) error
}

// Quiescer is an optional extension of Handler: a node handing a shard off
// calls Quiesce once the target is prepared, so the application stops
// taking new work for l and finishes what is in flight. When Quiesce
// returns, or when ctx ends at Config.QuiesceTimeout, the lease ends (its
// context is cancelled) and then the voters are asked to transfer the
// shard — unless the target can no longer receive it (a *HandoffError at
// step "target"), and then this node goes on leading it.
// Quiesce runs on its own goroutine, possibly concurrently with other
// Quiesce calls and with the Handler's methods.
type Quiescer interface {
	Quiesce(ctx context.Context, l *Lease) error
}

// Transition is one leadership change of this node, kept for status pages.
type Transition struct {
	Time   time.Time
	Shard  uint32
	Epoch  uint64
	Event  string // "acquired", "renewed" or "released"
	Reason Reason // for "released"
	// Peer is the other node of a handoff: the source for "acquired", the
	// target for "released"; empty otherwise.
	Peer string
}

// Errors of the operator controls.
var (
	// ErrUnknownNode: the named node is not an active member.
	ErrUnknownNode = errors.New("unknown node")
	// ErrDraining: the node is draining (or stopped) and takes no shards.
	ErrDraining = errors.New("node is draining")
	// ErrNotStarted: the node has not been started, or has stopped.
	ErrNotStarted = errors.New("node not running")
	// ErrNoVoters: the node has no voters and leads nothing.
	ErrNoVoters = errors.New("node has no voters")
	// ErrHandoff is matched by every *HandoffError.
	ErrHandoff = errors.New("handoff failed")
)

// HandoffError says why a handoff of Shard to To did not happen, and at
// which step: "prepare" (the target refused, was unreachable, or asked
// for an epoch far above the source's; the source still leads), "slot"
// (the target was ready, but MaxConcurrentHandoffs other handoffs of this
// node held every slot until the timeout; the source still leads),
// "quiesce" (the timeout passed while quiescing), "target" (after the
// quiesce the target could no longer receive the shard — it lost its
// sessions at the voters, drains, left or restarted — so the transfer was
// not sent; the source still leads), "transfer" (the voters refused; the
// shard was released and is acquired again by its desired owner). It
// matches ErrHandoff.
type HandoffError struct {
	Shard uint32
	To    string
	Step  string
	Err   error
}

func (e *HandoffError) Error() string {
	return fmt.Sprintf("handoff of shard %d to %s failed at %s: %v", e.Shard, e.To, e.Step, e.Err)
}

// Is matches ErrHandoff.
func (e *HandoffError) Is(target error) bool { return target == ErrHandoff }

// Unwrap returns the step's error.
func (e *HandoffError) Unwrap() error { return e.Err }

// Drain hands every shard this node leads to its new owner gracefully,
// then leaves gossip and stops the node: the node first leaves the active
// set (it advertises the draining state, so peers stop planning shards
// onto it), then hands off every shard, preparing up to
// 8 × MaxConcurrentHandoffs handoffs at once and quiescing and
// transferring MaxConcurrentHandoffs of them at a time.
// Shards not handed off when ctx ends are released at the voters, so their
// owners take over within one voter round. It returns nil when every shard
// left by handoff.
func (n *Node) Drain(ctx context.Context) error {
	mem := n.membership()
	if mem == nil {
		return ErrNotStarted
	}
	n.draining.Store(true)
	n.ready.Store(false)
	if !n.do(func(st *loopState) { st.draining, st.dirty = true, true }) {
		return ErrNotStarted
	}
	if err := mem.SetState(ctx, membership.Draining); err != nil {
		n.log.Warn("advertising the draining state", "err", err)
	}
	began := time.Now()
	var left []uint32
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ch := n.Changed()
		leases := n.Leases()
		if len(leases) == 0 && !n.handingOff() {
			break
		}
		if n.nowhereToGo() {
			// No eligible member to take the shards: release them now
			// rather than wait out ctx.
			left = slices.Sorted(maps.Keys(leases))
			break
		}
		select {
		case <-ch:
			continue
		case <-tick.C:
			continue
		case <-ctx.Done():
		case <-n.stop:
		}
		left = slices.Sorted(maps.Keys(leases))
		break
	}
	if len(left) == 0 && n.cfg.isVoter() {
		// This voter protects the leases it just granted by transfer;
		// their holders ask the other voters at once, and one round trip
		// later losing this voter costs them nothing. Stopping before
		// that would end leases that a bare majority including it holds.
		select {
		case <-time.After(2 * n.cfg.KeepAliveInterval):
		case <-ctx.Done():
		}
	}
	n.log.Info("drained", "took", time.Since(began), "released", len(left))
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.LeaseDuration)
	defer cancel()
	err := n.Leave(lctx)
	if len(left) > 0 {
		why := errors.New("no other member may lead them")
		if ctx.Err() != nil {
			why = context.Cause(ctx)
		}
		return errors.Join(fmt.Errorf("shard: drain of %s ended (%w) with %d shards not handed off (released instead): %v", n.cfg.NodeID, why, len(left), left), err)
	}
	return err
}

// handingOff reports whether a handoff this node runs is still under way
// (its transfer may await the voters' answer after the lease ended).
func (n *Node) handingOff() bool {
	busy := false
	if !n.do(func(st *loopState) { busy = len(st.handoffs) > 0 }) {
		return false // stopped (the loop may still be running the call)
	}
	return busy
}

// nowhereToGo reports whether some shard this node leads has no target:
// no other member may take it, so a drain cannot hand it off.
func (n *Node) nowhereToGo() bool {
	stuck := false
	if !n.do(func(st *loopState) {
		if st.holder == nil || len(st.target) == 0 || st.dirty {
			return
		}
		for _, s := range st.holder.Led(n.now()) {
			if st.target[s] == "" {
				stuck = true
				return
			}
		}
	}) {
		return false // stopped (the loop may still be running the call)
	}
	return stuck
}

// Joined reports whether the node has joined the cluster: it reached a
// seed, or it was given none.
func (n *Node) Joined() bool {
	mem := n.membership()
	return mem != nil && mem.Joined()
}

// Transfer hands shard s, which this node must lead, to node to: a graceful
// handoff (Prepare on the target, Quiesce here, one voter round). It
// returns once the voters accepted and the target was told to lead. It
// returns a *NotLeaderError when this node does not lead s, ErrUnknownNode
// when to is not an active member, and a *HandoffError when a step failed.
// The planner keeps the shard where it is put unless the load bounds
// require otherwise.
func (n *Node) Transfer(ctx context.Context, s uint32, to string) error {
	if int(s) >= n.cfg.Shards {
		return fmt.Errorf("shard: %w: %d (P = %d)", ErrUnknownShard, s, n.cfg.Shards)
	}
	if len(n.cfg.Voters) == 0 {
		return ErrNoVoters
	}
	if to == n.cfg.NodeID {
		if _, ok := n.Leases()[s]; ok {
			return nil
		}
		return n.notLeader(s)
	}
	done := make(chan error, 1)
	var err error
	if !n.do(func(st *loopState) {
		if st.draining {
			err = ErrDraining
			return
		}
		err = n.startHandoff(st, s, to, done)
	}) {
		return ErrNotStarted
	}
	if err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-n.stop:
		return ErrNotStarted
	}
}

// PauseRebalance stops automatic rebalancing on every node: shards of
// failed or draining nodes are still taken over, and operators' Transfers
// still run, but no shard moves between live members by plan until
// ResumeRebalance. The setting spreads by gossip (the latest one wins); it
// applies on this node when PauseRebalance returns.
func (n *Node) PauseRebalance(ctx context.Context) error { return n.setPaused(ctx, true) }

// ResumeRebalance undoes PauseRebalance on every node.
func (n *Node) ResumeRebalance(ctx context.Context) error { return n.setPaused(ctx, false) }

func (n *Node) setPaused(ctx context.Context, p bool) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	n.gossip.setPaused(p)
	if !n.do(func(st *loopState) { st.dirty = true }) {
		return ErrNotStarted
	}
	return nil
}

// RebalancePaused reports whether automatic rebalancing is paused in this
// node's view.
func (n *Node) RebalancePaused() bool { return n.gossip.paused() }

// Plan returns the moves this node's planner wants now, paused or not: a
// dry run from the node's current view that changes nothing (the leaders
// of those shards act on their own plans). The moves are every shard
// whose known leader is not its target, sorted by shard. It fails with
// ErrNotStarted before Start and after Stop, and with the planner's error
// if it has one.
func (n *Node) Plan() ([]Move, error) {
	if n.membership() == nil {
		return nil, ErrNotStarted
	}
	var out []Move
	var err error
	if !n.do(func(st *loopState) {
		var cur, target []string
		if cur, target, err = n.want(st, time.Now()); err == nil {
			out = moves(cur, target)
		}
	}) {
		return nil, ErrNotStarted
	}
	return out, err
}

// Ready reports whether the node has joined, has been up for JoinSettle,
// and is not draining: the moment a health check should say SERVING.
func (n *Node) Ready() bool { return n.ready.Load() }

// Transitions returns this node's latest leadership transitions, oldest
// first (at most 256).
func (n *Node) Transitions() []Transition { return n.history.list() }

// VotersReachable returns how many voters answered this node's latest
// request to each (every node sends each voter a keep-alive at least every
// LeaseDuration/4). Fewer than a majority means this node can neither gain
// nor keep a lease. 0 before Start.
func (n *Node) VotersReachable() int { return n.metrics.votersReachable() }

// Voters returns the static voter set.
func (n *Node) Voters() []VoterAddr { return append([]VoterAddr(nil), n.cfg.Voters...) }

// VoterHealth is what a node's own requests say of one voter.
type VoterHealth struct {
	ID string
	// Answered says the node's latest request to the voter was answered.
	Answered bool
	// Failures counts the node's requests to it that failed or were
	// dropped (its queue full) since the node started.
	Failures int64
}

// VoterHealth returns, per configured voter in order, what this node's
// requests say of it; nil before Start or without voters.
func (n *Node) VoterHealth() []VoterHealth {
	if n.rpc == nil || len(n.cfg.Voters) == 0 {
		return nil
	}
	out := make([]VoterHealth, 0, len(n.cfg.Voters))
	for _, v := range n.cfg.Voters {
		h := VoterHealth{ID: v.ID, Answered: n.metrics.voterAnswered(v.ID)}
		if c := n.rpc.byID[v.ID]; c != nil {
			h.Failures = c.troubleTotal.Load()
		}
		out = append(out, h)
	}
	return out
}

// NotConverging returns how many shards the plan gives this node that it
// had not led at two checks 10 s apart (0 once it leads them): a cold
// start or failover that does not converge (tenure_shards_not_converging).
func (n *Node) NotConverging() int { return int(n.notConverging.Load()) }

// Config returns the node's configuration with defaults filled.
func (n *Node) Config() Config { return n.cfg }

// transitions is a bounded history of Transitions, safe for concurrent use.
type transitions struct {
	mu  sync.Mutex
	buf []Transition
}

const maxTransitions = 256

func (t *transitions) add(x Transition) {
	x.Time = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == maxTransitions {
		copy(t.buf, t.buf[1:])
		t.buf = t.buf[:maxTransitions-1]
	}
	t.buf = append(t.buf, x)
}

func (t *transitions) list() []Transition {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.buf)
}
