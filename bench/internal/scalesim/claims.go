package scalesim

import (
	"github.com/tenurehq/tenure/shard"
)

// claimTable is the leadership gossip as the cluster has received it:
// every node's claims, per shard, and the highest-epoch claim (what each
// node's table believes, docs/design.md §5).
//
// Model: a node sends its claim changes to every peer at its next tick
// (shard.Node's flush) as one packet per peer. All copies are counted, but
// they are applied to one shared table at one instant, one message latency
// after the send: peers differ in when they receive a claim by less than a
// millisecond, far below the 50 ms planning round that reads the table.
// The periodic resend of every claim (every 2 s) and push/pull repair
// losses; this network loses nothing, so they are counted and not applied.
type claimTable struct {
	by      [][]claimant // per shard: the nodes that claim it
	version uint64       // bumped on every change
}

type claimant struct {
	node  int32
	epoch uint64
}

func newClaimTable(shards int) claimTable {
	return claimTable{by: make([][]claimant, shards)}
}

// apply merges node's claims, as leaderGossip.merge does for a delta: a
// claim to lead at a higher epoch replaces the node's earlier one; a claim
// to no longer lead removes it if not older.
func (t *claimTable) apply(node int32, cs []shard.LeadershipClaim) {
	for _, c := range cs {
		list := t.by[c.Shard]
		k := -1
		for i, x := range list {
			if x.node == node {
				k = i
				break
			}
		}
		switch {
		case c.Led && k < 0:
			t.by[c.Shard] = append(list, claimant{node: node, epoch: c.Epoch})
		case c.Led && c.Epoch > list[k].epoch:
			list[k].epoch = c.Epoch
		case !c.Led && k >= 0 && list[k].epoch <= c.Epoch:
			t.by[c.Shard] = append(list[:k], list[k+1:]...)
		default:
			continue
		}
		t.version++
	}
}

// best returns the node with the highest-epoch claim on s, or −1.
func (t *claimTable) best(s uint32) int32 {
	best, e := int32(-1), uint64(0)
	for _, x := range t.by[s] {
		if best < 0 || x.epoch > e {
			best, e = x.node, x.epoch
		}
	}
	return best
}

// snapshot is the claim table as the nodes planning in one round read it:
// every shard's believed leader.
type snapshot struct {
	version uint64   // the claim table version it was taken at; 0: none yet
	owner   []int32  // per shard, −1 for unled
	cur     []string // the same as node IDs, the planner's input
	leads   []int    // shards per node
}

func (s *Sim) takeSnapshot() {
	if s.snap.version == s.claims.version+1 {
		return
	}
	p := s.cfg.Shards
	if s.snap.owner == nil {
		s.snap.owner = make([]int32, p)
	}
	// The planner keeps no reference to its input; a fresh slice per
	// version keeps memoised plans consistent all the same.
	s.snap.cur = make([]string, p)
	s.snap.leads = make([]int, len(s.nodes))
	for sh := range p {
		o := s.claims.best(uint32(sh))
		s.snap.owner[sh] = o
		if o >= 0 {
			s.snap.cur[sh] = s.nodes[o].id
			s.snap.leads[o]++
		}
	}
	// Versions start at 1 so that a node that never planned differs.
	s.snap.version = s.claims.version + 1
}
