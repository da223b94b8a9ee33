package rebalance_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// spread is the highest and lowest load among the eligible members of ms,
// each relative to the member's fair share.
func spread(t testing.TB, p rebalance.Policy, shards int, owners []string, ms []shard.Member) (hi, lo float64) {
	t.Helper()
	bs, err := rebalance.Bounds(p, shards, ms)
	if err != nil {
		t.Fatal(err)
	}
	count := countOf(owners)
	hi, lo = 0, 1e9
	for _, b := range bs {
		if b.Weight > 0 {
			r := float64(count[b.ID]) / b.Fair
			hi, lo = max(hi, r), min(lo, r)
		}
	}
	return hi, lo
}

// From a balanced state, one join moves at most 1.05 × P/(N+1) shards and
// one leave moves exactly the leaver's shards, with loads within 1.25 and
// 0.75 of the average afterwards. Consistent hashing alone, recomputed, is
// logged beside it.
func TestPlanMovementOnJoinAndLeave(t *testing.T) {
	p := rebalance.Policy{}
	for _, n := range []int{3, 5, 10, 20} {
		for _, shards := range []int{271, 1024, 4096} {
			t.Run(fmt.Sprintf("%d nodes %d shards", n, shards), func(t *testing.T) {
				ms := equal(n)
				ringBefore := ringOwners(t, shards, ms)
				start := settled(t, p, shards, ms)
				t.Logf("start: consistent hashing settled by Plan with %d moves", diff(ringBefore, start))

				joined := append(slices.Clone(ms), shard.Member{ID: "joiner", Addr: "joiner:7000", Weight: 1})
				target, moves, err := rebalance.Plan(p, shards, start, joined)
				if err != nil {
					t.Fatal(err)
				}
				if err := check(p, shards, start, joined, target, moves); err != nil {
					t.Fatal(err)
				}
				ideal := float64(shards) / float64(n+1)
				hi, lo := spread(t, p, shards, target, joined)
				ring := diff(ringBefore, ringOwners(t, shards, joined))
				t.Logf("join: plan moved %d (%.3f × ideal %.1f), max %.3f min %.3f × avg; consistent alone moved %d (%.3f ×)",
					len(moves), float64(len(moves))/ideal, ideal, hi, lo, ring, float64(ring)/ideal)
				if float64(len(moves)) > 1.05*ideal {
					t.Errorf("join moved %d shards, more than 1.05 × %.1f", len(moves), ideal)
				}
				if hi > 1.25 || lo < 0.75 {
					t.Errorf("after the join, loads span [%.3f, %.3f] × average, want within [0.75, 1.25]", lo, hi)
				}
				for _, m := range moves {
					if m.To != "joiner" {
						t.Errorf("join moved shard %d from %s to %s: only the joiner should receive", m.Shard, m.From, m.To)
					}
				}

				worstRing := 0.0
				for leave := range ms {
					stayed := slices.Delete(slices.Clone(ms), leave, leave+1)
					target, moves, err := rebalance.Plan(p, shards, start, stayed)
					if err != nil {
						t.Fatal(err)
					}
					if err := check(p, shards, start, stayed, target, moves); err != nil {
						t.Fatal(err)
					}
					owned := countOf(start)[ms[leave].ID]
					if len(moves) != owned {
						t.Errorf("leave of %s moved %d shards, it owned %d", ms[leave].ID, len(moves), owned)
					}
					for _, m := range moves {
						if m.From != ms[leave].ID {
							t.Errorf("leave of %s moved shard %d between stayers %s → %s", ms[leave].ID, m.Shard, m.From, m.To)
						}
					}
					if hi, lo := spread(t, p, shards, target, stayed); hi > 1.25 || lo < 0.75 {
						t.Errorf("after the leave of %s, loads span [%.3f, %.3f] × average", ms[leave].ID, lo, hi)
					}
					ringOwned := countOf(ringBefore)[ms[leave].ID]
					ring := diff(ringBefore, ringOwners(t, shards, stayed))
					worstRing = max(worstRing, float64(ring)/float64(ringOwned))
					if leave == 0 {
						t.Logf("leave of %s: plan moved %d = its shards; consistent alone moved %d for its %d (%.3f ×)",
							ms[leave].ID, len(moves), ring, ringOwned, float64(ring)/float64(ringOwned))
					}
				}
				t.Logf("leave, worst over every leaver: consistent alone moved %.3f × the leaver's shards", worstRing)
			})
		}
	}
}

// Weights set capacity: placing unled shards gives each member close to
// P × weight / total weight, and a weight-0 member owns nothing, even if it
// leads shards now. When the weights change under a running cluster, Plan
// still moves only what the bounds require, so members end anywhere
// within them.
func TestPlanRespectsWeights(t *testing.T) {
	p := rebalance.Policy{}
	const shards = 4096
	tests := []struct {
		name    string
		weights []int
		// fresh: every shard starts unled; otherwise the start is
		// consistent hashing over the same members with equal weights.
		fresh bool
		// wantLo and wantHi bound each member's load over its fair share.
		wantLo, wantHi float64
	}{
		{"one heavy, fresh", []int{1, 1, 2, 1}, true, 0.98, 1.02},
		{"heavy and voter, fresh", []int{2, 1, 1, 0}, true, 0.98, 1.02},
		{"mixed, fresh", []int{1, 2, 3, 4, 0}, true, 0.98, 1.02},
		{"all heavy but one, fresh", []int{4, 4, 4, 1}, true, 0.98, 1.02},
		{"one heavy, reweighted", []int{1, 1, 2, 1}, false, 0.75, 1.25},
		{"heavy and voter, reweighted", []int{2, 1, 1, 0}, false, 0.75, 1.25},
		{"mixed, reweighted", []int{1, 2, 3, 4, 0}, false, 0.75, 1.25},
		{"all heavy but one, reweighted", []int{4, 4, 4, 1}, false, 0.75, 1.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := weighted(tt.weights...)
			current := make([]string, shards)
			if !tt.fresh {
				asEqual := slices.Clone(ms)
				for i := range asEqual {
					asEqual[i].Weight = 1
				}
				current = ringOwners(t, shards, asEqual)
			}
			target, moves, err := rebalance.Plan(p, shards, current, ms)
			if err != nil {
				t.Fatal(err)
			}
			if err := check(p, shards, current, ms, target, moves); err != nil {
				t.Fatal(err)
			}
			count := countOf(target)
			total := 0
			for _, w := range tt.weights {
				total += w
			}
			for _, m := range ms {
				if m.Weight == 0 {
					if count[m.ID] != 0 {
						t.Errorf("%s has weight 0 and owns %d shards", m.ID, count[m.ID])
					}
					continue
				}
				share := float64(count[m.ID]) / (float64(shards) * float64(m.Weight) / float64(total))
				t.Logf("%s weight %d owns %d (%.3f × its share)", m.ID, m.Weight, count[m.ID], share)
				if share < tt.wantLo || share > tt.wantHi {
					t.Errorf("%s owns %.3f × its weighted share, want within [%.2f, %.2f]", m.ID, share, tt.wantLo, tt.wantHi)
				}
			}
		})
	}
}
