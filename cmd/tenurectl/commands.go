package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// entryOut is a shard entry as tenurectl prints it.
type entryOut struct {
	Key     *string `json:"key,omitempty"`
	Shard   uint32  `json:"shard"`
	State   string  `json:"state"`
	Leader  string  `json:"leader"`
	Epoch   uint64  `json:"epoch"`
	Desired string  `json:"desired"`
	Address string  `json:"address"`
}

func toEntry(m *tenurev1.ShardEntry) (entryOut, error) {
	e, err := tenurev1.EntryFromPB(m)
	if err != nil {
		return entryOut{}, fmt.Errorf("the node sent an invalid entry: %w", err)
	}
	return entryOut{Shard: uint32(e.Shard), State: e.State.String(), Leader: e.Leader, Epoch: e.Epoch, Desired: e.Desired, Address: e.Addr}, nil
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable writes a header and rows through a tabwriter.
func (c *cli) printTable(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func entryRow(e entryOut) []string {
	epoch := "-"
	if e.Epoch > 0 {
		epoch = strconv.FormatUint(e.Epoch, 10)
	}
	return []string{strconv.FormatUint(uint64(e.Shard), 10), e.State, dash(e.Leader), epoch, dash(e.Desired), dash(e.Address)}
}

const entryHeader = "SHARD\tSTATE\tLEADER\tEPOCH\tDESIRED\tADDRESS"

func (c *cli) printEntries(es []entryOut) error {
	if !c.table {
		if es == nil {
			es = []entryOut{}
		}
		return c.printJSON(es)
	}
	rows := make([][]string, len(es))
	header := entryHeader
	for i, e := range es {
		rows[i] = entryRow(e)
		if e.Key != nil {
			rows[i] = append([]string{*e.Key}, rows[i]...)
			header = "KEY\t" + entryHeader
		}
	}
	return c.printTable(header, rows)
}

// mapErr turns a call's status into the Go error it stands for.
func mapErr(err error) error { return tenurev1.FromStatus(err) }

// batchKeys is how many keys one BatchLookup carries: well under any
// server's limit and a few hundred kilobytes at most.
const batchKeys = 500

func runLookup(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) == 0 {
		return usagef("lookup needs at least one KEY")
	}
	var out []entryOut
	for chunk := range slices.Chunk(args, batchKeys) {
		keys := make([][]byte, len(chunk))
		for i, k := range chunk {
			keys[i] = []byte(k)
		}
		rep, err := call(ctx, c.eps, func(ctx context.Context, t tenurev1.TenureClient) (*tenurev1.BatchLookupReply, error) {
			return t.BatchLookup(ctx, &tenurev1.BatchLookupRequest{Keys: keys})
		})
		if err != nil {
			return mapErr(err)
		}
		if len(rep.GetEntries()) != len(chunk) {
			return fmt.Errorf("the node answered %d keys with %d entries", len(chunk), len(rep.GetEntries()))
		}
		for i, m := range rep.GetEntries() {
			e, err := toEntry(m)
			if err != nil {
				return err
			}
			e.Key = &chunk[i]
			out = append(out, e)
		}
	}
	return c.printEntries(out)
}

type shardsOpts struct {
	node, state string
}

func shardsFlags(fs *flag.FlagSet) any {
	o := &shardsOpts{}
	fs.StringVar(&o.node, "node", "", "only shards whose leader or desired owner is this `node`")
	fs.StringVar(&o.state, "state", "", "only shards in this `state`: led, unled or moving")
	return o
}

func parseState(s string) (tenurev1.ShardState, error) {
	switch s {
	case "led":
		return tenurev1.ShardState_SHARD_STATE_LED, nil
	case "unled":
		return tenurev1.ShardState_SHARD_STATE_UNLED, nil
	case "moving":
		return tenurev1.ShardState_SHARD_STATE_MOVING, nil
	}
	return 0, usagef("-state %q: want led, unled or moving", s)
}

func runShards(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*shardsOpts)
	if len(args) > 0 {
		return usagef("shards takes no arguments, got %q (filters are -node and -state)", args[0])
	}
	req := &tenurev1.ListShardsRequest{Node: o.node}
	if o.state != "" {
		st, err := parseState(o.state)
		if err != nil {
			return err
		}
		req.State, req.FilterState = st, true
	}
	entries, err := c.listShards(ctx, req)
	if err != nil {
		return err
	}
	if len(entries) == 0 && o.node != "" {
		// An empty list for a node that does not exist is a typo, not
		// an answer: say so with its own exit code.
		cl, err := call(ctx, c.eps, func(ctx context.Context, t tenurev1.TenureClient) (*tenurev1.ClusterReply, error) {
			return t.Cluster(ctx, &tenurev1.ClusterRequest{})
		})
		if err != nil {
			return mapErr(err)
		}
		if !slices.ContainsFunc(cl.GetMembers(), func(m *tenurev1.Member) bool { return m.GetNodeId() == o.node }) {
			return &notFoundError{fmt.Errorf("node %q is not a member", o.node)}
		}
	}
	out := make([]entryOut, 0, len(entries))
	for _, m := range entries {
		e, err := toEntry(m)
		if err != nil {
			return err
		}
		out = append(out, e)
	}
	return c.printEntries(out)
}

