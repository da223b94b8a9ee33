// Package scalesim simulates a Tenure cluster of up to thousands of nodes
// and tens of thousands of shards in virtual time, to measure how the
// protocol scales: how long the assignment takes to settle after a join, a
// graceful leave and a crash, what each node and voter sends, and how much
// memory the protocol state takes per shard. It backs `go run ./bench
// scale`.
//
// What is real. Every node runs a lease.Holder and every voter a
// lease.Voter, the deterministic core itself, driven as shard.Node drives
// it: a tick every 10 ms, replies stepped in as they arrive, the
// rebalancer's rules (plan from the node's own view; acquire only shards no
// live node leads; hand off led shards to their target, at most
// MaxConcurrentHandoffs at once, 8× that preparing while draining but
// still MaxConcurrentHandoffs transferring; the plan's next move started
// as soon as a handoff ends; JoinSettle;
// session-expiry news from the voters taking a node out of the plan) and
// the handoff steps of docs/design.md §4 (prepare, transfer, forward the
// outcome, Expect on the target, aborts, retries with backoff). The planner is
// rebalance.Plan with the configured Policy. Message sizes use the real
// encodings: proto/voter/v1 and proto/peer/v1 conversions for RPCs,
// shard.LeadershipMessages for leadership gossip (see wire.go).
//
// What is modelled.
//   - Time is virtual: a heap of events, no goroutine per node, no wall
//     clock. Every process has its own clock running at a rate within ±ρ.
//   - The network delays every message by a uniform LatencyMin–LatencyMax
//     (a LAN: 0.2–1 ms) and loses nothing. A voter answers after its store
//     commit (FsyncDelay) when records changed. CPU time is not modelled:
//     handling a message takes no virtual time.
//   - Voters are dedicated processes outside gossip.
//   - Membership follows memberlist's dissemination (gossip.go): O(log N)
//     rounds of the profile's GossipInterval to reach every node, failure
//     detection by probes and suspicion timeouts, push/pull for stragglers.
//   - Leadership claims reach every peer one latency after the sender's
//     tick, applied at one instant for all (claims.go).
//   - Planning runs in rounds of PlanEvery (50 ms): a node whose inputs
//     changed replans at the next round. Nodes with identical inputs share
//     one Plan call, and a round computes at most PlansPerRound distinct
//     plans: rebalance.Plan costs ~0.6 s at 1000 members and 65536 shards
//     (shard.Assign's consistent-hashing ring dominates), so a burst of
//     differing views would cost the simulation minutes; a node whose view
//     waits keeps its last plan, as a busy real node would (plan.go).
//
// Safety is checked throughout (check.go): never two nodes that lead one
// shard at the same virtual instant, each by its own clock through
// Holder.Leads; one holder per (shard, epoch); epochs increase. A planted
// driver bug (Config.Bug) shows the checker catching a violation.
//
// Settled (phase.go): every shard has a leader, each leader is a member
// that is up and not draining, every member's count is within the
// policy's bounds for the true member set — so rebalance.Plan over those
// members and leaders makes no move, which is confirmed with one Plan call
// — and no handoff is under way, held for Config.Quiet. The settle time
// runs from the event to the last change of leader before that.
//
// A run replays exactly from Config.Seed.
//
//	s, _ := scalesim.New(scalesim.Config{Seed: 1, Nodes: 100})
//	start, _ := s.Start()
//	steady := s.Steady(4 * time.Second)
//	join, _ := s.Join()
//	leave, _ := s.Leave()
//	crash, _ := s.Crash(0.1)
//	violations, _ := s.Violations()
//	mem := s.Memory()       // releases the holders and voters
//	s.FinishGossip(&crash)  // failure detection outlasts the failover
package scalesim
