package scalesim

import (
	"cmp"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/shard"
)

// node is one member: a lease.Holder driven as shard.Node drives it (its
// loop, rebalancer and handoffs, without goroutines), and its view of the
// cluster.
type node struct {
	i    int
	id   string
	addr string
	inc  uint64
	clk  clock
	rng  *rand.Rand
	h    *lease.Holder

	up       bool
	draining bool // handing everything off before it leaves
	leaving  bool // drained: gossiping its departure, then it stops

	// What the holder reported: the shards it leads and at which epoch.
	led map[uint32]uint64
	// desired mirrors the holder's desire flags as the rebalancer set them.
	desired   map[uint32]struct{}
	expecting map[uint32]time.Duration // shards handed to this node, until
	handoffs  map[uint32]*handoff      // handoffs this node runs as source
	// switching counts the handoffs between their transfer and their end,
	// at most MaxConcurrentHandoffs; prepared ones wait in switchQueue.
	switching   int
	switchQueue []*handoff
	lastRes     *planResult              // the last plan act acted on
	retryAt     map[uint32]time.Duration // failed handoffs wait until
	// drainingPeers are sources that said they drain before gossip did.
	drainingPeers map[int32]bool

	view []viewEntry // by node number
	news [][]sessionNews

	dirty      bool
	dirtySince time.Duration
	planned    uint64        // the snapshot version of the last plan
	settleAt   time.Duration // when an unsettled member settles; 0: none

	outbox      []shard.LeadershipClaim
	nextRefresh time.Duration
	// lastGen is the generation each voter last reported to this node
	// (only BugEarlyForward reads it).
	lastGen []uint64

	gossip gossipNode
}

type memberState uint8

// regrantWait is how long a transfer waits for a re-grant to settle
// (lease.ErrRegranting), as in shard.Node.
const regrantWait = 10 * time.Millisecond

const (
	stateNone memberState = iota
	stateActive
	stateDraining
	stateGone // failed or left: a late alive must not bring it back
)

type viewEntry struct {
	state memberState
	since time.Duration // when it became active in this view
}

// sessionNews is the latest a voter said of a node's session.
type sessionNews struct {
	gen     uint64 // 0: nothing heard
	expired bool
}

// handoff is one graceful handoff this node runs as the source.
type handoff struct {
	id        uint64
	shard     uint32
	epoch     uint64
	to        int32
	toInc     uint64
	draining  bool
	prepared  bool
	switching bool          // holds one of the source's switching slots
	minEpoch  uint64        // the target's MinTransferEpoch, from its prepare
	until     time.Duration // the handoff's timeout
}

// addNode creates the next node, not yet in anyone's view but its own,
// ticking from now.
func (s *Sim) addNode() (*node, error) {
	i := len(s.nodes)
	n := &node{
		i: i, id: nodeID(i + 1), inc: 1, clk: s.newClock(),
		rng: rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())),
		up:  true,
		led: map[uint32]uint64{}, desired: map[uint32]struct{}{}, expecting: map[uint32]time.Duration{},
		handoffs: map[uint32]*handoff{}, retryAt: map[uint32]time.Duration{}, drainingPeers: map[int32]bool{},
		lastGen: make([]uint64, len(s.voters)),
		dirty:   true,
	}
	n.addr = "10.0." + itoa(i/256) + "." + itoa(i%256) + ":7000"
	h, err := lease.NewHolder(lease.HolderConfig{
		ID: n.id, Inc: n.inc, Voters: s.vids, LeaseDuration: s.cfg.LeaseDuration,
		MaxClockDrift: s.cfg.MaxClockDrift, Rand: rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())),
		Nonce: s.rng.Uint64() | 1, // from the seed, so that runs replay exactly
	})
	if err != nil {
		return nil, err
	}
	n.h = h
	s.nodes = append(s.nodes, n)
	s.index[n.id] = int32(i)
	capacity := max(s.cfg.Nodes+1, len(s.nodes))
	for _, m := range s.nodes {
		for len(m.view) < capacity {
			m.view = append(m.view, viewEntry{})
			m.news = append(m.news, make([]sessionNews, len(s.voters)))
		}
	}
	n.view[i] = viewEntry{state: stateActive, since: s.now}
	s.chk.grow(len(s.nodes))
	n.nextRefresh = s.now + time.Duration(s.rng.Int64N(int64(claimRefresh)))
	n.gossip.phase = time.Duration(s.rng.Int64N(int64(s.cfg.Gossip.GossipInterval)))
	s.schedule(&event{at: s.now + time.Duration(s.rng.Int64N(int64(s.cfg.Tick))), kind: evTick, node: int32(i), inc: n.inc})
	return n, nil
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append(b, byte('0'+i%10))
	}
	slices.Reverse(b)
	return string(b)
}

