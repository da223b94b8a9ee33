package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/membership"
)

// The rebalancer runs inside the node's loop (docs/design.md §4). There is no
// central controller: every node plans from its own view and acts only on
// what it is sure of — the shards it leads (it hands them to their targets)
// and the shards nobody alive leads (it acquires those whose target it is).
// A shard led by another live node is never acquired here; its leader
// hands it over. Views that differ for a moment make at most a few extra
// moves, never two leaders: the voters decide every change of leader.

// handoff is one graceful handoff this node runs as the source.
type handoff struct {
	shard    uint32
	epoch    uint64
	to, addr string
	toInc    uint64
	draining bool
	// began is when the handoff started (for tenure_handoff_seconds).
	began   time.Time
	cancel  context.CancelFunc
	waiters []chan error
}

func (hf *handoff) finish(err error) {
	hf.cancel()
	for _, w := range hf.waiters {
		w <- err
	}
	hf.waiters = nil
}

// planState is the rebalancer's part of the loop state.
type planState struct {
	// since is when each member became active in this node's view: a member
	// receives shards JoinSettle after that.
	since map[string]time.Time
	// current is every shard's leader as this node knows it, target the
	// planner's answer, both from the last plan.
	current, target []string
	dirty           bool      // the plan's inputs changed since
	settleAt        time.Time // when a member still settling settles
	handoffs        map[uint32]*handoff
	// expecting holds shards being handed to this node, until when.
	expecting map[uint32]time.Time
	// retryAt holds shards whose handoff failed, until when to wait;
	// retryPlanAt is the earliest of them, when the loop plans again (in a
	// quiet cluster nothing else would, and a move that could not start —
	// its target not yet vouched for after a heal, say — would wait for
	// good).
	retryAt     map[uint32]time.Time
	retryPlanAt time.Time
	// orphaned holds shards whose leader failed, since when: the start of
	// a failover, which ends when this node (observed) or another leads.
	orphaned map[uint32]time.Time
	// drainingPeers are sources that said they drain before gossip did,
	// with the boot ID of the process that drains: a restart clears it.
	drainingPeers map[string]string
	draining      bool
	// sendNow: a request must leave before the next tick (a transfer, or
	// a transferred lease to protect). The loop sends it once it has
	// handled what already waits for it, so that a burst of handoffs
	// leaves as one request per voter rather than one per handoff.
	sendNow bool
	// leaving: the node released everything and leads nothing again.
	leaving bool
	// moves are the plan's moves from this node not started yet, in
	// order (startMoves).
	moves []Move
	// lastPlan is when plan last ran; planCost is a moving average of how
	// long a plan takes.
	lastPlan time.Time
	planCost time.Duration
	// republish: leases or leadership claims changed since the table was
	// last published; nextPublish is the earliest time to publish again,
	// from publishCost, a moving average of how long a publish takes.
	republish   bool
	nextPublish time.Time
	publishCost time.Duration
}

// drainsPeer reports whether member id told this node it drains, in the
// process gossip shows now.
func (st *loopState) drainsPeer(id string) bool {
	boot, ok := st.drainingPeers[id]
	return ok && boot == st.view[id].BootID
}

func newPlanState() planState {
	return planState{
		since: make(map[string]time.Time), handoffs: make(map[uint32]*handoff),
		expecting: make(map[uint32]time.Time), retryAt: make(map[uint32]time.Time), orphaned: make(map[uint32]time.Time),
		drainingPeers: make(map[string]string), dirty: true,
	}
}

// alive reports whether node id is in the view and the voters have not
// reported its session expired: its claims are believed, so nobody else
// may acquire its shards. (Receiving shards takes more: see vouched.)
func (n *Node) alive(st *loopState, id string) bool {
	_, ok := st.view[id]
	return ok && !n.leaseDead(st, id)
}

// target reports whether member id may receive shards: active, not
// draining, and vouched for by the voters.
func (n *Node) target(st *loopState, id string) bool {
	m, ok := st.view[id]
	return ok && m.State == membership.Active && !st.drainsPeer(id) && n.vouched(st, id)
}

