package rebalance_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// repeat returns a current-leader slice: n shards of each id in turn.
func repeat(n int, ids ...string) []string {
	var out []string
	for _, id := range ids {
		for range n {
			out = append(out, id)
		}
	}
	return out
}

func TestPlanSmallCases(t *testing.T) {
	tests := []struct {
		name    string
		policy  rebalance.Policy
		current []string
		members []shard.Member
		// wantMoves is the number of moves; wantFrom, when set, is the
		// leader every move must come from.
		wantMoves int
		wantFrom  []string
	}{
		{
			name:      "balanced stays put",
			current:   repeat(4, "node-0", "node-1", "node-2"),
			members:   equal(3),
			wantMoves: 0,
		},
		{
			name:      "fresh cluster places every shard",
			current:   make([]string, 12),
			members:   equal(3),
			wantMoves: 12,
			wantFrom:  []string{""},
		},
		{
			name:      "leave moves only the leaver's shards",
			current:   repeat(4, "node-0", "node-1", "node-2"),
			members:   equal(2),
			wantMoves: 4,
			wantFrom:  []string{"node-2"},
		},
		{
			name:      "failed leader and unled shards",
			current:   append(repeat(3, "node-0", "node-1", "gone"), "", "", ""),
			members:   equal(2),
			wantMoves: 6,
			wantFrom:  []string{"gone", ""},
		},
		{
			name:      "join lifts the joiner to its floor",
			current:   repeat(10, "node-0", "node-1", "node-2"),
			members:   equal(4),
			wantMoves: 6, // floor: ⌈0.75 × 30/4⌉ = 6; caps: ⌊1.25 × 7.5⌋ = 9, so 3 more come off anyway
		},
		{
			name:      "join under a tight floor",
			policy:    rebalance.Policy{MinUnderAvg: 1},
			current:   repeat(10, "node-0", "node-1", "node-2"),
			members:   equal(4),
			wantMoves: 7, // ⌊7.5⌋
		},
		{
			name:      "overloaded member sheds only its excess",
			current:   append(repeat(5, "node-0"), repeat(1, "node-1", "node-2")...),
			members:   equal(3),
			wantMoves: 2, // cap ⌊1.25 × 7/3⌋ = 2 < ⌈7/3⌉ = 3, so the cap is 3
			wantFrom:  []string{"node-0"},
		},
		{
			name:      "weight 0 gives up its shards",
			current:   repeat(4, "node-0", "node-1", "node-2"),
			members:   weighted(1, 1, 0),
			wantMoves: 4,
			wantFrom:  []string{"node-2"},
		},
		{
			name:      "no eligible member",
			current:   repeat(2, "node-0", ""),
			members:   weighted(0, 0),
			wantMoves: 0,
		},
		{
			name:      "no members at all",
			current:   repeat(2, "node-0", ""),
			members:   nil,
			wantMoves: 0,
		},
		{
			name:      "more members than shards",
			current:   make([]string, 3),
			members:   equal(5),
			wantMoves: 3,
			wantFrom:  []string{""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shards := len(tt.current)
			target, moves, err := rebalance.Plan(tt.policy, shards, tt.current, tt.members)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("moves %v", moves)
			if err := check(tt.policy, shards, tt.current, tt.members, target, moves); err != nil {
				t.Fatal(err)
			}
			if len(moves) != tt.wantMoves {
				t.Errorf("%d moves, want %d", len(moves), tt.wantMoves)
			}
			for _, m := range moves {
				if tt.wantFrom != nil && !slices.Contains(tt.wantFrom, m.From) {
					t.Errorf("shard %d moves from %q, want only moves from %q", m.Shard, m.From, tt.wantFrom)
				}
			}
			if shards > 12 {
				return // too many for the brute force
			}
			if want := bruteMinMoves(tt.policy, shards, tt.current, tt.members); want >= 0 && len(moves) != want {
				t.Errorf("%d moves, brute force finds %d", len(moves), want)
			}
		})
	}
}

func TestPlanNoEligibleMemberLeavesEveryShardUnled(t *testing.T) {
	target, moves, err := rebalance.Plan(rebalance.Policy{}, 4, []string{"a", "", "b", "a"}, weighted(0))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(target, []string{"", "", "", ""}) || moves != nil {
		t.Fatalf("target %q, moves %v; want every shard unled and no moves", target, moves)
	}
}

