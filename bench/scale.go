package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tenurehq/tenure/bench/internal/scalesim"
	"github.com/tenurehq/tenure/shard"
)

// scaleRun is one cluster size's results.
type scaleRun struct {
	Nodes  int          `json:"nodes"`
	Start  scalePhase   `json:"start"`
	Steady scaleTraffic `json:"steady"`
	Join   scalePhase   `json:"join"`
	Leave  scalePhase   `json:"leave"`
	Crash  scalePhase   `json:"crash"`
	Memory scaleMemory  `json:"memory_bytes_per_shard"`
	// PlanMS is the wall time of one rebalance.Plan call at this size,
	// averaged over the calls the simulation made.
	PlanMS     float64 `json:"plan_ms_per_call"`
	Violations int     `json:"violations"`
	VirtualS   float64 `json:"virtual_s"`
	WallS      float64 `json:"wall_s"`
}

type scalePhase struct {
	Event          string  `json:"event"`
	Members        int     `json:"members_after"`
	Settled        bool    `json:"settled"`
	SettleMS       float64 `json:"settle_ms"`
	GossipMS       float64 `json:"gossip_converged_ms"`
	GossipMedianMS float64 `json:"gossip_median_ms"`
	LeaderChanges  int     `json:"leader_changes"`
	Moved          int     `json:"moved"`
	Ideal          float64 `json:"ideal"`
	Handoffs       int     `json:"handoffs"`
	Acquisitions   int     `json:"acquisitions"`
	FailedHandoffs int     `json:"failed_handoffs"`
	// ReplansPerNode is how many times each node ran the planner (the
	// average); a real node spends ReplansPerNode × plan_ms_per_call.
	ReplansPerNode float64      `json:"replans_per_node"`
	Plans          int          `json:"plans_computed"`
	Deferred       int          `json:"replans_deferred"`
	Traffic        scaleTraffic `json:"traffic"`
	WallS          float64      `json:"wall_s"`
}

// scaleTraffic is a window's traffic: per node per second (sent, except
// VoterRepliesIn, which a node receives) and per voter per second.
type scaleTraffic struct {
	WindowS float64 `json:"window_s"`
	Members int     `json:"members"`
	PerNode struct {
		VoterRequests      float64 `json:"voter_requests"`
		VoterRequestBytes  float64 `json:"voter_request_bytes"`
		VoterRepliesIn     float64 `json:"voter_replies_in"`
		VoterReplyBytesIn  float64 `json:"voter_reply_bytes_in"`
		ClaimPackets       float64 `json:"claim_packets"`
		ClaimBytes         float64 `json:"claim_bytes"`
		MembershipPackets  float64 `json:"membership_packets"`
		MembershipBytes    float64 `json:"membership_bytes"`
		HandoffMessages    float64 `json:"handoff_messages"`
		HandoffBytes       float64 `json:"handoff_bytes"`
		TotalMessagesSent  float64 `json:"total_messages_sent"`
		TotalBytesSent     float64 `json:"total_bytes_sent"`
		TotalBytesReceived float64 `json:"total_bytes_received"`
	} `json:"per_node_per_s"`
	PerVoter struct {
		Requests float64 `json:"requests"`
		BytesIn  float64 `json:"bytes_in"`
		BytesOut float64 `json:"bytes_out"`
	} `json:"per_voter_per_s"`
}

type scaleMemory struct {
	Voter         float64 `json:"voter_per_voter"`
	Holders       float64 `json:"holders_cluster"`
	TablePerNode  float64 `json:"table_per_node"`
	ClusterPerRun float64 `json:"cluster_total"`
}

type scaleResult struct {
	Scenario string     `json:"scenario"`
	Shards   int        `json:"shards"`
	Voters   int        `json:"voters"`
	Seed     uint64     `json:"seed"`
	LeaseMS  float64    `json:"lease_ms"`
	Crash    float64    `json:"crash_fraction"`
	SteadyS  float64    `json:"steady_s"`
	Runs     []scaleRun `json:"runs"`
	// Growth is each headline figure at the largest size divided by the
	// same figure at the smallest.
	Growth map[string]float64 `json:"growth"`
}

