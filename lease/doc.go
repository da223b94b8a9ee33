// Package lease is the deterministic core of Tenure's leadership protocol
// (docs/design.md §2): quorum-granted epochs that are both the lease and the
// fencing token.
//
// Voter is one voter's state machine: sessions with never-reused
// generations, one record per shard, and batched keep-alive, grant,
// release and transfer operations. Holder is one node's side: keep-alives
// timed from their send, the votes each epoch has, acquisition with backoff,
// and the lease rule itself (Leads), a pure function of the node's state and
// its own clock.
//
// Neither starts goroutines, reads a clock or does I/O: every call takes the
// current time, and the caller moves messages and persists records. A
// driver runs them (package voter for voters, shard.Node for nodes); package
// leasesim runs them on a simulated network and checks the invariants.
//
//	h, _ := lease.NewHolder(cfg)
//	h.SetDesired(7, true)
//	for each tick or reply:
//		h.Step(reply, now)       // a voter's reply
//		send(h.Tick(now))        // requests due now
//		apply(h.TakeChanges())   // Gained, Renewed, Lost, Transferred
//	epoch, ok := h.Leads(7, now)
//
//	v, _ := lease.NewVoter(vcfg, records, now)
//	reply, dirty := v.Handle(req, now)
//	persist(dirty) // before the reply leaves
//	send(reply)
package lease