func TestPlanRejectsInvalidInput(t *testing.T) {
	dup := equal(3)
	dup[2].ID = "node-0"
	tests := []struct {
		name      string
		policy    rebalance.Policy
		shards    int
		current   []string
		members   []shard.Member
		wantField string
	}{
		{"current too short", rebalance.Policy{}, 4, make([]string, 3), equal(2), "current"},
		{"current too long", rebalance.Policy{}, 2, make([]string, 3), equal(2), "current"},
		{"no shards", rebalance.Policy{}, 0, nil, equal(2), "shards"},
		{"too many shards", rebalance.Policy{}, shard.MaxShards + 1, nil, equal(2), "shards"},
		{"duplicate member", rebalance.Policy{}, 4, make([]string, 4), dup, "members[2].ID"},
		{"empty member ID", rebalance.Policy{}, 4, make([]string, 4), []shard.Member{{ID: "a", Weight: 1}, {Weight: 1}}, "members[1].ID"},
		{"negative weight", rebalance.Policy{}, 4, make([]string, 4), weighted(1, -1), "members[1].Weight"},
		{"huge weight", rebalance.Policy{}, 4, make([]string, 4), weighted(1, rebalance.MaxWeight+1), "members[1].Weight"},
		{"max below average", rebalance.Policy{MaxOverAvg: 0.9}, 4, make([]string, 4), equal(2), "Policy.MaxOverAvg"},
		{"max not a number", rebalance.Policy{MaxOverAvg: math.NaN()}, 4, make([]string, 4), equal(2), "Policy.MaxOverAvg"},
		{"max infinite", rebalance.Policy{MaxOverAvg: math.Inf(1)}, 4, make([]string, 4), equal(2), "Policy.MaxOverAvg"},
		{"min above average", rebalance.Policy{MinUnderAvg: 1.1}, 4, make([]string, 4), equal(2), "Policy.MinUnderAvg"},
		{"min negative", rebalance.Policy{MinUnderAvg: -0.5}, 4, make([]string, 4), equal(2), "Policy.MinUnderAvg"},
		{"negative move cap", rebalance.Policy{MaxMoves: -1}, 4, make([]string, 4), equal(2), "Policy.MaxMoves"},
		{"ring for other shards", rebalance.Policy{Ring: shard.AssignConfig{Shards: 8}}, 4, make([]string, 4), equal(2), "Policy.Ring.Shards"},
		{"ring load below 1", rebalance.Policy{Ring: shard.AssignConfig{Load: 0.5}}, 4, make([]string, 4), equal(2), "Policy.Ring"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := rebalance.Plan(tt.policy, tt.shards, tt.current, tt.members)
			if !errors.Is(err, rebalance.ErrInvalid) {
				t.Fatalf("error %v, want one matching ErrInvalid", err)
			}
			var ie *rebalance.InvalidError
			if !errors.As(err, &ie) || ie.Field != tt.wantField {
				t.Fatalf("error %v names %q, want %q", err, ie.Field, tt.wantField)
			}
			t.Log(err)
		})
	}
}

// largerCase draws an input at realistic sizes: up to 24 members of
// weight 0..4, some of them gone, a few hundred to a few thousand shards.
func largerCase(r *rand.Rand) (rebalance.Policy, int, []string, []shard.Member) {
	n := 1 + r.IntN(24)
	ws := make([]int, n)
	for i := range ws {
		ws[i] = 1
		if r.IntN(4) == 0 {
			ws[i] = r.IntN(5)
		}
	}
	ms := weighted(ws...)
	shards := 1 + r.IntN(3000)
	current := make([]string, shards)
	for s := range current {
		switch k := r.IntN(20); {
		case k == 0:
			current[s] = ""
		case k == 1:
			current[s] = "gone"
		default:
			current[s] = fmt.Sprintf("node-%d", r.IntN(n+1)) // node-n has left
		}
	}
	p := rebalance.Policy{
		MaxOverAvg:  []float64{0, 1, 1.1, 1.25, 2}[r.IntN(5)],
		MinUnderAvg: []float64{0, 0.5, 0.75, 0.9, 1}[r.IntN(5)],
	}
	return p, shards, current, ms
}

