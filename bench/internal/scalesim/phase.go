package scalesim

import (
	"fmt"
	"slices"
	"time"

	"github.com/tenurehq/tenure/rebalance"
)

// Traffic counts messages and bytes sent, cluster-wide (see wire.go for
// how bytes are sized). Every copy of a message sent to several peers is
// counted.
type Traffic struct {
	// Voter protocol: requests from nodes, replies from voters.
	VoterRequests, VoterRequestBytes int64
	VoterReplies, VoterReplyBytes    int64
	// Leadership gossip: claim packets to every peer, changes and resends.
	ClaimPackets, ClaimBytes int64
	// Membership gossip: memberlist broadcast packets and the joiner's
	// push/pull (probes and periodic push/pull are in Periodic).
	GossipPackets, GossipBytes int64
	// Handoff RPCs between nodes: prepare, lead, and their replies.
	PeerMessages, PeerBytes int64
}

func (t Traffic) minus(u Traffic) Traffic {
	return Traffic{
		VoterRequests: t.VoterRequests - u.VoterRequests, VoterRequestBytes: t.VoterRequestBytes - u.VoterRequestBytes,
		VoterReplies: t.VoterReplies - u.VoterReplies, VoterReplyBytes: t.VoterReplyBytes - u.VoterReplyBytes,
		ClaimPackets: t.ClaimPackets - u.ClaimPackets, ClaimBytes: t.ClaimBytes - u.ClaimBytes,
		GossipPackets: t.GossipPackets - u.GossipPackets, GossipBytes: t.GossipBytes - u.GossipBytes,
		PeerMessages: t.PeerMessages - u.PeerMessages, PeerBytes: t.PeerBytes - u.PeerBytes,
	}
}

// VoterLoad is what one voter handled in a window.
type VoterLoad struct {
	Requests, BytesIn, BytesOut int64
}

// Window is the traffic of a stretch of virtual time.
type Window struct {
	Duration time.Duration
	Members  int // members up at the end
	Traffic  Traffic
	// Voters lists each voter's load.
	Voters []VoterLoad
	// Periodic is memberlist's probe and push/pull traffic per node per
	// second, computed from the profile for Members.
	Periodic periodic
}

// Phase is what one event did to the cluster.
type Phase struct {
	Event   string
	Members int // members (up, not draining) after the event
	// Settled says the assignment settled within Config.PhaseLimit.
	// Settled means: every shard has a leader (by its lease), each leader
	// is a member that is up and not draining, every member leads a number
	// of shards within the policy's bounds for the true member set — so
	// rebalance.Plan over those members and leaders makes no move, which
	// is confirmed with one Plan call — and no handoff is under way; all
	// of it without a change of leader for Config.Quiet.
	Settled bool
	// SettleTime runs from the event to the last change of leader before
	// the cluster settled.
	SettleTime time.Duration
	// LeaderChanges counts shards that got a leader other than their
	// previous one, intermediate moves included; Moved counts shards
	// whose leader at the end differs from the one before the event.
	LeaderChanges, Moved int
	// Ideal is the least a correct rebalancer must move: P/(N+1) for a
	// join, the leaver's shards for a leave, the crashed nodes' for a
	// crash.
	Ideal float64
	// Handoffs and Acquisitions count leaderships gained by transfer and
	// by grant; FailedHandoffs handoffs that did not complete.
	Handoffs, Acquisitions, FailedHandoffs int
	// GossipSpread is when the last live node learned of the event
	// through gossip (a join, a drain and leave), from the event; a phase
	// lasts until then too. Failures take much longer to detect than the
	// voters take to fail over: for a crash it is measured by
	// FinishGossip, detection included.
	GossipSpread time.Duration
	// GossipSpreadMedian is when half the live nodes had learned of it.
	GossipSpreadMedian time.Duration
	firstBc            int
	eventAt            time.Duration
	// Window is the traffic from the event to the end of the quiet
	// period.
	Window Window
	// Replans counts the plans nodes made (each node's replan is one
	// rebalance.Plan call in a real cluster); Plans the distinct Plan
	// calls the simulation made; Deferred the replans put off by
	// Config.PlansPerRound.
	Replans, Plans, Deferred int
	PlanWall                 time.Duration
	// Wall is the wall-clock time the phase took to simulate.
	Wall time.Duration
}

