// Package check watches a running Tenure cluster from outside and judges
// what its leaders report about themselves. It is the referee of the Docker
// chaos suite (e2e/docker), and works against any cluster whose nodes serve
// tenure.v1 and tenured's HTTP /status page.
//
// A Checker follows every node two ways for the whole run: the node's
// tenure.v1 Watch stream (its leader table, change by change) and its
// /status?format=json page, polled every PollInterval (reachability, the
// same table, and the node's own history of acquisitions and of lease
// ends, each with its time and an end with its reason).
// From a node it keeps only the shards that node says it leads itself:
// what a node believes about others is hearsay.
//
//	ck, err := check.New(check.Config{Nodes: nodes, Shards: 64, Bound: 3 * time.Second})
//	if err != nil { ... }
//	ck.Start()
//	defer ck.Stop()
//	ck.Expect(true, "cluster steady") // from now on every shard must stay led
//	ck.Begin("kill -9 n1")
//	ck.Rule(check.EndRule{Faulted: []string{"n1"}, Forbidden: []string{check.ReasonQuorumLost}})
//	... inject the fault, wait for recovery ...
//	ck.End()
//	rep := ck.Report() // violations, and per scenario the longest gap
//
// The checks (Recorder holds the pure logic, fed by the followers):
//
//   - double leaders: no (shard, epoch) is ever claimed by two nodes, from
//     any source (Watch, a /status table, a node's acquisition history);
//   - epoch order: a node never reports a lower epoch for a shard than it
//     reported before, and across nodes each shard's acquisitions, ordered
//     by the leaders' own clocks, have strictly increasing epochs (the nodes
//     of the Docker suite share the host's clock);
//   - availability: while the cluster is expected to be available (the
//     caller says when, with Expect: a voter majority and an eligible node
//     connected), no shard goes without a leader for longer than Bound;
//   - lease ends: each scenario counts the ends of leases by reason, on
//     the nodes its EndRule faults and on the others, and no lease ends
//     for a reason the rule forbids ("lease expired" on a node that kept
//     a voter majority, say). The reasons come from the histories, and
//     from a node's log (LogReleases) for the ends of a node that stopped
//     after its last poll.
//
// A shard is led, as the checker sees it, while a node it can reach says
// it leads it. When a node becomes unreachable (a failed poll), its claims
// end at the last moment it was seen holding them, so a paused or cut-off
// leader counts as gone from its last answer, not from when the checker
// noticed: gaps are over-estimated by up to one PollInterval, never under.
package check
