// Package leasesim runs the lease protocol of package lease on a simulated
// network, from a seed, so that any run replays exactly. A checker runs
// after every event:
//
//   - never two nodes that each consider themselves leader of one shard at
//     the same simulated instant (each judged by its own clock, with
//     Holder.Leads: what the application's lease context follows), except
//     a frozen node next to a newer epoch's leader (below);
//   - never two nodes leading one (shard, epoch);
//   - every lease is protected (docs/design.md §2.5, 3): while a node
//     process leads a shard at an epoch by its own clock, a majority of
//     voters hold a record of the shard naming its NodeID and a generation
//     the voter gave that process, at that epoch or above, not released,
//     and that generation is live there (a running voter judged by its
//     memory, a stopped one by its store, which its grace period re-arms
//     when it starts). It needs no rival: a lease left unprotected is
//     caught whether or not anyone is granted while it lasts;
//   - the epochs of successive leaders of a shard strictly increase;
//   - once faults stop, every shard is led again within a bound;
//   - once faults stop, a planned move (a handoff, a drain) leaves its
//     shard without a leader for less than a lease: less than a crash
//     failover would.
//
// # The world
//
// The network delays, drops, duplicates and reorders messages and
// partitions processes (symmetric and one-way). A two-way partition splits
// the nodes' gossip views as memberlist does: after a random lag each node
// marks the members across the cut down, and after the heal, another lag
// later, up again. A node plans shards only to members it believes up and
// for which a majority of voters report a live session: it reads the
// voters' session notices (Holder.TakeNotices), as shard.Node does, and a
// lost reply loses its notices until the next reply repeats them. So a live
// leader's shard is contested by nodes on the other side of a partition,
// which is what the lease is for.
//
// Nodes crash and restart — one restart in five with an incarnation below
// the previous process's, as after a wall-clock step — drain, and start
// twins: a new process with the same NodeID beside a live one, wanting
// nothing until it settles or the same shards at once; the old process
// runs until a voter tells it it is superseded, or crashes. A node's loop
// falls behind (ticks and deliveries late while its clock runs) and pauses
// for longer than a lease.
//
// Voters persist their records with a write latency, and a reply leaves
// only once every write queued before it is durable, as package voter's
// Server does (Enqueue, then Barrier). A write can fail: the voter stops,
// answering nothing, and later restarts from what its store holds, with a
// new boot counter and its grace period.
//
// Handoffs follow docs/design.md §4: the source asks the target to prepare (the
// target expects the shard and names the lowest epoch it can lead at),
// then transfers; the forward of the outcome is a message too, so every
// step can be dropped, delayed, duplicated or cut off by a crash. Once
// faults stop, the run drains a node and moves shards by plan to measure
// the gaps of planned moves.
//
// # Clocks
//
// Every process reads its own monotonic clock, with its own origin (a new
// one at every start) and a rate within ±ρ (MaxClockDrift). While faults
// last, rates are drawn anew, a node's clock steps forward, and processes
// freeze: a VM freeze, in which the process neither runs nor its clock
// advances. These are the clocks docs/design.md §2.5 argues about, and the checker
// holds them to every invariant, with one exception, forced by what a
// stopped clock is.
//
// A node that froze while it led resumes with its clock where it stopped,
// so by its own clock its lease is still valid, though in real time it ran
// out and another node may lead. No local rule can see that: it is the
// paused leader of docs/design.md §3, and what protects the shard is the fence —
// its epoch is below the new leader's, so a resource that has seen the new
// leader's token rejects its writes. The checker therefore excuses exactly
// that overlap: a node whose lease rests on keep-alives it sent before its
// clock stood still (fewer than a majority confirmed after the freeze),
// and whose clock, had it run through the freezes since, would read past
// the lease's deadline, next to a leader of a higher epoch; and the same
// lease unprotected at the voters. A freeze excuses no more than it
// lasted: a short one does not hide a lease that outlived its protection
// for other reasons. Every other overlap is a
// violation, including one in which the frozen node holds the higher
// epoch, or in which its lease rests on keep-alives sent after it resumed.
// Result.FencedOverlaps counts the excused instants, and Config.Unfenced
// turns the excuse off to show that freezes do produce them. A pause in
// which the clock keeps running (Sim.Pause, a busy loop) needs no excuse:
// the lease ends on time by the node's own clock.
//
// A voter's clock that steps forward, and rates beyond ±ρ, break the
// assumption the lease rests on, and docs/design.md promises nothing then. They
// happen only with Config.BeyondDrift, which checks what still holds: one
// holder per (shard, epoch), which rests on majorities alone, and
// liveness — once faults stop and clocks are back within ±ρ, every shard is
// led again.
//
// # Processes
//
// Node processes are numbered from 0 in the order they start: a restart
// keeps its number, a twin takes the next one. Voters are numbered
// Voter(i), far above, so that a process number a script holds — for Cut,
// Slow, Isolate, Freeze — keeps meaning the same process however many
// twins start.
//
// Canonical use:
//
//	res, err := leasesim.Run(leasesim.Config{Seed: 42})
//	if err != nil { ... } // a *Violation names the seed, time and rule
package leasesim