// runScale simulates clusters of each size on the deterministic core —
// real lease holders and voters, the real planner, a simulated network and
// a model of memberlist's gossip — and measures, per size, the settle time
// after a join, a graceful leave and a crash of a fraction of the nodes,
// the traffic per node and per voter, and the protocol's memory per shard.
func runScale(args []string, out io.Writer) error {
	fs := flags("scale")
	nodesFlag := fs.String("nodes", "10,100,1000", "comma-separated cluster sizes N to simulate")
	shards := fs.Int("shards", 65536, "shards P")
	voters := fs.Int("voters", 3, "voters: 1, 3 or 5")
	seed := fs.Uint64("seed", 1, "random seed: the same flags replay exactly")
	lease := fs.Duration("lease", time.Second, "lease duration LD")
	crash := fs.Float64("crash", 0.1, "fraction of the nodes that crash at once, in (0, 0.5)")
	steady := fs.Duration("steady", 4*time.Second, "virtual time over which steady-state traffic is measured")
	plans := fs.Int("plans-per-round", 4, "distinct plans computed per 50 ms planning round (−1: no cap)")
	latMin := fs.Duration("latency-min", 200*time.Microsecond, "shortest one-way message delay")
	latMax := fs.Duration("latency-max", time.Millisecond, "longest one-way message delay")
	asJSON := fs.Bool("json", false, "print a JSON summary as the last line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	sizes, err := parseSizes(*nodesFlag)
	if err != nil {
		return err
	}
	switch {
	case *crash <= 0 || *crash >= 0.5:
		return fmt.Errorf("-crash must be in (0, 0.5), got %v", *crash)
	case *steady < *lease:
		return fmt.Errorf("-steady must be at least -lease (%v), got %v", *lease, *steady)
	}
	res := scaleResult{Scenario: "scale", Shards: *shards, Voters: *voters, Seed: *seed,
		LeaseMS: msOf(*lease), Crash: *crash, SteadyS: steady.Seconds()}
	fmt.Fprintf(out, "scale: %d shards, %d voters, lease %v, memberlist LAN gossip, latency %v–%v, seed %d\n",
		*shards, *voters, *lease, *latMin, *latMax, *seed)
	for _, n := range sizes {
		cfg := scalesim.Config{Seed: *seed, Nodes: n, Shards: *shards, Voters: *voters, LeaseDuration: *lease,
			PlansPerRound: *plans, LatencyMin: *latMin, LatencyMax: *latMax}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("-nodes %d: %w", n, err)
		}
		fmt.Fprintf(out, "simulating %d nodes ...\n", n)
		run, err := simulateScale(cfg, *crash, *steady)
		if err != nil {
			return fmt.Errorf("%d nodes: %w", n, err)
		}
		res.Runs = append(res.Runs, run)
	}
	res.Growth = scaleGrowth(res.Runs)
	printScale(out, res)
	for _, r := range res.Runs {
		if r.Violations > 0 {
			return fmt.Errorf("%d nodes: %d safety violations", r.Nodes, r.Violations)
		}
		for _, p := range []scalePhase{r.Start, r.Join, r.Leave, r.Crash} {
			if !p.Settled {
				return fmt.Errorf("%d nodes: the assignment did not settle after the %s", r.Nodes, p.Event)
			}
		}
	}
	if *asJSON {
		return emit(out, res)
	}
	return nil
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 || n >= shard.MaxShards {
			return nil, fmt.Errorf("-nodes: %q is not a cluster size (an integer in [2, %d))", f, shard.MaxShards)
		}
		out = append(out, n)
	}
	return out, nil
}

