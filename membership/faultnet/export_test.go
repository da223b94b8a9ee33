package faultnet

// TrackedConns reports how many connection ends from Listen and Dialer the
// network is tracking, and how many dialing ends it can still match
// accepting ends against. Both drop to zero once every such connection is
// closed or cut.
func (n *Network) TrackedConns() (conns, dialed int) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.conns), len(n.dialedFrom)
}
