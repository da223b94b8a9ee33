package rebalance_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// bruteMinMoves is the fewest leader changes that take current to an
// assignment in which every shard has an eligible leader and every
// eligible member is within its bounds. It enumerates the assignments
// shard by shard, cutting a branch only when it cannot lead to a valid
// assignment (a member over its max, floors that the remaining shards
// cannot fill) or cannot beat the best found so far. -1 means no member is
// eligible.
func bruteMinMoves(p rebalance.Policy, shards int, current []string, ms []shard.Member) int {
	bs := refBounds(p, shards, ms)
	var ids []string
	var lo, hi []int
	for _, m := range ms {
		if m.Weight > 0 {
			ids = append(ids, m.ID)
			lo = append(lo, bs[m.ID].min)
			hi = append(hi, bs[m.ID].max)
		}
	}
	if len(ids) == 0 {
		return -1
	}
	count := make([]int, len(ids))
	best := shards + 1
	var walk func(s, moves int)
	walk = func(s, moves int) {
		if moves >= best {
			return
		}
		short := 0
		for i := range ids {
			short += max(0, lo[i]-count[i])
		}
		if short > shards-s {
			return
		}
		if s == shards {
			best = moves
			return
		}
		// Try the current leader first, so that good answers come early
		// and prune the rest.
		order := make([]int, 0, len(ids))
		for i, id := range ids {
			if id == current[s] {
				order = append([]int{i}, order...)
			} else {
				order = append(order, i)
			}
		}
		for _, i := range order {
			if count[i] == hi[i] {
				continue
			}
			cost := 1
			if ids[i] == current[s] {
				cost = 0
			}
			count[i]++
			walk(s+1, moves+cost)
			count[i]--
		}
	}
	walk(0, 0)
	return best
}

// randomCase draws a small input: up to 4 members with weights 0..3, up to
// 12 shards led by members, by nodes that are gone, or by nobody, and a
// policy whose ratios are exact in binary.
func randomCase(r *rand.Rand) (rebalance.Policy, int, []string, []shard.Member) {
	n := 1 + r.IntN(4)
	ws := make([]int, n)
	for i := range ws {
		ws[i] = r.IntN(4)
		if r.IntN(3) > 0 {
			ws[i] = 1 // mostly equal weights, as in most clusters
		}
	}
	ms := weighted(ws...)
	shards := 1 + r.IntN(12)
	current := make([]string, shards)
	// Skew the current leaders towards one member so that caps bind.
	skew := r.IntN(n)
	for s := range current {
		switch k := r.IntN(10); {
		case k == 0:
			current[s] = ""
		case k == 1:
			current[s] = "gone"
		case k < 5:
			current[s] = ms[skew].ID
		default:
			current[s] = ms[r.IntN(n)].ID
		}
	}
	maxOver := []float64{0, 1, 1.125, 1.25, 1.5, 2}[r.IntN(6)]
	minUnder := []float64{0, 0.25, 0.5, 0.75, 0.875, 1}[r.IntN(6)]
	return rebalance.Policy{MaxOverAvg: maxOver, MinUnderAvg: minUnder}, shards, current, ms
}

// Plan moves exactly as few shards as an exhaustive search says is
// possible, on small inputs.
func TestPlanMovesTheMinimumAgainstBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 2026))
	cases := 3000
	if testing.Short() {
		cases = 300
	}
	for i := range cases {
		p, shards, current, ms := randomCase(r)
		name := fmt.Sprintf("draw %d: policy %+v, %d shards, current %q, members %v", i, p, shards, current, ms)
		target, moves, err := rebalance.Plan(p, shards, current, ms)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := check(p, shards, current, ms, target, moves); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := bruteMinMoves(p, shards, current, ms)
		if want < 0 {
			want = 0
		}
		if len(moves) != want {
			t.Fatalf("%s: Plan moved %d shards, the minimum is %d (moves %v)", name, len(moves), want, moves)
		}
	}
}

