package scalesim

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// Planning, as shard.Node does it, with one difference of timing. A node
// replans when its inputs change — membership, the leadership it hears of,
// its own leases, voters' news of expired sessions — at most every 50 ms;
// here every such change marks the node dirty and it replans at the next
// round of PlanEvery (shard.Node replans membership changes and expiry
// news at once: up to one round later here).
//
// Every node runs the real planner (rebalance.Plan through Policy) on its
// own view: the members eligible in its view and the leaders the claim
// table shows. Plan is pure, so nodes with the same inputs in one round
// share one call. A round computes at most PlansPerRound distinct plans;
// nodes whose view needs another keep their previous plan and replan at a
// later round, oldest first — as a real node whose planner is still busy
// would.

type planKey struct {
	members uint64 // hash of the eligible members
	snap    uint64 // the snapshot version
}

type planResult struct {
	target   []string
	byTarget [][]uint32 // per node number: the shards it should lead
}

// planStats counts planning work.
type planStats struct {
	replans  int           // node replans (what every node would compute)
	computed int           // distinct Plan calls made
	deferred int           // node replans put off to a later round
	wall     time.Duration // wall time spent in Plan calls
}

// eligible returns the members node n may give shards to, as
// shard.Node.eligible: active in n's view, with a live lease session as
// far as the voters told n, not draining (n itself included), and settled
// — active for JoinSettle, or leading shards already, or part of n's
// start-up cohort. It sets n.settleAt to when the next unsettled one
// settles.
func (s *Sim) eligible(n *node) ([]int32, uint64) {
	n.settleAt = 0
	self := n.view[n.i].since
	js := s.cfg.JoinSettle
	var out []int32
	for j := range s.nodes {
		v := n.view[j]
		if v.state != stateActive || !n.alive(j) || n.drainingPeers[int32(j)] {
			continue
		}
		if j == n.i && n.draining {
			continue
		}
		leads := 0
		if j < len(s.snap.leads) {
			leads = s.snap.leads[j]
		}
		cohort := v.since <= self+js
		if at := v.since + js; leads == 0 && s.now < at && !(cohort && s.now >= self+js) {
			if n.settleAt == 0 || at < n.settleAt {
				n.settleAt = at
			}
			continue
		}
		out = append(out, int32(j))
	}
	var buf [4]byte
	h := xxhash.New()
	for _, j := range out {
		binary.LittleEndian.PutUint32(buf[:], uint32(j))
		h.Write(buf[:])
	}
	return out, h.Sum64()
}

