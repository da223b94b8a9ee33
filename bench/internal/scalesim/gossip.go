package scalesim

import (
	"cmp"
	"math"
	"slices"
	"time"
)

// The gossip model: how membership changes reach each node, after
// memberlist (v0.7.0) with the profile in Config.Gossip (LAN by default).
//
// A change is a broadcast — alive (a join), alive with new metadata (a
// node starts draining), suspect, or dead (a failure, or a node leaving).
// The node where it starts queues it; a node that learns it queues it too.
// Every GossipInterval, at a phase of its own, a node with queued
// broadcasts sends one packet to each of GossipNodes members picked at
// random from its view, filled (up to memberlist's 1400-byte packets) with
// the broadcasts sent fewest times so far, newest first; a broadcast is
// dropped from a node's queue after RetransmitMult·⌈log10(n+1)⌉ sends, n
// being the members the node sees, and a newer broadcast about a node
// replaces an older one. A receiver learns each broadcast when the packet
// arrives, one message latency later. A change therefore reaches every
// node in O(log n) gossip rounds. A node the epidemic misses learns it at
// its next push/pull, within PushPullInterval (scaled up with n as
// memberlist does). Piggybacking on probes, which only speeds this up, is
// left out.
//
// Failure detection: every node probes one member per ProbeInterval,
// round robin through a shuffled list, so each live node next probes a
// crashed one after a time uniform over a full round of the list. The
// first probe to fail makes its node suspect the crashed one at the end of
// that probe interval (direct and indirect probes time out); further
// suspicions confirm it. The suspicion timeout starts at
// SuspicionMaxTimeoutMult × min and falls to min = SuspicionMult ×
// max(1, log10 n) × ProbeInterval as the SuspicionMult−2 confirmations
// come in (memberlist's formula); then the first suspecter declares the
// node dead and that broadcast spreads like any other.
//
// Probes and push/pull themselves are periodic and independent of what
// happens; their traffic is computed from the profile (periodicRates), not
// sampled.

type bcastKind uint8

const (
	bcAlive bcastKind = iota + 1
	bcDraining
	bcSuspect
	bcDead
)

type broadcast struct {
	kind    bcastKind
	subject int32
	size    int
	known   []bool          // by node number
	at      []time.Duration // by node number: when it learned b; 0 if not (or stale)
}

func (bc *broadcast) knownBy(i int) bool { return i < len(bc.known) && bc.known[i] }

type gossipModel struct {
	bcasts []*broadcast
	// detecting counts crashed nodes not yet declared dead.
	detecting int
}

func newGossipModel() gossipModel { return gossipModel{} }

type gossipNode struct {
	phase     time.Duration
	queue     []queued
	scheduled bool
}

type queued struct {
	b         int32
	transmits int
}

// broadcastFrom starts a broadcast at node origin.
func (s *Sim) broadcastFrom(origin *node, kind bcastKind, subject int32) int32 {
	size := s.sizes.alive
	switch kind {
	case bcSuspect:
		size = s.sizes.suspect
	case bcDead:
		size = s.sizes.dead
	}
	b := int32(len(s.gossip.bcasts))
	s.gossip.bcasts = append(s.gossip.bcasts, &broadcast{kind: kind, subject: subject, size: size, known: make([]bool, len(s.nodes))})
	s.learn(origin, b)
	if kind != bcSuspect {
		// Push/pull reaches whoever the epidemic misses.
		every := pushPullScale(s.cfg.Gossip.PushPullInterval, len(s.live()))
		for _, n := range s.nodes {
			if n.up {
				s.afterGossip(time.Duration(s.rng.Int64N(int64(every))), func() { s.learn(n, b) })
			}
		}
	}
	return b
}

// pushPullScale is memberlist's: the push/pull interval grows with the
// log of the cluster size beyond 32 nodes.
func pushPullScale(interval time.Duration, n int) time.Duration {
	const threshold = 32
	if n <= threshold {
		return interval
	}
	mult := math.Ceil(math.Log2(float64(n))-math.Log2(threshold)) + 1
	return time.Duration(mult) * interval
}

