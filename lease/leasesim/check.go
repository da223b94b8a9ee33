package leasesim

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// leading is one node process that leads a shard at the instant checked.
type leading struct {
	n *node
	i int
	e uint64
}

// cachedLease is a node's lease on one shard as of its holder's last
// step: epoch e until its clock reads until.
type cachedLease struct {
	ok    bool
	e     uint64
	until lease.Time
}

// refreshLeases asks node n's holder afresh which shards it leads and
// until when. Between two steps of the holder its leases only run out:
// Leads holds while a majority of voters count, each until its freshest
// keep-alive's send time plus the usable lease, so exactly until Deadline.
func (s *Sim) refreshLeases(n *node) {
	n.stale = false
	if len(n.leases) != s.cfg.Shards {
		n.leases = make([]cachedLease, s.cfg.Shards)
	}
	now := n.clk.at(s.now)
	for sh := range uint32(s.cfg.Shards) {
		c := cachedLease{}
		if s.cfg.LoopEndsLeases {
			c.e, c.ok = n.loopLed[sh]
			c.until = math.MaxInt64
		} else if c.e, c.ok = n.h.Leads(sh, now); c.ok {
			c.until, _ = n.h.Deadline(sh, now)
		}
		n.leases[sh] = c
	}
}

// check runs the safety invariants at the current instant.
func (s *Sim) check() {
	if cap(s.owns) < len(s.nodes) {
		s.owns = make([]lease.Time, len(s.nodes))
	}
	s.owns = s.owns[:len(s.nodes)]
	for i, n := range s.nodes {
		if n.up && n.h != nil {
			if n.stale {
				s.refreshLeases(n)
			}
			s.owns[i] = n.clk.at(s.now)
		}
	}
	for sh := range uint32(s.cfg.Shards) {
		s.leads = s.leads[:0]
		for i, n := range s.nodes {
			if !n.up || n.h == nil {
				continue
			}
			c := n.leases[sh]
			if !c.ok || s.owns[i] >= c.until {
				delete(n.was, sh)
				continue
			}
			e := c.e
			s.leads = append(s.leads, leading{n: n, i: i, e: e})
			if prev, ok := n.was[sh]; ok && prev == e {
				continue
			}
			n.was[sh] = e
			s.started(sh, i, n, e)
		}
		if len(s.leads) > 1 {
			s.overlap(sh)
		}
		s.contests(sh)
		if since, ok := s.moving[sh]; ok {
			gap := s.now - since
			if len(s.leads) > 0 {
				s.res.MaxHandoffGap = max(s.res.MaxHandoffGap, gap)
				delete(s.moving, sh)
			} else if gap >= s.cfg.LeaseDuration {
				s.fail("planned moves are short", fmt.Sprintf("shard %d without a leader for %v in a planned move (a crash failover takes at least %v)", sh, gap, s.cfg.LeaseDuration))
			}
		}
		if !s.faults && s.cfg.Script == nil {
			if len(s.leads) == 0 {
				if _, ok := s.unled[sh]; !ok {
					s.unled[sh] = s.now
				}
			} else if since, ok := s.unled[sh]; ok {
				s.res.MaxUnled = max(s.res.MaxUnled, s.now-since)
				delete(s.unled, sh)
			}
		}
	}
}

// started checks a leadership that begins now: one holder per (shard,
// epoch), and epochs that only grow.
func (s *Sim) started(sh uint32, i int, n *node, e uint64) {
	s.res.Leaderships++
	who := n.label()
	proc := fmt.Sprintf("%s (process %d, start %d)", who, i, n.life)
	key := [2]uint64{uint64(sh), e}
	if h, ok := s.holders[key]; ok && h != proc {
		s.fail("one holder per (shard, epoch)", fmt.Sprintf("shard %d epoch %d led by %s and earlier by %s", sh, e, proc, h))
	}
	// Epochs rest on timing: with clocks beyond ρ a lease can outlive the
	// session that protected it, and a late grant can start below a newer
	// epoch. So can a grant whose reply reached a node frozen since it
	// sent the request: by its stopped clock the grant is fresh, and the
	// fence rejects its epoch (see overlap).
	switch {
	case e > s.top[sh] || e == s.top[sh] && s.holders[key] == proc:
	case s.cfg.BeyondDrift:
	case e < s.top[sh] && s.fenced(leading{n: n, i: i, e: e}, sh):
		s.res.FencedOverlaps++
		who += " (frozen, fenced)"
	default:
		s.fail("epochs increase", fmt.Sprintf("%s leads shard %d at epoch %d after epoch %d", who, sh, e, s.top[sh]))
	}
	s.holders[key] = proc
	s.hist[sh] = append(s.hist[sh], fmt.Sprintf("%s@%d", who, e))
	s.trace("checker: %s leads shard %d at epoch %d", who, sh, e)
	s.top[sh] = max(s.top[sh], e)
}

