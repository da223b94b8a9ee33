package audit

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// logOf builds a log from short rows, numbering them in order.
func logOf(rows ...Attempt) []Attempt {
	for i := range rows {
		rows[i].Seq = uint64(i + 1)
	}
	return rows
}

func fence(shard uint32, epoch uint64, node string, ok bool) Attempt {
	return Attempt{Kind: Fence, Shard: shard, Epoch: epoch, Node: node, Accepted: ok}
}

func charge(shard uint32, epoch uint64, node string, period uint64, ok bool) Attempt {
	return Attempt{Kind: Charge, Shard: shard, Epoch: epoch, Node: node, Period: period, Accepted: ok}
}

// counts are the report's numbers, without the descriptions.
type counts struct {
	Attempts, Accepted, Rejected, Fences, StaleRejected    int
	StaleAccepted, DoubleLeaders, Duplicates, Lost, Shards int
	MaxPeriodSum                                           uint64
	OK                                                     bool
}

func countsOf(r Report) counts {
	return counts{r.Attempts, r.Accepted, r.Rejected, r.Fences, r.StaleRejected,
		r.StaleAccepted, r.DoubleLeaders, r.Duplicates, r.Lost, r.Shards, r.MaxPeriodSum, r.OK}
}

// TestCheck: each rule is caught by the log that breaks it, and a clean
// handoff, a fenced-off zombie and a crash failover break none.
func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		log      []Attempt
		want     counts
		wantText string // in the first violation
	}{
		{
			name: "empty log",
			want: counts{OK: true},
		},
		{
			name: "clean run with a handoff",
			log: logOf(
				fence(1, 3, "n1", true), charge(1, 3, "n1", 1, true), charge(1, 3, "n1", 2, true),
				fence(1, 4, "n2", true), charge(1, 4, "n2", 3, true),
				fence(2, 1, "n2", true), charge(2, 1, "n2", 1, true),
			),
			want: counts{Attempts: 4, Accepted: 4, Fences: 3, Shards: 2, MaxPeriodSum: 4, OK: true},
		},
		{
			name: "stale write rejected is not a violation",
			log: logOf(
				fence(1, 3, "n1", true), charge(1, 3, "n1", 1, true),
				fence(1, 4, "n2", true),
				charge(1, 3, "n1", 2, false), // the zombie, fenced off
				charge(1, 4, "n2", 2, true),
			),
			want: counts{Attempts: 3, Accepted: 2, Rejected: 1, Fences: 2, StaleRejected: 1, Shards: 1, MaxPeriodSum: 2, OK: true},
		},
		{
			name: "stale write accepted",
			log: logOf(
				fence(1, 3, "n1", true), charge(1, 3, "n1", 1, true),
				fence(1, 4, "n2", true),
				charge(1, 3, "n1", 2, true), // the zombie, let through
				charge(1, 4, "n2", 3, true),
			),
			want:     counts{Attempts: 3, Accepted: 3, Fences: 2, StaleAccepted: 1, Shards: 1, MaxPeriodSum: 3},
			wantText: "seq 4: shard 1: charge by n1 at epoch 3 accepted after epoch 4",
		},
		{
			name: "stale fence accepted",
			log: logOf(
				fence(1, 4, "n2", true), fence(1, 3, "n1", true),
			),
			want:     counts{Fences: 2, StaleAccepted: 1},
			wantText: "fence by n1 at epoch 3 accepted after epoch 4",
		},
		{
			name: "double leader",
			log: logOf(
				fence(1, 5, "n1", true), charge(1, 5, "n1", 1, true),
				fence(1, 5, "n2", true), charge(1, 5, "n2", 2, true), charge(1, 5, "n2", 3, true),
			),
			want:     counts{Attempts: 3, Accepted: 3, Fences: 2, DoubleLeaders: 1, Shards: 1, MaxPeriodSum: 3},
			wantText: "shard 1: epoch 5 accepted from n1 and from n2",
		},
		{
			name: "duplicate",
			log: logOf(
				fence(1, 1, "n1", true), charge(1, 1, "n1", 1, true), charge(1, 1, "n1", 2, true),
				fence(1, 2, "n2", true), charge(1, 2, "n2", 2, true),
			),
			want:     counts{Attempts: 3, Accepted: 3, Fences: 2, Duplicates: 1, Shards: 1, MaxPeriodSum: 2},
			wantText: "shard 1: period 2 charged again, by n2 at epoch 2",
		},
		{
			name: "gap",
			log: logOf(
				fence(7, 1, "n1", true), charge(7, 1, "n1", 1, true),
				fence(7, 2, "n2", true), charge(7, 2, "n2", 4, true),
			),
			want:     counts{Attempts: 2, Accepted: 2, Fences: 2, Lost: 2, Shards: 1, MaxPeriodSum: 4},
			wantText: "shard 7: period 2 never charged (periods up to 4 were)",
		},
		{
			name: "a period far ahead is counted, not walked",
			log: logOf(
				fence(1, 1, "n1", true), charge(1, 1, "n1", 1<<50, true),
			),
			want:     counts{Attempts: 1, Accepted: 1, Fences: 1, Lost: 1<<31 - 1, Shards: 1, MaxPeriodSum: 1 << 50},
			wantText: "shard 1: period 1 never charged",
		},
		{
			name: "rejected duplicates and gaps are not violations",
			log: logOf(
				fence(1, 1, "n1", true), charge(1, 1, "n1", 1, true),
				charge(1, 1, "n1", 1, false), charge(1, 1, "n1", 3, false),
			),
			want: counts{Attempts: 3, Accepted: 1, Rejected: 2, Fences: 1, Shards: 1, MaxPeriodSum: 1, OK: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Check(tt.log)
			if countsOf(got) != tt.want {
				t.Errorf("Check =\n%+v\nwant\n%+v", countsOf(got), tt.want)
			}
			switch {
			case tt.wantText == "" && len(got.Violations) > 0:
				t.Errorf("violations %q, want none", got.Violations)
			case tt.wantText != "" && (len(got.Violations) == 0 || !strings.Contains(got.Violations[0], tt.wantText)):
				t.Errorf("violations %q, want the first to say %q", got.Violations, tt.wantText)
			}
		})
	}
}

