// Package voterstore is the durable store of one Tenure voter: its boot
// counter and one lease.Record per shard, kept in a bbolt file at
// Dir/voter.db.
//
// The voter's protocol logic (lease.Voter) does no I/O: it returns the
// records a request changed, and the driver around it must make them
// durable before it sends the reply, because the reply promises them. A
// rejection reveals records too, so before sending one the driver waits
// for every earlier save with Barrier. Saves from concurrent requests are
// coalesced into one bbolt transaction and one fsync.
//
// Canonical use by a voter driver:
//
//	st, err := voterstore.Open(voterstore.Options{
//		Dir:     dataDir,
//		Cluster: "prod",
//		VoterID: "v1",
//		Init:    firstStart, // only when the operator formats the voter
//	})
//	if err != nil {
//		return err // ErrNoStore: this voter lost its records and must not vote
//	}
//	defer st.Close()
//	recs, err := st.Records()
//	if err != nil {
//		return err
//	}
//	v, err := lease.NewVoter(lease.VoterConfig{
//		ID:            "v1",
//		LeaseDuration: ld,
//		Boot:          st.Boot(),
//		Restarted:     true, // a new store's voter waits out the grace period too
//	}, recs, now())
//
//	// For every request, with mu serialising the voter:
//	mu.Lock()
//	reply, changed := v.Handle(req, now())
//	err = st.Enqueue(changed) // in the order the voter changed them
//	mu.Unlock()
//	if err == nil {
//		err = st.Barrier(ctx) // durable: changed, and anything an earlier request changed
//	}
//	if err != nil {
//		return err // send nothing: the reply would promise records that may be lost
//	}
//	send(reply)
//
// A driver that calls Handle from one goroutine may use Save instead of
// Enqueue and Barrier; see Save for why ordering matters.
//
// # Initialisation
//
// Open refuses a missing store unless Options.Init is set, and Init refuses
// an existing one. A voter that forgot its records could accept an epoch it
// already granted to another node, so a lost store is never silently
// recreated, and Init never overwrites a store. Re-initialising a voter
// means deleting Dir/voter.db and opening with Init, which is safe only
// after the voter has copied the highest record of every shard from a
// majority of the other voters, or when the whole cluster is re-initialised.
//
// Init writes a marker, Dir/voter.db.created, next to the store, and Init
// refuses a directory whose marker remains while the store is gone
// (ErrReinit): deleting the marker as well, or setting Options.Reinit, is
// the operator's statement that re-initialising is safe. A volume lost
// whole takes its marker with it, so every Init also logs a warning that
// it creates a new voter identity with none of the cluster's records.
//
// A new store's boot counter starts at a random value (see Store.Boot), so
// that a re-initialised store does not reissue the session generations of
// the store it replaces, except with negligible probability. A voter on a
// new store still starts in its grace period, like a restarted one: it
// cannot tell a cluster's first start from a re-initialisation after which
// holders still count on what an earlier process under its ID answered.
//
// # Failures
//
// A file bbolt cannot read, even one on which bbolt panics, makes Open or
// Records fail with ErrCorrupt naming the file: such a voter has lost its
// store. After a commit fails, the store refuses every later save: the voter's
// memory is then ahead of its disk, and the two agree again only if the
// voter stops, and starts again from Open and Records (with the grace
// period that Restarted asks for).
package voterstore
