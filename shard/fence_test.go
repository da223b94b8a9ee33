package shard_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/shard"
)

func TestFenceCheck(t *testing.T) {
	tok := func(s uint32, e uint64) lease.Token { return lease.Token{Shard: s, Epoch: e} }
	tests := []struct {
		name string
		// seen are tokens checked first; each must be accepted.
		seen []lease.Token
		give lease.Token
		// wantStale says the token is refused, and wantHighest is then
		// the refusal's Highest.
		wantStale   bool
		wantHighest uint64
		// wantAfter is Highest(give.Shard) after the check.
		wantAfter uint64
	}{
		{name: "first token of a shard", give: tok(3, 1), wantAfter: 1},
		{name: "accept equal", seen: []lease.Token{tok(3, 5)}, give: tok(3, 5), wantAfter: 5},
		{name: "accept higher", seen: []lease.Token{tok(3, 5)}, give: tok(3, 9), wantAfter: 9},
		{name: "accept higher after equal", seen: []lease.Token{tok(3, 5), tok(3, 5)}, give: tok(3, 6), wantAfter: 6},
		{name: "reject lower", seen: []lease.Token{tok(3, 5)}, give: tok(3, 4), wantStale: true, wantHighest: 5, wantAfter: 5},
		{name: "reject lower after raise", seen: []lease.Token{tok(3, 2), tok(3, 7)}, give: tok(3, 2), wantStale: true, wantHighest: 7, wantAfter: 7},
		{name: "reject zero on fresh shard", give: tok(3, 0), wantStale: true, wantHighest: 0, wantAfter: 0},
		{name: "reject zero on seen shard", seen: []lease.Token{tok(3, 5)}, give: tok(3, 0), wantStale: true, wantHighest: 5, wantAfter: 5},
		{name: "independent shards: lower epoch on another shard", seen: []lease.Token{tok(3, 9)}, give: tok(4, 1), wantAfter: 1},
		{name: "independent shards: other shard's raise does not count", seen: []lease.Token{tok(4, 2), tok(3, 9)}, give: tok(4, 1), wantStale: true, wantHighest: 2, wantAfter: 2},
		{name: "largest shard and epoch", seen: []lease.Token{tok(^uint32(0), ^uint64(0)-1)}, give: tok(^uint32(0), ^uint64(0)), wantAfter: ^uint64(0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f shard.Fence
			for _, s := range tt.seen {
				if err := f.Check(s); err != nil {
					t.Fatalf("setup Check(%v) = %v", s, err)
				}
			}
			err := f.Check(tt.give)
			if !tt.wantStale {
				if err != nil {
					t.Fatalf("Check(%v) = %v, want nil", tt.give, err)
				}
			} else {
				if !errors.Is(err, shard.ErrStaleEpoch) {
					t.Fatalf("Check(%v) = %v, want an error matching ErrStaleEpoch", tt.give, err)
				}
				var se *shard.StaleTokenError
				if !errors.As(err, &se) {
					t.Fatalf("Check(%v) = %T, want *StaleTokenError", tt.give, err)
				}
				want := shard.StaleTokenError{Shard: tt.give.Shard, Epoch: tt.give.Epoch, Highest: tt.wantHighest}
				if *se != want {
					t.Fatalf("Check(%v) = %+v, want %+v", tt.give, *se, want)
				}
				t.Logf("refusal reads: %v", err)
			}
			if got := f.Highest(tt.give.Shard); got != tt.wantAfter {
				t.Fatalf("Highest(%d) = %d, want %d", tt.give.Shard, got, tt.wantAfter)
			}
		})
	}
}

func TestFenceZeroEpochErrorNamesIt(t *testing.T) {
	var f shard.Fence
	err := f.Check(lease.Token{Shard: 8})
	var se *shard.StaleTokenError
	if !errors.As(err, &se) || se.Epoch != 0 {
		t.Fatalf("Check(epoch 0) = %v, want a *StaleTokenError for epoch 0", err)
	}
	if got, want := err.Error(), "shard 8: epoch 0 means never led and is never accepted (highest 0): stale epoch"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if f.Highest(8) != 0 {
		t.Fatalf("a refused zero token raised Highest to %d", f.Highest(8))
	}
}

func TestFenceIsOnlyErrStaleEpoch(t *testing.T) {
	err := error(&shard.StaleTokenError{Shard: 1, Epoch: 1, Highest: 2})
	if errors.Is(err, shard.ErrUnknownShard) {
		t.Fatal("StaleTokenError matches ErrUnknownShard")
	}
	if !errors.Is(err, shard.ErrStaleEpoch) {
		t.Fatal("StaleTokenError does not match ErrStaleEpoch")
	}
}

