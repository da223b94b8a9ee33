package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/tenurehq/tenure/shard"
)

type rollingResult struct {
	Scenario       string    `json:"scenario"`
	Nodes          int       `json:"nodes"`
	Voters         int       `json:"voters"`
	Shards         int       `json:"shards"`
	Profile        string    `json:"profile"`
	LeaseMS        float64   `json:"lease_ms"`
	CrashFailovers int       `json:"crash_failovers"`
	Expired        int       `json:"expired"`
	QuorumLost     int       `json:"quorum_lost"`
	Violations     int       `json:"violations"`
	HandedOff      int       `json:"handed_off"`
	Released       int       `json:"released_at_leave"`
	DrainMS        []float64 `json:"drain_ms"`
	DrainShards    []int     `json:"drain_shards"`
	WorstGapMS     float64   `json:"worst_gap_ms"`
	GapP99MS       float64   `json:"gap_p99_ms"`
	// The same by kind: handoffs of the draining nodes, and the moves
	// that rebalance each restarted node back.
	DrainGapP50MS   float64   `json:"drain_gap_p50_ms"`
	DrainGapP99MS   float64   `json:"drain_gap_p99_ms"`
	DrainGapMaxMS   float64   `json:"drain_gap_max_ms"`
	BackGapP50MS    float64   `json:"back_gap_p50_ms"`
	BackGapP99MS    float64   `json:"back_gap_p99_ms"`
	BackGapMaxMS    float64   `json:"back_gap_max_ms"`
	TotalS          float64   `json:"total_s"`
	SettleAfterS    []float64 `json:"settle_after_restart_s"`
	FailedDrainsErr []string  `json:"failed_drains,omitempty"`
}

// runRolling restarts every node of a cluster in turn, the way a deploy
// does: drain (hand every shard off), stop, start again, wait until the
// planner has moved its share back. Any lease that ends by running out
// (expiry, quorum lost) instead of by handoff is a crash failover.
func runRolling(args []string, out io.Writer) error {
	fs := flags("rolling")
	cf := addClusterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	sp, err := cf.spec()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "rolling: %v\n", sp)
	c, err := sp.start()
	if err != nil {
		return err
	}
	defer c.close()
	if !waitFor(time.Minute, c.balanced) {
		return fmt.Errorf("the cluster did not settle within a minute: %s", c.unsettled())
	}
	c.rec.ResetGaps()
	res := rollingResult{Scenario: "rolling", Nodes: sp.nodes, Voters: sp.voters, Shards: sp.shards,
		Profile: sp.profile.String(), LeaseMS: msOf(sp.ld)}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "node\tshards\tdrain\tback in\t")
	began := time.Now()
	for _, id := range c.ids() {
		n := c.node(id)
		held := len(n.Leases())
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := n.Drain(ctx)
		cancel()
		took := time.Since(t0)
		c.detach(id)
		if err != nil {
			res.FailedDrainsErr = append(res.FailedDrainsErr, fmt.Sprintf("%s: %v", id, err))
		}
		// A voter restarts from its store; its grace period (one lease)
		// passes before it grants again, which the two others cover.
		if err := c.start(id); err != nil {
			return err
		}
		t1 := time.Now()
		if !waitFor(2*time.Minute, c.balanced) {
			for _, id := range c.ids() {
				n := c.node(id)
				mv, _ := n.Plan()
				fmt.Fprintf(out, "%s: leads %d, %d planned moves %v; members:", id, len(n.Leases()), len(mv), mv[:min(3, len(mv))])
				for _, m := range n.Members() {
					fmt.Fprintf(out, " %s(%s)", m.NodeID, m.State)
				}
				fmt.Fprintln(out)
			}
			return fmt.Errorf("the cluster did not settle after %s came back: %s", id, c.unsettled())
		}
		back := time.Since(t1)
		res.DrainMS = append(res.DrainMS, msOf(took))
		res.DrainShards = append(res.DrainShards, held)
		res.SettleAfterS = append(res.SettleAfterS, back.Seconds())
		fmt.Fprintf(w, "%s\t%d\t%v\t%v\t\n", id, held, took.Round(time.Millisecond), back.Round(10*time.Millisecond))
	}
	w.Flush()
	res.TotalS = time.Since(began).Seconds()
	res.Expired, res.QuorumLost = c.rec.Released(shard.ReasonLeaseExpired), c.rec.Released(shard.ReasonQuorumLost)
	res.CrashFailovers = res.Expired + res.QuorumLost
	res.Violations = len(c.rec.Violations())
	res.Released = c.rec.Released(shard.ReasonShutdown)
	var gaps []time.Duration
	for _, r := range []shard.Reason{shard.ReasonHandoff, shard.ReasonDrain} {
		gaps = append(gaps, c.rec.Gaps(r)...)
		res.HandedOff += c.rec.Released(r)
	}
	slices.Sort(gaps)
	if len(gaps) > 0 {
		res.WorstGapMS, res.GapP99MS = msOf(gaps[len(gaps)-1]), msOf(percentile(gaps, 99))
	}
	if g := c.rec.Gaps(shard.ReasonDrain); len(g) > 0 {
		res.DrainGapP50MS, res.DrainGapP99MS, res.DrainGapMaxMS = msOf(percentile(g, 50)), msOf(percentile(g, 99)), msOf(g[len(g)-1])
	}
	if g := c.rec.Gaps(shard.ReasonHandoff); len(g) > 0 {
		res.BackGapP50MS, res.BackGapP99MS, res.BackGapMaxMS = msOf(percentile(g, 50)), msOf(percentile(g, 99)), msOf(g[len(g)-1])
	}
	fmt.Fprintf(out, "total %.1f s; %d shards handed off (worst gap %.1f ms, p99 %.1f ms), %d released at leave, %d crash failovers, %d violations\n",
		res.TotalS, res.HandedOff, res.WorstGapMS, res.GapP99MS, res.Released, res.CrashFailovers, res.Violations)
	fmt.Fprintf(out, "gaps: draining p50 %.1f ms, p99 %.1f ms, max %.1f ms; rebalancing back p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
		res.DrainGapP50MS, res.DrainGapP99MS, res.DrainGapMaxMS, res.BackGapP50MS, res.BackGapP99MS, res.BackGapMaxMS)
	for _, e := range res.FailedDrainsErr {
		fmt.Fprintln(out, "drain:", e)
	}
	if sp.asJSON {
		return emit(out, res)
	}
	return nil
}