// listShards reads every page of the listing req asks for.
func (c *cli) listShards(ctx context.Context, req *tenurev1.ListShardsRequest) ([]*tenurev1.ShardEntry, error) {
	req.PageSize = tenurev1.MaxPageSize
	return tenurev1.AllPages(req, func(req *tenurev1.ListShardsRequest) (*tenurev1.ListShardsReply, error) {
		rep, err := call(ctx, c.eps, func(ctx context.Context, t tenurev1.TenureClient) (*tenurev1.ListShardsReply, error) {
			return t.ListShards(ctx, req)
		})
		return rep, mapErr(err)
	})
}

func parseShard(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n >= shard.MaxShards {
		return 0, usagef("SHARD %q: want a shard number in [0, %d)", s, shard.MaxShards)
	}
	return uint32(n), nil
}

func runShard(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) != 1 {
		return usagef("shard needs one SHARD number")
	}
	s, err := parseShard(args[0])
	if err != nil {
		return err
	}
	m, err := call(ctx, c.eps, func(ctx context.Context, t tenurev1.TenureClient) (*tenurev1.ShardEntry, error) {
		return t.GetShard(ctx, &tenurev1.GetShardRequest{Shard: s})
	})
	if err != nil {
		return mapErr(err)
	}
	e, err := toEntry(m)
	if err != nil {
		return err
	}
	if !c.table {
		return c.printJSON(e)
	}
	return c.printEntries([]entryOut{e})
}

type memberOut struct {
	NodeID  string `json:"node_id"`
	State   string `json:"state"`
	Voter   bool   `json:"voter"`
	GRPC    string `json:"grpc_address"`
	Gossip  string `json:"gossip_address"`
	Zone    string `json:"zone"`
	Weight  uint32 `json:"weight"`
	Leading int    `json:"leading"`
}

func memberState(s tenurev1.MemberState) string {
	switch s {
	case tenurev1.MemberState_MEMBER_STATE_JOINING:
		return "joining"
	case tenurev1.MemberState_MEMBER_STATE_ACTIVE:
		return "active"
	case tenurev1.MemberState_MEMBER_STATE_DRAINING:
		return "draining"
	case tenurev1.MemberState_MEMBER_STATE_LEAVING:
		return "leaving"
	}
	return "unknown"
}

func (c *cli) cluster(ctx context.Context) (*tenurev1.ClusterReply, error) {
	rep, err := call(ctx, c.eps, func(ctx context.Context, t tenurev1.TenureClient) (*tenurev1.ClusterReply, error) {
		return t.Cluster(ctx, &tenurev1.ClusterRequest{})
	})
	return rep, mapErr(err)
}

func runMembers(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) > 0 {
		return usagef("members takes no arguments")
	}
	rep, err := c.cluster(ctx)
	if err != nil {
		return err
	}
	// How many shards each member leads, from the same node's table.
	led, err := c.listShards(ctx, &tenurev1.ListShardsRequest{State: tenurev1.ShardState_SHARD_STATE_LED, FilterState: true})
	if err != nil {
		return err
	}
	leading := map[string]int{}
	for _, e := range led {
		leading[e.GetLeader()]++
	}
	out := make([]memberOut, 0, len(rep.GetMembers()))
	for _, m := range rep.GetMembers() {
		out = append(out, memberOut{
			NodeID: m.GetNodeId(), State: memberState(m.GetState()), Voter: m.GetVoter(),
			GRPC: m.GetGrpcAddress(), Gossip: m.GetGossipAddress(), Zone: m.GetZone(), Weight: m.GetWeight(),
			Leading: leading[m.GetNodeId()],
		})
	}
	if !c.table {
		return c.printJSON(out)
	}
	rows := make([][]string, len(out))
	for i, m := range out {
		voter := ""
		if m.Voter {
			voter = "yes"
		}
		rows[i] = []string{m.NodeID, m.State, dash(voter), strconv.Itoa(m.Leading), m.GRPC, m.Gossip, dash(m.Zone), strconv.FormatUint(uint64(m.Weight), 10)}
	}
	return c.printTable("NODE\tSTATE\tVOTER\tLEADING\tGRPC\tGOSSIP\tZONE\tWEIGHT", rows)
}

