package scalesim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// clock is one process's monotonic clock: a rate within ±ρ of real time
// and an arbitrary origin.
type clock struct{ rate, offset float64 }

func (c clock) at(t time.Duration) lease.Time { return lease.Time(c.offset + c.rate*float64(t)) }

// voter is one voter process.
type voter struct {
	id  string
	v   *lease.Voter
	clk clock
	// traffic at this voter
	reqs, bytesIn, bytesOut int64
}

// Sim is one simulated cluster. It is not safe for concurrent use.
type Sim struct {
	cfg    Config
	rng    *rand.Rand
	now    time.Duration
	q      queue
	seq    uint64
	nodes  []*node
	index  map[string]int32
	voters []*voter
	vids   []string

	claims   claimTable
	snap     snapshot
	plans    planStats
	memo     map[planKey]*planResult
	memoSnap uint64 // the snapshot version memo entries are for
	chk      *checker
	traffic  Traffic
	gossip   gossipModel
	sizes    gossipSizes

	// inflight counts handoffs under way cluster-wide.
	inflight int
	hids     uint64
	// viaTransfer marks (shard, epoch) pairs a transfer produced, to tell
	// handoffs from acquisitions when a node gains a shard.
	viaTransfer map[[2]uint64]bool
	gained      struct{ handoff, grant int }
	handoffs    struct{ done, failed int }

	phase *phaseState
	// gossipOnly stops everything but the gossip model (FinishGossip).
	gossipOnly bool
}

// New builds a cluster of cfg.Nodes members and cfg.Voters voters, every
// member in every other's view and no shard led yet. Start runs it until
// the first assignment has settled.
func New(cfg Config) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Sim{
		cfg:         cfg,
		rng:         rand.New(rand.NewPCG(cfg.Seed, 0x5ca1e)),
		index:       make(map[string]int32),
		memo:        make(map[planKey]*planResult),
		viaTransfer: make(map[[2]uint64]bool),
	}
	s.claims = newClaimTable(cfg.Shards)
	for i := range cfg.Voters {
		id := fmt.Sprintf("voter-%d", i+1)
		vt := &voter{id: id, clk: s.newClock()}
		v, err := lease.NewVoter(lease.VoterConfig{ID: id, LeaseDuration: cfg.LeaseDuration, Boot: 1}, nil, vt.clk.at(0))
		if err != nil {
			return nil, err
		}
		vt.v = v
		s.voters = append(s.voters, vt)
		s.vids = append(s.vids, id)
	}
	// Node names are as long as the largest cluster's, so that message
	// sizes do not depend on which node sends them.
	metaLen, err := metaBytes(nodeID(cfg.Nodes+1), cfg.Shards)
	if err != nil {
		return nil, err
	}
	s.sizes = newGossipSizes(len(nodeID(cfg.Nodes+1)), metaLen)
	s.chk = newChecker(cfg.Shards, cfg.Nodes+1, s.leadsNow)
	s.gossip = newGossipModel()
	for range cfg.Nodes {
		if _, err := s.addNode(); err != nil {
			return nil, err
		}
	}
	// A cluster that has run for a while: every member knows every other,
	// all settled.
	for _, n := range s.nodes {
		for _, m := range s.nodes {
			n.view[m.i] = viewEntry{state: stateActive, since: -2 * cfg.JoinSettle}
		}
	}
	s.schedule(&event{at: 0, kind: evRound})
	return s, nil
}

func nodeID(i int) string { return fmt.Sprintf("node-%04d", i) }

func (s *Sim) newClock() clock {
	rho := s.cfg.MaxClockDrift
	return clock{rate: 1 - rho + 2*rho*s.rng.Float64(), offset: float64(s.rng.Int64N(int64(time.Hour)))}
}