func (n *node) local(t time.Duration) lease.Time { return n.clk.at(t) }

func (n *node) member() shard.Member { return shard.Member{ID: n.id, Addr: n.addr, Weight: 1} }

// alive is shard.Node.alive: in the view, and not reported expired by a
// majority of voters.
func (n *node) alive(j int) bool {
	st := n.view[j].state
	return (st == stateActive || st == stateDraining) && !n.leaseDead(j)
}

func (n *node) leaseDead(j int) bool {
	expired := 0
	for _, x := range n.news[j] {
		if x.expired {
			expired++
		}
	}
	return expired > len(n.news[j])/2
}

func (n *node) sortedLed() []uint32 {
	return slices.Sorted(maps.Keys(n.led))
}

func (n *node) markDirty(now time.Duration) {
	if !n.dirty {
		n.dirty, n.dirtySince = true, now
	}
}

func (s *Sim) handleNode(n *node, e *event) {
	switch e.kind {
	case evTick:
		s.tick(n)
	case evToNode:
		n.lastGen[e.voter] = max(n.lastGen[e.voter], e.rep.Gen)
		n.h.Step(e.rep, n.local(s.now))
		s.afterStep(n, true)
	case evPrepare:
		s.handlePrepare(n, e)
	case evPrepared:
		s.handlePrepared(n, e)
	case evPrepareTimeout:
		if hf := n.handoffs[e.shard]; hf != nil && hf.id == e.hid && !hf.prepared {
			s.failHandoff(n, hf)
		}
	case evLead:
		s.handleLead(n, e)
	case evLeadDone:
		if hf := n.handoffs[e.shard]; hf != nil && hf.id == e.hid {
			s.endHandoff(n, hf)
			s.handoffs.done++
			// The plan's next move takes the freed slot at once, as in
			// shard.Node, when the shard really left.
			if _, still := n.led[hf.shard]; !still && n.lastRes != nil && !n.leaving {
				s.startMoves(n, n.lastRes, func(sh uint32) int32 {
					if _, ok := n.h.Leads(sh, n.local(s.now)); ok {
						return int32(n.i)
					}
					return -1
				})
			}
		}
	}
}

// tick is one turn of shard.Node's loop ticker.
func (s *Sim) tick(n *node) {
	s.schedule(&event{at: s.now + s.cfg.Tick, kind: evTick, node: int32(n.i), inc: n.inc})
	local := n.local(s.now)
	s.sendToVoters(n, n.h.Tick(local))
	s.afterStep(n, false)
	s.flushClaims(n)
	if s.now >= n.nextRefresh {
		n.nextRefresh += claimRefresh
		s.refreshClaims(n)
	}
	if n.settleAt != 0 && s.now >= n.settleAt {
		n.markDirty(s.now)
	}
	if n.draining && !n.leaving && len(n.led) == 0 && len(n.handoffs) == 0 {
		s.leave(n)
	}
}

