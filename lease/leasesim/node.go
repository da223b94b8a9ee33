package leasesim

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/tenurehq/tenure/lease"
)

// The node driver: what shard.Node does around its lease.Holder, reduced to
// what matters for leadership — ticks, replies, handoffs, the desired
// owner of each shard from the node's own gossip view and voter news.

func (s *Sim) deliver(i int, e *event) {
	n := s.nodes[i]
	now := n.clk.at(s.now)
	switch e.kind {
	case evForward:
		n.h.AcceptTransfer(e.fwd.Shard, e.fwd.Epoch, e.fwd.Gens, now)
	case evAborted:
		// As shard.Node does: the source's lease ended and the voters
		// kept the shard, so nobody leads it. Stop waiting, acquire now.
		if _, ok := n.expect[e.shard]; ok {
			s.trace("%s acquires shard %d now: its transfer was refused", n.label(), e.shard)
			n.h.Expect(e.shard, now)
		}
	case evPrepare:
		// The target expects the shard for the handoff's timeout and
		// names the lowest epoch it can lead it at. A draining node
		// refuses (it does not answer), and so does one that most
		// voters have not answered yet, as shard.Node does: they would
		// refuse a Transfer naming it.
		if !n.draining && s.answeredByMajority(n) {
			n.expect[e.shard] = s.now + handoffTimeout
			n.h.Expect(e.shard, now.Add(handoffTimeout))
			s.setDesired(n, e.shard, true)
			s.send(i, e.from, &event{kind: evPrepared, node: e.from, life: e.fromLife, shard: e.shard, from: i,
				epoch: e.epoch, minEpoch: n.h.MinTransferEpoch(e.shard), toInc: n.h.Inc()})
		}
	case evPrepared:
		p, ok := n.preparing[e.shard]
		to := s.nodes[e.from]
		if !ok || p.to != to.id || p.epoch != e.epoch {
			break
		}
		delete(n.preparing, e.shard)
		if ep, led := n.h.Leads(e.shard, now); !led || ep != e.epoch || s.desired(i, e.shard) != to.id {
			break
		}
		s.setDesired(n, e.shard, false)
		err := n.h.TransferAt(e.shard, to.id, e.toInc, e.minEpoch, now)
		switch {
		case err == nil:
			s.trace("%s transfers shard %d to %s#%d (at least epoch %d)", n.label(), e.shard, to.id, e.toInc, e.minEpoch)
		case errors.Is(err, lease.ErrRegranting):
			// As shard.Node does: try again shortly, the target still
			// prepared.
			s.trace("%s holds the transfer of shard %d back: %v", n.label(), e.shard, err)
			n.preparing[e.shard] = p
			life := n.life
			s.At(s.now+regrantWait, func() {
				if n.up && n.life == life {
					s.deliver(i, e)
				}
			})
		}
	default:
		if !e.rep.Stale && e.rep.Mismatch == "" {
			n.answered[e.rep.Voter] = s.now
		}
		switch {
		case e.rep.HeldDelta:
			s.res.HeldChanges++
		case e.rep.HeldVer != 0:
			s.res.HeldWhole++
		}
		n.h.Step(e.rep, now)
	}
	s.drainChanges(i)
}

// answeredByMajority reports whether a majority of voters answered node
// process n (with a session, not Stale) within the last lease duration.
func (s *Sim) answeredByMajority(n *node) bool {
	k := 0
	for _, at := range n.answered {
		if s.now-at < s.cfg.LeaseDuration {
			k++
		}
	}
	return k > len(s.voters)/2
}