// simulateScale runs one size: start, steady state, join, leave, crash,
// then memory.
func simulateScale(cfg scalesim.Config, crash float64, steady time.Duration) (scaleRun, error) {
	began := time.Now()
	run := scaleRun{Nodes: cfg.Nodes}
	s, err := scalesim.New(cfg)
	if err != nil {
		return run, err
	}
	var plansWall time.Duration
	var plans int
	phase := func(p scalesim.Phase, err error) (scalePhase, error) {
		plansWall += p.PlanWall
		plans += p.Plans
		return toScalePhase(p), err
	}
	if run.Start, err = phase(s.Start()); err != nil {
		return run, err
	}
	run.Steady = toScaleTraffic(s.Steady(steady))
	if run.Join, err = phase(s.Join()); err != nil {
		return run, err
	}
	if run.Leave, err = phase(s.Leave()); err != nil {
		return run, err
	}
	c, err := s.Crash(crash)
	if err != nil {
		return run, err
	}
	plansWall += c.PlanWall
	plans += c.Plans
	run.VirtualS = s.Now().Seconds()
	run.Violations, _ = s.Violations()
	m := s.Memory()
	s.FinishGossip(&c)
	run.Crash = toScalePhase(c)
	run.Memory = scaleMemory{Voter: m.VoterBytes, Holders: m.HolderBytes, TablePerNode: m.TableBytes,
		ClusterPerRun: float64(cfg.Voters)*m.VoterBytes + m.HolderBytes + float64(run.Crash.Members)*m.TableBytes}
	if plans > 0 {
		run.PlanMS = msOf(plansWall) / float64(plans)
	}
	run.WallS = time.Since(began).Seconds()
	return run, nil
}

func toScalePhase(p scalesim.Phase) scalePhase {
	members := max(1, p.Window.Members)
	return scalePhase{
		Event: p.Event, Members: p.Members, Settled: p.Settled, SettleMS: msOf(p.SettleTime), GossipMS: msOf(p.GossipSpread),
		GossipMedianMS: msOf(p.GossipSpreadMedian),
		LeaderChanges:  p.LeaderChanges, Moved: p.Moved, Ideal: p.Ideal, Handoffs: p.Handoffs, Acquisitions: p.Acquisitions,
		FailedHandoffs: p.FailedHandoffs, ReplansPerNode: float64(p.Replans) / float64(members), Plans: p.Plans,
		Deferred: p.Deferred, Traffic: toScaleTraffic(p.Window), WallS: p.Wall.Seconds(),
	}
}

func toScaleTraffic(w scalesim.Window) scaleTraffic {
	var t scaleTraffic
	secs := w.Duration.Seconds()
	t.WindowS, t.Members = secs, w.Members
	if secs <= 0 || w.Members == 0 {
		return t
	}
	per := func(x int64) float64 { return float64(x) / secs / float64(w.Members) }
	tr, pn := w.Traffic, &t.PerNode
	pn.VoterRequests, pn.VoterRequestBytes = per(tr.VoterRequests), per(tr.VoterRequestBytes)
	pn.VoterRepliesIn, pn.VoterReplyBytesIn = per(tr.VoterReplies), per(tr.VoterReplyBytes)
	pn.ClaimPackets, pn.ClaimBytes = per(tr.ClaimPackets), per(tr.ClaimBytes)
	pn.MembershipPackets = per(tr.GossipPackets) + w.Periodic.ProbeMessages + w.Periodic.PushPullMessages
	pn.MembershipBytes = per(tr.GossipBytes) + w.Periodic.ProbeBytes + w.Periodic.PushPullBytes
	pn.HandoffMessages, pn.HandoffBytes = per(tr.PeerMessages), per(tr.PeerBytes)
	pn.TotalMessagesSent = pn.VoterRequests + pn.ClaimPackets + pn.MembershipPackets + pn.HandoffMessages
	pn.TotalBytesSent = pn.VoterRequestBytes + pn.ClaimBytes + pn.MembershipBytes + pn.HandoffBytes
	// Gossip and handoffs are between nodes: a node receives about what
	// it sends. From the voters it receives the replies.
	pn.TotalBytesReceived = pn.VoterReplyBytesIn + pn.ClaimBytes + pn.MembershipBytes + pn.HandoffBytes
	for _, v := range w.Voters {
		t.PerVoter.Requests += float64(v.Requests) / secs / float64(len(w.Voters))
		t.PerVoter.BytesIn += float64(v.BytesIn) / secs / float64(len(w.Voters))
		t.PerVoter.BytesOut += float64(v.BytesOut) / secs / float64(len(w.Voters))
	}
	return t
}