// overlap judges an instant at which several processes lead shard sh, each
// by its own clock. Only the paused leader is excused: a node whose lease
// rests on keep-alives it sent before its clock stood still in a freeze,
// next to a leader of a newer epoch. By real time its lease is over; by its
// own clock it is not, and the fence (docs/design.md §3) rejects its writes, since
// its epoch is below one the resource sees from the newer leader.
func (s *Sim) overlap(sh uint32) {
	top, atTop := uint64(0), 0
	for _, l := range s.leads {
		switch {
		case l.e > top:
			top, atTop = l.e, 1
		case l.e == top:
			atTop++
		}
	}
	var names []string
	unexcused := 0
	for _, l := range s.leads {
		name := fmt.Sprintf("%s@%d", l.n.label(), l.e)
		switch {
		case l.e == top && atTop == 1:
		case l.e < top && s.fenced(l, sh):
			name += " (frozen, fenced)"
		default:
			unexcused++
		}
		names = append(names, name)
	}
	switch {
	case unexcused == 0:
		s.res.FencedOverlaps++
	case s.cfg.BeyondDrift:
		s.res.Overlaps++
	default:
		s.fail("one leader at a time", fmt.Sprintf("shard %d: %s", sh, strings.Join(names, ", ")))
	}
}

// fenced reports whether l's lease rests on keep-alives sent before its
// clock last stood still: fewer than a majority of its voters confirmed it
// after the freeze.
func (s *Sim) fenced(l leading, sh uint32) bool {
	n := l.n
	if s.cfg.Unfenced || !n.frozen {
		return false
	}
	c := n.leases[sh]
	return c.ok && c.until.Add(-s.usable()) <= n.frozeAt
}

// usable is how long after sending a keep-alive a holder counts on it,
// as lease.HolderConfig computes it: LD·(1−ρ)/(1+ρ) − SafetyMargin.
func (s *Sim) usable() time.Duration {
	ld, rho := s.cfg.LeaseDuration, s.cfg.MaxClockDrift
	margin := s.margin()
	if margin == 0 {
		margin = ld / 20
	}
	if s.cfg.NodeMu.IgnoreDrift {
		return ld - margin
	}
	return time.Duration(float64(ld)*(1-rho)/(1+rho)) - margin
}

// contests counts nodes that set out to acquire shard sh while another
// process leads it: the situations the lease exists for.
func (s *Sim) contests(sh uint32) {
	for _, m := range s.nodes {
		if int(sh) >= len(m.contest) {
			continue
		}
		now := false
		if m.up && m.h != nil && m.desire[sh] && !m.h.Superseded() && len(s.leads) > 0 {
			now = true
			for _, l := range s.leads {
				if l.n == m {
					now = false
				}
			}
		}
		if now && !m.contest[sh] {
			s.res.Contests++
		}
		m.contest[sh] = now
	}
}

// LiveBound is how long after faults stop every shard must be led again:
// held leases run out (LD), gossip views converge, voters finish their
// grace period (LD), and acquisitions get through their backoff.
func (s *Sim) LiveBound() time.Duration {
	ld := s.cfg.LeaseDuration
	return 3*ld + s.cfg.GossipLag + s.cfg.Faults.LongDelay + time.Second
}

func (s *Sim) checkLive(end time.Duration) {
	if s.cfg.Script != nil {
		return
	}
	bound := s.LiveBound()
	for sh := range uint32(s.cfg.Shards) {
		if l, _ := s.Leader(sh); l < 0 {
			s.fail("led again after faults stop", fmt.Sprintf("shard %d has no leader %v after faults stopped (bound %v)", sh, end-s.cfg.FaultsFor, bound))
		}
		if since, ok := s.unled[sh]; ok {
			s.res.MaxUnled = max(s.res.MaxUnled, end-since)
		}
	}
	// A restarted node must lead again, even one whose incarnation came
	// from a wall clock that stepped back: nothing names a new process
	// yet, so it takes an incarnation above the voters' rather than stay
	// stale for good. The newest process of every NodeID must be running
	// unsuperseded (no newer one exists to supersede it).
	for _, id := range s.ids {
		if n := s.nodes[s.primary[id]]; n.up && n.h.Superseded() {
			s.fail("every node runs again after faults stop", fmt.Sprintf("%s, the newest process of %s, is superseded %v after faults stopped", n.label(), id, end-s.cfg.FaultsFor))
		}
	}
	if s.res.MaxUnled > bound {
		s.fail("led again after faults stop", fmt.Sprintf("a shard went %v without a leader after faults stopped (bound %v)", s.res.MaxUnled, bound))
	}
}
