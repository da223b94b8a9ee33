package leasesim

import (
	"slices"
	"time"
)

// injectFaults draws one fault step (every 100 ms while faults last).
func (s *Sim) injectFaults() {
	f := s.cfg.Faults
	dt := 0.1 // seconds per fault step
	if s.rng.Float64() < f.PartitionRate*dt {
		s.partition()
	}
	for i := range s.nodes {
		n := s.nodes[i]
		if !n.up {
			continue
		}
		primary := !n.zombie
		r, acc := s.rng.Float64(), 0.0
		hit := func(rate float64) bool { acc += rate * dt; return r < acc }
		switch {
		case hit(f.CrashRate):
			s.Crash(i)
			if primary {
				s.At(s.now+s.randDur(f.DownFor), func() { s.restartRandom(i) })
			}
		case hit(f.PauseRate):
			s.Pause(i, s.randDur(f.PauseFor))
		case hit(f.BusyRate):
			d := s.randDur(f.BusyFor)
			n.pausedT = max(n.pausedT, s.now+d)
			s.trace("%s's loop is busy for %v", n.label(), d)
		case hit(f.DrainRate):
			if primary {
				s.Drain(i)
			}
		case hit(f.FreezeRate):
			s.Freeze(i, s.randDur(f.FreezeFor))
		case hit(f.TwinRate):
			if primary && !n.draining {
				s.twinRandom(i)
			}
		case hit(f.ClockStepRate):
			s.StepClock(i, s.randDur(f.ClockStep))
		case hit(f.RateChangeRate):
			s.SetClockRate(i, s.faultRate(true))
		}
	}
	for i, v := range s.voters {
		if !v.up {
			continue
		}
		r, acc := s.rng.Float64(), 0.0
		hit := func(rate float64) bool { acc += rate * dt; return r < acc }
		switch {
		case hit(f.VoterCrashRate):
			s.CrashVoter(i)
			s.At(s.now+s.randDur(f.DownFor), func() { s.RestartVoter(i) })
		case hit(f.FreezeRate):
			s.Freeze(s.Voter(i), s.randDur(f.FreezeFor))
		case hit(f.RateChangeRate):
			s.SetClockRate(s.Voter(i), s.faultRate(false))
		case hit(f.ClockStepRate):
			// A voter's clock that jumps forward ends sessions early: it
			// ran faster than ρ allows, which only BeyondDrift permits.
			if s.cfg.BeyondDrift {
				s.StepClock(s.Voter(i), s.randDur(f.ClockStep))
			}
		}
	}
}

func (s *Sim) randDur(d time.Duration) time.Duration {
	return time.Duration(s.rng.Int64N(int64(d) + 1))
}

// faultRate draws a clock rate: within ±ρ, or with BeyondDrift up to
// Faults.WildRate away from 1.
func (s *Sim) faultRate(isNode bool) float64 {
	if s.cfg.BeyondDrift {
		return 1 + (2*s.rng.Float64()-1)*s.cfg.Faults.WildRate
	}
	return s.driftRate(isNode)
}

// partition cuts a random set of processes off from the rest, in one or
// both directions, for a random time. A two-way cut splits the nodes'
// gossip views too (Faults.SplitViews).
func (s *Sim) partition() {
	f := s.cfg.Faults
	var side []int
	procs := s.procs()
	for _, p := range procs {
		if s.rng.IntN(3) == 0 {
			side = append(side, p)
		}
	}
	oneWay := s.rng.Float64() < f.OneWayRate
	var cuts [][2]int
	for _, a := range side {
		for _, b := range procs {
			if !slices.Contains(side, b) {
				cuts = append(cuts, [2]int{a, b})
				if !oneWay {
					cuts = append(cuts, [2]int{b, a})
				}
			}
		}
	}
	for _, c := range cuts {
		s.cut[c] = true
	}
	s.trace("partition %v (one-way %v)", side, oneWay)
	views := f.SplitViews && !oneWay
	if views {
		s.splitViews()
	}
	s.At(s.now+s.randDur(f.PartitionFor), func() {
		for _, c := range cuts {
			delete(s.cut, c)
		}
		if views {
			s.mergeViews()
		}
	})
}

// restartRandom restarts node process i, with an incarnation below the
// previous process's one time in StaleIncRate (its wall clock stepped
// back).
func (s *Sim) restartRandom(i int) {
	n := s.nodes[i]
	if n.up || n.zombie || s.primary[n.id] != i {
		return
	}
	inc := s.incs[n.id] + 1
	if last := s.incs[n.id]; last >= 2 && s.rng.Float64() < s.cfg.Faults.StaleIncRate {
		inc = 1 + s.rng.Uint64N(last-1)
	}
	s.RestartWith(i, inc)
}

// twinRandom starts a twin of node process i: half the time one that wants
// nothing until it settles.
func (s *Sim) twinRandom(i int) {
	j := s.Twin(i)
	s.trace("%s#%d is a twin of process %d (process %d)", s.nodes[j].id, s.nodes[j].h.Inc(), i, j)
	if s.rng.IntN(2) == 0 {
		s.nodes[j].quietT = s.now + s.randDur(s.cfg.Faults.TwinSettle)
		s.refreshDesired(j)
	}
}

// calm ends the fault phase: links heal, views converge, clocks return
// within ±ρ, and everything down comes back.
func (s *Sim) calm() {
	s.faults = false
	s.Heal()
	s.mergeViews()
	for i, n := range s.nodes {
		if !n.zombie && s.primary[n.id] == i {
			s.Restart(i)
		}
		n.pausedT = min(n.pausedT, s.now)
		n.quietT = min(n.quietT, s.now)
		n.clk.t0 = min(n.clk.t0, s.now)
		if k := len(n.freezes) - 1; k >= 0 {
			n.freezes[k].to = min(n.freezes[k].to, s.now)
		}
		if s.cfg.BeyondDrift {
			n.clk.setRate(s.now, s.driftRate(true))
		}
	}
	for i, v := range s.voters {
		s.RestartVoter(i)
		if v.pausedT > s.now {
			v.pausedT = s.now
			v.clk.t0 = min(v.clk.t0, s.now)
			s.schedule(&event{at: s.now, kind: evResume, voter: i, vlife: v.life})
		}
		if s.cfg.BeyondDrift {
			v.clk.setRate(s.now, s.driftRate(false))
		}
	}
	s.protVer++
	s.trace("faults stop")
	// Planned moves on a calm cluster, once it has settled: a drain, then
	// shards moved by plan.
	at := s.now + s.LiveBound()/2
	s.plannedFrom = at
	s.At(at, func() { s.Drain(s.primary[s.ids[s.rng.IntN(len(s.ids))]]) })
	for k := range 4 {
		s.At(at+2*time.Second+time.Duration(k)*300*time.Millisecond, func() {
			s.Plan(uint32(s.rng.IntN(s.cfg.Shards)), s.primary[s.ids[s.rng.IntN(len(s.ids))]])
		})
	}
}
