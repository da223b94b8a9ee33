package leasesim_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/lease/leasesim"
)

// The protection invariant (docs/design.md §2.5, 3) needs no rival: a
// lease that a majority of voters no longer protect is a violation at the
// instant it happens, whether or not anyone is granted while it lasts.

const protectedRule = "leases are protected"

func wantRule(t *testing.T, err error, rule string) {
	t.Helper()
	var v *leasesim.Violation
	if !errors.As(err, &v) {
		t.Fatalf("the planted bug went unnoticed (err = %v)", err)
	}
	if v.Rule != rule {
		t.Fatalf("caught by %q, want %q: %v", v.Rule, rule, v)
	}
	t.Logf("caught: %v", v)
}

// catchInRandomRuns runs variant seeds 1..max with plant applied until
// the checker reports one of rules.
func catchInRandomRuns(t *testing.T, max uint64, plant func(*leasesim.Config), rules ...string) {
	t.Helper()
	for seed := uint64(1); seed <= max; seed++ {
		cfg := variant(seed)
		plant(&cfg)
		_, err := leasesim.Run(cfg)
		var v *leasesim.Violation
		if !errors.As(err, &v) {
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		for _, r := range rules {
			if v.Rule == r {
				t.Logf("caught at seed %d: %v", seed, v)
				return
			}
		}
		t.Logf("seed %d broke another rule: %v", seed, v)
	}
	t.Fatalf("%d seeds ran without the checker noticing the bug", max)
}

// KeepVoteAfterRelease: a holder that releases a re-grant's epoch at a
// voter and goes on counting that voter for the led epoch. Random worlds
// rarely line a rival up inside the window (the overlap check alone
// caught it in none of 150 seeds); the protection invariant sees the
// released record at once (22 of 150).
func TestRandomKeepVoteAfterReleaseIsCaught(t *testing.T) {
	catchInRandomRuns(t, 100, func(c *leasesim.Config) { c.NodeMu.KeepVoteAfterRelease = true }, protectedRule)
}

// The same bug in the directed partial re-grant, with nobody contesting
// the shard: no overlap ever happens, and the checker still names it.
func TestScenarioPartialRegrantReleaseWithoutRivalIsCaught(t *testing.T) {
	sc := partialRegrant(t, func(c *leasesim.Config) { c.NodeMu.KeepVoteAfterRelease = true })
	script := sc.script
	sc.script = func(s *leasesim.Sim) {
		script(s)
		s.At(2050*ms, func() { s.Want(1, 0, false) }) // no rival after all
	}
	_, err := play(t, sc)
	wantRule(t, err, protectedRule)
}

// A restarted voter that grants at once (no grace period) is caught by
// random runs through the invariant too, not only by the directed
// gen-reuse scenario.
func TestRandomNoGraceIsCaught(t *testing.T) {
	catchInRandomRuns(t, 100, func(c *leasesim.Config) { c.VoterMu.NoGrace = true }, protectedRule)
}

// driftOverlap: a holder that ignores drift (it counts on LD − margin, not
// LD·(1−ρ)/(1+ρ) − margin) outlives its protection by ~300 ms with clocks
// at the ends of ±15%. n1 is cut off from the voters at 1 s and n2 wants
// the shard. A freeze of n1 after its last answered keep-alive explains
// only as much of the overlap as the freeze lasted.
func driftOverlap(freeze time.Duration) scenario {
	return scenario{nodes: 2, voters: 3, length: 4 * time.Second, modify: func(c *leasesim.Config) {
		c.MaxClockDrift = 0.15
		c.ExtremeDrift = true
		c.SafetyMargin = -1
		c.NodeMu = lease.HolderMutations{IgnoreDrift: true}
	}, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(1000*ms, func() {
			for v := range 3 {
				s.Cut(0, s.Voter(v))
				s.Cut(s.Voter(v), 0)
			}
			s.Want(0, 0, false)
			s.Want(1, 0, true)
		})
		if freeze > 0 {
			s.At(1100*ms, func() { s.Freeze(0, freeze) })
		}
	}}
}

func TestScenarioDriftBugIsCaught(t *testing.T) {
	_, err := play(t, driftOverlap(0))
	wantViolation(t, err)
}

// A 1 µs freeze once excused the whole overlap: the frozen-leader excuse
// did not ask how long the clock stood still.
func TestScenarioDriftBugBehindShortFreezeIsCaught(t *testing.T) {
	for _, d := range []time.Duration{time.Microsecond, 50 * time.Millisecond} {
		t.Run(d.String(), func(t *testing.T) {
			s, err := play(t, driftOverlap(d))
			wantViolation(t, err)
			if r := s.Result(); r.FencedOverlaps != 0 {
				t.Fatalf("%d overlapping instants excused by a %v freeze", r.FencedOverlaps, d)
			}
		})
	}
}

// The invariant holds on the unmutated partial re-grant, rival or not.
func TestScenarioPartialRegrantProtected(t *testing.T) {
	sc := partialRegrant(t, nil)
	script := sc.script
	sc.script = func(s *leasesim.Sim) {
		script(s)
		s.At(2050*ms, func() { s.Want(1, 0, false) })
	}
	mustPlay(t, sc)
}

// reusedGen: n1 leads shard 0 through its only voter. At 500 ms n1 is cut
// off from the voter, which restarts, and a twin of n1 starts that wants
// the shard too. A restarted voter must give new
// generations: with the boot counter kept (Config.ReuseGens) the twin's
// first session after the restart can take the generation n1's record
// names, and the twin finds the record in its Held list under its own
// generation and leads the epoch n1 still leads by its own clock.
func reusedGen(modify func(*leasesim.Config)) scenario {
	return scenario{nodes: 1, voters: 1, length: 4 * time.Second, modify: modify, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(500*ms, func() {
			s.Cut(s.Voter(0), 0)
			s.Cut(0, s.Voter(0))
			s.CrashVoter(0)
		})
		s.At(510*ms, func() {
			s.RestartVoter(0)
			s.Twin(0) // wants the shard, as n1 did
		})
	}}
}

func TestScenarioReusedGen(t *testing.T) {
	s := mustPlay(t, reusedGen(nil))
	neverAfter(t, s, "n1", "n1@1")
	leader(t, s, 1)
}

func TestScenarioReusedGenIsCaught(t *testing.T) {
	_, err := play(t, reusedGen(func(c *leasesim.Config) { c.ReuseGens = true }))
	wantViolation(t, err)
}

// lease.HolderMutations.HeldOutOfOrder (a Held list applied although a
// newer one from the same voter was applied already) has no test here:
// neither the default random worlds (150 seeds) nor worlds with heavy
// duplication and reordering (3 × 200 seeds) produced an execution it
// breaks. An older list can only re-add a vote that a newer one or a
// release withdrew while the node's generation at the voter stayed the
// same, which needs the node to release, while leading epoch e, a
// partial re-grant e' > e at that voter, and then a reply handled before
// the re-grant to overtake every reply that followed it. A directed
// scenario must line both up; it is still to be written.
