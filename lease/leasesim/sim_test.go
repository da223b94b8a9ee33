package leasesim_test

import (
	"cmp"
	"errors"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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

// firstSeed is TENURE_SIM_FROM, or 1: where a range of seeds starts, so
// that long runs can be split across machines.
func firstSeed(t *testing.T) uint64 {
	if s := os.Getenv("TENURE_SIM_FROM"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TENURE_SIM_FROM=%q: %v", s, err)
		}
		return n
	}
	return 1
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

// failed is one seed that broke an invariant.
type failed struct {
	seed uint64
	err  error
}

// sweep runs configs of n seeds from first on every core and returns the
// runs' results in seed order and the failing seeds, lowest first. It
// stops handing out seeds after maxFail failures. Every seed's world is
// its own, so the outcome does not depend on the number of cores.
func sweep(t *testing.T, first uint64, n int, config func(uint64) leasesim.Config, maxFail int) ([]leasesim.Result, []failed) {
	t.Helper()
	results := make([]leasesim.Result, n)
	var (
		mu    sync.Mutex
		fails []failed
		next  = make(chan int)
		wg    sync.WaitGroup
		done  atomic.Int64
	)
	start := time.Now()
	stopProgress := make(chan struct{})
	if n >= 5000 {
		go func() {
			tick := time.NewTicker(30 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					d := done.Load()
					t.Logf("%d/%d seeds, %.1f seeds/s", d, n, float64(d)/time.Since(start).Seconds())
				case <-stopProgress:
					return
				}
			}
		}()
	}
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for k := range next {
				seed := first + uint64(k)
				res, err := leasesim.Run(config(seed))
				results[k] = res
				done.Add(1)
				if err != nil {
					mu.Lock()
					fails = append(fails, failed{seed, err})
					mu.Unlock()
				}
			}
		})
	}
	for k := range n {
		mu.Lock()
		stop := len(fails) >= maxFail
		mu.Unlock()
		if stop {
			break
		}
		next <- k
	}
	close(next)
	wg.Wait()
	close(stopProgress)
	d := time.Since(start)
	t.Logf("%d seeds in %v on %d cores: %.1f seeds/s", done.Load(), d.Round(time.Millisecond), runtime.GOMAXPROCS(0), float64(done.Load())/d.Seconds())
	slices.SortFunc(fails, func(a, b failed) int { return cmp.Compare(a.seed, b.seed) })
	return results, fails
}

// TestRandomSeeds runs many seeded worlds with random faults. A failure
// prints each failing seed; TENURE_SIM_SEED=<n> replays exactly that one
// with a trace. TENURE_SIM_SEEDS sets how many (make sim, make sim-long),
// TENURE_SIM_FROM the first.
func TestRandomSeeds(t *testing.T) {
	t.Parallel() // with TestScenarioDrift and TestBeyondDrift: make sim's long runs share the cores
	if s := os.Getenv("TENURE_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		cfg := variant(seed)
		cfg.Trace = func(line string) { t.Log(line) }
		res, err := leasesim.Run(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", res)
		return
	}
	n := seeds(t, 200)
	results, fails := sweep(t, firstSeed(t), n, variant, 20)
	for _, f := range fails {
		t.Errorf("%v\nreplay: TENURE_SIM_SEED=%d go test ./lease/leasesim -run 'TestRandomSeeds$' -v", f.err, f.seed)
	}
	var sum leasesim.Result
	for _, res := range results {
		sum.MaxUnled = max(sum.MaxUnled, res.MaxUnled)
		sum.MaxHandoffGap = max(sum.MaxHandoffGap, res.MaxHandoffGap)
		sum.Leaderships += res.Leaderships
		sum.Messages += res.Messages
		sum.Handoffs += res.Handoffs
		sum.PlannedMoves += res.PlannedMoves
		sum.Contests += res.Contests
		sum.Twins += res.Twins
		sum.Superseded += res.Superseded
		sum.Freezes += res.Freezes
		sum.FencedOverlaps += res.FencedOverlaps
		sum.DiskFailures += res.DiskFailures
		sum.HeldChanges += res.HeldChanges
		sum.HeldWhole += res.HeldWhole
	}
	if len(fails) == 0 && n >= 50 {
		// The world must keep producing what it exists for.
		for _, c := range []struct {
			what string
			n    int
		}{
			{"planned moves after faults", sum.PlannedMoves},
			{"contests of a live leader's shard", sum.Contests},
			{"twins", sum.Twins},
			{"superseded processes", sum.Superseded},
			{"freezes", sum.Freezes},
			{"disk failures", sum.DiskFailures},
			{"replies listing record changes", sum.HeldChanges},
			{"replies listing every record", sum.HeldWhole},
		} {
			if c.n == 0 {
				t.Errorf("%d seeds without any %s: the checker checked nothing there", n, c.what)
			}
		}
	}
	t.Logf("%d seeds: %d leaderships, %d messages, %d contests, longest unled after faults %v; %d transfers, %d planned moves after faults, longest gap in one %v; %d twins (%d superseded), %d freezes (%d fenced instants), %d disk failures; Held lists: %d of changes, %d whole",
		n, sum.Leaderships, sum.Messages, sum.Contests, sum.MaxUnled, sum.Handoffs, sum.PlannedMoves, sum.MaxHandoffGap,
		sum.Twins, sum.Superseded, sum.Freezes, sum.FencedOverlaps, sum.DiskFailures, sum.HeldChanges, sum.HeldWhole)
}

// regressions are seeds that broke earlier versions of the protocol code;
// they run on every build.
var regressions = []struct {
	seed uint64
	why  string
}{
	{376, "a transfer forwarded after the target released that epoch was led next to a newer leader"},
	{3301, "a restart with a stale incarnation, granted part of an acquisition by a voter that missed the newer one, stayed superseded for good"},
	{12320, "a target restarted under a new incarnation prepared before most voters answered it; the refused transfer left the shard unled for its hold-off"},
	{11721, "a transfer refused at two voters (one held a failed re-grant's partial grant): the target's hold-off was not shortened by the abort, and the shard waited it out unled"},
	{31133, "the same as 11721, in another order"},
	{80070, "a process that had led heard of a newer incarnation whose process had died (a disk lost the counter's last write) and stayed superseded for good"},
}

func TestRegressionSeeds(t *testing.T) {
	for _, r := range regressions {
		if _, err := leasesim.Run(variant(r.seed)); err != nil {
			t.Errorf("seed %d (%s): %v", r.seed, r.why, err)
		}
	}
}

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
