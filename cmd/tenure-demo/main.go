// Command tenure-demo runs a local Tenure cluster inside one process, on
// loopback, and narrates what it does: three of the nodes are voters; every
// shard gets one leader with an epoch; a leader is killed and its shards
// fail over at higher epochs; an operator hands one shard to another node
// (make before break: a gap of milliseconds); a node drains, handing every
// shard off gracefully before it stops.
//
//	go run ./cmd/tenure-demo [-nodes 5] [-shards 1024] [-profile local] [-lease 1s]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
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
	lease   time.Duration
	verbose bool
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("tenure-demo", flag.ContinueOnError)
	fs.IntVar(&o.nodes, "nodes", 5, "number of nodes (4..50); the first three are voters")
	fs.IntVar(&o.shards, "shards", 1024, "number of shards P")
	profile := fs.String("profile", "local", "gossip profile: local, lan or wan")
	fs.DurationVar(&o.lease, "lease", time.Second, "lease duration")
	fs.BoolVar(&o.verbose, "v", false, "log every node's output to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	p, err := membership.ParseProfile(*profile)
	if err != nil {
		return o, err
	}
	o.profile = p
	if o.nodes < 4 || o.nodes > 50 {
		return o, fmt.Errorf("-nodes must be in [4, 50], got %d", o.nodes)
	}
	if o.shards < o.nodes || o.shards > shard.MaxShards {
		return o, fmt.Errorf("-shards must be in [%d, %d], got %d", o.nodes, shard.MaxShards, o.shards)
	}
	if o.lease < 100*time.Millisecond {
		return o, fmt.Errorf("-lease must be at least 100ms, got %v", o.lease)
	}
	return o, nil
}

type demo struct {
	o      options
	out    io.Writer
	log    *slog.Logger
	dir    string
	voters []shard.VoterAddr
	grpc   map[string]string // gRPC address per node
	nodes  []*shard.Node
	// rec follows every lease as the application would see it.
	rec *shardtest.Recorder
}

func run(args []string, out io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	d := &demo{o: o, out: out, log: slog.New(slog.DiscardHandler), rec: shardtest.NewRecorder()}
	if o.verbose {
		d.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if d.dir, err = os.MkdirTemp("", "tenure-demo-"); err != nil {
		return err
	}
	defer os.RemoveAll(d.dir)
	defer func() {
		for _, n := range d.nodes {
			n.Stop()
		}
	}()
	return d.story()
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) story() error {
	o := d.o
	d.say("Starting %d nodes on loopback: %d shards, %s gossip, lease %v; node-1..3 are the voters.", o.nodes, o.shards, o.profile, o.lease)
	d.grpc = make(map[string]string)
	for i := 1; i <= o.nodes; i++ {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		id := fmt.Sprintf("node-%d", i)
		d.grpc[id] = addr
		if i <= 3 {
			d.voters = append(d.voters, shard.VoterAddr{ID: id, Addr: addr})
		}
	}
	for i := 1; i <= o.nodes; i++ {
		if err := d.start(fmt.Sprintf("node-%d", i)); err != nil {
			return err
		}
	}
	began := time.Now()
	if err := d.wait(time.Minute, d.settled); err != nil {
		return err
	}
	d.say("Every shard has exactly one leader, its desired owner, after %v.\n", ms(time.Since(began)))
	d.printLeaders()
	d.printLookups(d.nodes[1])

	// A crash: the victim's leases run out at the voters; the desired
	// owners learn it from the voters and take over at higher epochs.
	victim := d.nodes[3]
	old := epochs(victim)
	d.say("\nKilling %s (no goodbye) while it leads %d shards...", victim.ID(), len(old))
	began = time.Now()
	d.nodes = slices.Delete(d.nodes, 3, 4)
	victim.Stop()
	if err := d.wait(time.Minute, func() bool { return d.ledAgain(old) }); err != nil {
		return err
	}
	d.say("All %d of its shards are led again %v after the kill, each at a higher epoch (lease %v).", len(old), ms(time.Since(began)), o.lease)
	d.printEpochChanges(old, 4)

	if err := d.wait(time.Minute, d.settled); err != nil {
		return err
	}

	// A handoff an operator asks for: prepare on the target, one voter
	// round, the target leads at the next epoch.
	from, to := d.nodes[0], d.nodes[1]
	var s uint32
	var e uint64
	for sh, ep := range epochs(from) {
		if ep > e || (ep == e && sh < s) {
			s, e = sh, ep
		}
	}
	d.rec.ResetGaps()
	d.say("\nHanding shard %d (epoch %d) from %s to %s...", s, e, from.ID(), to.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := from.Transfer(ctx, s, to.ID()); err != nil {
		return err
	}
	if err := d.wait(10*time.Second, func() bool { l := to.Leases()[s]; return l != nil && l.Epoch() > e }); err != nil {
		return err
	}
	if gaps := d.rec.Gaps(shard.ReasonHandoff); len(gaps) > 0 {
		d.say("%s leads it at epoch %d; nobody led it for %v.", to.ID(), to.Leases()[s].Epoch(), gaps[len(gaps)-1].Round(10*time.Microsecond))
	}

	// A drain: the node leaves the active set and hands every shard off
	// gracefully before it stops, as on SIGTERM.
	leaver := d.nodes[len(d.nodes)-1]
	old = epochs(leaver)
	d.nodes = d.nodes[:len(d.nodes)-1]
	d.rec.ResetGaps()
	d.say("\n%s drains, handing over %d shards...", leaver.ID(), len(old))
	began = time.Now()
	if err := leaver.Drain(ctx); err != nil {
		return err
	}
	if err := d.wait(time.Minute, func() bool { return d.ledAgain(old) }); err != nil {
		return err
	}
	gaps := d.rec.Gaps(shard.ReasonDrain)
	worst := time.Duration(0)
	if len(gaps) > 0 {
		worst = gaps[len(gaps)-1]
	}
	d.say("All of them are led elsewhere %v after the drain began; the longest any shard went", ms(time.Since(began)))
	d.say("without a leader was %v; leases that ended without a handoff (expired or quorum lost): %d.", worst.Round(10*time.Microsecond),
		d.rec.Released(shard.ReasonLeaseExpired)+d.rec.Released(shard.ReasonQuorumLost))
	if v := d.rec.Violations(); len(v) > 0 {
		return fmt.Errorf("one-leader violation: %s", v[0])
	}
	if err := d.wait(time.Minute, d.settled); err != nil {
		return err
	}
	d.say("")
	d.printLeaders()
	d.say("\nEvery leadership above carries its epoch as a fencing token: a resource that")
	d.say("remembers the highest epoch per shard (shard.Fence) refuses a stale leader.")
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (d *demo) start(id string) error {
	var seeds []string
	if len(d.nodes) > 0 {
		seeds = []string{d.nodes[0].GossipAddr()}
	}
	cfg := shard.Config{
		NodeID: id, Cluster: "demo", Shards: d.o.shards,
		GossipAddr: "127.0.0.1:0", Seeds: seeds, Profile: d.o.profile,
		GRPCAddr: d.grpc[id], Voters: d.voters, LeaseDuration: d.o.lease,
		Logger:  d.log.With("node", id),
		Planner: rebalance.Policy{},
		Handler: d.rec.For(id),
	}
	if i := slices.IndexFunc(d.voters, func(v shard.VoterAddr) bool { return v.ID == id }); i >= 0 {
		cfg.GRPCAddr, cfg.DataDir, cfg.InitVoterStore = d.voters[i].Addr, d.dir+"/"+id, true
	}
	n, err := shard.New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(context.Background()); err != nil {
		n.Stop()
		return err
	}
	d.nodes = append(d.nodes, n)
	return nil
}

// wait checks cond every millisecond until it holds or limit passes.
func (d *demo) wait(limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster did not get there within %v", limit)
		}
		<-tick.C
	}
	return nil
}

// leaders returns each shard's current leaders among the live nodes.
func (d *demo) leaders() map[uint32][]string {
	out := map[uint32][]string{}
	for _, n := range d.nodes {
		for s := range n.Leases() {
			out[s] = append(out[s], n.ID())
		}
	}
	return out
}

func (d *demo) settled() bool {
	first := d.nodes[0].Table()
	for _, n := range d.nodes[1:] {
		if !first.SameAssignment(n.Table()) {
			return false
		}
	}
	if len(first.DesiredCounts()) != len(d.nodes) {
		return false
	}
	for _, n := range d.nodes {
		if mv, err := n.Plan(); err != nil || len(mv) > 0 {
			return false
		}
	}
	leaders := d.leaders()
	for s := range d.o.shards {
		e, _ := first.Shard(int64(s))
		if l := leaders[uint32(s)]; len(l) != 1 || l[0] != e.Desired {
			return false
		}
	}
	return true
}

func epochs(n *shard.Node) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for s, l := range n.Leases() {
		out[s] = l.Epoch()
	}
	return out
}