// eligible returns the members that may receive shards: active, vouched
// for by a majority of voters, not draining, and settled (active and
// vouched for JoinSettle, or leading already). It also notes when the
// next unsettled member settles.
func (n *Node) eligible(st *loopState, now time.Time, leads map[string]int) []Member {
	st.settleAt = time.Time{}
	var out []Member
	for id, m := range st.view {
		if !n.target(st, id) {
			continue
		}
		if id == n.cfg.NodeID && st.draining {
			continue
		}
		// Settled: active for JoinSettle, or leading already, or part of
		// this node's start-up cohort (seen before this node itself
		// settled), so that the first node up does not take every shard
		// and hand most of them off again.
		cohort := !st.since[id].After(st.since[n.cfg.NodeID].Add(n.cfg.JoinSettle))
		if at := st.since[id].Add(n.cfg.JoinSettle); leads[id] == 0 && now.Before(at) && !(cohort && !now.Before(st.since[n.cfg.NodeID].Add(n.cfg.JoinSettle))) {
			if st.settleAt.IsZero() || at.Before(st.settleAt) {
				st.settleAt = at
			}
			continue
		}
		out = append(out, Member{ID: id, Addr: m.GRPCAddr, Zone: m.Zone, Weight: int(m.Weight)})
	}
	return out
}

// want returns every shard's leader as this node knows it and the
// planner's target for it, from the node's view, acting on neither.
func (n *Node) want(st *loopState, now time.Time) (cur, target []string, err error) {
	P := n.cfg.Shards
	cur = make([]string, P)
	for s, r := range n.gossip.best(P) {
		cur[s] = r.node
	}
	if h := st.holder; h != nil {
		h.EachLed(n.now(), func(s uint32, _ uint64) { cur[s] = n.cfg.NodeID })
	}
	leads := make(map[string]int)
	for _, id := range cur {
		if id != "" {
			leads[id]++
		}
	}
	members := n.eligible(st, now, leads)
	target, err = n.planner.Target(P, cur, members)
	if err == nil && len(target) != P {
		err = fmt.Errorf("shard: the planner returned %d targets for %d shards", len(target), P)
	}
	return cur, target, err
}

// plan recomputes every shard's target from the node's view and acts on
// it: desires what it should acquire and starts the handoffs it should run.
func (n *Node) plan(st *loopState) {
	st.dirty, st.replanNow, st.lastPlan = false, false, time.Now()
	st.retryPlanAt = time.Time{} // act sets it again for moves still deferred
	now := time.Now()
	defer func() { st.planCost += (time.Since(now) - st.planCost) / 8 }()
	P := n.cfg.Shards
	h := st.holder
	cur, target, err := n.want(st, now)
	if err != nil {
		// Members come from gossip, which refused duplicates and
		// incompatible nodes: an error is a bug worth shouting about, and
		// the previous plan stays in place.
		n.log.Error("planner failed; keeping the previous plan", "err", err)
		return
	}
	for s, c := range cur {
		// A failover starts when a leader this node knew is gone and the
		// shard is this node's to take; it ends at Gained (afterStep).
		switch {
		case c == n.cfg.NodeID || c != "" && n.alive(st, c):
			delete(st.orphaned, uint32(s))
		case len(st.current) == P && st.current[s] != "" && st.current[s] != n.cfg.NodeID:
			// Led by another node at the last plan, by nobody alive now.
			if _, ok := st.orphaned[uint32(s)]; !ok {
				st.orphaned[uint32(s)] = now
			}
		}
	}
	st.current, st.target = cur, target
	n.ready.Store(n.membership() != nil && !st.draining && !st.superseded && !now.Before(st.since[n.cfg.NodeID].Add(n.cfg.JoinSettle)))
	if h != nil {
		n.act(st, now)
	}
	n.publish(st)
}

// act sets each shard's desire and starts the handoffs the plan asks for,
// within the throttle.
func (n *Node) act(st *loopState, now time.Time) {
	h, self := st.holder, n.cfg.NodeID
	for s, until := range st.expecting {
		if !now.Before(until) {
			delete(st.expecting, s)
		}
	}
	if st.leaving {
		for s := range n.cfg.Shards {
			h.SetDesired(uint32(s), false)
		}
		return
	}
	paused := n.gossip.paused() && !st.draining
	var moves []Move
	for s := range n.cfg.Shards {
		sh := uint32(s)
		t, c := st.target[s], st.current[s]
		_, expected := st.expecting[sh]
		// Acquire only what no live node leads: a live leader hands its
		// shards over itself.
		h.SetDesired(sh, expected || (t == self && (c == self || c == "" || !n.alive(st, c))))
		if c != self || t == self || t == "" || paused || st.handoffs[sh] != nil {
			continue
		}
		if at, ok := st.retryAt[sh]; ok && now.Before(at) {
			st.retryLater(sh, at)
			continue
		}
		delete(st.retryAt, sh)
		moves = append(moves, Move{Shard: sh, From: self, To: t})
	}
	st.moves = moves
	n.startMoves(st, now)
}