func TestBoundsRoundAsDocumented(t *testing.T) {
	tests := []struct {
		name     string
		policy   rebalance.Policy
		shards   int
		weights  []int
		wantMin  []int
		wantMax  []int
		wantFair []float64
	}{
		{"even split", rebalance.Policy{}, 12, []int{1, 1, 1}, []int{3, 3, 3}, []int{5, 5, 5}, []float64{4, 4, 4}},
		{"weights", rebalance.Policy{}, 40, []int{1, 3, 0}, []int{8, 23, 0}, []int{12, 37, 0}, []float64{10, 30, 0}},
		{"small shares loosen to whole shards", rebalance.Policy{}, 5, []int{1, 1, 1}, []int{1, 1, 1}, []int{2, 2, 2}, nil},
		{"more members than shards", rebalance.Policy{}, 2, []int{1, 1, 1, 1}, []int{0, 0, 0, 0}, []int{1, 1, 1, 1}, nil},
		{"decimal ratio as written", rebalance.Policy{MinUnderAvg: 0.9}, 1345, []int{4, 14},
			[]int{269, 942}, []int{373, 1307}, nil},
		{"max capped at P", rebalance.Policy{MaxOverAvg: 1e300}, 10, []int{1, 1}, []int{4, 4}, []int{10, 10}, []float64{5, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs, err := rebalance.Bounds(tt.policy, tt.shards, weighted(tt.weights...))
			if err != nil {
				t.Fatal(err)
			}
			for i, b := range bs {
				if b.Min != tt.wantMin[i] || b.Max != tt.wantMax[i] || tt.wantFair != nil && b.Fair != tt.wantFair[i] {
					t.Errorf("%s: [%d, %d] fair %v, want [%d, %d] fair %v", b.ID, b.Min, b.Max, b.Fair,
						tt.wantMin[i], tt.wantMax[i], tt.wantFair)
				}
			}
		})
	}
}

// The bounds Plan uses are the ones Policy documents.
func TestBoundsMatchTheDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for range 2000 {
		p, _, _, ms := randomCase(r)
		shards := 1 + r.IntN(5000)
		got, err := rebalance.Bounds(p, shards, ms)
		if err != nil {
			t.Fatal(err)
		}
		want := refBounds(p, shards, ms)
		sumMin, sumMax, eligible := 0, 0, false
		for _, b := range got {
			w := want[b.ID]
			f, _ := w.fair.Float64()
			if b.Min != w.min || b.Max != w.max || b.Fair != f {
				t.Fatalf("policy %+v, %d shards, members %v: %s has [%d, %d] fair %v, want [%d, %d] fair %v",
					p, shards, ms, b.ID, b.Min, b.Max, b.Fair, w.min, w.max, f)
			}
			sumMin += b.Min
			sumMax += b.Max
			eligible = eligible || b.Weight > 0
		}
		if eligible && (sumMin > shards || sumMax < shards) {
			t.Fatalf("policy %+v, %d shards, members %v: bounds add up to [%d, %d], which cannot hold %d shards",
				p, shards, ms, sumMin, sumMax, shards)
		}
	}
}

// The brute force and check must be able to fail: a plan that moves one
// shard more than needed, or breaks a bound, is caught.
func TestCheckersCatchABadPlan(t *testing.T) {
	p := rebalance.Policy{}
	ms := equal(3)
	current := []string{"node-0", "node-0", "node-1", "node-1", "node-2", "node-2"}
	if got := bruteMinMoves(p, 6, current, ms); got != 0 {
		t.Fatalf("a balanced state needs %d moves by brute force, want 0", got)
	}
	current[0] = "gone"
	if got := bruteMinMoves(p, 6, current, ms); got != 1 {
		t.Fatalf("one orphan needs %d moves by brute force, want 1", got)
	}
	tests := []struct {
		name   string
		target []string
		moves  []rebalance.Move
	}{
		{"unplaced orphan", []string{"", "node-0", "node-1", "node-1", "node-2", "node-2"}, nil},
		{"unlisted change", []string{"node-0", "node-0", "node-1", "node-0", "node-2", "node-2"},
			[]rebalance.Move{{Shard: 0, From: "gone", To: "node-0"}}},
		{"over the cap", []string{"node-0", "node-0", "node-0", "node-1", "node-2", "node-2"},
			[]rebalance.Move{{Shard: 0, From: "gone", To: "node-0"}, {Shard: 2, From: "node-1", To: "node-0"}}},
		{"wrong from", []string{"node-0", "node-0", "node-1", "node-1", "node-2", "node-2"},
			[]rebalance.Move{{Shard: 0, From: "", To: "node-0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := check(p, 6, current, ms, tt.target, tt.moves); err == nil {
				t.Fatal("check accepted it")
			} else {
				t.Log(err)
			}
		})
	}
}