// round is one planning round: every node whose inputs changed replans.
func (s *Sim) round() {
	s.schedule(&event{at: s.now + s.cfg.PlanEvery, kind: evRound})
	s.takeSnapshot()
	if s.memoSnap != s.snap.version {
		clear(s.memo)
		s.memoSnap = s.snap.version
	}
	type group struct {
		key     planKey
		members []int32
		nodes   []*node
		oldest  time.Duration
	}
	var groups []*group
	byKey := map[planKey]*group{}
	for _, n := range s.nodes {
		if !n.up {
			continue
		}
		if !n.dirty && n.planned == s.snap.version && (n.settleAt == 0 || s.now < n.settleAt) {
			continue
		}
		if !n.dirty {
			n.dirty, n.dirtySince = true, s.now
		}
		members, h := s.eligible(n)
		key := planKey{members: h, snap: s.snap.version}
		g := byKey[key]
		if g == nil {
			g = &group{key: key, members: members, oldest: n.dirtySince}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.nodes = append(g.nodes, n)
		g.oldest = min(g.oldest, n.dirtySince)
	}
	slices.SortFunc(groups, func(a, b *group) int {
		return cmp.Or(cmp.Compare(a.oldest, b.oldest), -cmp.Compare(len(a.nodes), len(b.nodes)),
			cmp.Compare(a.key.members, b.key.members))
	})
	computed := 0
	for _, g := range groups {
		res := s.memo[g.key]
		if res == nil {
			if s.cfg.PlansPerRound >= 0 && computed >= s.cfg.PlansPerRound {
				s.plans.deferred += len(g.nodes)
				continue
			}
			computed++
			var err error
			if res, err = s.plan(g.members); err != nil {
				// Members come from the simulation itself: a planner
				// error is a bug in it.
				panic(fmt.Sprintf("scalesim: %v", err))
			}
			s.memo[g.key] = res
		}
		for _, n := range g.nodes {
			s.act(n, res)
		}
	}
	if s.phase != nil {
		s.checkSettled()
	}
}

// plan runs the planner over the round's snapshot and members.
func (s *Sim) plan(members []int32) (*planResult, error) {
	ms := make([]shard.Member, len(members))
	for k, j := range members {
		ms[k] = s.nodes[j].member()
	}
	start := time.Now()
	target, _, err := rebalance.Plan(s.policy(), s.cfg.Shards, s.snap.cur, ms)
	s.plans.wall += time.Since(start)
	s.plans.computed++
	if err != nil {
		return nil, err
	}
	res := &planResult{target: target, byTarget: make([][]uint32, len(s.nodes))}
	for sh, t := range target {
		if t != "" {
			j := s.index[t]
			res.byTarget[j] = append(res.byTarget[j], uint32(sh))
		}
	}
	return res, nil
}

// act is shard.Node.act: set each shard's desire and start the handoffs
// the plan asks for, within the throttle.
func (s *Sim) act(n *node, res *planResult) {
	s.plans.replans++
	n.dirty, n.planned = false, s.snap.version
	for sh, until := range n.expecting {
		if s.now >= until {
			delete(n.expecting, sh)
		}
	}
	local := n.local(s.now)
	// cur is the leader of a shard as n knows it: itself for the shards it
	// leads (its own leases are certain), else the claim table's.
	cur := func(sh uint32) int32 {
		if _, ok := n.led[sh]; ok {
			if _, ok := n.h.Leads(sh, local); ok {
				return int32(n.i)
			}
		}
		if o := s.snap.owner[sh]; o != int32(n.i) {
			return o
		}
		return -1
	}
	// Acquire only what no live node leads: a live leader hands its shards
	// over itself.
	want := make(map[uint32]struct{}, len(n.desired))
	var mine []uint32
	if n.i < len(res.byTarget) {
		mine = res.byTarget[n.i]
	}
	for _, sh := range mine {
		if c := cur(sh); c == int32(n.i) || c < 0 || !n.alive(int(c)) {
			want[sh] = struct{}{}
		}
	}
	for sh := range n.expecting {
		want[sh] = struct{}{}
	}
	for sh := range n.desired {
		if _, ok := want[sh]; !ok {
			n.h.SetDesired(sh, false)
		}
	}
	for sh := range want {
		if _, ok := n.desired[sh]; !ok {
			n.h.SetDesired(sh, true)
		}
	}
	n.desired = want
	n.lastRes = res
	s.startMoves(n, res, cur)
}

// startMoves starts the handoffs res asks of n, within the throttle: at
// the end of act, and when a handoff ends (shard.Node starts the plan's
// next move in the freed slot then, without replanning).
func (s *Sim) startMoves(n *node, res *planResult, cur func(uint32) int32) {
	limit := s.cfg.MaxConcurrentHandoffs
	if n.draining {
		limit *= drainFactor
	}
	var moves []uint32
	for _, sh := range n.sortedLed() {
		t := res.target[sh]
		if t == "" || t == n.id || n.handoffs[sh] != nil || cur(sh) != int32(n.i) {
			continue
		}
		if at, ok := n.retryAt[sh]; ok && s.now < at {
			continue
		}
		delete(n.retryAt, sh)
		moves = append(moves, sh)
	}
	for _, sh := range moves {
		if len(n.handoffs) >= limit {
			break
		}
		s.startHandoff(n, sh, s.index[res.target[sh]])
	}
}
