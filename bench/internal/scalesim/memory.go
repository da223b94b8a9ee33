package scalesim

import (
	"runtime"

	"github.com/tenurehq/tenure/shard"
)

// Memory is the protocol state of the cluster per shard, measured with
// runtime.MemStats: the live heap after a GC, with and without the state.
type Memory struct {
	Shards int
	// VoterBytes is one voter's state (lease.Voter: records, sessions,
	// index) per shard, averaged over the voters.
	VoterBytes float64
	// HolderBytes is the lease.Holder state of the whole cluster per shard
	// (every shard is led once); holders keep the state of shards they
	// once led or wanted, so it grows with the moves a node has seen.
	HolderBytes float64
	// TableBytes is what one node keeps per shard besides its holder: the
	// leader table it publishes (shard.Table), every peer's leadership
	// claims (map[node]map[shard]epoch, as shard's leadership gossip
	// keeps them) and the planner's input and output ([]string each).
	TableBytes float64
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Memory measures the protocol state per shard. It ends the simulation:
// the holders and voters are released to measure them.
func (s *Sim) Memory() Memory {
	p := s.cfg.Shards
	res := Memory{Shards: p}
	all := heap()
	for _, n := range s.nodes {
		n.h = nil
	}
	noHolders := heap()
	for _, v := range s.voters {
		v.v = nil
	}
	noVoters := heap()
	res.HolderBytes = float64(int64(all)-int64(noHolders)) / float64(p)
	res.VoterBytes = float64(int64(noHolders)-int64(noVoters)) / float64(len(s.voters)) / float64(p)

	leaders := s.leaders()
	before := heap()
	entries := make([]shard.Entry, p)
	claims := make(map[string]map[uint32]uint64)
	for sh, l := range leaders {
		entries[sh] = shard.Entry{Shard: shard.ID(sh), Desired: l, Leader: l}
		if l == "" {
			continue
		}
		n := s.nodes[s.index[l]]
		entries[sh].State, entries[sh].Epoch, entries[sh].Addr = shard.Led, s.chk.epoch[sh], n.addr
		if claims[l] == nil {
			claims[l] = make(map[uint32]uint64)
		}
		claims[l][uint32(sh)] = s.chk.epoch[sh]
	}
	table, err := shard.NewTable(1, entries)
	if err != nil {
		panic("scalesim: " + err.Error())
	}
	cur, target := make([]string, p), make([]string, p)
	copy(cur, leaders)
	copy(target, leaders)
	after := heap()
	runtime.KeepAlive(table)
	runtime.KeepAlive(claims)
	runtime.KeepAlive(cur)
	runtime.KeepAlive(target)
	runtime.KeepAlive(leaders)
	runtime.KeepAlive(s) // the rest of the simulation stays, as it was when "before" was read
	res.TableBytes = float64(int64(after)-int64(before)) / float64(p)
	return res
}

// claimStateBytes is the size of the leadership state a node leading
// shards/members shards sends in a push/pull.
func (s *Sim) claimStateBytes(members int) int {
	members = max(1, members)
	cs := make([]shard.LeadershipClaim, s.cfg.Shards/members)
	for k := range cs {
		cs[k] = shard.LeadershipClaim{Shard: uint32(k * members), Epoch: 3, Led: true}
	}
	return len(shard.LeadershipState(nodeID(members), "10.0.255.255:7000", cs))
}
