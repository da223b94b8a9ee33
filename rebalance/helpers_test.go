package rebalance_test

import (
	"fmt"
	"math/big"
	"testing"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// weighted returns members node-0, node-1, … with the given weights.
func weighted(weights ...int) []shard.Member {
	ms := make([]shard.Member, len(weights))
	for i, w := range weights {
		id := fmt.Sprintf("node-%d", i)
		ms[i] = shard.Member{ID: id, Addr: id + ":7000", Weight: w}
	}
	return ms
}

// equal returns n members of weight 1.
func equal(n int) []shard.Member {
	ws := make([]int, n)
	for i := range ws {
		ws[i] = 1
	}
	return weighted(ws...)
}

// ringOwners is consistent hashing alone: shard.Assign's owner of every
// shard, "" where it names none.
func ringOwners(t testing.TB, shards int, ms []shard.Member) []string {
	t.Helper()
	a, err := shard.Assign(shard.AssignConfig{Shards: shards}, ms)
	if err != nil {
		t.Fatal(err)
	}
	owners := make([]string, shards)
	for s := range owners {
		if m, ok := a.Owner(shard.ID(s)); ok {
			owners[s] = m.ID
		}
	}
	return owners
}

// settled returns a state over ms that satisfies p's bounds: consistent
// hashing, then Plan.
func settled(t testing.TB, p rebalance.Policy, shards int, ms []shard.Member) []string {
	t.Helper()
	target, _, err := rebalance.Plan(p, shards, ringOwners(t, shards, ms), ms)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

func countOf(owners []string) map[string]int {
	c := map[string]int{}
	for _, o := range owners {
		c[o]++
	}
	return c
}

func diff(a, b []string) int {
	n := 0
	for s := range a {
		if a[s] != b[s] {
			n++
		}
	}
	return n
}

// refBound is a member's load range computed straight from the definition
// in Policy's documentation, in exact rational arithmetic. It agrees with
// Bounds when the policy's ratios and their products with P × Weight are
// exact in binary, as in the random cases here (1.25, 0.875, …); Policy
// documents how Bounds rounds the others.
type refBound struct {
	min, max int
	fair     *big.Rat
}

func refBounds(p rebalance.Policy, shards int, ms []shard.Member) map[string]refBound {
	maxOver, minUnder := p.MaxOverAvg, p.MinUnderAvg
	if maxOver == 0 {
		maxOver = rebalance.DefaultMaxOverAvg
	}
	if minUnder == 0 {
		minUnder = rebalance.DefaultMinUnderAvg
	}
	total := int64(0)
	for _, m := range ms {
		total += int64(m.Weight)
	}
	floor := func(r *big.Rat) int { return int(new(big.Int).Div(r.Num(), r.Denom()).Int64()) }
	ceil := func(r *big.Rat) int { return -floor(new(big.Rat).Neg(r)) }
	out := map[string]refBound{}
	for _, m := range ms {
		if m.Weight == 0 {
			out[m.ID] = refBound{fair: new(big.Rat)}
			continue
		}
		fair := big.NewRat(int64(shards)*int64(m.Weight), total)
		over := new(big.Rat).Mul(new(big.Rat).SetFloat64(maxOver), fair)
		under := new(big.Rat).Mul(new(big.Rat).SetFloat64(minUnder), fair)
		out[m.ID] = refBound{
			min:  min(floor(fair), ceil(under)),
			max:  min(shards, max(ceil(fair), floor(over))),
			fair: fair,
		}
	}
	return out
}

// check returns an error unless target and moves are a correct answer of
// Plan for the input: moves are exactly the changed leaders, every leader
// in target is eligible, and (for an uncapped plan) every eligible member
// is within its bounds.
func check(p rebalance.Policy, shards int, current []string, ms []shard.Member, target []string, moves []rebalance.Move) error {
	if len(target) != shards {
		return fmt.Errorf("target has %d entries for %d shards", len(target), shards)
	}
	weight := map[string]int{}
	eligible := 0
	for _, m := range ms {
		weight[m.ID] = m.Weight
		if m.Weight > 0 {
			eligible++
		}
	}
	moved := map[uint32]bool{}
	for i, m := range moves {
		switch {
		case int(m.Shard) >= shards:
			return fmt.Errorf("move %d: shard %d out of range", i, m.Shard)
		case moved[m.Shard]:
			return fmt.Errorf("move %d: shard %d moves twice", i, m.Shard)
		case m.From != current[m.Shard]:
			return fmt.Errorf("move %d: shard %d from %q, but %q leads it", i, m.Shard, m.From, current[m.Shard])
		case m.To == m.From:
			return fmt.Errorf("move %d: shard %d to its own leader %q", i, m.Shard, m.To)
		case target[m.Shard] != m.To:
			return fmt.Errorf("move %d: shard %d to %q, but the target says %q", i, m.Shard, m.To, target[m.Shard])
		}
		moved[m.Shard] = true
	}
	for s, o := range target {
		switch {
		case o == "" && eligible > 0 && p.MaxMoves == 0:
			return fmt.Errorf("shard %d has no target leader", s)
		case o != "" && weight[o] <= 0:
			return fmt.Errorf("shard %d goes to %q, which is not an eligible member", s, o)
		case !moved[uint32(s)] && o != "" && o != current[s]:
			return fmt.Errorf("shard %d changes from %q to %q without a move", s, current[s], o)
		}
	}
	if p.MaxMoves > 0 && len(moves) == p.MaxMoves {
		return nil // capped: the bounds hold only once the rest are done
	}
	if eligible == 0 {
		return nil
	}
	bs, err := rebalance.Bounds(p, shards, ms)
	if err != nil {
		return err
	}
	count := countOf(target)
	for _, b := range bs {
		if count[b.ID] < b.Min || count[b.ID] > b.Max {
			return fmt.Errorf("%s owns %d shards, bounds [%d, %d]", b.ID, count[b.ID], b.Min, b.Max)
		}
	}
	return nil
}
