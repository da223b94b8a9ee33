package shard

// LeadershipClaim is one entry of the leadership gossip: the sending node
// leads Shard at Epoch or, with Led false, no longer does.
type LeadershipClaim struct {
	Shard uint32
	Epoch uint64
	Led   bool
}

// LeadershipMessages returns the messages a node's leadership gossip sends
// to every peer for claims: the encoding and chunking Node uses for its
// changes and for its periodic resend of everything it leads. It exists so
// that tools can size that traffic (bench's scale simulation); a Node never
// needs it.
func LeadershipMessages(node, addr string, claims []LeadershipClaim) [][]byte {
	return chunkClaims(node, addr, toClaims(claims))
}

// LeadershipState returns the state a node with claims exchanges in a
// gossip push/pull (its LocalState): one message carrying every claim.
func LeadershipState(node, addr string, claims []LeadershipClaim) []byte {
	return encodeClaims(kindFull, node, addr, toClaims(claims))
}

func toClaims(cs []LeadershipClaim) []claim {
	out := make([]claim, len(cs))
	for i, c := range cs {
		out[i] = claim{shard: c.Shard, epoch: c.Epoch, led: c.Led}
	}
	return out
}