func (s *Sim) tickNode(i int) {
	n := s.nodes[i]
	if len(n.deferred) > 0 {
		d := n.deferred
		n.deferred = nil
		for _, e := range d {
			if n.up && n.life == e.life {
				s.deliver(i, e)
			}
		}
		if !n.up {
			return
		}
	}
	if n.quietT > 0 && s.now >= n.quietT {
		n.quietT = 0
		s.trace("%s settled", n.label())
		s.refreshDesired(i)
	}
	now := n.clk.at(s.now)
	// Shards this node leads but no longer wants go to their desired
	// owner, by handoff (prepare, then transfer) or release. A draining
	// node, and every node once faults stop, always hands off.
	led := s.led(n, now)
	var elig []bool
	for _, sh := range led {
		if s.cfg.Script != nil {
			break
		}
		if elig == nil {
			elig = s.eligibility(i)
		}
		owner := s.desiredIn(i, sh, elig)
		if owner == n.id {
			continue
		}
		if p, ok := n.preparing[sh]; ok {
			if s.now-p.at < prepareTimeout {
				continue // waiting for the target
			}
			delete(n.preparing, sh)
		}
		handoff := n.draining || !s.faults || s.rng.Float64() < s.cfg.Faults.TransferRate
		if handoff && owner != "" {
			// The target is the process gossip knows for the NodeID: its
			// newest.
			to := s.primary[owner]
			e, _ := n.h.Leads(sh, now)
			n.preparing[sh] = prep{to: owner, epoch: e, at: s.now}
			s.trace("%s asks %s to prepare for shard %d", n.label(), owner, sh)
			s.send(i, to, &event{kind: evPrepare, node: to, life: s.nodes[to].life, shard: sh, from: i, fromLife: n.life, epoch: e})
		} else if owner != "" || n.draining {
			n.h.Release(sh, now)
			s.trace("%s releases shard %d", n.label(), sh)
		}
	}
	if n.draining && len(led) == 0 && s.cfg.Script == nil &&
		(s.cfg.StopDrainEarly || len(n.preparing) == 0 && len(n.h.Transferring()) == 0) {
		// Drained: leave, and come back a little later.
		s.trace("%s drained", n.label())
		s.Crash(i)
		s.At(s.now+time.Second, func() { s.Restart(i) })
		return
	}
	for _, env := range n.h.Tick(now) {
		v := s.voterIdx[env.To]
		s.send(i, voterBase+v, &event{kind: evToVoter, voter: v, node: i, life: n.life, req: env.Req})
	}
	s.drainChanges(i)
}

func (s *Sim) drainChanges(i int) {
	n := s.nodes[i]
	if n.h == nil {
		return
	}
	n.stale = true
	n.inc = n.h.Inc()
	s.incs[n.id] = max(s.incs[n.id], n.inc)
	if p := s.primary[n.id]; p != i && n.inc > s.nodes[p].inc && !n.h.Superseded() {
		// An older process that nothing named yet took an incarnation
		// above a replacement's (its own came from a clock that stepped
		// back): it is the NodeID's newest now, and the replacement
		// will hear it is superseded.
		s.nodes[p].zombie, n.zombie = true, false
		s.primary[n.id] = i
		s.trace("%s (process %d) is now the newest process of %s", n.label(), i, n.id)
	}
	for _, c := range n.h.TakeChanges() {
		s.trace("%s %s shard %d epoch %d %s", n.label(), kindName(c.Kind), c.Shard, c.Epoch, reasonName(c))
		switch c.Kind {
		case lease.Gained, lease.Renewed:
			n.loopLed[c.Shard] = c.Epoch
		case lease.Lost:
			delete(n.loopLed, c.Shard)
		}
		if c.Kind == lease.Transferred {
			// The forward goes to the process the source knows for the
			// target: the NodeID's newest.
			to, ok := s.primary[c.To]
			if ok {
				s.res.Handoffs++
				s.send(i, to, &event{kind: evForward, node: to, fwd: c, life: s.nodes[to].life})
			}
		}
		if c.Kind == lease.TransferFailed {
			if to, ok := s.primary[c.To]; ok {
				s.send(i, to, &event{kind: evAborted, node: to, shard: c.Shard, life: s.nodes[to].life})
			}
		}
		if c.Kind == lease.Lost && c.Reason == lease.ReasonHandoff && s.plannedFrom > 0 && s.now >= s.plannedFrom {
			if _, ok := s.moving[c.Shard]; !ok {
				s.moving[c.Shard] = s.now
				s.res.PlannedMoves++
			}
		}
	}
	// Session news, as shard.Node keeps it: the latest notice per voter
	// and node. Generations only grow at a voter, so the highest is the
	// latest whatever order notices arrive in. A lost reply loses its
	// notices until the next reply repeats them.
	changed := false
	for _, x := range n.h.TakeNotices() {
		if x.Reset {
			// The voter lists every live session next: forget what it
			// said of live ones before (expiries stay).
			for _, m := range n.news {
				if cur, ok := m[x.Voter]; ok && !cur.expired {
					delete(m, x.Voter)
					changed = true
				}
			}
			continue
		}
		if x.Node == n.id {
			continue
		}
		m := n.news[x.Node]
		if m == nil {
			m = make(map[string]session)
			n.news[x.Node] = m
		}
		if cur, ok := m[x.Voter]; !ok || x.Gen > cur.gen || (x.Gen == cur.gen && x.Expired && !cur.expired) {
			m[x.Voter] = session{gen: x.Gen, expired: x.Expired}
			changed = true
		}
	}
	if changed {
		s.refreshDesired(i)
	}
	if n.h.Superseded() && !n.superseded {
		// The process runs on, leading nothing and sending nothing, as
		// shard.Node does.
		n.superseded = true
		s.res.Superseded++
		s.trace("%s is superseded (process %d)", n.label(), i)
	}
}

