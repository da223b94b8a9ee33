package leasesim

import (
	"slices"
	"time"
)

// The voter driver: what package voter's Server does around its
// lease.Voter. A request is handled at once, in memory; the records it
// changed are queued for a write, and the reply leaves only once every
// write queued before it is durable (Enqueue, then Barrier), rejections
// included, since they can reveal records not yet written. A write that
// fails stops the voter, which answers nothing until it restarts from what
// its store holds.

func (s *Sim) handleVoter(e *event) {
	vt := s.voters[e.voter]
	switch e.kind {
	case evResume:
		if !vt.up || vt.life != e.vlife || s.now < vt.pausedT {
			return
		}
		d := vt.deferred
		vt.deferred = nil
		for _, x := range d {
			s.handleVoter(x)
		}
		return
	case evReplyOut:
		if !vt.up || vt.life != e.vlife {
			return // the voter stopped before its writes were durable
		}
	case evToVoter:
		if !vt.up {
			return
		}
	}
	if s.now < vt.pausedT {
		vt.deferred = append(vt.deferred, e) // frozen
		return
	}
	if e.kind == evReplyOut {
		s.send(voterBase+e.voter, e.node, &event{kind: evToNode, node: e.node, life: e.life, rep: e.rep})
		return
	}
	vnow := vt.clk.at(s.now)
	rep, dirty := vt.v.Handle(e.req, vnow)
	if rep.Mismatch == "" && !rep.Stale {
		// The keep-alive went through: rep.Gen is the sender's
		// generation, seen now.
		vt.seen[rep.Gen] = vnow
		if k := procKey(e.node, e.life); !slices.Contains(vt.owners[rep.Gen], k) {
			vt.owners[rep.Gen] = append(vt.owners[rep.Gen], k)
		}
	}
	for _, r := range dirty {
		s.shardVer[r.Shard]++
	}
	if s.cfg.Trace != nil {
		for _, r := range rep.Results {
			s.trace("%s: %s#%d %s shard %d epoch %d: %s (record %d %s gen %x%s)", vt.id, e.req.From, e.req.Inc, r.Op.Kind, r.Op.Shard, r.Op.Epoch, r.Refusal,
				r.Record.Epoch, r.Record.Holder, r.Record.HolderGen, map[bool]string{true: " released"}[r.Record.Released])
		}
		if rep.Stale {
			s.trace("%s: %s#%d is stale (incarnation %d seen)", vt.id, e.req.From, e.req.Inc, rep.Inc)
		}
	}
	if len(dirty) > 0 {
		done := max(vt.diskFree, s.now) + s.writeLatency(vt)
		vt.diskFree = done
		s.schedule(&event{at: done, kind: evWrite, voter: e.voter, vlife: vt.life, recs: dirty})
	}
	if s.cfg.ReplyBeforeSync || vt.diskFree <= s.now {
		s.send(voterBase+e.voter, e.node, &event{kind: evToNode, node: e.node, life: e.life, rep: rep})
		return
	}
	// Scheduled after the write it waits for, so handled after it.
	s.schedule(&event{at: vt.diskFree, kind: evReplyOut, voter: e.voter, vlife: vt.life, node: e.node, life: e.life, rep: rep})
}

func (s *Sim) writeLatency(vt *voter) time.Duration {
	f := s.cfg.Faults
	d := f.DiskMin + time.Duration(s.rng.Int64N(int64(f.DiskMax-f.DiskMin)+1)) + vt.diskSlow
	if s.faults && s.rng.Float64() < f.DiskStallRate {
		d = time.Duration(s.rng.Int64N(int64(f.DiskStall) + 1))
	}
	return d
}

// written completes a write: the records are durable, or the write failed
// and the voter stops.
func (s *Sim) written(e *event) {
	vt := s.voters[e.voter]
	if !vt.up || vt.life != e.vlife {
		return // the voter crashed first: the write is lost
	}
	if vt.failNext || s.faults && s.rng.Float64() < s.cfg.Faults.DiskFailRate {
		vt.failNext = false
		vt.up = false
		s.protVer++
		s.res.DiskFailures++
		s.trace("%s's write fails: it stops (its memory is ahead of its store)", vt.id)
		if s.faults {
			i := e.voter
			s.At(s.now+time.Duration(s.rng.Int64N(int64(s.cfg.Faults.DownFor)+1)), func() { s.RestartVoter(i) })
		}
		return
	}
	for _, r := range e.recs {
		vt.persisted[r.Shard] = r.Record
	}
}
