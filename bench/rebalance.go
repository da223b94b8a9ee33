package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

type rebalanceResult struct {
	Scenario  string  `json:"scenario"`
	Nodes     int     `json:"nodes"`
	Shards    int     `json:"shards"`
	PolicyMax float64 `json:"policy_max_over_avg"`
	PolicyMin float64 `json:"policy_min_under_avg"`
	// The starting point is consistent hashing over the N nodes; when that
	// breaks the policy's bounds, Plan settles it first (StartSettleMoves).
	StartMaxOverAvg  float64 `json:"start_max_over_avg"`
	StartMinOverAvg  float64 `json:"start_min_over_avg"`
	StartSettleMoves int     `json:"start_settle_moves"`
	// One join; the ideal is P/(N+1).
	JoinMoved           int     `json:"join_moved"`
	JoinIdeal           float64 `json:"join_ideal"`
	JoinJoinerOwns      int     `json:"join_joiner_owns"`
	JoinBetween         int     `json:"join_moved_between_stayers"`
	ConsistentJoinMoved int     `json:"consistent_join_moved"`
	ConsistentJoinStay  int     `json:"consistent_join_moved_between_stayers"`
	// One leave, tried for every node; the leave with the worst ratio of
	// moved to ideal is reported. The ideal is the leaver's shard count.
	Leaver               string `json:"leaver"`
	LeaveMoved           int    `json:"leave_moved"`
	LeaveIdeal           int    `json:"leave_ideal"`
	LeaveBetween         int    `json:"leave_moved_between_stayers"`
	ConsistentLeaveMoved int    `json:"consistent_leave_moved"`
	ConsistentLeaveStay  int    `json:"consistent_leave_moved_between_stayers"`
	// Worst over the join and every leave, after Plan.
	MaxOverAvg float64 `json:"max_over_avg"`
	MinOverAvg float64 `json:"min_over_avg"`
}

// runRebalance counts the shards that change leader when one node joins
// or one leaves, with rebalance.Plan and with consistent hashing alone
// (shard.Assign recomputed over the new members). It is pure computation:
// no cluster, no network.
func runRebalance(args []string, out io.Writer) error {
	fs := flags("rebalance")
	nodes := fs.Int("nodes", 10, "nodes N before the change")
	shards := fs.Int("shards", 4096, "shards P")
	maxOver := fs.Float64("max-over-avg", rebalance.DefaultMaxOverAvg, "Policy.MaxOverAvg")
	minUnder := fs.Float64("min-under-avg", rebalance.DefaultMinUnderAvg, "Policy.MinUnderAvg")
	asJSON := fs.Bool("json", false, "print a JSON summary as the last line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes < 2 || *shards <= *nodes || *shards > shard.MaxShards {
		return fmt.Errorf("need 2 ≤ nodes < shards ≤ %d", shard.MaxShards)
	}
	pol := rebalance.Policy{MaxOverAvg: *maxOver, MinUnderAvg: *minUnder}
	if err := pol.Validate(); err != nil {
		return err
	}
	ms := make([]shard.Member, *nodes)
	for i := range ms {
		ms[i] = benchMember(i)
	}
	res := rebalanceResult{Scenario: "rebalance", Nodes: *nodes, Shards: *shards,
		PolicyMax: *maxOver, PolicyMin: *minUnder, JoinIdeal: float64(*shards) / float64(*nodes+1)}
	ringStart, err := ringOwners(*shards, ms)
	if err != nil {
		return err
	}
	if res.StartMaxOverAvg, res.StartMinOverAvg, err = spread(pol, *shards, ringStart, ms); err != nil {
		return err
	}
	start, settle, err := rebalance.Plan(pol, *shards, ringStart, ms)
	if err != nil {
		return err
	}
	res.StartSettleMoves = len(settle)

	fmt.Fprintf(out, "rebalance: %d nodes, %d shards, policy max %.2f × avg, min %.2f × avg\n",
		*nodes, *shards, *maxOver, *minUnder)
	fmt.Fprintf(out, "start: consistent hashing, max %.3f × avg, min %.3f × avg; Plan settles it with %d moves\n",
		res.StartMaxOverAvg, res.StartMinOverAvg, res.StartSettleMoves)
	res.MaxOverAvg, res.MinOverAvg = 0, 1e9
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "change\tideal\tplan moved\t× ideal\tbetween stayers\tmax/avg\tmin/avg\tconsistent moved\t× ideal\tbetween stayers\t")
	// measure plans the change from start to the members after, prints a
	// row and returns the plan's target with both movement counts.
	measure := func(change string, after []shard.Member, ideal float64) (target []string, plan, ring moved, err error) {
		target, moves, err := rebalance.Plan(pol, *shards, start, after)
		if err != nil {
			return nil, plan, ring, err
		}
		hi, lo, err := spread(pol, *shards, target, after)
		if err != nil {
			return nil, plan, ring, err
		}
		res.MaxOverAvg, res.MinOverAvg = max(res.MaxOverAvg, hi), min(res.MinOverAvg, lo)
		ringAfter, err := ringOwners(*shards, after)
		if err != nil {
			return nil, plan, ring, err
		}
		plan, ring = changed(start, target, ms, after), changed(ringStart, ringAfter, ms, after)
		if plan.total != len(moves) {
			return nil, plan, ring, fmt.Errorf("%s: the plan lists %d moves but changes %d leaders", change, len(moves), plan.total)
		}
		fmt.Fprintf(w, "%s\t%.1f\t%d\t%.3f\t%d\t%.3f\t%.3f\t%d\t%.3f\t%d\t\n", change, ideal,
			plan.total, float64(plan.total)/ideal, plan.between, hi, lo, ring.total, float64(ring.total)/ideal, ring.between)
		return target, plan, ring, nil
	}

	joiner := benchMember(*nodes)
	target, plan, ring, err := measure("join "+joiner.ID, append(slices.Clone(ms), joiner), res.JoinIdeal)
	if err != nil {
		return err
	}
	res.JoinMoved, res.JoinBetween = plan.total, plan.between
	res.ConsistentJoinMoved, res.ConsistentJoinStay = ring.total, ring.between
	res.JoinJoinerOwns = owns(target, joiner.ID)

	worst := -1.0
	for leave := range ms {
		stayed := slices.Delete(slices.Clone(ms), leave, leave+1)
		ideal := owns(start, ms[leave].ID)
		_, plan, ring, err := measure("leave "+ms[leave].ID, stayed, float64(ideal))
		if err != nil {
			return err
		}
		if r := float64(plan.total) / float64(ideal); r > worst {
			worst = r
			res.Leaver, res.LeaveMoved, res.LeaveIdeal, res.LeaveBetween = ms[leave].ID, plan.total, ideal, plan.between
			res.ConsistentLeaveMoved, res.ConsistentLeaveStay = ring.total, ring.between
		}
	}
	w.Flush()
	fmt.Fprintf(out, "join: plan moved %d (%.3f × ideal %.1f), the joiner owns %d; consistent alone moved %d (%.3f ×)\n",
		res.JoinMoved, float64(res.JoinMoved)/res.JoinIdeal, res.JoinIdeal, res.JoinJoinerOwns,
		res.ConsistentJoinMoved, float64(res.ConsistentJoinMoved)/res.JoinIdeal)
	fmt.Fprintf(out, "worst leave (%s): plan moved %d of its %d shards, %d between stayers; consistent alone moved %d, %d between stayers\n",
		res.Leaver, res.LeaveMoved, res.LeaveIdeal, res.LeaveBetween, res.ConsistentLeaveMoved, res.ConsistentLeaveStay)
	fmt.Fprintf(out, "after Plan, worst over all changes: max %.3f × avg, min %.3f × avg\n", res.MaxOverAvg, res.MinOverAvg)
	if *asJSON {
		return emit(out, res)
	}
	return nil
}

