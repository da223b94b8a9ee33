//go:build e2edocker

package dockere2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tenurehq/tenure/e2e/docker/check"
)

// Overload, for the scenarios "under CPU limits": every container of the
// cluster gets a CPU quota, and a burner container keeps the host busy.
//
// The cluster, steady, uses about 0.15 CPU per voter, 0.07 per other node
// and 0.1 for the ledger store (docker stats: some 0.7 of the host's 2
// cores). A quota of 0.5 CPU leaves each container three times what it
// uses, so that the quota throttles only bursts (a start, a storm of
// handoffs, a GC cycle), not the steady work. The burner's 1.5 CPU plus
// the cluster's 0.7 exceed the 2 cores: every node that wakes up finds the
// run queue taken and waits its turn, yet the fair share of each
// container (equal weights) stays above what a node uses, so the cluster
// can work. A burner inside each node's container, sharing its 0.5,
// starved the nodes instead: tried by hand on a shared 2-core host, with
// no fault at all, every node lost leases as expired within seconds and
// gossip marked its peers failed. That tests only that a node without CPU
// loses its leases, which is the design.
const (
	// cpuPeriod is the CFS period of the quotas, in microseconds (Docker's
	// default).
	cpuPeriod = 100_000
	// containerQuota is each container's quota per period: 0.5 CPU.
	containerQuota = cpuPeriod / 2
	// burnerQuota is the burner's quota per period: 1.5 CPU.
	burnerQuota = cpuPeriod * 3 / 2
	// burnerThreads spin in the burner: enough to use all of its quota.
	burnerThreads = 2
)

// unplannedEnds are the reasons for a lease to end that no planned move
// gives: the lease ran out (lease expired), the voters stopped protecting
// it (quorum lost), or a newer process of the node took over
// (superseded). Handoffs, rebalancing, a drain and a shutdown are planned.
var unplannedEnds = []string{check.ReasonLeaseExpired, check.ReasonQuorumLost, check.ReasonSuperseded}

// overload puts every container of the cluster under a CPU quota and
// starts the burner, once it spins; the function it returns stops the
// burner and lifts the quotas. Defer it: it must run however the scenario
// ends, so that later scenarios run as before. The quotas are set with
// --cpu-quota, not --cpus: Docker cannot take a --cpus limit back
// (Engine 20.10: --cpus 0 leaves it in place, and the container keeps it
// in its configuration for its next start), while --cpu-quota -1 lifts a
// quota, for later starts too.
func (cl *cluster) overload() (undo func()) {
	cl.t.Helper()
	ids := cl.containers()
	if _, err := docker(append([]string{"update", "--cpu-period", strconv.Itoa(cpuPeriod), "--cpu-quota", strconv.Itoa(containerQuota)}, ids...)...); err != nil {
		cl.unload(ids)
		cl.t.Fatal(err)
	}
	// The burner reads its standard input until it ends: closing it
	// stops the burner, and so does the end of the docker CLI that holds
	// it (this process dying); -for bounds a burner nothing stops. --rm
	// removes its container.
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "docker", "run", "--rm", "-i", "--name", cl.burnerName(),
		"--label", "tenure.e2e="+suite.run, "--network", "none",
		"--cpu-period", strconv.Itoa(cpuPeriod), "--cpu-quota", strconv.Itoa(burnerQuota),
		"--entrypoint", "/tenure-box", suite.nodeImage, "burn", "-threads", strconv.Itoa(burnerThreads), "-for", "10m")
	cmd.WaitDelay = 5 * time.Second
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		cancel()
		cl.unload(ids)
		cl.t.Fatalf("start the burner: %v", err)
	}
	began := time.Now()
	undo = func() {
		stdin.Close()
		// Wait kills the CLI if the burner has not ended within 30 s.
		stop := time.AfterFunc(30*time.Second, cancel)
		err := cmd.Wait()
		stop.Stop()
		cancel()
		docker("rm", "-f", cl.burnerName()) // gone already, unless the CLI was killed
		cl.unload(ids)
		cl.t.Logf("%s burner stopped (exit: %v) and CPU quotas lifted after %v of overload", time.Now().Format("15:04:05.000"),
			err, time.Since(began).Round(100*time.Millisecond))
	}
	spinning := false
	defer func() {
		if !spinning { // the wait failed: the caller never gets undo
			undo()
		}
	}()
	cl.waitFor("the burner to spin", 30*time.Second, func() (bool, string) {
		s := out.String()
		return strings.Contains(s, "burning"), fmt.Sprintf("burner output %q", s)
	})
	spinning = true
	cl.t.Logf("%s every container limited to %.1f CPU, burner spinning %d threads within %.1f CPU", time.Now().Format("15:04:05.000"),
		float64(containerQuota)/cpuPeriod, burnerThreads, float64(burnerQuota)/cpuPeriod)
	return undo
}

// unload lifts the CPU quota of the containers ids.
func (cl *cluster) unload(ids []string) {
	cl.t.Helper()
	if _, err := docker(append([]string{"update", "--cpu-quota", "-1"}, ids...)...); err != nil {
		cl.t.Error(err)
	}
}

// containers returns the IDs of the cluster's containers, by service.
func (cl *cluster) containers() []string {
	var ids []string
	for _, s := range slices.Sorted(maps.Keys(cl.ids)) {
		ids = append(ids, cl.ids[s])
	}
	return ids
}

// burnerName is the name of the cluster's burner container; it starts
// with the project's name, so that make e2e-clean finds it.
func (cl *cluster) burnerName() string { return cl.project + "-burner" }

// releasesFromLog hands the checker the ends of id's leases that its log
// shows from since on. A node that stops logs its last ends after the
// last poll of its /status could have seen them; the checker counts an
// end seen both ways once.
func (cl *cluster) releasesFromLog(id string, since time.Time) {
	cl.t.Helper()
	out, err := docker("logs", "--since", unixArg(since), cl.ids[id])
	if err != nil {
		cl.t.Fatal(err)
	}
	rels, err := check.LogReleases(out)
	if err != nil {
		cl.t.Errorf("%s's log: %v", id, err)
	}
	cl.ck.Recorder().Releases(id, rels)
	byReason := map[string]int{}
	for _, r := range rels {
		byReason[r.Reason]++
	}
	cl.t.Logf("%s's log shows %d lease ends since %s: %s", id, len(rels), since.Format("15:04:05.000"), check.ByReason(byReason))
}

// syncBuffer is a bytes.Buffer safe for concurrent use: a command writes
// it while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