// TestFenceCheckDoesNotAllocate pins the fast path: accepting a token of a
// shard already seen makes no garbage.
func TestFenceCheckDoesNotAllocate(t *testing.T) {
	var f shard.Fence
	tok := lease.Token{Shard: 100_000, Epoch: 7}
	if err := f.Check(tok); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if f.Check(tok) != nil {
			t.Fatal("equal epoch refused")
		}
		tok.Epoch++
	}); n != 0 {
		t.Fatalf("Check allocated %v times per call", n)
	}
}

// checkOutcome is one Check as a test goroutine saw it.
type checkOutcome struct {
	tok lease.Token
	ok  bool
	// highest is the refusal's Highest.
	highest uint64
	// before is the largest epoch of tok.Shard whose acceptance any
	// goroutine had published before this Check began.
	before uint64
}

// fenceViolations checks a history of concurrent Checks against what a
// fence guarantees, given the fence's final Highest per shard:
//   - the final Highest of a shard is the largest epoch accepted for it;
//   - every refusal names, as Highest, an epoch that was accepted and is
//     above the refused one;
//   - no accepted epoch is below one whose acceptance completed before
//     its Check began.
func fenceViolations(history []checkOutcome, final map[uint32]uint64) []string {
	accepted := map[uint32]map[uint64]bool{}
	maxAccepted := map[uint32]uint64{}
	for _, o := range history {
		if o.ok {
			if accepted[o.tok.Shard] == nil {
				accepted[o.tok.Shard] = map[uint64]bool{}
			}
			accepted[o.tok.Shard][o.tok.Epoch] = true
			maxAccepted[o.tok.Shard] = max(maxAccepted[o.tok.Shard], o.tok.Epoch)
		}
	}
	var bad []string
	for _, o := range history {
		switch {
		case o.ok && o.tok.Epoch < o.before:
			bad = append(bad, fmt.Sprintf("accepted %v after epoch %d was accepted", o.tok, o.before))
		case o.ok:
		case o.tok.Epoch != 0 && o.highest <= o.tok.Epoch:
			bad = append(bad, fmt.Sprintf("refused %v naming highest %d, which is not above it", o.tok, o.highest))
		case o.highest != 0 && !accepted[o.tok.Shard][o.highest]:
			bad = append(bad, fmt.Sprintf("refused %v naming highest %d, which no Check accepted", o.tok, o.highest))
		}
	}
	for _, s := range slices.Sorted(maps.Keys(final)) {
		if final[s] != maxAccepted[s] {
			bad = append(bad, fmt.Sprintf("Highest(%d) = %d, want the largest accepted epoch %d", s, final[s], maxAccepted[s]))
		}
	}
	return bad
}

// TestFenceConcurrent has many goroutines present random epochs for a few
// shards at once, then checks the history with fenceViolations. No lock
// surrounds Check: to order acceptances across goroutines, each goroutine
// publishes an accepted epoch to a per-shard atomic maximum after Check
// returns and reads that maximum before its next Check begins.
func TestFenceConcurrent(t *testing.T) {
	const (
		goroutines = 32
		perG       = 2000
		shards     = 4
	)
	var (
		f         shard.Fence
		published [shards]atomic.Uint64
		clock     atomic.Uint64
		start     = make(chan struct{})
		wg        sync.WaitGroup
		histories = make([][]checkOutcome, goroutines)
		failures  = make(chan error, goroutines)
	)
	for g := range goroutines {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 0x5eed))
			local := make([]checkOutcome, 0, perG)
			<-start
			for range perG {
				// Epochs climb with a shared clock and stragglers lag
				// behind it, as when leadership moves while old leaders
				// still write; now and then a zero token. Acceptances and
				// refusals both abound.
				tok := lease.Token{Shard: uint32(r.IntN(shards)), Epoch: clock.Add(1)/16 + r.Uint64N(8)}
				if r.IntN(100) == 0 {
					tok.Epoch = 0
				}
				o := checkOutcome{tok: tok, before: published[tok.Shard].Load()}
				err := f.Check(tok)
				o.ok = err == nil
				if err != nil {
					var se *shard.StaleTokenError
					if !errors.As(err, &se) || !errors.Is(err, shard.ErrStaleEpoch) {
						failures <- fmt.Errorf("Check(%v) = %w", tok, err)
						return
					}
					o.highest = se.Highest
				} else {
					p := &published[tok.Shard]
					for cur := p.Load(); tok.Epoch > cur && !p.CompareAndSwap(cur, tok.Epoch); cur = p.Load() {
					}
				}
				local = append(local, o)
			}
			histories[g] = local
		})
	}
	close(start)
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Fatal(err)
	}

	var history []checkOutcome
	for _, h := range histories {
		history = append(history, h...)
	}
	final := map[uint32]uint64{}
	for s := range uint32(shards) {
		final[s] = f.Highest(s)
	}
	for _, v := range fenceViolations(history, final) {
		t.Error(v)
	}
	var nAccepted int
	for _, o := range history {
		if o.ok {
			nAccepted++
		}
	}
	t.Logf("%d accepted, %d refused; final %v", nAccepted, len(history)-nAccepted, final)
	if nAccepted < len(history)/20 || nAccepted > len(history)*19/20 {
		t.Fatalf("the workload is lopsided: %d of %d accepted", nAccepted, len(history))
	}
}