func scaleGrowth(runs []scaleRun) map[string]float64 {
	if len(runs) < 2 {
		return nil
	}
	a, b := runs[0], runs[len(runs)-1]
	g := map[string]float64{}
	ratio := func(name string, x, y float64) {
		if x > 0 {
			g[name] = y / x
		}
	}
	ratio("nodes", float64(a.Nodes), float64(b.Nodes))
	ratio("settle_join", a.Join.SettleMS, b.Join.SettleMS)
	ratio("settle_leave", a.Leave.SettleMS, b.Leave.SettleMS)
	ratio("settle_crash", a.Crash.SettleMS, b.Crash.SettleMS)
	ratio("gossip_join_median", a.Join.GossipMedianMS, b.Join.GossipMedianMS)
	ratio("gossip_crash_median", a.Crash.GossipMedianMS, b.Crash.GossipMedianMS)
	ratio("node_messages_sent_per_s", a.Steady.PerNode.TotalMessagesSent, b.Steady.PerNode.TotalMessagesSent)
	ratio("node_bytes_sent_per_s", a.Steady.PerNode.TotalBytesSent, b.Steady.PerNode.TotalBytesSent)
	ratio("node_bytes_received_per_s", a.Steady.PerNode.TotalBytesReceived, b.Steady.PerNode.TotalBytesReceived)
	ratio("node_voter_bytes_per_s", a.Steady.PerNode.VoterRequestBytes+a.Steady.PerNode.VoterReplyBytesIn,
		b.Steady.PerNode.VoterRequestBytes+b.Steady.PerNode.VoterReplyBytesIn)
	ratio("node_gossip_bytes_per_s", a.Steady.PerNode.ClaimBytes+a.Steady.PerNode.MembershipBytes,
		b.Steady.PerNode.ClaimBytes+b.Steady.PerNode.MembershipBytes)
	ratio("voter_requests_per_s", a.Steady.PerVoter.Requests, b.Steady.PerVoter.Requests)
	ratio("voter_bytes_out_per_s", a.Steady.PerVoter.BytesOut, b.Steady.PerVoter.BytesOut)
	ratio("memory_cluster_per_shard", a.Memory.ClusterPerRun, b.Memory.ClusterPerRun)
	ratio("plan_ms_per_call", a.PlanMS, b.PlanMS)
	ratio("crash_replans_per_node", a.Crash.ReplansPerNode, b.Crash.ReplansPerNode)
	ratio("wall_s", a.WallS, b.WallS)
	return g
}