type phaseState struct {
	eventAt time.Duration
	streak  time.Duration // since when the settle conditions hold; −1: not
	done    bool
	settled time.Duration
	firstBc int
	traffic Traffic
	voters  []VoterLoad
	plans   planStats
	gained  struct{ handoff, grant int }
	failed  int
	changes int
	before  []int32
	wall    time.Time
}

// Start runs the new cluster until its first assignment has settled:
// every shard acquired by its planned owner.
func (s *Sim) Start() (Phase, error) {
	return s.runPhase("start", float64(s.cfg.Shards), func() {})
}

// Steady measures the traffic of a settled cluster over d.
func (s *Sim) Steady(d time.Duration) Window {
	t0, v0 := s.traffic, s.voterLoads()
	s.runUntil(s.now+d, nil)
	return s.window(d, t0, v0)
}

// Join adds one member and runs until the assignment has settled again.
// The joiner contacts a random member (a push/pull exchange of the whole
// state); its arrival then spreads by gossip, and members give it shards
// once it has been in their view for JoinSettle.
func (s *Sim) Join() (Phase, error) {
	members := len(s.truthMembers())
	return s.runPhase("join", float64(s.cfg.Shards)/float64(members+1), func() {
		live := s.live()
		seed := live[s.rng.IntN(len(live))]
		n, err := s.addNode()
		if err != nil {
			panic(fmt.Sprintf("scalesim: join: %v", err))
		}
		s.pushPull(n, seed)
		rtt := s.latency() + s.latency()
		s.after(rtt/2, func() {
			// The seed merges the joiner's state and gossips it.
			if seed.up {
				b := s.broadcastFrom(n, bcAlive, int32(n.i))
				s.learn(seed, b)
			}
		})
		s.after(rtt, func() {
			// The joiner has everyone the seed knows.
			for j, v := range seed.view {
				if j != n.i && (v.state == stateActive || v.state == stateDraining) {
					n.view[j] = viewEntry{state: v.state, since: s.now}
				}
			}
			n.markDirty(s.now)
		})
	})
}

// pushPull counts a join's state exchange between n and seed.
func (s *Sim) pushPull(n, seed *node) {
	members := len(s.live())
	state := s.sizes.pushPullHeader + members*s.sizes.nodeState
	s.traffic.GossipPackets += 2
	s.traffic.GossipBytes += int64(2*state + s.claimStateBytes(members))
}

// Leave drains one random member — it leaves the active set, hands every
// shard off, then leaves gossip and stops — and runs until the assignment
// has settled.
func (s *Sim) Leave() (Phase, error) {
	cands := s.truthNodes()
	n := cands[s.rng.IntN(len(cands))]
	return s.runPhase("leave", float64(s.chk.ledBy[n.i]), func() {
		n.draining = true
		n.markDirty(s.now)
		s.broadcastFrom(n, bcDraining, int32(n.i))
	})
}

// leave is the end of a drain: the node announces its departure and stops
// once the announcement is out (or after a lease, memberlist's Leave
// timeout in shard.Node).
func (s *Sim) leave(n *node) {
	n.leaving = true
	s.broadcastFrom(n, bcDead, int32(n.i))
	s.after(s.cfg.LeaseDuration, func() {
		if n.up {
			s.stop(n)
		}
	})
}