// ledAgain reports whether every shard in old is led by a live node at a
// higher epoch.
func (d *demo) ledAgain(old map[uint32]uint64) bool {
	now := map[uint32]uint64{}
	for _, n := range d.nodes {
		for s, l := range n.Leases() {
			now[s] = l.Epoch()
		}
	}
	for s, e := range old {
		if now[s] <= e {
			return false
		}
	}
	return true
}

func (d *demo) printLeaders() {
	w := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "node\tvoter\tleads\tshare\tepochs\t")
	for _, n := range d.nodes {
		led := epochs(n)
		var lo, hi uint64
		for _, e := range led {
			if lo == 0 || e < lo {
				lo = e
			}
			hi = max(hi, e)
		}
		voter := ""
		if slices.ContainsFunc(d.voters, func(v shard.VoterAddr) bool { return v.ID == n.ID() }) {
			voter = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%.1f%%\t%d..%d\t\n", n.ID(), voter, len(led), 100*float64(len(led))/float64(d.o.shards), lo, hi)
	}
	w.Flush()
}

func (d *demo) printLookups(n *shard.Node) {
	d.say("\nLookups on %s (key → shard → leader@epoch):", n.ID())
	for _, key := range []string{"customer/1001", "customer/1002", "invoice/77", "order/abc"} {
		e := n.LookupString(key)
		if e.State == shard.Unled {
			d.say("  %-14s → shard %4d → no leader yet (desired owner %s)", key, e.Shard, e.Desired)
			continue
		}
		d.say("  %-14s → shard %4d → %s@%d at %s", key, e.Shard, e.Leader, e.Epoch, e.Addr)
	}
}

func (d *demo) printEpochChanges(old map[uint32]uint64, limit int) {
	var shards []uint32
	for s := range old {
		shards = append(shards, s)
	}
	slices.Sort(shards)
	var parts []string
	for _, s := range shards[:min(limit, len(shards))] {
		for _, n := range d.nodes {
			if l, ok := n.Leases()[s]; ok {
				parts = append(parts, fmt.Sprintf("shard %d: epoch %d → %d on %s", s, old[s], l.Epoch(), n.ID()))
			}
		}
	}
	d.say("  %s, ...", strings.Join(parts, "; "))
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