// afterStep is shard.Node.afterStep: lease transitions go to the claims
// and the rebalancer, session news to the plan. After an input (checked)
// the checker sees every shard the node leads.
func (s *Sim) afterStep(n *node, checked bool) {
	changes := n.h.TakeChanges()
	// The holder lists changes of different shards in map order; one
	// shard's changes keep their order.
	slices.SortStableFunc(changes, func(a, b lease.Change) int { return cmp.Compare(a.Shard, b.Shard) })
	for _, c := range changes {
		switch c.Kind {
		case lease.Gained:
			delete(n.expecting, c.Shard)
			n.led[c.Shard] = c.Epoch
			n.outbox = append(n.outbox, shard.LeadershipClaim{Shard: c.Shard, Epoch: c.Epoch, Led: true})
			n.markDirty(s.now)
			if s.viaTransfer[[2]uint64{uint64(c.Shard), c.Epoch}] {
				s.gained.handoff++
			} else {
				s.gained.grant++
			}
		case lease.Renewed:
			n.led[c.Shard] = c.Epoch
			n.outbox = append(n.outbox, shard.LeadershipClaim{Shard: c.Shard, Epoch: c.Epoch, Led: true})
			n.markDirty(s.now)
		case lease.Lost:
			delete(n.led, c.Shard)
			n.outbox = append(n.outbox, shard.LeadershipClaim{Shard: c.Shard, Epoch: c.Epoch})
			n.markDirty(s.now)
			s.chk.drop(s.now, int32(n.i), c.Shard)
		case lease.Transferred:
			s.viaTransfer[[2]uint64{uint64(c.Shard), c.Epoch}] = true
			s.transferred(n, c)
		case lease.TransferFailed:
			s.transferFailed(n, c)
		}
	}
	for _, x := range n.h.TakeNotices() {
		j, ok := s.index[x.Node]
		if !ok || int(j) == n.i {
			continue
		}
		v := slices.Index(s.vids, x.Voter)
		dead := n.leaseDead(int(j))
		// Generations only grow at a voter: the news of the highest one
		// is the latest.
		if cur := n.news[j][v]; cur.gen == 0 || x.Gen > cur.gen || (x.Gen == cur.gen && x.Expired) {
			n.news[j][v] = sessionNews{gen: x.Gen, expired: x.Expired}
		}
		if n.leaseDead(int(j)) != dead {
			n.markDirty(s.now)
		}
	}
	if checked {
		local := n.local(s.now)
		for sh := range n.led {
			if e, ok := n.h.Leads(sh, local); ok {
				s.chk.observe(s.now, int32(n.i), sh, e)
			}
		}
	}
}

// flushClaims sends the node's leadership changes to every peer in its
// view, as shard.Node does each tick.
func (s *Sim) flushClaims(n *node) {
	if len(n.outbox) == 0 {
		return
	}
	cs := n.outbox
	n.outbox = nil
	s.countClaims(n, cs)
	s.schedule(&event{at: s.now + s.latency(), kind: evClaims, node: int32(n.i), claims: cs})
}

// refreshClaims counts the resend of every claim the node holds.
func (s *Sim) refreshClaims(n *node) {
	if len(n.led) == 0 {
		return
	}
	cs := make([]shard.LeadershipClaim, 0, len(n.led))
	for _, sh := range n.sortedLed() {
		cs = append(cs, shard.LeadershipClaim{Shard: sh, Epoch: n.led[sh], Led: true})
	}
	s.countClaims(n, cs)
}

func (s *Sim) countClaims(n *node, cs []shard.LeadershipClaim) {
	peers := 0
	for j, v := range n.view {
		if (v.state == stateActive || v.state == stateDraining) && j != n.i {
			peers++
		}
	}
	packets, size := claimPackets(n.id, n.addr, cs)
	s.traffic.ClaimPackets += int64(packets * peers)
	s.traffic.ClaimBytes += int64(size * peers)
}

func (s *Sim) backoff(n *node) time.Duration {
	d := s.cfg.HandoffTimeout / 5
	return d + time.Duration(n.rng.Int64N(int64(d)+1))
}

// startHandoff is shard.Node.startHandoff: check the lease and the target,
// then ask the target to prepare.
func (s *Sim) startHandoff(n *node, sh uint32, to int32) {
	e, ok := n.h.Leads(sh, n.local(s.now))
	t := s.nodes[to]
	if !ok || n.view[to].state != stateActive || n.drainingPeers[to] || !n.alive(int(to)) {
		n.retryAt[sh] = s.now + s.backoff(n)
		return
	}
	s.hids++
	hf := &handoff{id: s.hids, shard: sh, epoch: e, to: to, toInc: t.inc, draining: n.draining, until: s.now + s.cfg.HandoffTimeout}
	n.handoffs[sh] = hf
	s.inflight++
	req, _ := prepareBytes(sh, e, n.id, t.id, t.inc, n.draining, s.cfg.HandoffTimeout)
	s.countPeer(req)
	s.schedule(&event{at: s.now + s.latency(), kind: evPrepare, node: to, inc: t.inc, from: int32(n.i), shard: sh, epoch: e, hid: hf.id, draining: n.draining})
	s.schedule(&event{at: s.now + s.cfg.HandoffTimeout, kind: evPrepareTimeout, node: int32(n.i), inc: n.inc, shard: sh, hid: hf.id})
}