func (n *node) label() string {
	if n.inc <= 1 {
		return n.id
	}
	return fmt.Sprintf("%s#%d", n.id, n.inc)
}

func kindName(k lease.ChangeKind) string {
	return [...]string{"?", "gains", "renews", "loses", "transferred", "transfer failed"}[k]
}

func reasonName(c lease.Change) string {
	if c.Kind == lease.Lost {
		return "(" + c.Reason.String() + ")"
	}
	return ""
}

// eligible reports whether node i plans shards to member id: it believes
// it up (gossip) and a majority of voters report a live session for it
// (docs/design.md §2.6: "no news" is not "alive"). Every node counts itself while it
// is not draining.
func (s *Sim) eligible(i int, id string) bool {
	n := s.nodes[i]
	if !n.view[id] {
		return false
	}
	if id == n.id {
		return true
	}
	live := 0
	for _, x := range n.news[id] {
		if !x.expired {
			live++
		}
	}
	return live > len(s.voters)/2
}

// desired returns the desired owner of shard sh in node process i's view: a
// planned owner it heard of, if eligible, else the highest rendezvous hash
// among the eligible members; "" if none.
func (s *Sim) desired(i int, sh uint32) string {
	return s.desiredIn(i, sh, s.eligibility(i))
}

// eligibility lists, in the order of s.ids, whether node process i plans
// shards to each member now. The slice is the node's scratch: valid until
// the next call for the node.
func (s *Sim) eligibility(i int) []bool {
	n := s.nodes[i]
	n.elig = n.elig[:0]
	for _, id := range s.ids {
		n.elig = append(n.elig, s.eligible(i, id))
	}
	return n.elig
}

// desiredIn is desired with the node's eligibility as of now.
func (s *Sim) desiredIn(i int, sh uint32, elig []bool) string {
	if id, ok := s.nodes[i].pref[sh]; ok && elig[s.idIdx[id]] {
		return id
	}
	best, bestH := "", uint64(0)
	for k, id := range s.ids {
		if !elig[k] {
			continue
		}
		if h := s.hash(id, sh); best == "" || h > bestH {
			best, bestH = id, h
		}
	}
	return best
}

// names lists the NodeIDs, in the order their first processes started.
func (s *Sim) names() []string { return s.ids }

func (s *Sim) hash(id string, sh uint32) uint64 {
	hs := s.hashes[id]
	if hs == nil {
		hs = make([]uint64, s.cfg.Shards)
		for k := range hs {
			hs[k] = xxhash.Sum64String(fmt.Sprintf("%d/%s", k, id))
		}
		s.hashes[id] = hs
	}
	return hs[sh]
}

