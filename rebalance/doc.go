// Package rebalance plans which node should lead each shard when members
// join, leave or change weight, moving as few shards as the load bounds
// require.
//
// Consistent hashing alone (shard.Assign) recomputes every shard's owner
// from the member set: on a join or a leave it also moves shards between
// members that stay, and with few shards per member it can move more than
// twice the ideal P/(N+1) on a join. Every move is a handoff, so Plan keeps
// the ring only as a preference and starts from who leads now:
//
//  1. a shard with no leader, or whose leader is no longer an eligible
//     member, goes to its preferred owner on the ring while that member is
//     below its fair share, and otherwise to the member furthest below it;
//  2. members above their cap shed the excess, and members below their
//     floor receive, preferring shards whose ring owner is the receiver;
//  3. nothing else moves.
//
// Plan is a pure function: it starts no goroutines, reads no clock, does no
// I/O and never depends on map iteration order, so every node that sees the
// same leaders and members computes the same plan. The caller executes the
// moves (graceful handoffs, throttled per node) and calls Plan again with
// the leaders it then observes.
//
// Canonical use by a rebalancer loop:
//
//	target, moves, err := rebalance.Plan(policy, cfg.Shards, leaders, active)
//	if err != nil {
//		return err // the input is malformed: errors.Is(err, rebalance.ErrInvalid)
//	}
//	for _, m := range moves {
//		switch {
//		case m.From == self:
//			handoff(m.Shard, m.To) // make before break, also while draining
//		case m.To == self && !alive(m.From):
//			acquire(m.Shard) // unled (From ""), or its leader failed
//		}
//	}
//	publish(target)
package rebalance