// Shuffling the members and calling again give the same plan.
func TestPlanIsDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 99))
	for i := range 50 {
		p, shards, current, ms := largerCase(r)
		target, moves, err := rebalance.Plan(p, shards, current, ms)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			shuffled := slices.Clone(ms)
			r.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
			again, againMoves, err := rebalance.Plan(p, shards, slices.Clone(current), shuffled)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(target, again) || !slices.Equal(moves, againMoves) {
				t.Fatalf("draw %d: the plan changed with member order %v", i, shuffled)
			}
		}
	}
}

// Plan's target is a fixed point: planning again moves nothing.
func TestPlanIsStable(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 3))
	for i := range 200 {
		p, shards, current, ms := largerCase(r)
		target, moves, err := rebalance.Plan(p, shards, current, ms)
		if err != nil {
			t.Fatal(err)
		}
		if err := check(p, shards, current, ms, target, moves); err != nil {
			t.Fatalf("draw %d: %v", i, err)
		}
		again, more, err := rebalance.Plan(p, shards, target, ms)
		if err != nil {
			t.Fatal(err)
		}
		if len(more) != 0 || !slices.Equal(again, target) {
			t.Fatalf("draw %d: planning the target again moves %d more shards: %v", i, len(more), more)
		}
	}
}

// With MaxMoves, each call returns at most that many moves, unled shards
// first, and the calls that follow finish with as many moves in total as
// one uncapped call.
func TestPlanMaxMovesFinishesTheSamePlan(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 8))
	for i := range 100 {
		p, shards, current, ms := largerCase(r)
		_, all, err := rebalance.Plan(p, shards, current, ms)
		if err != nil {
			t.Fatal(err)
		}
		p.MaxMoves = max(1, len(all)/(1+r.IntN(8))) // up to nine calls
		state, total, calls := current, 0, 0
		for {
			target, moves, err := rebalance.Plan(p, shards, state, ms)
			if err != nil {
				t.Fatal(err)
			}
			if err := check(p, shards, state, ms, target, moves); err != nil {
				t.Fatalf("draw %d call %d: %v", i, calls, err)
			}
			if len(moves) > p.MaxMoves {
				t.Fatalf("draw %d: %d moves with MaxMoves %d", i, len(moves), p.MaxMoves)
			}
			for k := 1; k < len(moves); k++ {
				if led(moves[k-1].From, ms) && !led(moves[k].From, ms) {
					t.Fatalf("draw %d: an unled shard's move comes after a rebalancing move: %v", i, moves)
				}
			}
			if len(moves) == 0 {
				break
			}
			state, total, calls = target, total+len(moves), calls+1
		}
		if total != len(all) {
			t.Fatalf("draw %d: capped at %d per call, %d moves in %d calls; uncapped, %d", i, p.MaxMoves, total, calls, len(all))
		}
	}
}

// led reports whether id is an eligible member of ms.
func led(id string, ms []shard.Member) bool {
	return slices.ContainsFunc(ms, func(m shard.Member) bool { return m.ID == id && m.Weight > 0 })
}

func TestPlanDoesNotModifyItsArguments(t *testing.T) {
	current := repeat(5, "node-2", "node-0", "gone", "")
	ms := weighted(3, 1, 1)
	ms[0], ms[2] = ms[2], ms[0]
	keepCurrent, keepMembers := slices.Clone(current), slices.Clone(ms)
	if _, _, err := rebalance.Plan(rebalance.Policy{}, len(current), current, ms); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(current, keepCurrent) || !slices.Equal(ms, keepMembers) {
		t.Fatal("Plan modified its arguments")
	}
}

func BenchmarkPlanLeave(b *testing.B) {
	const shards = 4096
	ms := equal(10)
	start := settled(b, rebalance.Policy{}, shards, ms)
	for b.Loop() {
		if _, _, err := rebalance.Plan(rebalance.Policy{}, shards, start, ms[1:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplan is what a node of a 1000-node cluster with 65536 shards
// pays when it replans: after a change of leader (the same members, the
// common case) and after a member left.
func BenchmarkReplan(b *testing.B) {
	const shards = 65536
	ms := equal(1000)
	start := settled(b, rebalance.Policy{}, shards, ms)
	b.Run("same-members", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := rebalance.Plan(rebalance.Policy{}, shards, start, ms); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("member-left", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			// A different leaver each time, so that no ring is reused.
			rest := slices.Delete(slices.Clone(ms), i%len(ms), i%len(ms)+1)
			if _, _, err := rebalance.Plan(rebalance.Policy{}, shards, start, rest); err != nil {
				b.Fatal(err)
			}
		}
	})
}
