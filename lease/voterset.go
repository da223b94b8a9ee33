package lease

import (
	"hash/fnv"
	"slices"
)

// VoterSetID fingerprints a cluster's voter set: the FNV-1a hash of its
// voter IDs, sorted, so that the order they are configured in does not
// matter. It is 0, which stands for "not given" and checks nothing, only
// for an empty set.
//
// Every node and voter of a cluster must be configured with the same
// voters: two nodes that count majorities over different sets can each
// win one, and then both lead a shard. Nodes advertise the ID in gossip
// and send it with every voter request, so that a peer or voter configured
// with another set refuses them (docs/design.md §9: a voter set changes only
// through a reconfiguration protocol, never by restarting with a new
// list).
func VoterSetID(ids []string) uint64 {
	if len(ids) == 0 {
		return 0
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	h := fnv.New64a()
	for _, id := range sorted {
		h.Write([]byte(id))
		h.Write([]byte{0})
	}
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}