// startMoves starts the plan's moves still waiting, within the throttle.
// A handoff that ends calls it to fill its slot, without a new plan (a
// plan visits every shard).
func (n *Node) startMoves(st *loopState, now time.Time) {
	if n.gossip.paused() && !st.draining {
		return // an operator paused rebalancing since the plan
	}
	limit := n.cfg.MaxConcurrentHandoffs
	if st.draining {
		limit *= drainFactor
	}
	for len(st.moves) > 0 && len(st.handoffs) < limit {
		m := st.moves[0]
		st.moves = st.moves[1:]
		if st.handoffs[m.Shard] != nil || len(st.target) != n.cfg.Shards || st.target[m.Shard] != m.To ||
			len(st.current) != n.cfg.Shards || st.current[m.Shard] != m.From {
			continue // started, or planned elsewhere since
		}
		if err := n.startHandoff(st, m.Shard, m.To, nil); err != nil {
			n.log.Debug("handoff not started", "shard", m.Shard, "to", m.To, "err", err)
			st.retryLater(m.Shard, now.Add(n.handoffBackoff()))
		}
	}
}

// drainFactor is how many times MaxConcurrentHandoffs a draining node
// prepares at once.
const drainFactor = 8

func (n *Node) handoffBackoff() time.Duration {
	d := n.cfg.HandoffTimeout / 5
	return d + time.Duration(n.holderRand.Int64N(int64(d)+1))
}

