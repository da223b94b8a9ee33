package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/tenurehq/tenure/shard"
)

type handoffResult struct {
	Scenario   string  `json:"scenario"`
	Nodes      int     `json:"nodes"`
	Voters     int     `json:"voters"`
	Shards     int     `json:"shards"`
	Moves      int     `json:"moves"`
	Profile    string  `json:"profile"`
	LeaseMS    float64 `json:"lease_ms"`
	GapP50MS   float64 `json:"gap_p50_ms"`
	GapP99MS   float64 `json:"gap_p99_ms"`
	GapMaxMS   float64 `json:"gap_max_ms"`
	TotalP50MS float64 `json:"handoff_p50_ms"`
	TotalP99MS float64 `json:"handoff_p99_ms"`
	// TableP50MS and TableP99MS: from the target leading to every node's
	// table (what Lookup and the gRPC service answer) naming it.
	TableP50MS float64 `json:"table_p50_ms"`
	TableP99MS float64 `json:"table_p99_ms"`
	Failed     int     `json:"failed"`
	Violations int     `json:"violations"`
	Seed       uint64  `json:"seed"`
	// GapsMS is every move's gap, sorted: the distribution the report plots.
	GapsMS []float64 `json:"gaps_ms"`
}

// runHandoff moves random shards to random other nodes with Node.Transfer,
// one after another, over real loopback gRPC with voters that fsync. The
// gap of a move is from the moment the source's lease ended (its context
// was cancelled, just before the Transfer left) to the moment the target's
// Handler was told it leads: the time nobody works on the shard.
func runHandoff(args []string, out io.Writer) error {
	fs := flags("handoff")
	cf := addClusterFlags(fs)
	nMoves := fs.Int("moves", 200, "shards to move, one after another")
	seed := fs.Uint64("seed", 1, "seed of the choice of shards and targets")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sp, err := cf.spec()
	if err != nil {
		return err
	}
	if *nMoves < 1 {
		return fmt.Errorf("need -moves ≥ 1, got %d", *nMoves)
	}
	res, err := measureHandoff(sp, *nMoves, *seed, out)
	if err != nil {
		return err
	}
	if sp.asJSON {
		return emit(out, res)
	}
	return nil
}

// measureHandoff starts the cluster sp describes, moves nMoves random
// shards (chosen from seed) one after another and prints a table and a
// summary line to out.
func measureHandoff(sp clusterSpec, nMoves int, seed uint64, out io.Writer) (handoffResult, error) {
	fmt.Fprintf(out, "handoff: %v; %d moves\n", sp, nMoves)
	c, err := sp.start()
	if err != nil {
		return handoffResult{}, err
	}
	defer c.close()
	if !waitQuiet(time.Minute, c.balanced) {
		return handoffResult{}, fmt.Errorf("the cluster did not settle within a minute: %s", c.unsettled())
	}
	ids := c.ids()
	// Operator moves only: the planner would otherwise rebalance what the
	// random moves unbalance, adding moves of its own.
	if err := c.node(ids[0]).PauseRebalance(context.Background()); err != nil {
		return handoffResult{}, err
	}
	if !waitFor(10*time.Second, func() bool {
		for _, id := range ids {
			if !c.node(id).RebalancePaused() {
				return false
			}
		}
		return true
	}) {
		return handoffResult{}, fmt.Errorf("rebalancing not paused everywhere within 10s")
	}
	c.rec.ResetGaps()
	rng := rand.New(rand.NewPCG(seed, 0))
	res := handoffResult{Scenario: "handoff", Nodes: sp.nodes, Voters: sp.voters, Shards: sp.shards, Moves: nMoves,
		Profile: sp.profile.String(), LeaseMS: msOf(sp.ld), Seed: seed}
	var totals, tables []time.Duration
	for range nMoves {
		s := uint32(rng.IntN(sp.shards))
		var from string
		var epoch uint64
		for id, e := range c.leaders(time.Now())[s] {
			from, epoch = id, e
		}
		if from == "" {
			res.Failed++
			fmt.Fprintf(out, "shard %d has no leader to move it from\n", s)
			continue
		}
		to := ids[rng.IntN(len(ids))]
		for to == from {
			to = ids[rng.IntN(len(ids))]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		began := time.Now()
		err := c.node(from).Transfer(ctx, s, to)
		cancel()
		if err != nil {
			res.Failed++
			fmt.Fprintf(out, "move of shard %d %s → %s: %v\n", s, from, to, err)
			continue
		}
		if !waitFor(10*time.Second, func() bool {
			l := c.node(to).Leases()[s]
			return l != nil && l.Epoch() > epoch
		}) {
			res.Failed++
			fmt.Fprintf(out, "shard %d: %s does not lead it 10s after the transfer\n", s, to)
			continue
		}
		totals = append(totals, time.Since(began))
		led := time.Now()
		if !waitFor(10*time.Second, func() bool {
			for _, id := range ids {
				if e, _ := c.node(id).Table().Shard(int64(s)); e.Leader != to {
					return false
				}
			}
			return true
		}) {
			res.Failed++
			fmt.Fprintf(out, "shard %d: not every table names %s 10s after it leads\n", s, to)
			continue
		}
		tables = append(tables, time.Since(led))
	}
	gaps := c.rec.Gaps(shard.ReasonHandoff)
	res.Violations = len(c.rec.Violations())
	for _, v := range c.rec.Violations() {
		fmt.Fprintln(out, "VIOLATION:", v)
	}
	if len(totals) == 0 || len(gaps) < len(totals) {
		return res, fmt.Errorf("%d gaps measured for %d moves", len(gaps), len(totals))
	}
	slices.Sort(totals)
	slices.Sort(tables)
	if len(tables) > 0 {
		res.TableP50MS, res.TableP99MS = msOf(percentile(tables, 50)), msOf(percentile(tables, 99))
	}
	res.GapP50MS, res.GapP99MS, res.GapMaxMS = msOf(percentile(gaps, 50)), msOf(percentile(gaps, 99)), msOf(gaps[len(gaps)-1])
	res.TotalP50MS, res.TotalP99MS = msOf(percentile(totals, 50)), msOf(percentile(totals, 99))
	for _, g := range gaps {
		res.GapsMS = append(res.GapsMS, msOf(g))
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "measure\tp50\tp99\tmax\t")
	fmt.Fprintf(w, "gap (source stops → target leads)\t%.2f ms\t%.2f ms\t%.2f ms\t\n", res.GapP50MS, res.GapP99MS, res.GapMaxMS)
	fmt.Fprintf(w, "whole handoff (prepare → target leads)\t%.2f ms\t%.2f ms\t\t\n", res.TotalP50MS, res.TotalP99MS)
	fmt.Fprintf(w, "tables (target leads → every node's table names it)\t%.2f ms\t%.2f ms\t\t\n", res.TableP50MS, res.TableP99MS)
	w.Flush()
	fmt.Fprintf(out, "%d moves, %d failed, %d one-leader violations\n", nMoves, res.Failed, res.Violations)
	return res, nil
}