type clusterOut struct {
	Cluster         string      `json:"cluster"`
	Shards          uint32      `json:"shards"`
	LeaseDurationMS uint64      `json:"lease_duration_ms"`
	KeepAliveMS     uint64      `json:"keep_alive_interval_ms"`
	Load            float64     `json:"load"`
	Replication     uint32      `json:"replication_factor"`
	RebalancePaused bool        `json:"rebalance_paused"`
	Serving         bool        `json:"serving"`
	ShardsUnled     uint32      `json:"shards_unled"`
	ShardsMoving    uint32      `json:"shards_moving"`
	VotersReachable uint32      `json:"voters_reachable"`
	NotConverging   uint32      `json:"shards_not_converging"`
	TableVersion    uint64      `json:"table_version"`
	Voters          []voterOut  `json:"voters"`
	Members         []memberOut `json:"members"`
}

type voterOut struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Answered bool   `json:"answered"`
	Failures uint64 `json:"request_failures"`
}

func runCluster(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) > 0 {
		return usagef("cluster takes no arguments")
	}
	rep, err := c.cluster(ctx)
	if err != nil {
		return err
	}
	cfg, h := rep.GetConfig(), rep.GetHealth()
	out := clusterOut{
		Cluster: cfg.GetCluster(), Shards: cfg.GetShards(), LeaseDurationMS: cfg.GetLeaseDurationMs(), KeepAliveMS: cfg.GetKeepAliveIntervalMs(),
		Load: cfg.GetLoad(), Replication: cfg.GetReplicationFactor(), RebalancePaused: cfg.GetRebalancePaused(),
		Serving: h.GetServing(), ShardsUnled: h.GetShardsUnled(), ShardsMoving: h.GetShardsMoving(),
		VotersReachable: h.GetVotersReachable(), NotConverging: h.GetShardsNotConverging(), TableVersion: h.GetTableVersion(),
		Voters: []voterOut{}, Members: []memberOut{},
	}
	for _, v := range rep.GetVoters() {
		out.Voters = append(out.Voters, voterOut{ID: v.GetId(), Address: v.GetAddress(), Answered: v.GetAnswered(), Failures: v.GetRequestFailures()})
	}
	for _, m := range rep.GetMembers() {
		out.Members = append(out.Members, memberOut{NodeID: m.GetNodeId(), State: memberState(m.GetState()), Voter: m.GetVoter(),
			GRPC: m.GetGrpcAddress(), Gossip: m.GetGossipAddress(), Zone: m.GetZone(), Weight: m.GetWeight()})
	}
	if !c.table {
		return c.printJSON(out)
	}
	var voters []string
	for _, v := range out.Voters {
		state := "answering"
		if !v.Answered {
			state = "NOT answering"
		}
		voters = append(voters, fmt.Sprintf("%s=%s (%s, %d failed requests)", v.ID, v.Address, state, v.Failures))
	}
	return c.printTable("SETTING\tVALUE", [][]string{
		{"cluster", out.Cluster},
		{"shards", strconv.FormatUint(uint64(out.Shards), 10)},
		{"lease duration", (time.Duration(out.LeaseDurationMS) * time.Millisecond).String()},
		{"keep-alive interval", (time.Duration(out.KeepAliveMS) * time.Millisecond).String()},
		{"rebalancing", map[bool]string{true: "paused", false: "on"}[out.RebalancePaused]},
		{"serving", strconv.FormatBool(out.Serving)},
		{"shards without a leader", strconv.FormatUint(uint64(out.ShardsUnled), 10)},
		{"shards moving", strconv.FormatUint(uint64(out.ShardsMoving), 10)},
		{"shards not converging", strconv.FormatUint(uint64(out.NotConverging), 10)},
		{"voters reachable", fmt.Sprintf("%d of %d", out.VotersReachable, len(out.Voters))},
		{"voters", strings.Join(voters, ",")},
		{"members", strconv.Itoa(len(out.Members))},
		{"table version", strconv.FormatUint(out.TableVersion, 10)},
	})
}

type watchOpts struct{ count int }

