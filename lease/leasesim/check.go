package leasesim

import (
	"fmt"
	"math"
	"slices"
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

// led returns the shards node n leads at its clock reading now, in order:
// from its cached leases, which hold until the holder next handles
// anything (see refreshLeases).
func (s *Sim) led(n *node, now lease.Time) []uint32 {
	if s.cfg.LoopEndsLeases {
		return n.h.Led(now) // the cache holds the loop's view
	}
	if n.stale {
		s.refreshLeases(n)
	}
	n.ledBuf = n.ledBuf[:0]
	for sh, c := range n.leases {
		if c.ok && now < c.until {
			n.ledBuf = append(n.ledBuf, uint32(sh))
		}
	}
	return n.ledBuf
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
				n.was[sh] = 0
				continue
			}
			e := c.e
			s.leads = append(s.leads, leading{n: n, i: i, e: e})
			if n.was[sh] == e {
				continue
			}
			n.was[sh] = e
			s.started(sh, i, n, e)
		}
		if len(s.leads) > 1 {
			s.overlap(sh)
		}
		for _, l := range s.leads {
			s.protected(l, sh)
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

// freeze is a span of global time [from, to] in which a node's clock
// stood still at reading at; running, it would have gone at rate.
type freeze struct {
	at       lease.Time
	from, to time.Duration
	rate     float64
}

// fenced reports whether l's lease is over by a clock that did not stand
// still: it rests on keep-alives sent before the node's clock stood still
// (fewer than a majority of its voters confirmed it after a freeze), and
// the clock, had it run through the freezes since, would read past the
// lease's deadline. By real time the lease is over; by the node's own
// clock it is not, and only the fence (docs/design.md §3) protects the
// shard. A freeze shorter than the overlap it would explain excuses
// nothing.
func (s *Sim) fenced(l leading, sh uint32) bool {
	n := l.n
	if s.cfg.Unfenced || len(n.freezes) == 0 {
		return false
	}
	c := n.leases[sh]
	if !c.ok {
		return false
	}
	sent := c.until.Add(-s.usable()) // the keep-alives the lease rests on
	lost := 0.0
	for _, f := range n.freezes {
		if f.at >= sent && s.now > f.from {
			lost += f.rate * float64(min(s.now, f.to)-f.from)
		}
	}
	return lost > 0 && float64(n.clk.at(s.now))+lost >= float64(c.until)
}

// protCache is a verdict on the protection of a node's lease on a shard:
// a majority of voters protect epoch e until global time until, unless
// the shard's records (ver) or the voters (gver) change first.
type protCache struct {
	ok        bool
	e         uint64
	ver, gver uint64
	until     time.Duration
}

// procKey names node process i in its life-th start.
func procKey(i int, life uint64) uint64 { return uint64(i)<<32 | life }

// protected checks that l's lease on sh is protected at this instant
// (docs/design.md §2.5, 3): a majority of voters hold a record of sh
// naming l's NodeID and a generation the voter gave l's process, at l's
// epoch or above, not released, with that generation live at the voter.
// A running voter is judged by its memory, a stopped one by its store
// (its grace period will protect the generation when it starts again).
// It needs no rival: a lease left unprotected is a violation even if
// nobody is granted while it lasts. Excused as overlaps are: a frozen
// node's fenced lease, and worlds beyond the drift bound.
func (s *Sim) protected(l leading, sh uint32) {
	if s.cfg.BeyondDrift {
		return
	}
	pc := &l.n.prot[sh]
	if pc.ok && pc.e == l.e && pc.ver == s.shardVer[sh] && pc.gver == s.protVer && s.now < pc.until {
		return
	}
	maj := len(s.voters)/2 + 1
	if until, n := s.protection(l, sh, nil); n >= maj {
		*pc = protCache{ok: true, e: l.e, ver: s.shardVer[sh], gver: s.protVer, until: until}
		return
	}
	pc.ok = false
	if s.fenced(l, sh) {
		return
	}
	var what []string
	s.protection(l, sh, &what)
	s.fail("leases are protected", fmt.Sprintf("%s (process %d) leads shard %d at epoch %d, protected by fewer than %d voters: %s",
		l.n.label(), l.i, sh, l.e, maj, strings.Join(what, "; ")))
}

// protection counts the voters that protect l's lease on sh now, and
// returns until when a majority of them do if nothing changes (global
// time). With what set, it describes each voter's record.
func (s *Sim) protection(l leading, sh uint32, what *[]string) (time.Duration, int) {
	key := procKey(l.i, l.n.life)
	s.ends = s.ends[:0]
	for vi, vt := range s.voters {
		rec := vt.persisted[sh]
		if vt.up {
			rec = vt.v.Record(sh)
		}
		mine := slices.Contains(vt.owners[rec.HolderGen], key)
		ok := rec.Holder == l.n.id && mine && rec.Epoch >= l.e && !rec.Released
		end := time.Duration(math.MaxInt64) // a stopped voter protects until it starts
		if ok && vt.up {
			vnow := vt.clk.at(s.now)
			until := vt.graceUntil
			if !vt.grace {
				until = math.MinInt64
			}
			if seen, known := vt.seen[rec.HolderGen]; known {
				until = max(until, seen.Add(s.cfg.LeaseDuration))
			}
			ok = vnow < until
			end = vt.clk.when(s.now, until)
		}
		if ok {
			s.ends = append(s.ends, end)
		}
		if what != nil {
			*what = append(*what, fmt.Sprintf("v%d (up %v): epoch %d %s gen %x (this process's: %v) released %v: protects %v",
				vi+1, vt.up, rec.Epoch, rec.Holder, rec.HolderGen, mine, rec.Released, ok))
		}
	}
	maj := len(s.voters)/2 + 1
	if len(s.ends) < maj {
		return 0, len(s.ends)
	}
	slices.Sort(s.ends)
	return s.ends[len(s.ends)-maj], len(s.ends)
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
