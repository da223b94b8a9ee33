package rebalance_test

import (
	"fmt"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// One of three nodes leaves: only its shards move, and each goes where the
// ring over the two that stay would put it, while that node is below its
// fair share.
func ExamplePlan() {
	current := []string{
		"a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b", "c",
	}
	members := []shard.Member{
		{ID: "a", Addr: "10.0.0.1:7000", Weight: 1},
		{ID: "b", Addr: "10.0.0.2:7000", Weight: 1},
		// c is draining: it is no longer an active member.
	}
	target, moves, err := rebalance.Plan(rebalance.Policy{}, len(current), current, members)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range moves {
		fmt.Printf("shard %d: %s → %s\n", m.Shard, m.From, m.To)
	}
	fmt.Println(target)
	// Output:
	// shard 2: c → b
	// shard 5: c → a
	// shard 8: c → b
	// shard 11: c → a
	// [a b b a b a a b b a b a]
}