func printScale(out io.Writer, res scaleResult) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(out, "\nsettle time: virtual time from the event to the last change of leader before every shard is led by a member within the planner's bounds (held for 2 leases)")
	fmt.Fprintln(w, "nodes\tstart\tjoin\tmoved/ideal\tleave\tmoved/ideal\tcrash\tmoved/ideal\tgossip median / all nodes: join\tleave\tcrash (detection included)\t")
	for _, r := range res.Runs {
		fmt.Fprintf(w, "%d\t%s\t%s\t%d/%.0f\t%s\t%d/%.0f\t%s (%s)\t%d/%.0f\t%s\t%s\t%s\t\n", r.Nodes,
			dur(r.Start.SettleMS), dur(r.Join.SettleMS), r.Join.Moved, r.Join.Ideal,
			dur(r.Leave.SettleMS), r.Leave.Moved, r.Leave.Ideal,
			dur(r.Crash.SettleMS), r.Crash.Event, r.Crash.Moved, r.Crash.Ideal,
			dur(r.Join.GossipMedianMS)+" / "+dur(r.Join.GossipMS), dur(r.Leave.GossipMedianMS)+" / "+dur(r.Leave.GossipMS),
			dur(r.Crash.GossipMedianMS)+" / "+dur(r.Crash.GossipMS))
	}
	w.Flush()

	fmt.Fprintf(out, "\nsteady state over %.0f s, per node per second (sent; voter replies received)\n", res.SteadyS)
	fmt.Fprintln(w, "nodes\tvoter req\treq B\treplies in\treply B in\tclaims pkts\tclaims B\tmembership pkts\tmembership B\ttotal msgs\ttotal B sent\ttotal B recv\t")
	for _, r := range res.Runs {
		p := r.Steady.PerNode
		fmt.Fprintf(w, "%d\t%.1f\t%s\t%.1f\t%s\t%.1f\t%s\t%.1f\t%s\t%.1f\t%s\t%s\t\n", r.Nodes,
			p.VoterRequests, size(p.VoterRequestBytes), p.VoterRepliesIn, size(p.VoterReplyBytesIn),
			p.ClaimPackets, size(p.ClaimBytes), p.MembershipPackets, size(p.MembershipBytes),
			p.TotalMessagesSent, size(p.TotalBytesSent), size(p.TotalBytesReceived))
	}
	w.Flush()

	fmt.Fprintln(out, "\nper voter per second: steady state, and averaged over each event's window (event → settled + quiet)")
	fmt.Fprintln(w, "nodes\tsteady req\tB in\tB out\tjoin req\tB out\tleave req\tB out\tcrash req\tB out\t")
	for _, r := range res.Runs {
		fmt.Fprintf(w, "%d\t%.0f\t%s\t%s\t%.0f\t%s\t%.0f\t%s\t%.0f\t%s\t\n", r.Nodes,
			r.Steady.PerVoter.Requests, size(r.Steady.PerVoter.BytesIn), size(r.Steady.PerVoter.BytesOut),
			r.Join.Traffic.PerVoter.Requests, size(r.Join.Traffic.PerVoter.BytesOut),
			r.Leave.Traffic.PerVoter.Requests, size(r.Leave.Traffic.PerVoter.BytesOut),
			r.Crash.Traffic.PerVoter.Requests, size(r.Crash.Traffic.PerVoter.BytesOut))
	}
	w.Flush()

	fmt.Fprintln(out, "\nmemory per shard (runtime.MemStats, live heap after GC) and the planner")
	fmt.Fprintln(w, "nodes\tvoter (each)\tholders (cluster)\ttable (each node)\tcluster total\tPlan call\treplans/node: join\tleave\tcrash\tdeferred\t")
	for _, r := range res.Runs {
		fmt.Fprintf(w, "%d\t%.0f B\t%.0f B\t%.0f B\t%.0f B\t%.1f ms\t%.1f\t%.1f\t%.1f\t%d\t\n", r.Nodes,
			r.Memory.Voter, r.Memory.Holders, r.Memory.TablePerNode, r.Memory.ClusterPerRun, r.PlanMS,
			r.Join.ReplansPerNode, r.Leave.ReplansPerNode, r.Crash.ReplansPerNode,
			r.Join.Deferred+r.Leave.Deferred+r.Crash.Deferred)
	}
	w.Flush()

	fmt.Fprintln(out, "\nsimulation")
	fmt.Fprintln(w, "nodes\tvirtual\twall\tviolations\tleader changes (join/leave/crash)\tfailed handoffs\t")
	for _, r := range res.Runs {
		fmt.Fprintf(w, "%d\t%.1f s\t%.1f s\t%d\t%d/%d/%d\t%d\t\n", r.Nodes, r.VirtualS, r.WallS, r.Violations,
			r.Join.LeaderChanges, r.Leave.LeaderChanges, r.Crash.LeaderChanges,
			r.Join.FailedHandoffs+r.Leave.FailedHandoffs+r.Crash.FailedHandoffs)
	}
	w.Flush()
	if len(res.Growth) > 0 {
		a, b := res.Runs[0].Nodes, res.Runs[len(res.Runs)-1].Nodes
		fmt.Fprintf(out, "\ngrowth from %d to %d nodes (×):", a, b)
		for _, k := range []string{"settle_join", "settle_leave", "settle_crash", "gossip_join_median", "gossip_crash_median",
			"node_messages_sent_per_s", "node_bytes_sent_per_s", "node_bytes_received_per_s", "voter_requests_per_s",
			"voter_bytes_out_per_s", "memory_cluster_per_shard", "plan_ms_per_call", "crash_replans_per_node"} {
			if v, ok := res.Growth[k]; ok {
				fmt.Fprintf(out, " %s %.3g;", k, v)
			}
		}
		fmt.Fprintln(out)
	}
}

func dur(ms float64) string {
	if ms >= 10000 {
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	if ms >= 1000 {
		return fmt.Sprintf("%.2f s", ms/1000)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func size(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}