// learn makes node n aware of broadcast b: its view changes and it queues
// b for its own gossip rounds, unless n already knows something newer
// about b's subject (memberlist ignores an alive older than what it has,
// and a dead node is not suspected again).
func (s *Sim) learn(n *node, b int32) {
	bc := s.gossip.bcasts[b]
	for len(bc.known) < len(s.nodes) {
		bc.known = append(bc.known, false)
	}
	if !n.up || bc.known[n.i] {
		return
	}
	bc.known[n.i] = true
	if int(bc.subject) != n.i {
		v := &n.view[bc.subject]
		if stateRank(v.state) > bc.kind.rank() {
			return // stale: n knows newer news of the subject
		}
		for len(bc.at) < len(s.nodes) {
			bc.at = append(bc.at, 0)
		}
		bc.at[n.i] = s.now
		switch bc.kind {
		case bcAlive:
			if v.state == stateNone {
				*v = viewEntry{state: stateActive, since: s.now}
				n.markDirty(s.now)
			}
		case bcDraining:
			if v.state != stateDraining {
				v.state = stateDraining
				n.markDirty(s.now)
			}
		case bcDead:
			v.state = stateGone
			delete(n.drainingPeers, bc.subject)
			n.markDirty(s.now)
		}
	}
	// A newer broadcast about a node replaces what is queued about it; an
	// older one is not sent on.
	for _, q := range n.gossip.queue {
		if o := s.gossip.bcasts[q.b]; o.subject == bc.subject && o.kind.rank() > bc.kind.rank() {
			return
		}
	}
	n.gossip.queue = slices.DeleteFunc(n.gossip.queue, func(q queued) bool { return s.gossip.bcasts[q.b].subject == bc.subject })
	n.gossip.queue = append(n.gossip.queue, queued{b: b})
	s.scheduleGossip(n)
}

// rank orders what broadcasts say of a node: alive, then draining, then
// suspect, then dead.
func (k bcastKind) rank() int {
	return [...]int{bcAlive: 1, bcDraining: 2, bcSuspect: 3, bcDead: 4}[k]
}

func stateRank(st memberState) int {
	return [...]int{stateNone: 0, stateActive: 1, stateDraining: 2, stateGone: 4}[st]
}

func (s *Sim) scheduleGossip(n *node) {
	if n.gossip.scheduled {
		return
	}
	n.gossip.scheduled = true
	gi := s.cfg.Gossip.GossipInterval
	next := n.gossip.phase + (s.now-n.gossip.phase)/gi*gi
	for next <= s.now {
		next += gi
	}
	s.schedule(&event{at: next, kind: evGossip, node: int32(n.i)})
}

// gossipRound is one memberlist gossip round of node i.
func (s *Sim) gossipRound(i int32) {
	n := s.nodes[i]
	n.gossip.scheduled = false
	if !n.up || len(n.gossip.queue) == 0 {
		return
	}
	members := 0
	for _, v := range n.view {
		if v.state == stateActive || v.state == stateDraining {
			members++
		}
	}
	limit := s.cfg.Gossip.RetransmitMult * int(math.Ceil(math.Log10(float64(members+1))))
	for _, t := range s.pickPeers(n, s.cfg.Gossip.GossipNodes) {
		if len(n.gossip.queue) == 0 {
			break
		}
		// Fewest transmits first, then newest.
		slices.SortFunc(n.gossip.queue, func(a, b queued) int {
			return cmp.Or(cmp.Compare(a.transmits, b.transmits), cmp.Compare(b.b, a.b))
		})
		sizes := make([]int, len(n.gossip.queue))
		for k, q := range n.gossip.queue {
			sizes[k] = s.gossip.bcasts[q.b].size
		}
		cnt, size := packBroadcasts(sizes)
		items := make([]int32, cnt)
		for k := range cnt {
			items[k] = n.gossip.queue[k].b
			n.gossip.queue[k].transmits++
		}
		n.gossip.queue = slices.DeleteFunc(n.gossip.queue, func(q queued) bool { return q.transmits >= limit })
		s.traffic.GossipPackets++
		s.traffic.GossipBytes += int64(size)
		s.schedule(&event{at: s.now + s.latency(), kind: evPacket, node: t, items: items})
	}
	if len(n.gossip.queue) > 0 {
		s.scheduleGossip(n)
	} else if n.leaving {
		// memberlist's Leave returns once its broadcast is out.
		s.stop(n)
	}
}