func (s *Sim) countPeer(size int) {
	s.traffic.PeerMessages++
	s.traffic.PeerBytes += int64(size)
}

// handlePrepare is the target's Prepare: refuse while draining, else
// expect the shard and name the lowest epoch it can lead at.
func (s *Sim) handlePrepare(n *node, e *event) {
	src := s.nodes[e.from]
	_, rep := prepareBytes(e.shard, e.epoch, src.id, n.id, n.inc, e.draining, s.cfg.HandoffTimeout)
	s.countPeer(rep)
	reply := &event{at: s.now + s.latency(), kind: evPrepared, node: e.from, inc: src.inc, from: int32(n.i), shard: e.shard, hid: e.hid}
	if n.draining || n.leaving {
		s.schedule(reply)
		return
	}
	if st := n.view[e.from].state; e.draining && (st == stateActive || st == stateDraining) {
		n.drainingPeers[e.from] = true
	}
	// Hold off its own acquisition only as long as the source can take to
	// quiesce and transfer, plus a lease in case it died meanwhile.
	hold := min(s.cfg.HandoffTimeout, s.cfg.QuiesceTimeout+s.cfg.LeaseDuration)
	n.expecting[e.shard] = s.now + hold
	n.h.Expect(e.shard, n.local(s.now).Add(hold))
	n.desired[e.shard] = struct{}{}
	n.markDirty(s.now)
	reply.ok, reply.epoch = true, n.h.MinTransferEpoch(e.shard)
	s.schedule(reply)
}

// handlePrepared runs steps 2 and 3 at the source: the target is ready, so
// transfer (no Quiescer: the lease ends at once).
func (s *Sim) handlePrepared(n *node, e *event) {
	hf := n.handoffs[e.shard]
	if hf == nil || hf.id != e.hid {
		return
	}
	if !e.ok || n.led[e.shard] != hf.epoch {
		s.failHandoff(n, hf)
		return
	}
	hf.prepared, hf.minEpoch = true, e.epoch
	if n.switching >= s.cfg.MaxConcurrentHandoffs {
		n.switchQueue = append(n.switchQueue, hf)
		return
	}
	s.beginSwitch(n, hf)
}

// beginSwitch takes a switching slot for hf and transfers: shard.Node's
// runHandoff from its wait for a slot on (no Quiescer here).
func (s *Sim) beginSwitch(n *node, hf *handoff) {
	n.switching++
	hf.switching = true
	if s.cfg.Bug == BugEarlyForward {
		s.forwardEarly(n, hf, hf.minEpoch)
		s.after(earlyForwardBy, func() {
			if n.up && n.handoffs[hf.shard] == hf {
				s.transfer(n, hf, hf.minEpoch)
			}
		})
		return
	}
	s.transfer(n, hf, hf.minEpoch)
}

func (s *Sim) transfer(n *node, hf *handoff, minEpoch uint64) {
	local := n.local(s.now)
	if e, ok := n.h.Leads(hf.shard, local); !ok || e != hf.epoch {
		s.endHandoff(n, hf)
		return
	}
	n.h.SetDesired(hf.shard, false)
	delete(n.desired, hf.shard)
	t := s.nodes[hf.to]
	if err := n.h.TransferAt(hf.shard, t.id, hf.toInc, minEpoch, local); err != nil {
		if errors.Is(err, lease.ErrRegranting) && s.now+regrantWait < hf.until {
			// As shard.Node does: wait for the re-grant to settle (the
			// handoff's own timeout still ends it).
			s.after(regrantWait, func() {
				if n.up && n.handoffs[hf.shard] == hf {
					s.transfer(n, hf, minEpoch)
				}
			})
			return
		}
		s.endHandoff(n, hf)
		return
	}
	// The target may adopt the voters' records (its own keep-alives'
	// Held lists) before this node hears the voters accepted: count its
	// gain as a handoff from the send on.
	s.viaTransfer[[2]uint64{uint64(hf.shard), max(hf.epoch+1, minEpoch)}] = true
	s.sendToVoters(n, n.h.Tick(local)) // now, not at the next tick: this is the gap
	s.afterStep(n, false)
}