// TestFenceViolationsCatchesBrokenFences shows the concurrent test's checker
// failing on the histories a broken fence produces.
func TestFenceViolationsCatchesBrokenFences(t *testing.T) {
	tok := func(e uint64) lease.Token { return lease.Token{Shard: 1, Epoch: e} }
	tests := []struct {
		name    string
		give    []checkOutcome
		final   uint64
		wantBad int
	}{
		{
			name:  "sound history",
			give:  []checkOutcome{{tok: tok(3), ok: true}, {tok: tok(5), ok: true, before: 3}, {tok: tok(4), highest: 5}},
			final: 5,
		},
		{
			name: "lost update: load then store without compare-and-swap",
			// 5 and 3 both pass the check against 2; 3's store lands last.
			give:    []checkOutcome{{tok: tok(2), ok: true}, {tok: tok(5), ok: true}, {tok: tok(3), ok: true}},
			final:   3,
			wantBad: 1,
		},
		{
			name:    "accepted below an earlier acceptance",
			give:    []checkOutcome{{tok: tok(5), ok: true}, {tok: tok(4), ok: true, before: 5}},
			final:   5,
			wantBad: 1,
		},
		{
			name:    "refused naming an epoch nobody presented",
			give:    []checkOutcome{{tok: tok(5), ok: true}, {tok: tok(4), highest: 6}},
			final:   5,
			wantBad: 1,
		},
		{
			name:    "refused an equal epoch",
			give:    []checkOutcome{{tok: tok(5), ok: true}, {tok: tok(5), highest: 5}},
			final:   5,
			wantBad: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := fenceViolations(tt.give, map[uint32]uint64{1: tt.final})
			if len(bad) != tt.wantBad {
				t.Fatalf("fenceViolations = %q, want %d violations", bad, tt.wantBad)
			}
		})
	}
}

// TestFenceMatchesModel replays seeded random token sequences through a
// Fence and through the obvious sequential model, a map of highest epochs,
// and requires identical answers at every step.
func TestFenceMatchesModel(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 0xfe9ce))
		var f shard.Fence
		model := map[uint32]uint64{}
		nShards := 1 + r.IntN(5)
		maxEpoch := 1 + r.Uint64N(20)
		var trace []lease.Token
		for range 300 {
			tok := lease.Token{Shard: uint32(r.IntN(nShards)), Epoch: r.Uint64N(maxEpoch + 1)}
			trace = append(trace, tok)
			hi := model[tok.Shard]
			wantOK := tok.Epoch != 0 && tok.Epoch >= hi
			if wantOK {
				model[tok.Shard] = tok.Epoch
			}
			err := f.Check(tok)
			switch {
			case wantOK && err != nil:
				t.Fatalf("seed %d: Check(%v) = %v, model accepts (highest %d); trace %v", seed, tok, err, hi, trace)
			case !wantOK:
				var se *shard.StaleTokenError
				if !errors.As(err, &se) || *se != (shard.StaleTokenError{Shard: tok.Shard, Epoch: tok.Epoch, Highest: hi}) {
					t.Fatalf("seed %d: Check(%v) = %v, model refuses with highest %d; trace %v", seed, tok, err, hi, trace)
				}
			}
			for s := range uint32(nShards) {
				if got := f.Highest(s); got != model[s] {
					t.Fatalf("seed %d: Highest(%d) = %d, model %d; trace %v", seed, s, got, model[s], trace)
				}
			}
		}
	}
}

func BenchmarkFenceCheckParallel(b *testing.B) {
	var f shard.Fence
	for s := range uint32(64) {
		if err := f.Check(lease.Token{Shard: s, Epoch: 1}); err != nil {
			b.Fatal(err)
		}
	}
	b.RunParallel(func(pb *testing.PB) {
		s := uint32(0)
		for pb.Next() {
			s = (s + 1) % 64
			_ = f.Check(lease.Token{Shard: s, Epoch: 1})
		}
	})
}