func watchFlags(fs *flag.FlagSet) any {
	o := &watchOpts{}
	fs.IntVar(&o.count, "n", 0, "stop after `COUNT` events; 0 runs until interrupted")
	return o
}

// eventOut is one Watch event as -o json prints it: one JSON object per
// line.
type eventOut struct {
	Time    time.Time  `json:"time"`
	Node    string     `json:"node"` // the -addr endpoint the event came from
	Version uint64     `json:"version"`
	Reset   bool       `json:"reset"`
	Changed []entryOut `json:"changed"`
}

// runWatch follows one node's Watch stream and moves on to the next
// endpoint when that node goes away, starting there from a reset (table
// versions of different nodes are not comparable; a stream resumed on the
// same node continues where it stopped). It ends when ctx is cancelled
// (exit 0), after -n events, or when no endpoint has answered at all.
func runWatch(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*watchOpts)
	if len(args) > 0 {
		return usagef("watch takes no arguments")
	}
	if o.count < 0 {
		return usagef("-n must not be negative")
	}
	enc := json.NewEncoder(c.out)
	events, everAnswered, failedInRow := 0, false, 0
	backoff := 100 * time.Millisecond
	resume := make([]*tenurev1.WatchRequest, len(c.eps.addrs)) // per endpoint
	for i := 0; ; i = (i + 1) % len(c.eps.addrs) {
		addr := c.eps.addrs[i]
		if resume[i] == nil {
			resume[i] = &tenurev1.WatchRequest{}
		}
		var pending *eventOut // a split event waiting for its last part
		got, err := c.watchOne(ctx, i, resume[i], func(ev *tenurev1.WatchEvent) error {
			if pending == nil {
				pending = &eventOut{Time: time.Now().UTC(), Node: addr, Version: ev.GetVersion(), Reset: ev.GetReset_(), Changed: []entryOut{}}
			}
			for _, m := range ev.GetChanged() {
				e, err := toEntry(m)
				if err != nil {
					return err
				}
				pending.Changed = append(pending.Changed, e)
			}
			if ev.GetMore() {
				return nil
			}
			out := *pending
			pending = nil
			resume[i] = &tenurev1.WatchRequest{FromVersion: ev.GetVersion(), Origin: ev.GetOrigin()}
			if c.table {
				printEventLine(c.out, out)
			} else if err := enc.Encode(out); err != nil {
				return err
			}
			events++
			if o.count > 0 && events >= o.count {
				return errWatchDone
			}
			return nil
		})
		if got {
			everAnswered, failedInRow, backoff = true, 0, 100*time.Millisecond
		}
		switch {
		case errors.Is(err, errWatchDone), ctx.Err() != nil:
			return nil
		case err != nil && !unreachable(ctx, err) && !errors.Is(err, io.EOF):
			return mapErr(err)
		}
		failedInRow++
		fmt.Fprintf(c.errw, "tenurectl: watch: %s: %v\n", addr, watchEnd(err))
		if failedInRow >= len(c.eps.addrs) {
			if !everAnswered {
				return fmt.Errorf("%w: every node in -addr failed", errUnavailable)
			}
			// Every node is gone for now: wait before the next round.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			failedInRow = 0
		}
	}
}

var errWatchDone = errors.New("watch: enough events")

func watchEnd(err error) string {
	if err == nil || errors.Is(err, io.EOF) {
		return "stream ended; trying the next node"
	}
	return status.Convert(err).Message() + "; trying the next node"
}

// watchOne streams from endpoint i until the stream fails. got says
// whether any event arrived.
func (c *cli) watchOne(ctx context.Context, i int, req *tenurev1.WatchRequest, each func(*tenurev1.WatchEvent) error) (got bool, err error) {
	t, err := c.eps.client(i)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := t.Watch(sctx, req, grpc.WaitForReady(false))
	if err != nil {
		return false, err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			if status.Code(err) == codes.Canceled && ctx.Err() != nil {
				return got, ctx.Err()
			}
			return got, err
		}
		got = true
		if err := each(ev); err != nil {
			return got, err
		}
	}
}