// transferred runs step 4: the voters accepted, so tell the target; the
// handoff ends when that call returns or times out (after a lease).
func (s *Sim) transferred(n *node, c lease.Change) {
	hf := n.handoffs[c.Shard]
	if hf == nil || s.nodes[hf.to].id != c.To {
		return
	}
	s.sendLead(n, hf, c)
	s.schedule(&event{at: s.now + s.cfg.LeaseDuration, kind: evLeadDone, node: int32(n.i), inc: n.inc, shard: c.Shard, hid: hf.id})
}

// transferFailed: a majority refused. The lease ended here; tell the
// target to acquire at once, and retry later.
func (s *Sim) transferFailed(n *node, c lease.Change) {
	hf := n.handoffs[c.Shard]
	if hf == nil {
		return
	}
	delete(s.viaTransfer, [2]uint64{uint64(hf.shard), max(hf.epoch+1, hf.minEpoch)})
	s.failHandoff(n, hf)
	s.sendLead(n, hf, c)
}

func (s *Sim) sendLead(n *node, hf *handoff, c lease.Change) {
	t := s.nodes[hf.to]
	req, _ := leadBytes(c, n.id, t.id, hf.toInc)
	s.countPeer(req)
	s.schedule(&event{at: s.now + s.latency(), kind: evLead, node: hf.to, inc: hf.toInc, from: int32(n.i),
		shard: c.Shard, hid: hf.id, chg: c})
}

// forwardEarly is BugEarlyForward: tell the target to lead before the
// transfer, with the generations its own keep-alives carry.
func (s *Sim) forwardEarly(n *node, hf *handoff, minEpoch uint64) {
	t := s.nodes[hf.to]
	gens := make(map[string]uint64, len(s.vids))
	for v, id := range s.vids {
		gens[id] = t.lastGen[v]
	}
	c := lease.Change{Kind: lease.Transferred, Shard: hf.shard, Epoch: max(hf.epoch+1, minEpoch), To: t.id, Gens: gens}
	s.sendLead(n, hf, c)
}

func (s *Sim) failHandoff(n *node, hf *handoff) {
	s.endHandoff(n, hf)
	n.retryAt[hf.shard] = s.now + s.backoff(n)
	s.handoffs.failed++
}

func (s *Sim) endHandoff(n *node, hf *handoff) {
	if n.handoffs[hf.shard] != hf {
		return
	}
	delete(n.handoffs, hf.shard)
	s.inflight--
	n.markDirty(s.now)
	if !hf.switching {
		return
	}
	hf.switching = false
	n.switching--
	for len(n.switchQueue) > 0 && n.switching < s.cfg.MaxConcurrentHandoffs {
		next := n.switchQueue[0]
		n.switchQueue = n.switchQueue[1:]
		if n.handoffs[next.shard] == next {
			s.beginSwitch(n, next)
		}
	}
}

// handleLead is the target's Lead: adopt the transfer, or, when it was
// refused, acquire at once.
func (s *Sim) handleLead(n *node, e *event) {
	local := n.local(s.now)
	if e.chg.Kind == lease.TransferFailed {
		if _, ok := n.expecting[e.shard]; ok {
			n.h.Expect(e.shard, local)
			s.sendToVoters(n, n.h.Tick(local))
			s.afterStep(n, false)
		}
		return
	}
	n.h.AcceptTransfer(e.shard, e.chg.Epoch, e.chg.Gens, local)
	s.afterStep(n, true)
	s.sendToVoters(n, n.h.Tick(local))
	src := s.nodes[e.from]
	_, rep := leadBytes(e.chg, src.id, n.id, n.inc)
	s.countPeer(rep)
	s.schedule(&event{at: s.now + s.latency(), kind: evLeadDone, node: e.from, inc: src.inc, shard: e.shard, hid: e.hid})
}

// stop ends node n's process: it leads nothing from now on, and messages
// to it are dropped.
func (s *Sim) stop(n *node) {
	n.up = false
	for sh := range n.led {
		s.chk.drop(s.now, int32(n.i), sh)
	}
	s.inflight -= len(n.handoffs)
	clear(n.handoffs)
	n.switching, n.switchQueue, n.lastRes = 0, nil, nil
	n.h = nil
}