// startHandoff begins handing shard s, which this node leads, to node to.
// Only the loop calls it.
func (n *Node) startHandoff(st *loopState, s uint32, to string, waiter chan error) error {
	e, ok := st.holder.Leads(s, n.now())
	if !ok {
		return n.notLeader(s)
	}
	m, ok := st.view[to]
	if !ok || m.State != membership.Active || st.drainsPeer(to) {
		return fmt.Errorf("shard: %w: %q is not an active member", ErrUnknownNode, to)
	}
	if !n.vouched(st, to) {
		// The voters would refuse the Transfer, and this node's lease
		// would end when it sent it: the shard would be left unled.
		return fmt.Errorf("shard: %w: %q has no live session at a majority of voters", ErrUnknownNode, to)
	}
	if hf := st.handoffs[s]; hf != nil {
		if hf.to != to {
			return &HandoffError{Shard: s, To: to, Step: "prepare", Err: fmt.Errorf("a handoff to %s is in progress", hf.to)}
		}
		if waiter != nil {
			hf.waiters = append(hf.waiters, waiter)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(n.runCtx, n.cfg.HandoffTimeout)
	hf := &handoff{shard: s, epoch: e, to: to, addr: m.GRPCAddr, toInc: m.Incarnation,
		draining: st.draining, began: time.Now(), cancel: cancel}
	if waiter != nil {
		hf.waiters = append(hf.waiters, waiter)
	}
	st.handoffs[s] = hf
	n.log.Debug("handoff started", "shard", s, "epoch", e, "to", to)
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		n.runHandoff(ctx, hf)
	}()
	return nil
}

// runHandoff runs steps 1 and 2 of a handoff off the loop — the target's
// Prepare and this node's Quiesce — then asks the loop for step 3, the
// Transfer. Step 4, forwarding the outcome, follows from the holder's
// Transferred change (see transferred).
func (n *Node) runHandoff(ctx context.Context, hf *handoff) {
	fail := func(step string, err error) {
		n.do(func(st *loopState) {
			if st.handoffs[hf.shard] == hf {
				delete(st.handoffs, hf.shard)
				st.retryLater(hf.shard, time.Now().Add(n.handoffBackoff()))
				st.dirty = true
			}
			n.metrics.handoffs.WithLabelValues("failed_" + step).Inc()
			n.log.Info("handoff failed", "shard", hf.shard, "to", hf.to, "step", step, "err", err)
			hf.finish(&HandoffError{Shard: hf.shard, To: hf.to, Step: step, Err: err})
		})
	}
	asked := time.Now()
	minEpoch, err := n.peers.prepare(ctx, hf, n.cfg)
	if err == nil {
		err = checkMinEpoch(hf.epoch, minEpoch)
	}
	if err != nil {
		fail("prepare", err)
		return
	}
	// From the quiesce until the handoff ends (the target leads, or it
	// failed), at most MaxConcurrentHandoffs handoffs of this node are
	// under way. A drain prepares drainFactor times as many at once, so
	// that slow Preparer hooks do not stretch it; switching them all
	// together made every gap longer (they compete for the same CPUs,
	// voters and disks) without making the drain any shorter. The shard
	// keeps working while its handoff waits here, and the transfer still
	// follows Quiesce at once.
	select {
	case n.switching <- struct{}{}:
		context.AfterFunc(ctx, func() { <-n.switching })
	case <-ctx.Done():
		fail("slot", fmt.Errorf("no handoff slot free before the handoff's timeout (%d under way): %w", cap(n.switching), ctx.Err()))
		return
	}
	l := n.getLease(hf.shard)
	if l == nil || l.Epoch() != hf.epoch {
		if l == nil {
			n.abortTarget(hf) // nobody leads the shard now
		}
		fail("prepare", fmt.Errorf("lease on shard %d ended during prepare", hf.shard))
		return
	}
	if q, ok := n.cfg.Handler.(Quiescer); ok {
		qctx, cancel := context.WithTimeout(ctx, n.cfg.QuiesceTimeout)
		if err := q.Quiesce(qctx, l); err != nil {
			n.log.Info("quiesce ended with an error; handing off anyway", "shard", hf.shard, "err", err)
		}
		cancel()
	}
	if ctx.Err() != nil {
		fail("quiesce", ctx.Err())
		return
	}
	// A re-grant in flight holds the transfer back for a round trip to
	// the voters, while the target still expects the shard: it holds off
	// its own acquisition for QuiesceTimeout + LeaseDuration (at most the
	// handoff's timeout) from the Prepare, which came after asked.
	expected := asked.Add(n.cfg.QuiesceTimeout + n.cfg.LeaseDuration)
	for {
		again := false
		if !n.do(func(st *loopState) { again = n.switchOver(st, hf, minEpoch) }) || !again {
			// (When the node stopped, the loop may still be running the
			// call: again is not read then.)
			return
		}
		if time.Now().Add(regrantWait).After(expected) {
			fail("transfer", fmt.Errorf("shard %d was still being re-granted when the target stopped expecting it", hf.shard))
			return
		}
		t := time.NewTimer(regrantWait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			fail("transfer", fmt.Errorf("shard %d was still being re-granted at the handoff's timeout: %w", hf.shard, ctx.Err()))
			return
		}
	}
}

// regrantWait is how long a handoff waits before trying its transfer again
// when the holder is re-granting the shard (lease.ErrRegranting).
const regrantWait = 10 * time.Millisecond

// switchOver runs step 3 of hf on the loop: unless the lease or the target
// changed since the prepare, it transfers the shard at the voters (at
// least at minEpoch, the target's floor). TransferAt ends the lease in
// the holder; send cancels its context before the Transfer leaves. It
// reports whether to try again shortly: the holder is re-granting the
// shard above the led epoch, and the voters that granted the higher epoch
// would refuse a Transfer of the led one.
func (n *Node) switchOver(st *loopState, hf *handoff, minEpoch uint64) (again bool) {
	h := st.holder
	if st.handoffs[hf.shard] != hf {
		return false
	}
	now := n.now()
	if e, ok := h.Leads(hf.shard, now); !ok || e != hf.epoch {
		err := fmt.Errorf("lease on shard %d ended before the transfer", hf.shard)
		if ok {
			// A re-grant the transfer waited for moved the lease to a
			// new epoch (and token): the application quiesced the old
			// one. Plan the move again at once.
			err = fmt.Errorf("shard %d was re-granted at epoch %d during the handoff of epoch %d", hf.shard, e, hf.epoch)
		} else {
			n.abortTarget(hf) // nobody leads the shard now
		}
		delete(st.handoffs, hf.shard)
		st.dirty = true
		n.metrics.handoffs.WithLabelValues("failed_transfer").Inc()
		hf.finish(&HandoffError{Shard: hf.shard, To: hf.to, Step: "transfer", Err: err})
		return false
	}
	if m := st.view[hf.to]; !n.target(st, hf.to) || m.Incarnation != hf.toInc {
		// The target lost its sessions at the voters, drains, left or
		// restarted since it prepared: the voters would refuse the
		// Transfer, and this lease would end when it was sent. Keep
		// leading and plan again.
		delete(st.handoffs, hf.shard)
		st.retryLater(hf.shard, time.Now().Add(n.handoffBackoff()))
		st.dirty = true
		n.metrics.handoffs.WithLabelValues("failed_target").Inc()
		hf.finish(&HandoffError{Shard: hf.shard, To: hf.to, Step: "target", Err: fmt.Errorf("%s may no longer receive shards (no longer active, or without a live session at a majority of voters)", hf.to)})
		return false
	}
	h.SetDesired(hf.shard, false)
	if err := h.TransferAt(hf.shard, hf.to, hf.toInc, minEpoch, now); err != nil {
		// The lease goes on; the plan sets the shard's desire again.
		if errors.Is(err, lease.ErrRegranting) {
			return true
		}
		delete(st.handoffs, hf.shard)
		st.retryLater(hf.shard, time.Now().Add(n.handoffBackoff()))
		st.dirty = true
		n.metrics.handoffs.WithLabelValues("failed_transfer").Inc()
		hf.finish(&HandoffError{Shard: hf.shard, To: hf.to, Step: "transfer", Err: err})
		return false
	}
	st.sendNow = true // now, not at the next tick: this is the gap
	return false
}

// checkMinEpoch checks the lowest epoch a handoff's target asks to lead
// at (its Prepare reply's min_epoch), against the epoch e the source
// leads: the transfer makes the target lead at max(e+1, min). A min far
// above e is a corrupt or hostile reply, and honouring it could run the
// shard's epochs to the end of uint64, where e+1 wraps to 0 and every
// fence breaks. Epochs grow by one per leadership, so lease.MaxEpochJump
// (2^32) leaves room for any real history.
func checkMinEpoch(e, min uint64) error {
	if min > e && min-e > lease.MaxEpochJump {
		return fmt.Errorf("target asks to lead at epoch %d (min_epoch), more than %d above the led epoch %d", min, uint64(lease.MaxEpochJump), e)
	}
	return nil
}

// transferred runs step 4: the voters accepted, so tell the target. If the
// message is lost the target still learns from its voters' Held records
// at its next keep-alive.
func (n *Node) transferred(st *loopState, c lease.Change) {
	hf := st.handoffs[c.Shard]
	if hf == nil || hf.to != c.To {
		return
	}
	n.gossip.hint(c.Shard, hf.to, hf.addr, c.Epoch)
	st.dirty, st.republish = true, true
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		err := n.peers.lead(n.runCtx, hf, c, n.cfg)
		if err != nil {
			n.log.Debug("lead message not delivered; the target learns from its voters", "shard", hf.shard, "to", hf.to, "err", err)
		}
		n.do(func(st *loopState) {
			if st.handoffs[hf.shard] == hf {
				delete(st.handoffs, hf.shard)
				st.dirty = true
				// Start the plan's next moves in the freed slot now
				// rather than at the next plan (if a plan succeeded: a
				// node's first handoff can be an operator's Transfer).
				if len(st.current) == n.cfg.Shards && len(st.target) == n.cfg.Shards {
					st.current[hf.shard] = hf.to
					n.startMoves(st, time.Now())
				}
			}
			n.metrics.handoffs.WithLabelValues("done").Inc()
			n.metrics.handoffSeconds.Observe(time.Since(hf.began).Seconds())
			hf.finish(nil)
		})
	}()
}

