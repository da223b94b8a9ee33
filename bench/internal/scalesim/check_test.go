package scalesim

import (
	"testing"
	"time"
)

// leadsBook is what the checker's question returns in a test: node → shard
// → epoch, for the leases that are still valid.
type leadsBook map[int32]map[uint32]uint64

func (b leadsBook) leads(n int32, s uint32) (uint64, bool) {
	e, ok := b[n][s]
	return e, ok
}

func (b leadsBook) set(n int32, s uint32, e uint64) {
	if b[n] == nil {
		b[n] = map[uint32]uint64{}
	}
	b[n][s] = e
}

func TestCheckerJudgesLeadershipHistories(t *testing.T) {
	type step struct {
		node  int32
		epoch uint64
		// lost: the node's lease on shard 0 is over (by time, or its
		// holder reported it) before this step; the checker learns it
		// only if asked or told.
		lost   []int32
		told   bool // the loss was reported (drop) rather than found
		leader bool // observe the node leading (else only the loss)
	}
	tests := []struct {
		name      string
		steps     []step
		wantRule  string // "" for none
		wantCount int
	}{
		{
			name: "handoff: the old lease ends before the new one starts",
			steps: []step{
				{node: 1, epoch: 1, leader: true},
				{node: 2, epoch: 2, lost: []int32{1}, told: true, leader: true},
			},
		},
		{
			name: "failover: the old lease ran out unreported, the checker finds it over",
			steps: []step{
				{node: 1, epoch: 1, leader: true},
				{node: 2, epoch: 2, lost: []int32{1}, leader: true},
			},
		},
		{
			name: "renewal at a higher epoch by the same node",
			steps: []step{
				{node: 1, epoch: 1, leader: true},
				{node: 1, epoch: 2, leader: true},
			},
		},
		{
			name: "two leaders at once",
			steps: []step{
				{node: 1, epoch: 1, leader: true},
				{node: 2, epoch: 2, leader: true},
			},
			wantRule: RuleOneLeader, wantCount: 1,
		},
		{
			name: "two holders of one epoch, one after the other",
			steps: []step{
				{node: 1, epoch: 3, leader: true},
				{node: 2, epoch: 3, lost: []int32{1}, told: true, leader: true},
			},
			wantRule: RuleOneHolder, wantCount: 1,
		},
		{
			name: "a later leader at a lower epoch",
			steps: []step{
				{node: 1, epoch: 5, leader: true},
				{node: 2, epoch: 4, lost: []int32{1}, told: true, leader: true},
			},
			wantRule: RuleEpochsIncrease, wantCount: 1,
		},
		{
			name: "a node that led, lost and leads again at a higher epoch",
			steps: []step{
				{node: 1, epoch: 1, leader: true},
				{node: 2, epoch: 2, lost: []int32{1}, leader: true},
				{node: 1, epoch: 3, lost: []int32{2}, told: true, leader: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			book := leadsBook{}
			c := newChecker(1, 3, book.leads)
			for k, st := range tt.steps {
				now := time.Duration(k) * time.Second
				for _, n := range st.lost {
					delete(book[n], 0)
					if st.told {
						c.drop(now, n, 0)
					}
				}
				if st.leader {
					book.set(st.node, 0, st.epoch)
					c.observe(now, st.node, 0, st.epoch)
				}
			}
			if c.violations != tt.wantCount {
				t.Fatalf("got %d violations (%v), want %d", c.violations, c.kept, tt.wantCount)
			}
			if tt.wantRule != "" && c.kept[0].Rule != tt.wantRule {
				t.Fatalf("got rule %q, want %q", c.kept[0].Rule, tt.wantRule)
			}
		})
	}
}

func TestCheckerCountsLeadersAndChanges(t *testing.T) {
	book := leadsBook{}
	c := newChecker(4, 2, book.leads)
	for s := range uint32(4) {
		book.set(0, s, 1)
		c.observe(0, 0, s, 1)
	}
	delete(book[0], 3)
	c.drop(time.Second, 0, 3)
	book.set(1, 3, 2)
	c.observe(2*time.Second, 1, 3, 2)
	if c.led != 4 || c.ledBy[0] != 3 || c.ledBy[1] != 1 {
		t.Fatalf("led %d, by node %v; want 4, [3 1]", c.led, c.ledBy)
	}
	if c.changes != 5 || c.lastChange != 2*time.Second {
		t.Fatalf("changes %d at %v; want 5 at 2s", c.changes, c.lastChange)
	}
}
