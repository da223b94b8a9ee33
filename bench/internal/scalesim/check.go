package scalesim

import (
	"fmt"
	"time"
)

// Violation is a broken safety invariant.
type Violation struct {
	At    time.Duration // virtual time
	Rule  string
	Shard uint32
	What  string
}

func (v Violation) String() string {
	return fmt.Sprintf("at %v: %s: shard %d: %s", v.At, v.Rule, v.Shard, v.What)
}

// The rules the checker enforces.
const (
	RuleOneLeader      = "one leader at a time"
	RuleOneHolder      = "one holder per (shard, epoch)"
	RuleEpochsIncrease = "epochs increase"
)

// maxKept bounds the violations kept for the report; all are counted.
const maxKept = 16

// checker verifies, at every virtual instant, that no two nodes consider
// themselves leader of one shard (each by its own clock, through the
// holder's lease rule), that every (shard, epoch) has one holder and that
// each new leadership has a higher epoch than every earlier one.
//
// Checking every shard of every node at every event would cost O(P·N) per
// event. The checker relies instead on a property of the lease rule:
// Holder.Leads can only turn true when the holder takes input (a voter's
// reply, a forwarded transfer); with time alone it only turns false. So the
// driver reports, after each such input, every shard the node leads
// (observe), and the checker keeps the nodes it last saw leading each shard.
// When a node starts leading a shard, every other node registered for it is
// asked again, at this instant, whether it still leads (leads): if so, two
// nodes lead at once. Take any instant where two nodes lead: the one whose
// leadership began later was observed beginning, and at that moment the
// other was leading continuously and registered, so the check caught it.
// A node that stops leading is dropped when its holder reports the loss or
// when a later check finds its lease over.
type checker struct {
	leads func(node int32, shard uint32) (uint64, bool)

	leader     []int32  // per shard: the registered leader, −1 if none
	epoch      []uint64 // its epoch
	top        []uint64 // highest epoch ever led per shard
	topBy      []int32  // the node that led it
	lastLeader []int32  // the last node that led each shard, never reset
	ledBy      []int    // per node: shards registered to it
	led        int      // shards with a registered leader

	lastChange time.Duration // the last time a shard's leader changed
	changes    int           // shards that got a leader other than their last
	violations int
	kept       []Violation
}

func newChecker(shards, nodes int, leads func(int32, uint32) (uint64, bool)) *checker {
	c := &checker{
		leads:      leads,
		leader:     make([]int32, shards),
		epoch:      make([]uint64, shards),
		top:        make([]uint64, shards),
		topBy:      make([]int32, shards),
		lastLeader: make([]int32, shards),
		ledBy:      make([]int, nodes),
	}
	for s := range c.leader {
		c.leader[s], c.topBy[s], c.lastLeader[s] = -1, -1, -1
	}
	return c
}

// grow makes room for node numbers below n.
func (c *checker) grow(n int) {
	for len(c.ledBy) < n {
		c.ledBy = append(c.ledBy, 0)
	}
}

func (c *checker) fail(now time.Duration, rule string, s uint32, format string, args ...any) {
	c.violations++
	if len(c.kept) < maxKept {
		c.kept = append(c.kept, Violation{At: now, Rule: rule, Shard: s, What: fmt.Sprintf(format, args...)})
	}
}

// observe reports that node n leads shard s at epoch e at now (its holder
// says so after an input).
func (c *checker) observe(now time.Duration, n int32, s uint32, e uint64) {
	if c.leader[s] == n && c.epoch[s] == e {
		return
	}
	if o := c.leader[s]; o >= 0 && o != n {
		if oe, ok := c.leads(o, s); ok {
			c.fail(now, RuleOneLeader, s, "node %d leads at epoch %d while node %d leads at epoch %d", n, e, o, oe)
		}
		c.drop(now, o, s)
	}
	switch {
	case e < c.top[s]:
		c.fail(now, RuleEpochsIncrease, s, "node %d leads at epoch %d after node %d led epoch %d", n, e, c.topBy[s], c.top[s])
	case e == c.top[s] && c.topBy[s] != n:
		c.fail(now, RuleOneHolder, s, "nodes %d and %d both led epoch %d", c.topBy[s], n, e)
	}
	if e > c.top[s] {
		c.top[s], c.topBy[s] = e, n
	}
	if c.leader[s] != n {
		c.leader[s] = n
		c.ledBy[n]++
		c.led++
		if c.lastLeader[s] != n {
			c.changes++
			c.lastLeader[s] = n
		}
		c.lastChange = now
	}
	c.epoch[s] = e
}

// drop reports that node n no longer leads shard s.
func (c *checker) drop(now time.Duration, n int32, s uint32) {
	if c.leader[s] != n {
		return
	}
	c.leader[s] = -1
	c.ledBy[n]--
	c.led--
	c.lastChange = now
}