// transferFailed: a majority refused the Transfer. The lease already ended
// here; the shard's desired owner acquires it.
func (n *Node) transferFailed(st *loopState, c lease.Change) {
	hf := st.handoffs[c.Shard]
	if hf == nil {
		return
	}
	delete(st.handoffs, c.Shard)
	st.retryLater(c.Shard, time.Now().Add(n.handoffBackoff()))
	st.dirty = true
	n.metrics.handoffs.WithLabelValues("failed_transfer").Inc()
	n.log.Info("handoff failed: the voters refused the transfer", "shard", c.Shard, "to", hf.to)
	hf.finish(&HandoffError{Shard: c.Shard, To: hf.to, Step: "transfer", Err: fmt.Errorf("a majority of voters refused")})
	n.abortTarget(hf)
}

// abortTarget tells hf's target, which prepared and expects the shard,
// that this node's lease ended without a transfer: it must not wait out
// its hold-off before acquiring the shard.
func (n *Node) abortTarget(hf *handoff) {
	c := lease.Change{Kind: lease.TransferFailed, Shard: hf.shard, Epoch: hf.epoch, To: hf.to}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		if err := n.peers.lead(n.runCtx, hf, c, n.cfg); err != nil {
			n.log.Debug("abort not delivered; the target acquires after its hold-off", "shard", c.Shard, "to", hf.to, "err", err)
		}
	}()
}