func benchMember(i int) shard.Member {
	id := fmt.Sprintf("node-%d", i+1)
	return shard.Member{ID: id, Addr: id + ":7000", Weight: 1}
}

// ringOwners is consistent hashing alone: shard.Assign's owner of every
// shard.
func ringOwners(shards int, ms []shard.Member) ([]string, error) {
	a, err := shard.Assign(shard.AssignConfig{Shards: shards}, ms)
	if err != nil {
		return nil, err
	}
	owners := make([]string, shards)
	for s := range owners {
		if m, ok := a.Owner(shard.ID(s)); ok {
			owners[s] = m.ID
		}
	}
	return owners, nil
}

func owns(owners []string, id string) int {
	n := 0
	for _, o := range owners {
		if o == id {
			n++
		}
	}
	return n
}

// spread returns the highest and lowest load among ms, each relative to
// the member's fair share.
func spread(pol rebalance.Policy, shards int, owners []string, ms []shard.Member) (hi, lo float64, err error) {
	bs, err := rebalance.Bounds(pol, shards, ms)
	if err != nil {
		return 0, 0, err
	}
	hi, lo = 0, 1e9
	for _, b := range bs {
		if b.Weight > 0 {
			r := float64(owns(owners, b.ID)) / b.Fair
			hi, lo = max(hi, r), min(lo, r)
		}
	}
	return hi, lo, nil
}

// moved counts shards whose leader changed: all of them, and those that
// went between two members present both before and after the change —
// moves that no join or leave requires by itself.
type moved struct{ total, between int }

func changed(before, after []string, was, is []shard.Member) moved {
	in := map[string]int{}
	for _, m := range was {
		in[m.ID]++
	}
	for _, m := range is {
		in[m.ID]++
	}
	var n moved
	for s := range before {
		if before[s] != after[s] {
			n.total++
			if in[before[s]] == 2 && in[after[s]] == 2 {
				n.between++
			}
		}
	}
	return n
}