func (s *Sim) setDesired(n *node, sh uint32, want bool) {
	n.h.SetDesired(sh, want)
	n.stale = true
	for int(sh) >= len(n.desire) {
		n.desire = append(n.desire, false)
		n.contest = append(n.contest, false)
	}
	n.desire[sh] = want
}

func (s *Sim) refreshDesired(i int) {
	n := s.nodes[i]
	if n.h == nil {
		return
	}
	if s.cfg.Script != nil {
		for sh, want := range n.wants {
			s.setDesired(n, sh, want)
		}
		return
	}
	quiet := n.quietT > 0 && s.now < n.quietT
	elig := s.eligibility(i)
	for sh := range uint32(s.cfg.Shards) {
		until, expected := n.expect[sh]
		s.setDesired(n, sh, !quiet && s.desiredIn(i, sh, elig) == n.id || expected && s.now < until)
	}
}

// upNow reports whether NodeID id is up and not draining as gossip
// converges to it: its newest process's state while that runs (its
// metadata is the newest), else whether an older one still runs unaware
// that it was replaced.
func (s *Sim) upNow(id string) bool {
	if p := s.nodes[s.primary[id]]; p.up {
		return !p.draining
	}
	for _, m := range s.nodes {
		if m.id == id && m.up && !m.draining && !m.superseded {
			return true
		}
	}
	return false
}

// split reports whether node process a and NodeID id's newest process
// cannot reach each other at all.
func (s *Sim) split(a int, id string) bool {
	b, ok := s.primary[id]
	return ok && s.cut[[2]int{a, b}] && s.cut[[2]int{b, a}]
}

// learn tells every other node, after a random gossip lag, whether NodeID
// id is up or down — as it is then. A node that cannot reach id's process
// at all does not learn that it is up.
func (s *Sim) learn(id string) {
	for i := range s.nodes {
		if !s.nodes[i].up || s.nodes[i].id == id {
			continue
		}
		lag := time.Duration(s.rng.Int64N(int64(s.cfg.GossipLag) + 1))
		s.At(s.now+lag, func() {
			up := s.upNow(id)
			if n := s.nodes[i]; n.view[id] != up && !(up && s.split(i, id)) {
				n.view[id] = up
				s.refreshDesired(i)
			}
		})
	}
}

// splitViews makes each node, after its own gossip lag, mark down the
// members it cannot reach at all (memberlist's probes fail; it declares
// them dead).
func (s *Sim) splitViews() {
	for i := range s.nodes {
		if !s.nodes[i].up {
			continue
		}
		lag := time.Duration(s.rng.Int64N(int64(s.cfg.GossipLag) + 1))
		s.At(s.now+lag, func() {
			n := s.nodes[i]
			changed := false
			for _, id := range s.names() {
				if id != n.id && n.view[id] && s.split(i, id) {
					n.view[id] = false
					changed = true
				}
			}
			if changed {
				s.trace("%s's view splits: %s", n.label(), viewString(n.view))
				s.refreshDesired(i)
			}
		})
	}
}

// mergeViews makes each node, after its own gossip lag, take the truth for
// every member it can reach (memberlist never heals a partition by itself;
// a periodic rejoin of known peers does, as shard.Node's).
func (s *Sim) mergeViews() {
	for i := range s.nodes {
		lag := time.Duration(s.rng.Int64N(int64(s.cfg.GossipLag) + 1))
		s.At(s.now+lag, func() {
			n := s.nodes[i]
			if !n.up {
				return
			}
			changed := false
			for _, id := range s.names() {
				if id == n.id || s.split(i, id) {
					continue
				}
				if up := s.upNow(id); n.view[id] != up {
					n.view[id] = up
					changed = true
				}
			}
			if changed {
				s.trace("%s's view merges: %s", n.label(), viewString(n.view))
				s.refreshDesired(i)
			}
		})
	}
}

func viewString(v map[string]bool) string {
	var up []string
	for id, ok := range v {
		if ok {
			up = append(up, id)
		}
	}
	slices.Sort(up)
	return fmt.Sprint(up)
}