func (s *Sim) latency() time.Duration {
	lo, hi := s.cfg.LatencyMin, s.cfg.LatencyMax
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

func (s *Sim) schedule(e *event) {
	s.seq++
	e.seq = s.seq
	s.q.push(e)
}

// after runs fn at virtual time now+d.
func (s *Sim) after(d time.Duration, fn func()) {
	s.schedule(&event{at: s.now + d, kind: evFn, fn: fn})
}

// afterGossip is after for the gossip model's own timers.
func (s *Sim) afterGossip(d time.Duration, fn func()) {
	s.schedule(&event{at: s.now + d, kind: evFn, fn: fn, gossip: true})
}

// Now returns the virtual time.
func (s *Sim) Now() time.Duration { return s.now }

// runUntil processes events up to virtual time t, or until stop reports
// true after an event.
func (s *Sim) runUntil(t time.Duration, stop func() bool) {
	for len(s.q) > 0 && s.q[0].at <= t {
		e := s.q.pop()
		s.now = e.at
		s.handle(e)
		if stop != nil && stop() {
			return
		}
	}
	if s.now < t {
		s.now = t
	}
}

func (s *Sim) handle(e *event) {
	if s.gossipOnly && e.kind != evGossip && e.kind != evPacket && !(e.kind == evFn && e.gossip) {
		return
	}
	switch e.kind {
	case evRound:
		s.round()
	case evFn:
		e.fn()
	case evToVoter:
		s.handleVoter(e)
	case evClaims:
		s.claims.apply(e.node, e.claims)
	case evGossip:
		s.gossipRound(e.node)
	case evPacket:
		s.deliverPacket(e)
	default:
		n := s.nodes[e.node]
		if !n.up || n.inc != e.inc {
			return // the process that was addressed has stopped
		}
		s.handleNode(n, e)
	}
}

// handleVoter applies a request at its voter and sends the reply, after
// the store's commit when records changed.
func (s *Sim) handleVoter(e *event) {
	vt := s.voters[e.voter]
	rep, dirty := vt.v.Handle(e.req, vt.clk.at(s.now))
	size := voterReplyBytes(rep)
	vt.bytesOut += int64(size)
	s.traffic.VoterReplies++
	s.traffic.VoterReplyBytes += int64(size)
	d := s.latency()
	if len(dirty) > 0 {
		d += s.cfg.FsyncDelay
	}
	s.schedule(&event{at: s.now + d, kind: evToNode, node: e.node, inc: e.inc, voter: e.voter, rep: rep})
}

// sendToVoters puts a node's requests on the network.
func (s *Sim) sendToVoters(n *node, envs []lease.Envelope) {
	for _, env := range envs {
		v := int32(slices.Index(s.vids, env.To))
		size := voterRequestBytes(env.Req)
		vt := s.voters[v]
		vt.reqs++
		vt.bytesIn += int64(size)
		s.traffic.VoterRequests++
		s.traffic.VoterRequestBytes += int64(size)
		s.schedule(&event{at: s.now + s.latency(), kind: evToVoter, voter: v, node: int32(n.i), inc: n.inc, req: env.Req})
	}
}

// leadsNow is the checker's question: does node i lead shard sh now, by
// its own clock?
func (s *Sim) leadsNow(i int32, sh uint32) (uint64, bool) {
	n := s.nodes[i]
	if !n.up || n.h == nil {
		return 0, false
	}
	return n.h.Leads(sh, n.local(s.now))
}

// Violations returns the number of safety violations so far and the first
// few.
func (s *Sim) Violations() (int, []Violation) {
	return s.chk.violations, slices.Clone(s.chk.kept)
}

// live returns the nodes that are up and not leaving.
func (s *Sim) live() []*node {
	var out []*node
	for _, n := range s.nodes {
		if n.up && !n.leaving {
			out = append(out, n)
		}
	}
	return out
}

// truthMembers returns the members every view converges to: up, not
// draining, not leaving.
func (s *Sim) truthMembers() []shard.Member {
	var ms []shard.Member
	for _, n := range s.nodes {
		if n.up && !n.draining && !n.leaving {
			ms = append(ms, n.member())
		}
	}
	return ms
}

// leaders returns every shard's registered leader as a node ID ("" for
// none).
func (s *Sim) leaders() []string {
	out := make([]string, s.cfg.Shards)
	for sh, l := range s.chk.leader {
		if l >= 0 {
			out[sh] = s.nodes[l].id
		}
	}
	return out
}

// policy returns the planner configuration every node uses.
func (s *Sim) policy() rebalance.Policy { return s.cfg.Policy }
