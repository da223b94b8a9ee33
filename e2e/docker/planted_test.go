//go:build e2edocker

package dockere2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/tenurehq/tenure/e2e/docker/check"
)

// plantedBugs breaks fencing twice over: n4 keeps charging with its old
// token for 2 s after a lease ends, and the store accepts every write.
const plantedBugs = `
services:
  n4:
    environment:
      TENURE_UNSAFE_IGNORE_LEASE: "true"
  store:
    command: ["-addr", "0.0.0.0:8090", "-unsafe-no-fence"]
`

// TestChecksCatchPlantedBugs shows that the suite fails when safety is
// broken on purpose. With the bugs of plantedBugs, pausing n4 beyond its
// lease makes it a zombie: when it wakes, deposed, it charges its old
// shards with its old tokens, and the unfenced store takes the charges.
// The checks must report those stale writes (the test passes when they
// do), while Tenure itself — which is not broken — shows no violation.
func TestChecksCatchPlantedBugs(t *testing.T) {
	if storePkg == "" {
		t.Fatal("the planted bugs live in the ledger example (examples/ledger), which this build does not have")
	}
	cl := newCluster(t, clusterOptions{store: true, override: plantedBugs})
	var la ledgerAudit
	la.take(cl, "start-up")

	const name = "pause a zombie leader beyond its lease"
	cl.ck.Begin(name)
	cl.requireLeader("n4")
	cl.pause("n4")
	hold(3 * leaseDuration)
	cl.waitFor("the others to lead every shard", 10*failoverBound, cl.allLed)
	cl.unpause("n4")
	cl.waitFor("the unfenced store to take a stale charge", 30*time.Second, func() (bool, string) {
		a := cl.audit()
		return a.StaleAccepted > 0, fmt.Sprintf("%d stale charges accepted", a.StaleAccepted)
	})
	cl.waitSteady("the cluster to settle", 60*time.Second)
	la.take(cl, name)
	cl.ck.End()

	rep := cl.ck.Report()
	logReport(t, rep)
	t.Logf("ledger store, per scenario:\n%s", la.table())
	if rep.Count(StaleAccepted) == 0 {
		t.Errorf("the checks reported no stale write accepted, with fencing broken on purpose")
	}
	if got := len(scenarioResult(rep, name).Violations); got == 0 {
		t.Errorf("the scenario shows no violation")
	}
	for _, k := range []check.Kind{check.DoubleLeader, check.EpochRegressed, check.Unavailable} {
		if n := rep.Count(k); n > 0 {
			t.Errorf("%d violations of kind %q: Tenure itself is not broken in this test", n, k)
		}
	}
}