// pickPeers returns up to k distinct random members of n's view other
// than n, as memberlist's kRandomNodes.
func (s *Sim) pickPeers(n *node, k int) []int32 {
	var out []int32
	ok := func(j int) bool {
		st := n.view[j].state
		return j != n.i && (st == stateActive || st == stateDraining) && !slices.Contains(out, int32(j))
	}
	for tries := 0; len(out) < k && tries < 8*k; tries++ {
		if j := s.rng.IntN(len(s.nodes)); ok(j) {
			out = append(out, int32(j))
		}
	}
	if len(out) < k {
		// A sparse view: pick from the list.
		var cands []int32
		for j := range s.nodes {
			if ok(j) {
				cands = append(cands, int32(j))
			}
		}
		for len(out) < k && len(cands) > 0 {
			c := s.rng.IntN(len(cands))
			out = append(out, cands[c])
			cands = slices.Delete(cands, c, c+1)
		}
	}
	return out
}

func (s *Sim) deliverPacket(e *event) {
	n := s.nodes[e.node]
	for _, b := range e.items {
		s.learn(n, b)
	}
}

// detectFailure schedules how the survivors' gossip finds crashed node c.
func (s *Sim) detectFailure(c *node, probers []*node) {
	if len(probers) == 0 {
		return
	}
	g := s.cfg.Gossip
	pi := g.ProbeInterval
	listed := len(probers) + 1 // the members each prober cycles through, c included
	type probe struct {
		at time.Duration
		by *node
	}
	probes := make([]probe, len(probers))
	for k, p := range probers {
		probes[k] = probe{at: s.now + time.Duration(s.rng.Int64N(int64(pi)*int64(listed-1))), by: p}
	}
	slices.SortFunc(probes, func(a, b probe) int { return cmp.Compare(a.at, b.at) })
	first := probes[0]
	suspectAt := first.at + pi
	size := len(s.nodes)
	minT := time.Duration(float64(g.SuspicionMult) * math.Max(1, math.Log10(float64(size))) * float64(pi))
	maxT := time.Duration(g.SuspicionMaxTimeoutMult) * minT
	k := g.SuspicionMult - 2
	timeout := func(conf int) time.Duration {
		if k < 1 {
			return minT
		}
		frac := math.Log(float64(conf)+1) / math.Log(float64(k)+1)
		return max(minT, maxT-time.Duration(frac*float64(maxT-minT)))
	}
	deadAt := suspectAt + timeout(0)
	for conf := 1; conf <= k && conf < len(probes); conf++ {
		at := probes[conf].at + pi // a further suspicion confirms
		if at >= deadAt {
			break
		}
		deadAt = max(at, suspectAt+timeout(conf))
	}
	by := first.by
	s.gossip.detecting++
	s.afterGossip(suspectAt-s.now, func() {
		if by.up {
			s.broadcastFrom(by, bcSuspect, int32(c.i))
		}
	})
	s.afterGossip(deadAt-s.now, func() {
		s.gossip.detecting--
		if by.up {
			s.broadcastFrom(by, bcDead, int32(c.i))
		}
	})
}

// periodic is the traffic of memberlist's probes and push/pull, per node
// per second, from the profile.
type periodic struct {
	ProbeMessages, ProbeBytes       float64
	PushPullMessages, PushPullBytes float64
}

// periodicRates computes the probe and push/pull traffic each of n members
// sends, each leading about shards/n shards: every ProbeInterval one ping
// and one ack (it answers one ping on average); every scaled
// PushPullInterval its state twice (it starts one exchange and answers
// one on average), the state being every member's entry and its own
// leadership claims.
func (s *Sim) periodicRates(n int) periodic {
	g := s.cfg.Gossip
	pi := g.ProbeInterval.Seconds()
	pp := pushPullScale(g.PushPullInterval, n).Seconds()
	state := s.sizes.pushPullHeader + n*s.sizes.nodeState + s.claimStateBytes(n)
	return periodic{
		ProbeMessages: 2 / pi, ProbeBytes: float64(s.sizes.ping+s.sizes.ack) / pi,
		PushPullMessages: 2 / pp, PushPullBytes: 2 * float64(state) / pp,
	}
}
