package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

type failoverResult struct {
	Scenario    string    `json:"scenario"`
	Nodes       int       `json:"nodes"`
	Voters      int       `json:"voters"`
	Shards      int       `json:"shards"`
	Reps        int       `json:"reps"`
	Profile     string    `json:"profile"`
	LeaseMS     float64   `json:"lease_ms"`
	KeepAliveMS float64   `json:"keepalive_ms"`
	P50MS       float64   `json:"p50_ms"`
	P99MS       float64   `json:"p99_ms"`
	MaxMS       float64   `json:"max_ms"`
	MinMS       float64   `json:"min_ms"`
	ShardsMoved int       `json:"shards_failed_over"`
	Violations  int       `json:"violations"`
	RunsMS      []float64 `json:"runs_ms"`
	// SettleMS is the cold start: from starting the nodes until every
	// shard is led by its desired owner. RebalanceMS is, per rep, from the
	// victim's restart until the cluster settled again (every shard it is
	// given back handed over).
	SettleMS    float64   `json:"settle_ms"`
	RebalanceMS []float64 `json:"rebalance_ms"`
	// HeapMaxMB is the largest Go heap (HeapAlloc) of the whole process,
	// every node and the benchmark, sampled every 100 ms.
	HeapMaxMB float64 `json:"heap_max_mb"`
}

// settleLimit is how long the benchmark waits for a cluster of P shards to
// settle: a minute, and a millisecond more per shard above 60,000.
func settleLimit(shards int) time.Duration {
	return time.Minute + time.Duration(max(0, shards-60000))*time.Millisecond
}

func runFailover(args []string, out io.Writer) error {
	fs := flags("failover")
	cf := addClusterFlags(fs)
	reps := fs.Int("reps", 20, "leaders to kill, one after another")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sp, err := cf.spec()
	if err != nil {
		return err
	}
	if *reps < 1 {
		return fmt.Errorf("need -reps ≥ 1, got %d", *reps)
	}
	res, err := measureFailover(sp, *reps, out)
	if err != nil {
		return err
	}
	if sp.asJSON {
		return emit(out, res)
	}
	return nil
}

// measureFailover starts the cluster sp describes, kills reps leaders one
// after another and prints a table and a summary line to out.
func measureFailover(sp clusterSpec, reps int, out io.Writer) (failoverResult, error) {
	fmt.Fprintf(out, "failover: %v; %d kills\n", sp, reps)
	heap := sampleHeap()
	defer heap.stop()
	started := time.Now()
	c, err := sp.start()
	if err != nil {
		return failoverResult{}, err
	}
	defer c.close()
	if !waitQuiet(settleLimit(sp.shards), c.settled) {
		return failoverResult{}, fmt.Errorf("the cluster did not settle within %v: %s", settleLimit(sp.shards), c.unsettled())
	}
	settle := time.Since(started)
	fmt.Fprintf(out, "cold start: every shard led by its desired owner after %v\n", settle.Round(time.Millisecond))
	// Let the start-up burst (every shard acquired at once, tables
	// gossiped, voter stores written) die down: reps measure a cluster in
	// its steady state.
	time.Sleep(2 * sp.ld)

	res := failoverResult{Scenario: "failover", Nodes: sp.nodes, Voters: sp.voters, Shards: sp.shards, Reps: reps,
		Profile: sp.profile.String(), LeaseMS: msOf(sp.ld), KeepAliveMS: msOf(sp.ld / 4), SettleMS: msOf(settle)}
	var runs []time.Duration
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	defer w.Flush() // the reps so far, if one fails
	fmt.Fprintln(w, "rep\tkilled\tshards\tfailover\tviolations\t")
	ids := c.ids()
	for rep := range reps {
		// Kill leaders in turn; voters too (the other two keep a majority).
		victim := ids[rep%len(ids)]
		led := c.node(victim).Leases()
		if len(led) == 0 {
			return res, fmt.Errorf("rep %d: %s leads nothing", rep, victim)
		}
		old := map[uint32]uint64{}
		for s, l := range led {
			old[s] = l.Epoch()
		}
		began := time.Now()
		// The victim stops in the background: a crashed process does not
		// wait for its own shutdown, and failover is timed from now.
		stopped := make(chan struct{})
		n := c.detach(victim)
		go func() { n.Stop(); close(stopped) }()
		violations := 0
		done := waitFor(time.Minute, func() bool {
			now := time.Now()
			leaders := c.leaders(now)
			all := true
			for s := range uint32(sp.shards) {
				if len(leaders[s]) > 1 {
					violations++ // two valid leases at once
				}
				for _, e := range leaders[s] {
					if o, ok := old[s]; ok && e <= o {
						violations++ // a new leader without a higher epoch
					}
				}
				if _, ok := old[s]; ok && len(leaders[s]) == 0 {
					all = false
				}
			}
			return all
		})
		took := time.Since(began)
		<-stopped
		if !done {
			return res, fmt.Errorf("rep %d: %s's shards were not led again within a minute", rep, victim)
		}
		runs = append(runs, took)
		res.ShardsMoved += len(old)
		res.Violations += violations
		fmt.Fprintf(w, "%d\t%s\t%d\t%v\t%d\t\n", rep+1, victim, len(old), took.Round(time.Millisecond), violations)
		if err := c.start(victim); err != nil {
			return res, err
		}
		restarted := time.Now()
		if !waitQuiet(settleLimit(sp.shards), c.settled) {
			return res, fmt.Errorf("rep %d: the cluster did not settle after %s restarted: %s", rep, victim, c.unsettled())
		}
		res.RebalanceMS = append(res.RebalanceMS, msOf(time.Since(restarted)))
		// A restarted voter grants nothing for one lease (its grace
		// period): the next kill waits that out, so that every rep starts
		// from a healthy cluster with three voters able to grant.
		if c.isVoter(victim) {
			time.Sleep(time.Until(restarted.Add(sp.ld + 100*time.Millisecond)))
		}
	}
	w.Flush()
	slices.Sort(runs)
	res.P50MS, res.P99MS = msOf(percentile(runs, 50)), msOf(percentile(runs, 99))
	res.MinMS, res.MaxMS = msOf(runs[0]), msOf(runs[len(runs)-1])
	for _, r := range runs {
		res.RunsMS = append(res.RunsMS, msOf(r))
	}
	res.HeapMaxMB = heap.maxMB()
	fmt.Fprintf(out, "failover p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d kills (%d shards); violations %d; cold start %.0f ms; heap max %.0f MB\n",
		res.P50MS, res.P99MS, res.MaxMS, len(runs), res.ShardsMoved, res.Violations, res.SettleMS, res.HeapMaxMB)
	return res, nil
}
