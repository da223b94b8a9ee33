// Package shard is Tenure's embedded API: it gives each shard of a
// partitioned service one leader at a time, with a strictly increasing epoch
// that doubles as a fencing token.
//
// A Node joins the cluster through gossip (package membership), computes
// the desired owner of every shard with consistent hashing and bounded
// loads (Assign), holds leases on the shards it should lead through a
// majority of a static set of voters (package lease, over gRPC), tells the
// application through a Handler, and publishes a Table of every shard's
// leader that Lookup reads without locks or allocations.
//
// Canonical use:
//
//	n, err := shard.New(shard.Config{
//		NodeID: "node-1", Shards: 1024,
//		GossipAddr: "10.0.0.1:7946", Seeds: seeds, GRPCAddr: "10.0.0.1:7000",
//		Voters: voters, DataDir: "/var/lib/tenure",
//		Handler: shard.HandlerFuncs{
//			OnAcquired: func(l *shard.Lease) { go work(l.Context(), l.Token) },
//		},
//	})
//	if err != nil { ... }
//	if err := n.Start(ctx); err != nil { ... }
//	defer n.Stop()
//	leader := n.LookupString("customer/1001").Leader
//
// Work for a shard runs under Lease.Context, cancelled when the lease ends,
// and carries Lease.Token; resources check tokens with a Fence (or the SQL
// conditional write shown there) so that a paused former leader cannot
// write after its successor.
package shard
