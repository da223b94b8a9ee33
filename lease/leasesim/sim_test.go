package leasesim_test

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease/leasesim"
)

// seeds returns how many random seeds to run: TENURE_SIM_SEEDS, or def.
func seeds(t *testing.T, def int) int {
	if s := os.Getenv("TENURE_SIM_SEEDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("TENURE_SIM_SEEDS=%q: %v", s, err)
		}
		return n
	}
	if testing.Short() {
		return def / 10
	}
	if raceOn {
		return def / 5
	}
	return def
}

// variant derives a world from a seed so that seeds cover different sizes.
func variant(seed uint64) leasesim.Config {
	return leasesim.Config{
		Seed:   seed,
		Nodes:  3 + int(seed%4),
		Voters: []int{3, 3, 5, 1}[seed%4],
		Shards: 8 + int(seed%3)*8,
	}
}

// TestRandomSeeds runs many seeded worlds with random faults. A failure
// prints the seed; TENURE_SIM_SEED=<n> replays exactly that one with a trace.
func TestRandomSeeds(t *testing.T) {
	t.Parallel() // with TestScenarioDrift: make sim's two long runs share the cores
	if s := os.Getenv("TENURE_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		cfg := variant(seed)
		cfg.Trace = func(line string) { t.Log(line) }
		if _, err := leasesim.Run(cfg); err != nil {
			t.Fatal(err)
		}
		return
	}
	n := seeds(t, 200)
	var maxUnled, leaderships, messages, handoffs, planned, maxGap int64
	for seed := uint64(1); seed <= uint64(n); seed++ {
		res, err := leasesim.Run(variant(seed))
		if err != nil {
			t.Fatalf("%v\nreplay: TENURE_SIM_SEED=%d go test ./lease/leasesim -run TestRandomSeeds -v", err, seed)
		}
		maxUnled = max(maxUnled, int64(res.MaxUnled))
		leaderships += int64(res.Leaderships)
		messages += int64(res.Messages)
		handoffs += int64(res.Handoffs)
		planned += int64(res.PlannedMoves)
		maxGap = max(maxGap, int64(res.MaxHandoffGap))
	}
	if planned == 0 {
		t.Fatal("no planned move happened once faults stopped: the gap check checked nothing")
	}
	t.Logf("%d seeds: %d leaderships, %d messages, longest unled after faults %v; %d transfers, %d planned moves after faults, longest gap in one %v",
		n, leaderships, messages, timeString(maxUnled), handoffs, planned, timeString(maxGap))
}

// regressions are seeds that broke earlier versions of the protocol code;
// they run on every build.
var regressions = []struct {
	seed uint64
	why  string
}{
	{376, "a transfer forwarded after the target released that epoch was led next to a newer leader"},
}

func TestRegressionSeeds(t *testing.T) {
	for _, r := range regressions {
		if _, err := leasesim.Run(variant(r.seed)); err != nil {
			t.Errorf("seed %d (%s): %v", r.seed, r.why, err)
		}
	}
}

func timeString(ns int64) string { return fmt.Sprint(durationOf(ns)) }

// Each planted bug breaks one rule of the protocol. The checker must catch
// every one of them within a bounded number of random seeds: a checker that
// cannot fail proves nothing. (Skipping the restart grace period is caught
// by the directed gen-reuse scenario, which random faults rarely line up.)
func TestCheckerCatchesPlantedBugs(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*leasesim.Config)
	}{
		{"lease timer started at the reply", func(c *leasesim.Config) {
			// Slow replies are where this bug bites: the lease would
			// count from when the reply arrived.
			c.NodeMu.TimerFromReply = true
			f := leasesim.DefaultFaults()
			f.DelayMax, f.LongDelayRate = 100*time.Millisecond, 0.05
			c.Faults = &f
		}},
		{"voter accepts an equal epoch", func(c *leasesim.Config) { c.VoterMu.AcceptEqualEpoch = true }},
		{"voter forgets its records on restart", func(c *leasesim.Config) { c.ForgetOnRestart = true }},
		{"draining node stops before its transfers are answered", func(c *leasesim.Config) { c.StopDrainEarly = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 400; seed++ {
				cfg := variant(seed)
				tt.modify(&cfg)
				_, err := leasesim.Run(cfg)
				var v *leasesim.Violation
				if errors.As(err, &v) {
					t.Logf("caught at seed %d: %v", seed, v)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			t.Fatal("400 seeds ran without the checker noticing the bug")
		})
	}
}