// TestCheckIsDeterministic: the report depends on the attempts, not on
// the order of the slice nor on map iteration.
func TestCheckIsDeterministic(t *testing.T) {
	log := randomLog(rand.New(rand.NewPCG(1, 2)), 2000)
	want := Check(log)
	if want.OK {
		t.Fatal("the random log broke no rule: it tests nothing")
	}
	for i := range 20 {
		shuffled := slices.Clone(log)
		rand.New(rand.NewPCG(uint64(i), 9)).Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		got := Check(shuffled)
		if countsOf(got) != countsOf(want) || !slices.Equal(got.Violations, want.Violations) {
			t.Fatalf("shuffle %d: %+v, want %+v", i, countsOf(got), countsOf(want))
		}
	}
}

// TestCheckAccounting: on any log, every accepted charge is a period
// charged once, a duplicate, and the missing periods make up the rest.
func TestCheckAccounting(t *testing.T) {
	for seed := range uint64(200) {
		r := Check(randomLog(rand.New(rand.NewPCG(seed, 7)), 300))
		if uint64(r.Accepted) != r.MaxPeriodSum-uint64(r.Lost)+uint64(r.Duplicates) {
			t.Fatalf("seed %d: accepted %d != max_period_sum %d - lost %d + duplicates %d", seed, r.Accepted, r.MaxPeriodSum, r.Lost, r.Duplicates)
		}
		if r.Accepted+r.Rejected != r.Attempts {
			t.Fatalf("seed %d: accepted %d + rejected %d != attempts %d", seed, r.Accepted, r.Rejected, r.Attempts)
		}
		if r.OK != (len(r.Violations) == 0) {
			t.Fatalf("seed %d: OK %v with violations %q", seed, r.OK, r.Violations)
		}
	}
}

// randomLog is a log of n attempts by three nodes on four shards, with
// epochs and periods that go back and forth.
func randomLog(rng *rand.Rand, n int) []Attempt {
	nodes := []string{"n1", "n2", "n3"}
	out := make([]Attempt, n)
	for i := range out {
		a := Attempt{
			Seq: uint64(i + 1), Shard: uint32(rng.IntN(4)), Epoch: uint64(1 + rng.IntN(6)),
			Node: nodes[rng.IntN(3)], Accepted: rng.IntN(4) > 0, Kind: Charge,
		}
		if rng.IntN(5) == 0 {
			a.Kind = Fence
		} else {
			a.Period = uint64(1 + rng.IntN(40))
		}
		out[i] = a
	}
	return out
}
