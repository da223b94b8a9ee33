package rebalance

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/tenurehq/tenure/shard"
)

// ErrInvalid is matched (errors.Is) by every error Plan, Bounds and
// Policy.Validate return: the arguments are malformed, and the same call
// will fail again. The error is an *InvalidError naming the field.
var ErrInvalid = errors.New("invalid argument")

// InvalidError reports an argument or Policy field that is out of range.
type InvalidError struct {
	// Field names the culprit as the caller wrote it: "Policy.MaxOverAvg",
	// "shards", "current", "members[3].Weight".
	Field string
	// Reason says what is wrong with it, in lower case.
	Reason string
}

func (e *InvalidError) Error() string { return "rebalance: " + e.Field + " " + e.Reason }

// Is makes an *InvalidError match ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// MaxWeight is the largest member weight Plan accepts. Load comparisons
// cross-multiply shard counts (≤ shard.MaxShards) by weights, and this
// bound keeps them exact in int64.
const MaxWeight = 1 << 32

// Policy bounds the load of every member. The zero value is valid and
// means the defaults. Plan copies it and never modifies the caller's value.
//
// A member's fair share is P × Weight / W, where W is the sum of the
// weights of the members that may own shards (Weight > 0). Its bounds are
// whole shard counts:
//
//	Max = max(⌈fair⌉, ⌊MaxOverAvg × P × Weight / W⌋), and at most P
//	Min = min(⌊fair⌋, ⌈MinUnderAvg × P × Weight / W⌉)
//
// ⌈fair⌉ and ⌊fair⌋ are exact. The ratio terms are computed in float64,
// the product first and then the quotient, each correctly rounded, so every
// node computes the same bounds and a decimal ratio behaves as written:
// MinUnderAvg 0.9 with P × Weight = 5380 and W = 18 gives 4842 / 18 = 269,
// although 0.9 itself is not exact in binary.
//
// So the ratio bounds hold exactly whenever whole shards can meet them; a
// small share (below about four shards at the defaults) loosens them to the
// nearest whole shard around the fair share. Since Min ≤ fair ≤ Max for
// every member, the bounds always admit an assignment.
type Policy struct {
	// MaxOverAvg is the most a member may own, as a multiple of its fair
	// share. Lower values balance more tightly and move more shards when
	// members change. Default 1.25; must be ≥ 1.
	MaxOverAvg float64
	// MinUnderAvg is the least a member must own, as a multiple of its fair
	// share. It decides how many shards a joining member receives: Plan
	// lifts it to this floor and no further unless members above their cap
	// must shed more. Higher values fill a new member sooner and move more
	// shards per join. Default 0.75 (a zero value takes the default; use a
	// small positive value for "no floor"); must be in (0, 1].
	MinUnderAvg float64
	// MaxMoves caps the moves one Plan call returns; the rest follow on
	// later calls, after these have happened. 0 means no cap. Per-node
	// concurrency is the caller's throttle, not this one. Default 0;
	// must be ≥ 0.
	MaxMoves int
	// Ring configures the consistent-hashing ring (shard.Assign) that
	// names each shard's preferred owner. Use the same Load and
	// ReplicationFactor as the cluster's desired assignment, so that a
	// shard Plan has to place lands where that assignment puts it whenever
	// the bounds allow. Leave Shards zero (Plan uses its shards argument)
	// or set it to that same value; zero Load and ReplicationFactor take
	// shard's defaults.
	Ring shard.AssignConfig
}

// Default policy values.
const (
	DefaultMaxOverAvg  = 1.25
	DefaultMinUnderAvg = 0.75
)

func (p Policy) withDefaults() Policy {
	if p.MaxOverAvg == 0 {
		p.MaxOverAvg = DefaultMaxOverAvg
	}
	if p.MinUnderAvg == 0 {
		p.MinUnderAvg = DefaultMinUnderAvg
	}
	return p
}

