// Command tenure-demo runs a local Tenure cluster inside one process, on
// loopback, and narrates what it does: the shard assignment, a node crash
// and how long the survivors took to notice, and a graceful leave.
//
//	go run ./cmd/tenure-demo [-nodes 5] [-shards 1024] [-profile local]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/shard"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tenure-demo:", err)
		os.Exit(1)
	}
}

type options struct {
	nodes   int
	shards  int
	profile membership.Profile
	verbose bool
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("tenure-demo", flag.ContinueOnError)
	fs.IntVar(&o.nodes, "nodes", 5, "number of nodes (3..50)")
	fs.IntVar(&o.shards, "shards", 1024, "number of shards P")
	profile := fs.String("profile", "local", "gossip profile: local, lan or wan")
	fs.BoolVar(&o.verbose, "v", false, "log every node's debug output to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	p, err := membership.ParseProfile(*profile)
	if err != nil {
		return o, err
	}
	o.profile = p
	if o.nodes < 3 || o.nodes > 50 {
		return o, fmt.Errorf("-nodes must be in [3, 50], got %d", o.nodes)
	}
	if o.shards < o.nodes || o.shards > shard.MaxShards {
		return o, fmt.Errorf("-shards must be in [%d, %d], got %d", o.nodes, shard.MaxShards, o.shards)
	}
	return o, nil
}

func run(args []string, out io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	logger := slog.New(slog.DiscardHandler)
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	fmt.Fprintf(out, "Starting %d nodes on loopback: %d shards, %s gossip profile.\n", o.nodes, o.shards, o.profile)

	var nodes []*shard.Node
	defer func() {
		for _, n := range nodes {
			n.Stop()
		}
	}()
	for i := 1; i <= o.nodes; i++ {
		id := fmt.Sprintf("node-%d", i)
		var seeds []string
		if len(nodes) > 0 {
			seeds = []string{nodes[0].GossipAddr()}
		}
		n, err := shard.New(shard.Config{
			NodeID:     id,
			Cluster:    "demo",
			Shards:     o.shards,
			GossipAddr: "127.0.0.1:0",
			Seeds:      seeds,
			GRPCAddr:   fmt.Sprintf("127.0.0.1:%d", 7000+i),
			Profile:    o.profile,
			Logger:     logger,
		})
		if err != nil {
			return err
		}
		if err := n.Start(context.Background()); err != nil {
			return err
		}
		nodes = append(nodes, n)
	}
	ids := func(ns []*shard.Node) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.ID())
		}
		return out
	}

	began := time.Now()
	if err := waitAgree(nodes, ids(nodes), time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(out, "All %d nodes agree on the assignment after %v.\n\n", o.nodes, ms(time.Since(began)))
	before := nodes[0].Table()
	printAssignment(out, before, nil)
	printLookups(out, nodes[1])

	// A crash: no goodbye. Survivors learn of it from failure detection.
	victim := nodes[2]
	survivors := slices.Delete(slices.Clone(nodes), 2, 3)
	fmt.Fprintf(out, "\nCrashing %s (stopped without leaving the cluster)...\n", victim.ID())
	began = time.Now()
	victim.Stop()
	nodes = survivors
	if err := waitAgree(nodes, ids(nodes), 2*time.Minute); err != nil {
		return err
	}
	detect := time.Since(began)
	after := nodes[0].Table()
	fmt.Fprintf(out, "Every survivor dropped %s from its table %v after the crash (failure detection, %s profile).\n\n",
		victim.ID(), ms(detect), o.profile)
	printAssignment(out, after, before)
	printMoves(out, before, after, victim.ID())

	// A graceful leave: peers hear it at once, no detection needed.
	leaver := nodes[len(nodes)-1]
	nodes = nodes[:len(nodes)-1]
	fmt.Fprintf(out, "\n%s leaves gracefully...\n", leaver.ID())
	began = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := leaver.Leave(ctx); err != nil {
		return err
	}
	if err := waitAgree(nodes, ids(nodes), time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(out, "Every remaining node dropped %s %v after it announced its departure.\n", leaver.ID(), ms(time.Since(began)))
	fmt.Fprintln(out, "\nLeaders, epochs, failover and handoff arrive with leases; this demo grows with them.")
	return nil
}

// waitAgree waits until every node's table has the same assignment owned by
// exactly want, checking every millisecond.
func waitAgree(nodes []*shard.Node, want []string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !agree(nodes, want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes did not agree on an assignment over %v within %v", want, limit)
		}
		<-tick.C
	}
	return nil
}

func agree(nodes []*shard.Node, want []string) bool {
	first := nodes[0].Table()
	owners := first.DesiredCounts()
	if len(owners) != len(want) {
		return false
	}
	for _, id := range want {
		if owners[id] == 0 {
			return false
		}
	}
	for _, n := range nodes[1:] {
		if !first.SameAssignment(n.Table()) {
			return false
		}
	}
	return true
}

func printAssignment(out io.Writer, t, before *shard.Table) {
	counts := t.DesiredCounts()
	var ids []string
	for id := range counts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "node\tshards\tshare\tchange\t")
	for _, id := range ids {
		change := ""
		if before != nil {
			change = fmt.Sprintf("%+d", counts[id]-before.DesiredCounts()[id])
		}
		fmt.Fprintf(w, "%s\t%d\t%.1f%%\t%s\t\n", id, counts[id], 100*float64(counts[id])/float64(t.Shards()), change)
	}
	w.Flush()
}

func printLookups(out io.Writer, n *shard.Node) {
	fmt.Fprintf(out, "\nLookups on %s (key → shard → owner):\n", n.ID())
	for _, key := range []string{"customer/1001", "customer/1002", "invoice/77", "order/abc"} {
		e := n.LookupString(key)
		fmt.Fprintf(out, "  %-14s → shard %4d → %s (%s)\n", key, e.Shard, e.Desired, e.Addr)
	}
}

func printMoves(out io.Writer, before, after *shard.Table, gone string) {
	moved := 0
	from := map[string]int{}
	b, a := before.Entries(), after.Entries()
	for i := range b {
		if b[i].Desired != a[i].Desired {
			moved++
			from[b[i].Desired]++
		}
	}
	var parts []string
	for id, c := range from {
		parts = append(parts, fmt.Sprintf("%s %d", id, c))
	}
	slices.Sort(parts)
	fmt.Fprintf(out, "%d shards changed owner (ideal: only %s's %d); taken from: %s\n",
		moved, gone, before.DesiredCounts()[gone], strings.Join(parts, ", "))
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
