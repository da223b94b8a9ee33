// Package voter serves one Tenure voter over gRPC. It is the driver around
// lease.Voter, the protocol's deterministic state machine: a Server owns the
// voter's clock, its durable store (voterstore) and its voterv1.Voter
// service, and feeds every request to the state machine one at a time.
//
// Canonical use:
//
//	srv, err := voter.Open(voter.Config{
//		ID:            "v1",
//		Cluster:       "prod",
//		Dir:           "/var/lib/tenure/voter",
//		Init:          firstStart, // only when the operator formats the voter
//		LeaseDuration: 10 * time.Second,
//		Logger:        logger,
//	})
//	if err != nil {
//		return err // voterstore.ErrNoStore: this voter lost its records and must not vote
//	}
//	g := grpc.NewServer()
//	srv.Register(g)
//	go g.Serve(lis)
//	...
//	g.GracefulStop() // no call is cut short
//	err = srv.Close()
//
// # Safety
//
// The design's lease argument holds only if the driver keeps four promises.
//
// Persist before reply. A reply promises the records it reports: a node
// counts an accepted grant towards its majority, and a voter that forgot the
// grant after a crash could accept the same epoch from another node. So
// Call queues the records a request changed, in the order the voter changed
// them, while it still holds the lock that serialises the voter, and sends
// the reply only after they are committed and fsynced. Concurrent requests
// share one commit.
//
// Rejections wait too. A rejection carries the voter's record, and a reply
// lists the records that name its sender; either may reveal a record that
// an earlier, concurrent request wrote and whose commit has not finished.
// Every reply therefore waits for every save queued before it, whether or
// not the request itself changed anything.
//
// Grace period after every start. Sessions live only in memory, so a voter
// that restarts from its store has forgotten which holders its records
// still protect. It treats every session as live and grants nothing for one
// LeaseDuration after Open, by which time every forgotten session has
// expired on its clock. A voter whose store Init has just created does the
// same: it cannot tell a cluster's first start from a lost store
// re-initialised, after which holders may still count on what an earlier
// process under its ID answered. Its boot counter, incremented on every
// Open and drawn at random when the store is created, keeps session
// generations from being reused, even by a re-initialised store (see
// voterstore.Store.Boot).
//
// Refusing a lost store. A voter whose store is missing is a new voter that
// may have voted before: Open refuses it unless Config.Init is set, and an
// operator sets Init only after copying the highest record of every shard
// from a majority of the other voters, or when re-initialising the whole
// cluster. Init itself refuses a directory whose marker says a store was
// created there before (voterstore.ErrReinit), and logs a warning whenever
// it creates a store: a new store is a new voter identity. Likewise, after a store failure the voter's memory is ahead of
// its disk: the Server stops answering (codes.Unavailable) until it is
// restarted from its store.
package voter