// Validate reports the first field of p (after defaults) that is out of
// range. Whether Ring.Shards matches the shard count is checked by Plan.
func (p Policy) Validate() error {
	p = p.withDefaults()
	switch {
	case math.IsNaN(p.MaxOverAvg) || math.IsInf(p.MaxOverAvg, 0) || p.MaxOverAvg < 1:
		return invalid("Policy.MaxOverAvg", "must be a finite number ≥ 1, got %v", p.MaxOverAvg)
	case math.IsNaN(p.MinUnderAvg) || p.MinUnderAvg <= 0 || p.MinUnderAvg > 1:
		return invalid("Policy.MinUnderAvg", "must be in (0, 1], got %v", p.MinUnderAvg)
	case p.MaxMoves < 0:
		return invalid("Policy.MaxMoves", "must be ≥ 0, got %d", p.MaxMoves)
	case p.Ring.Shards < 0 || p.Ring.Shards > shard.MaxShards:
		return invalid("Policy.Ring.Shards", "must be 0 or in [1, %d], got %d", shard.MaxShards, p.Ring.Shards)
	}
	ring := p.Ring
	if ring.Shards == 0 {
		ring.Shards = 1 // checked against Plan's argument later
	}
	if err := ring.Validate(); err != nil {
		return invalid("Policy.Ring", "is invalid: %v", err)
	}
	return nil
}

// Bound is one member's load range under a Policy.
type Bound struct {
	// ID and Weight are the member's.
	ID     string
	Weight int
	// Fair is the member's fair share, P × Weight / W; 0 for Weight 0.
	Fair float64
	// Min and Max are the fewest and most shards the member may own once
	// Plan's moves are done. Both are 0 for Weight 0.
	Min, Max int
}

// Bounds returns the load range of every member under p (see Policy for
// the rounding), sorted by ID. It validates its arguments as Plan does.
func Bounds(p Policy, shards int, members []shard.Member) ([]Bound, error) {
	p = p.withDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if shards < 1 || shards > shard.MaxShards {
		return nil, invalid("shards", "must be in [1, %d], got %d", shard.MaxShards, shards)
	}
	ss, err := bounds(p, shards, members)
	if err != nil {
		return nil, err
	}
	bs := make([]Bound, len(ss))
	for i, s := range ss {
		bs[i] = s.Bound
	}
	return bs, nil
}

// share is a member's Bound and its fair share rounded up, exactly.
type share struct {
	Bound
	ceil int
}

// bounds is Bounds after p (with defaults) and shards have been checked.
func bounds(p Policy, shards int, members []shard.Member) ([]share, error) {
	order := make([]int, len(members)) // indices into members, by ID
	for i, m := range members {
		switch {
		case m.ID == "":
			return nil, invalid(fmt.Sprintf("members[%d].ID", i), "is empty")
		case m.Weight < 0 || m.Weight > MaxWeight:
			return nil, invalid(fmt.Sprintf("members[%d].Weight", i), "must be in [0, %d], got %d (member %q)",
				MaxWeight, m.Weight, m.ID)
		}
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(members[a].ID, members[b].ID), cmp.Compare(a, b))
	})
	var total int64
	for k, i := range order {
		if k > 0 && members[order[k-1]].ID == members[i].ID {
			return nil, invalid(fmt.Sprintf("members[%d].ID", i), "%q is also members[%d].ID", members[i].ID, order[k-1])
		}
		total += int64(members[i].Weight)
	}
	bs := make([]share, len(order))
	for k, i := range order {
		m := members[i]
		bs[k].Bound = Bound{ID: m.ID, Weight: m.Weight}
		if m.Weight == 0 {
			continue
		}
		// P × Weight ≤ 2^20 × 2^32 is exact in int64 and in float64, and
		// every float below is one correctly rounded operation (no sum of
		// products the compiler could fuse), so all nodes agree on the
		// bounds bit for bit.
		pw := int64(shards) * int64(m.Weight)
		lo, hi := int(pw/total), int((pw+total-1)/total) // ⌊fair⌋, ⌈fair⌉
		bs[k].Fair = float64(pw) / float64(total)
		bs[k].ceil = hi
		if over := p.MaxOverAvg * float64(pw) / float64(total); over >= float64(shards) {
			bs[k].Max = shards
		} else {
			bs[k].Max = max(hi, int(math.Floor(over)))
		}
		under := p.MinUnderAvg * float64(pw) / float64(total)
		bs[k].Min = min(lo, int(math.Ceil(under)))
	}
	return bs, nil
}