func printEventLine(w io.Writer, ev eventOut) {
	ts := ev.Time.Local().Format("15:04:05.000")
	if ev.Reset {
		led, unled, moving := 0, 0, 0
		for _, e := range ev.Changed {
			switch e.State {
			case "led":
				led++
			case "unled":
				unled++
			case "moving":
				moving++
			}
		}
		fmt.Fprintf(w, "%s  %s  version %d: table of %d shards: %d led, %d unled, %d moving\n", ts, ev.Node, ev.Version, len(ev.Changed), led, unled, moving)
		return
	}
	for _, e := range ev.Changed {
		epoch := "-"
		if e.Epoch > 0 {
			epoch = strconv.FormatUint(e.Epoch, 10)
		}
		fmt.Fprintf(w, "%s  %s  version %d: shard %d %s leader %s epoch %s\n", ts, ev.Node, ev.Version, e.Shard, e.State, dash(e.Leader), epoch)
	}
}

// admin runs one administrative call and prints what started.
// -o json prints what as an object; the table form prints msg.
func (c *cli) admin(ctx context.Context, what map[string]any, msg string, f func(context.Context, tenurev1.TenureClient) (any, error)) error {
	if _, err := call(ctx, c.eps, f); err != nil {
		return mapErr(err)
	}
	if !c.table {
		return c.printJSON(what)
	}
	fmt.Fprintln(c.out, msg)
	return nil
}

func runDrain(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) != 1 || args[0] == "" {
		return usagef("drain needs one NODE")
	}
	node := args[0]
	return c.admin(ctx, map[string]any{"node": node, "drain": "started"}, "drain of "+node+" started", func(ctx context.Context, t tenurev1.TenureClient) (any, error) {
		return t.Drain(ctx, &tenurev1.DrainRequest{Node: node})
	})
}

func runTransfer(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) != 2 || args[1] == "" {
		return usagef("transfer needs SHARD and NODE")
	}
	s, err := parseShard(args[0])
	if err != nil {
		return err
	}
	node := args[1]
	return c.admin(ctx, map[string]any{"shard": s, "node": node, "transfer": "started"}, fmt.Sprintf("transfer of shard %d to %s started", s, node), func(ctx context.Context, t tenurev1.TenureClient) (any, error) {
		return t.Transfer(ctx, &tenurev1.TransferRequest{Shard: s, Node: node})
	})
}

func runPause(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) > 0 {
		return usagef("pause takes no arguments")
	}
	return c.admin(ctx, map[string]any{"rebalance": "paused"}, "rebalancing paused", func(ctx context.Context, t tenurev1.TenureClient) (any, error) {
		return t.PauseRebalance(ctx, &tenurev1.PauseRebalanceRequest{})
	})
}

func runResume(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) > 0 {
		return usagef("resume takes no arguments")
	}
	return c.admin(ctx, map[string]any{"rebalance": "resumed"}, "rebalancing resumed", func(ctx context.Context, t tenurev1.TenureClient) (any, error) {
		return t.ResumeRebalance(ctx, &tenurev1.ResumeRebalanceRequest{})
	})
}

// planOut is the JSON form of `tenurectl plan`.
type planOut struct {
	Paused bool      `json:"paused"`
	Total  uint32    `json:"total"`
	Moves  []moveOut `json:"moves"`
}

type moveOut struct {
	Shard uint32 `json:"shard"`
	From  string `json:"from"` // empty: the shard has no leader
	To    string `json:"to"`
}

func runPlan(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) > 0 {
		return usagef("plan takes no arguments")
	}
	rep, err := call(ctx, c.eps, func(ctx context.Context, t tenurev1.TenureClient) (*tenurev1.PlanReply, error) {
		return t.Plan(ctx, &tenurev1.PlanRequest{})
	})
	if err != nil {
		return mapErr(err)
	}
	out := planOut{Paused: rep.GetPaused(), Total: rep.GetTotal(), Moves: []moveOut{}}
	for _, m := range rep.GetMoves() {
		out.Moves = append(out.Moves, moveOut{Shard: m.GetShard(), From: m.GetFrom(), To: m.GetTo()})
	}
	if !c.table {
		return c.printJSON(out)
	}
	state := "rebalancing is on"
	if out.Paused {
		state = "rebalancing is paused: only shards without a live leader move"
	}
	shown := ""
	if int(out.Total) > len(out.Moves) {
		shown = fmt.Sprintf(", the first %d shown", len(out.Moves))
	}
	fmt.Fprintf(c.out, "%d planned moves%s; %s\n", out.Total, shown, state)
	if len(out.Moves) == 0 {
		return nil
	}
	rows := make([][]string, len(out.Moves))
	for i, m := range out.Moves {
		from := m.From
		if from == "" {
			from = "-"
		}
		rows[i] = []string{strconv.FormatUint(uint64(m.Shard), 10), from, m.To}
	}
	return c.printTable("SHARD\tFROM\tTO", rows)
}
