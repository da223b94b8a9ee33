// Package audit checks a ledger store's log of write attempts for what the
// ledger must never do: charge a period twice, skip a period, or let a
// deposed leader write. It is the referee of the ledger example and of the
// chaos tests that run it.
//
// Check is a pure function of the log. It does not share code or state
// with the store's own acceptance rule (package ledgerstore): it
// recomputes, from the order in which the store decided the attempts, what
// a correct store would have allowed, and counts every accepted attempt
// that breaks a rule. A store that fences correctly yields a Report with
// OK true whatever the leaders did; a store that accepts stale epochs
// (ledgerstore's -unsafe-no-fence) yields violations as soon as a deposed
// leader writes.
//
//	rep := audit.Check(log)
//	if !rep.OK { log.Printf("violations: %v", rep.Violations) }
package audit

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Kind is what an attempt asked the store to do.
type Kind string

// The kinds of attempt.
const (
	// Fence raises the shard's fence to the attempt's epoch: a new leader
	// does it first, and learns the next period to charge.
	Fence Kind = "fence"
	// Charge records the charge of one billing period.
	Charge Kind = "charge"
)

// Attempt is one request the store received, accepted or not, in the
// order the store decided them (Seq).
type Attempt struct {
	// Seq is the attempt's position in the store's decision order,
	// from 1. Check sorts by it.
	Seq uint64 `json:"seq"`
	// Time is when the store received the attempt (its own clock).
	Time time.Time `json:"time"`
	Kind Kind      `json:"kind"`
	// Shard, Epoch and Node are the writer's token and identity.
	Shard uint32 `json:"shard"`
	Epoch uint64 `json:"epoch"`
	Node  string `json:"node"`
	// Period is the charged billing period, from 1; 0 for a fence.
	Period uint64 `json:"period,omitempty"`
	// Accepted is the store's decision.
	Accepted bool `json:"accepted"`
	// Reason is the store's word for a refusal ("stale_epoch",
	// "duplicate", "gap"). Informational: Check does not read it.
	Reason string `json:"reason,omitempty"`
}

// Report is what Check finds. Counts of charges and violations; OK is
// true when there is no violation.
type Report struct {
	// Attempts is the number of charge attempts, Accepted the number the
	// store accepted, Rejected the rest.
	Attempts int `json:"attempts"`
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	// Fences is the number of fence attempts (accepted or not).
	Fences int `json:"fences"`
	// StaleRejected counts refused attempts (charges or fences) whose
	// epoch was below one already accepted for their shard: deposed
	// leaders stopped by the fence. Not a violation.
	StaleRejected int `json:"stale_rejected"`

	// StaleAccepted counts accepted attempts whose epoch was below one
	// accepted earlier for the same shard: a deposed leader wrote.
	StaleAccepted int `json:"stale_accepted"`
	// DoubleLeaders counts (shard, epoch) pairs for which the store
	// accepted attempts from more than one node: two leaders held one
	// token.
	DoubleLeaders int `json:"double_leaders"`
	// Duplicates counts acceptances of a period already accepted for the
	// shard: a customer charged twice.
	Duplicates int `json:"duplicates"`
	// Lost counts periods between 1 and the shard's highest accepted
	// period that were never accepted: a customer never charged.
	Lost int `json:"lost"`

	// Shards is the number of shards with an accepted charge, and
	// MaxPeriodSum the sum of their highest accepted periods. Without
	// violations it equals Accepted; in general
	// Accepted = MaxPeriodSum - Lost + Duplicates.
	Shards       int    `json:"shards"`
	MaxPeriodSum uint64 `json:"max_period_sum"`

	// OK is true when StaleAccepted, DoubleLeaders, Duplicates and Lost
	// are all 0.
	OK bool `json:"ok"`
	// Violations describes the first MaxViolations violations found, in
	// log order (then, for lost periods, by shard and period).
	Violations []string `json:"violations"`
}

// MaxViolations bounds Report.Violations.
const MaxViolations = 20

// shardState is what Check knows of one shard at a point of the log.
type shardState struct {
	highest  uint64            // the highest epoch of an accepted attempt
	charged  map[uint64]int    // period → acceptances
	maxDone  uint64            // the highest accepted period
	epochBy  map[uint64]string // epoch → first node accepted at it
	doubled  map[uint64]bool   // epochs already counted as double
	accepted int
}

// Check computes the report of log, which it does not modify. The result
// depends only on the attempts, not on the order of the slice: Check
// reads them by Seq (attempts with equal Seq in slice order).
func Check(log []Attempt) Report {
	bySeq := func(a, b Attempt) int { return cmp.Compare(a.Seq, b.Seq) }
	if !slices.IsSortedFunc(log, bySeq) { // a store's log is sorted: no copy then
		log = slices.Clone(log)
		slices.SortStableFunc(log, bySeq)
	}
	r := Report{Violations: []string{}}
	violate := func(format string, args ...any) {
		if len(r.Violations) < MaxViolations {
			r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
		}
	}
	shards := map[uint32]*shardState{}
	for _, a := range log {
		st := shards[a.Shard]
		if st == nil {
			st = &shardState{charged: map[uint64]int{}, epochBy: map[uint64]string{}, doubled: map[uint64]bool{}}
			shards[a.Shard] = st
		}
		switch a.Kind {
		case Charge:
			r.Attempts++
		case Fence:
			r.Fences++
		}
		if !a.Accepted {
			if a.Kind == Charge {
				r.Rejected++
			}
			if a.Epoch < st.highest {
				r.StaleRejected++
			}
			continue
		}
		if a.Epoch < st.highest {
			r.StaleAccepted++
			violate("seq %d: shard %d: %s by %s at epoch %d accepted after epoch %d", a.Seq, a.Shard, a.Kind, a.Node, a.Epoch, st.highest)
		}
		st.highest = max(st.highest, a.Epoch)
		switch first, seen := st.epochBy[a.Epoch]; {
		case !seen:
			st.epochBy[a.Epoch] = a.Node
		case first != a.Node && !st.doubled[a.Epoch]:
			st.doubled[a.Epoch] = true
			r.DoubleLeaders++
			violate("seq %d: shard %d: epoch %d accepted from %s and from %s", a.Seq, a.Shard, a.Epoch, first, a.Node)
		}
		if a.Kind != Charge {
			continue
		}
		r.Accepted++
		st.accepted++
		if st.charged[a.Period] > 0 {
			r.Duplicates++
			violate("seq %d: shard %d: period %d charged again, by %s at epoch %d", a.Seq, a.Shard, a.Period, a.Node, a.Epoch)
		}
		st.charged[a.Period]++
		st.maxDone = max(st.maxDone, a.Period)
	}
	for _, s := range slices.Sorted(maps.Keys(shards)) {
		st := shards[s]
		if st.accepted == 0 {
			continue
		}
		r.Shards++
		r.MaxPeriodSum += st.maxDone
		// Every charged period is at most maxDone: the missing ones are
		// the rest. Count them without walking the range (a broken store
		// may accept period 10^18), and name the first few.
		present := 0
		for p := range st.charged {
			if p >= 1 {
				present++
			}
		}
		missing := st.maxDone - uint64(present)
		r.Lost += int(min(missing, math.MaxInt32))
		for p, named := uint64(1), uint64(0); named < missing && len(r.Violations) < MaxViolations; p++ {
			if st.charged[p] == 0 {
				named++
				violate("shard %d: period %d never charged (periods up to %d were)", s, p, st.maxDone)
			}
		}
	}
	r.OK = r.StaleAccepted == 0 && r.DoubleLeaders == 0 && r.Duplicates == 0 && r.Lost == 0
	return r
}