// Crash stops a fraction of the members at once, without warning, and
// runs until the assignment has settled.
func (s *Sim) Crash(fraction float64) (Phase, error) {
	cands := s.truthNodes()
	k := max(1, int(fraction*float64(len(cands))+0.5))
	if k >= len(cands) {
		return Phase{}, fmt.Errorf("scalesim: crashing %d of %d members leaves none", k, len(cands))
	}
	perm := s.rng.Perm(len(cands))[:k]
	slices.Sort(perm)
	ideal := 0
	for _, p := range perm {
		ideal += s.chk.ledBy[cands[p].i]
	}
	return s.runPhase(fmt.Sprintf("crash %d", k), float64(ideal), func() {
		var victims []*node
		for _, p := range perm {
			victims = append(victims, cands[p])
			s.stop(cands[p])
		}
		probers := s.live()
		for _, c := range victims {
			s.detectFailure(c, probers)
		}
	})
}

// truthNodes returns the members that are up and not draining.
func (s *Sim) truthNodes() []*node {
	var out []*node
	for _, n := range s.nodes {
		if n.up && !n.draining && !n.leaving {
			out = append(out, n)
		}
	}
	return out
}

func (s *Sim) voterLoads() []VoterLoad {
	out := make([]VoterLoad, len(s.voters))
	for i, v := range s.voters {
		out[i] = VoterLoad{Requests: v.reqs, BytesIn: v.bytesIn, BytesOut: v.bytesOut}
	}
	return out
}

func (s *Sim) window(d time.Duration, t0 Traffic, v0 []VoterLoad) Window {
	w := Window{Duration: d, Members: len(s.live()), Traffic: s.traffic.minus(t0)}
	for i, v := range s.voterLoads() {
		w.Voters = append(w.Voters, VoterLoad{Requests: v.Requests - v0[i].Requests,
			BytesIn: v.BytesIn - v0[i].BytesIn, BytesOut: v.BytesOut - v0[i].BytesOut})
	}
	w.Periodic = s.periodicRates(w.Members)
	return w
}

func (s *Sim) runPhase(name string, ideal float64, event func()) (Phase, error) {
	p := &phaseState{
		eventAt: s.now, streak: -1, firstBc: len(s.gossip.bcasts),
		traffic: s.traffic, voters: s.voterLoads(), plans: s.plans, gained: s.gained,
		failed: s.handoffs.failed, changes: s.chk.changes,
		before: slices.Clone(s.chk.leader), wall: time.Now(),
	}
	s.phase = p
	event()
	s.runUntil(p.eventAt+s.cfg.PhaseLimit, func() bool { return p.done })
	s.phase = nil
	res := Phase{
		firstBc: p.firstBc, eventAt: p.eventAt, Event: name, Members: len(s.truthNodes()), Settled: p.done, Ideal: ideal,
		LeaderChanges:  s.chk.changes - p.changes,
		Handoffs:       s.gained.handoff - p.gained.handoff,
		Acquisitions:   s.gained.grant - p.gained.grant,
		FailedHandoffs: s.handoffs.failed - p.failed,
		Replans:        s.plans.replans - p.plans.replans,
		Plans:          s.plans.computed - p.plans.computed,
		Deferred:       s.plans.deferred - p.plans.deferred,
		PlanWall:       s.plans.wall - p.plans.wall,
		Window:         s.window(s.now-p.eventAt, p.traffic, p.voters),
	}
	if p.done {
		res.SettleTime = p.settled - p.eventAt
	}
	for sh, l := range s.chk.leader {
		if l != p.before[sh] {
			res.Moved++
		}
	}
	res.GossipSpread, res.GossipSpreadMedian = s.spreadSince(p.firstBc, p.eventAt)
	if p.done {
		// The settle conditions are the planner's own: confirm with it.
		start := time.Now()
		_, moves, err := rebalance.Plan(s.policy(), s.cfg.Shards, s.leaders(), s.truthMembers())
		res.PlanWall += time.Since(start)
		if err != nil {
			return res, fmt.Errorf("scalesim: %s: planning the settled assignment: %w", name, err)
		}
		if len(moves) > 0 {
			return res, fmt.Errorf("scalesim: %s: settled, yet the planner still moves %d shards (first: %+v)", name, len(moves), moves[0])
		}
	}
	res.Wall = time.Since(p.wall)
	return res, nil
}