// expect makes this node the expected target of shard s until the
// handoff's timeout: it adopts the transfer and does not compete.
func (n *Node) expect(st *loopState, s uint32, timeout time.Duration, from string, fromDraining bool) (minEpoch uint64, err error) {
	if st.holder == nil {
		return 0, ErrNoVoters
	}
	if st.draining {
		return 0, ErrDraining
	}
	if !st.vouched {
		// Most voters have not answered this process yet (it has just
		// started, say under a new incarnation, or it is cut off): they
		// would refuse a Transfer naming it, and the source's lease
		// would end with nobody to lead the shard until this node's
		// hold-off ran out.
		return 0, fmt.Errorf("%s has no live session at a majority of voters yet", n.cfg.NodeID)
	}
	if fromDraining {
		if m, ok := st.view[from]; ok {
			st.drainingPeers[from] = m.BootID
		}
	}
	// Hold off our own acquisition only as long as the source can take to
	// quiesce and transfer, plus a lease in case it died meanwhile: a
	// handoff that goes wrong must not leave the shard unled longer than
	// about a crash failover. (A refused transfer is reported at once.)
	hold := min(timeout, n.cfg.QuiesceTimeout+n.cfg.LeaseDuration)
	st.expecting[s] = time.Now().Add(hold)
	st.holder.Expect(s, n.now().Add(hold))
	st.dirty = true
	return st.holder.MinTransferEpoch(s), nil
}

// notLeader is the error for an operation on a shard this node does not
// lead, naming the leader its table shows, or a newer peer claim: a table
// not rebuilt since this node's lease ended may still name this node, or
// no leader yet, while a handoff's source records its target's claim at
// once. It never names this node.
func (n *Node) notLeader(s uint32) error {
	e := n.Table().entries[s]
	if e.Leader == n.cfg.NodeID {
		e.Leader, e.Addr, e.Epoch = "", "", 0
	}
	if r, ok := n.gossip.leaderOf(s); ok && (e.Leader == "" || r.epoch > e.Epoch) {
		e.Leader, e.Addr, e.Epoch = r.node, r.addr, r.epoch
	}
	return &NotLeaderError{Shard: s, Leader: e.Leader, Addr: e.Addr, Epoch: e.Epoch}
}

// do runs f on the node's loop and reports whether it ran (false once the
// node stopped).
func (n *Node) do(f func(*loopState)) bool {
	done := make(chan struct{})
	select {
	case n.ctl <- func(st *loopState) { f(st); close(done) }:
	case <-n.stop:
		return false
	}
	select {
	case <-done:
		return true
	case <-n.stop:
		return false
	}
}

// moves returns the moves between current and target, sorted by shard.
func moves(current, target []string) []Move {
	var out []Move
	for s := range target {
		if target[s] != "" && target[s] != current[s] {
			out = append(out, Move{Shard: uint32(s), From: current[s], To: target[s]})
		}
	}
	return slices.Clip(out)
}

// retryLater defers the handoff of shard s until at, and has the loop plan
// again then.
func (st *loopState) retryLater(s uint32, at time.Time) {
	st.retryAt[s] = at
	if st.retryPlanAt.IsZero() || at.Before(st.retryPlanAt) {
		st.retryPlanAt = at
	}
}