// spreadSince returns, over the membership news since broadcast first,
// when the last live node and when half of them had learned it, from at.
// A node that learned newer news of the same member (a leave rather than
// the drain before it) counts from then.
func (s *Sim) spreadSince(first int, at time.Duration) (all, median time.Duration) {
	for b := first; b < len(s.gossip.bcasts); b++ {
		bc := s.gossip.bcasts[b]
		if bc.kind == bcSuspect {
			continue
		}
		var times []time.Duration
		for _, n := range s.nodes {
			if !n.up || n.leaving || n.i == int(bc.subject) {
				continue
			}
			var t time.Duration
			for c := first; c < len(s.gossip.bcasts); c++ {
				o := s.gossip.bcasts[c]
				if o.subject == bc.subject && o.kind != bcSuspect && o.kind.rank() >= bc.kind.rank() && n.i < len(o.at) && o.at[n.i] > 0 {
					if t == 0 || o.at[n.i] < t {
						t = o.at[n.i]
					}
				}
			}
			if t > 0 {
				times = append(times, t-at)
			}
		}
		if len(times) == 0 {
			continue
		}
		slices.Sort(times)
		all = max(all, times[len(times)-1])
		median = max(median, times[(len(times)-1)/2])
	}
	return all, median
}

// FinishGossip runs the gossip model alone — no node ticks, no voter, no
// planning — until every failure since phase p began has been detected
// and every live node has learned of it, and sets p.GossipSpread. It ends
// the simulation of everything else: call it last.
func (s *Sim) FinishGossip(p *Phase) {
	s.gossipOnly = true
	limit := s.now + 10*s.cfg.PhaseLimit
	next := s.now
	s.runUntil(limit, func() bool {
		if s.now < next {
			return false
		}
		next = s.now + s.cfg.PlanEvery
		return s.gossip.detecting == 0 && s.gossipConverged(p.firstBc)
	})
	p.GossipSpread, p.GossipSpreadMedian = s.spreadSince(p.firstBc, p.eventAt)
}

// checkSettled runs every planning round during a phase.
func (s *Sim) checkSettled() {
	p := s.phase
	if !s.settledNow() {
		p.streak = -1
		return
	}
	if p.streak < 0 {
		p.streak = s.now
	}
	last := max(s.chk.lastChange, p.eventAt)
	if s.now-p.streak >= s.cfg.Quiet && s.now-last >= s.cfg.Quiet && s.gossipConverged(p.firstBc) {
		p.done, p.settled = true, last
	}
}

// gossipConverged reports whether every live node has learned every
// membership broadcast since broadcast first, or something newer about
// its subject (a node that hears of a leave skips the drain before it).
// Failures not yet detected do not count: FinishGossip waits for those.
func (s *Sim) gossipConverged(first int) bool {
	for b := first; b < len(s.gossip.bcasts); b++ {
		bc := s.gossip.bcasts[b]
		if bc.kind == bcSuspect {
			continue
		}
		for _, n := range s.nodes {
			if !n.up || n.leaving || n.i == int(bc.subject) {
				continue
			}
			if !bc.knownBy(n.i) && stateRank(n.view[bc.subject].state) < bc.kind.rank() {
				return false
			}
		}
	}
	return true
}

// settledNow reports whether every shard is led by a member within its
// bounds and no handoff is under way.
func (s *Sim) settledNow() bool {
	if s.chk.led != s.cfg.Shards || s.inflight != 0 {
		return false
	}
	nodes := s.truthNodes()
	members := s.truthMembers()
	bs, err := rebalance.Bounds(s.policy(), s.cfg.Shards, members)
	if err != nil {
		return false
	}
	in := 0
	for k, n := range nodes { // truthNodes and Bounds are both by ID
		if bs[k].ID != n.id {
			panic("scalesim: node numbers and IDs sort differently")
		}
		c := s.chk.ledBy[n.i]
		if c < bs[k].Min || c > bs[k].Max {
			return false
		}
		in += c
	}
	return in == s.cfg.Shards // no shard led by a node outside the members
}
