package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNode is a tenure.v1 server with a fixed table of four shards, led by
// a and b, whose admin calls answer with adminErr.
type fakeNode struct {
	tenurev1.UnimplementedTenureServer
	name     string
	adminErr error
	// watch is the events the Watch stream sends before it ends with
	// UNAVAILABLE (the node going away).
	watch []*tenurev1.WatchEvent
	// stuckPages makes ListShards answer every page with the same token.
	stuckPages bool

	mu    sync.Mutex
	calls []string
}

func (f *fakeNode) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

var fakeTable = []shard.Entry{
	{Shard: 0, State: shard.Led, Leader: "a", Epoch: 3, Desired: "a", Addr: "10.0.0.1:7000"},
	{Shard: 1, State: shard.Led, Leader: "b", Epoch: 7, Desired: "b", Addr: "10.0.0.2:7000"},
	{Shard: 2, State: shard.Unled, Desired: "a", Addr: "10.0.0.1:7000"},
	{Shard: 3, State: shard.Led, Leader: "a", Epoch: 1, Desired: "b", Addr: "10.0.0.1:7000"},
}

func (f *fakeNode) entry(key []byte) *tenurev1.ShardEntry {
	t, _ := shard.NewTable(1, fakeTable)
	return tenurev1.EntryToPB(t.Lookup(key))
}

func (f *fakeNode) BatchLookup(_ context.Context, r *tenurev1.BatchLookupRequest) (*tenurev1.BatchLookupReply, error) {
	f.record("BatchLookup")
	rep := &tenurev1.BatchLookupReply{}
	for _, k := range r.GetKeys() {
		rep.Entries = append(rep.Entries, f.entry(k))
	}
	return rep, nil
}

func (f *fakeNode) ListShards(_ context.Context, r *tenurev1.ListShardsRequest) (*tenurev1.ListShardsReply, error) {
	f.record("ListShards")
	rep := &tenurev1.ListShardsReply{}
	for _, e := range fakeTable {
		m := tenurev1.EntryToPB(e)
		if r.GetNode() != "" && m.GetLeader() != r.GetNode() && m.GetDesired() != r.GetNode() {
			continue
		}
		if r.GetFilterState() && m.GetState() != r.GetState() {
			continue
		}
		rep.Entries = append(rep.Entries, m)
	}
	if f.stuckPages {
		rep.NextPageToken = "again"
	}
	return rep, nil
}

func (f *fakeNode) Plan(context.Context, *tenurev1.PlanRequest) (*tenurev1.PlanReply, error) {
	f.record("Plan")
	if f.adminErr != nil {
		return nil, tenurev1.ToStatus(f.adminErr)
	}
	return &tenurev1.PlanReply{Total: 5, Paused: true, Moves: []*tenurev1.Move{
		{Shard: 0, From: "a", To: "b"}, {Shard: 2, To: "a"}, {Shard: 3, From: "b", To: "a"},
	}}, nil
}

func (f *fakeNode) GetShard(_ context.Context, r *tenurev1.GetShardRequest) (*tenurev1.ShardEntry, error) {
	f.record("GetShard")
	if int(r.GetShard()) >= len(fakeTable) {
		return nil, tenurev1.ToStatus(fmt.Errorf("%w: %d", shard.ErrUnknownShard, r.GetShard()))
	}
	return tenurev1.EntryToPB(fakeTable[r.GetShard()]), nil
}

func (f *fakeNode) Cluster(context.Context, *tenurev1.ClusterRequest) (*tenurev1.ClusterReply, error) {
	f.record("Cluster")
	return &tenurev1.ClusterReply{
		Members: []*tenurev1.Member{
			{NodeId: "a", GrpcAddress: "10.0.0.1:7000", GossipAddress: "10.0.0.1:7946", Weight: 1, State: tenurev1.MemberState_MEMBER_STATE_ACTIVE, Voter: true},
			{NodeId: "b", GrpcAddress: "10.0.0.2:7000", GossipAddress: "10.0.0.2:7946", Weight: 2, State: tenurev1.MemberState_MEMBER_STATE_DRAINING, Zone: "z2"},
		},
		Voters: []*tenurev1.Voter{{Id: "a", Address: "10.0.0.1:7000", RequestFailures: 7}},
		Config: &tenurev1.ClusterConfig{Cluster: "test", Shards: 4, LeaseDurationMs: 1000},
		Health: &tenurev1.Health{Serving: true, ShardsUnled: 1, ShardsNotConverging: 1},
	}, nil
}

func (f *fakeNode) Watch(_ *tenurev1.WatchRequest, st grpc.ServerStreamingServer[tenurev1.WatchEvent]) error {
	f.record("Watch")
	for _, ev := range f.watch {
		if err := st.Send(ev); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "going away")
}

func (f *fakeNode) Drain(_ context.Context, r *tenurev1.DrainRequest) (*tenurev1.DrainReply, error) {
	f.record("Drain " + r.GetNode())
	if f.adminErr != nil {
		return nil, tenurev1.ToStatus(f.adminErr)
	}
	return &tenurev1.DrainReply{}, nil
}

func (f *fakeNode) Transfer(_ context.Context, r *tenurev1.TransferRequest) (*tenurev1.TransferReply, error) {
	f.record(fmt.Sprintf("Transfer %d %s", r.GetShard(), r.GetNode()))
	if f.adminErr != nil {
		return nil, tenurev1.ToStatus(f.adminErr)
	}
	return &tenurev1.TransferReply{}, nil
}

func (f *fakeNode) PauseRebalance(context.Context, *tenurev1.PauseRebalanceRequest) (*tenurev1.PauseRebalanceReply, error) {
	f.record("Pause")
	if f.adminErr != nil {
		return nil, tenurev1.ToStatus(f.adminErr)
	}
	return &tenurev1.PauseRebalanceReply{}, nil
}

// serve runs f on a loopback port until the test ends and returns the
// address.
func serve(t *testing.T, f *fakeNode) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	tenurev1.RegisterTenureServer(g, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return lis.Addr().String()
}

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func ctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, func(string) (string, bool) { return "", false }, &out, &errb)
	return code, out.String(), errb.String()
}

func TestLookup(t *testing.T) {
	addr := serve(t, &fakeNode{name: "a"})
	code, out, errs := ctl(t, "-addr", addr, "lookup", "k1", "k2")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "KEY") || !strings.HasPrefix(lines[1], "k1 ") || !strings.HasPrefix(lines[2], "k2 ") {
		t.Errorf("table output:\n%s", out)
	}

	// Flags after the keys, and a key that looks like a flag after --.
	code, out, errs = ctl(t, "lookup", "k1", "-addr", addr, "-o", "json", "--", "-k")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got []entryOut
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json output %q: %v", out, err)
	}
	if len(got) != 2 || *got[0].Key != "k1" || *got[1].Key != "-k" {
		t.Fatalf("json entries = %+v", got)
	}
	for _, e := range got {
		want := fakeTable[shard.Of([]byte(*e.Key), 4)]
		if e.Shard != uint32(want.Shard) || e.Leader != want.Leader || e.Epoch != want.Epoch || e.State != want.State.String() {
			t.Errorf("key %q: got %+v, want %+v", *e.Key, e, want)
		}
	}
}

// TestFailover: calls pass over nodes that do not answer, and stop at the
// first one that does.
func TestFailover(t *testing.T) {
	live := &fakeNode{name: "b"}
	addr := serve(t, live)
	code, out, errs := ctl(t, "-addr", deadAddr(t)+","+addr, "members", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var ms []memberOut
	if err := json.Unmarshal([]byte(out), &ms); err != nil || len(ms) != 2 {
		t.Fatalf("members = %q (%v)", out, err)
	}
	if ms[0].NodeID != "a" || ms[0].Leading != 2 || ms[1].State != "draining" || ms[1].Leading != 1 || ms[1].Zone != "z2" {
		t.Errorf("members = %+v", ms)
	}

	// An answer, even a refusal, is final: the second node is not asked.
	refusing := &fakeNode{adminErr: tenurev1.ErrUnauthenticated}
	other := &fakeNode{}
	code, _, _ = ctl(t, "-addr", serve(t, refusing)+","+serve(t, other), "pause")
	if code != exitFailed || len(other.calls) != 0 {
		t.Errorf("refused pause: exit %d, second node called %v", code, other.calls)
	}
}

// TestExitCodes are the codes scripts rely on.
func TestExitCodes(t *testing.T) {
	addr := serve(t, &fakeNode{})
	unknownNode := serve(t, &fakeNode{adminErr: fmt.Errorf("drain x: %w", shard.ErrUnknownNode)})
	draining := serve(t, &fakeNode{adminErr: fmt.Errorf("to b: %w", shard.ErrDraining)})
	unauth := serve(t, &fakeNode{adminErr: tenurev1.ErrUnauthenticated})
	dead := deadAddr(t)
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{name: "ok", args: []string{"-addr", addr, "shards"}, code: exitOK},
		{name: "help", args: []string{"-h"}, code: exitOK},
		{name: "no command", args: []string{"-addr", addr}, code: exitUsage, want: "Usage"},
		{name: "unknown command", args: []string{"-addr", addr, "elect"}, code: exitUsage, want: `unknown command "elect"`},
		{name: "unknown flag", args: []string{"-addr", addr, "shards", "-leader", "a"}, code: exitUsage, want: "-leader"},
		{name: "bad output", args: []string{"-addr", addr, "-o", "yaml", "members"}, code: exitUsage, want: "-o"},
		{name: "bad state", args: []string{"-addr", addr, "shards", "-state", "hot"}, code: exitUsage, want: "-state"},
		{name: "lookup without keys", args: []string{"-addr", addr, "lookup"}, code: exitUsage, want: "KEY"},
		{name: "bad shard number", args: []string{"-addr", addr, "transfer", "x", "b"}, code: exitUsage, want: "SHARD"},
		{name: "bad addr", args: []string{"-addr", "nohost", "members"}, code: exitUsage, want: "-addr"},
		{name: "unknown shard", args: []string{"-addr", addr, "shard", "9"}, code: exitNotFound, want: "unknown shard"},
		{name: "unknown node filter", args: []string{"-addr", addr, "shards", "-node", "zz"}, code: exitNotFound, want: `"zz" is not a member`},
		{name: "unknown node drain", args: []string{"-addr", unknownNode, "drain", "x"}, code: exitNotFound, want: "unknown node"},
		{name: "draining target", args: []string{"-addr", draining, "transfer", "1", "b"}, code: exitFailed, want: "draining"},
		{name: "no client certificate", args: []string{"-addr", unauth, "drain", "a"}, code: exitFailed, want: "client certificate"},
		{name: "nobody answers", args: []string{"-addr", dead, "members"}, code: exitUnavailable, want: "no node reachable"},
		{name: "missing ca file", args: []string{"-addr", addr, "-tls-ca", "/nonexistent", "members"}, code: exitUsage, want: "-tls-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := ctl(t, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Errorf("exit %d, want %d; stderr %q should contain %q", code, tt.code, errs, tt.want)
			}
		})
	}
}

func TestAdminCalls(t *testing.T) {
	f := &fakeNode{}
	addr := serve(t, f)
	for _, args := range [][]string{{"drain", "b"}, {"transfer", "3", "b"}, {"pause"}} {
		if code, _, errs := ctl(t, append([]string{"-addr", addr}, args...)...); code != exitOK {
			t.Errorf("%v: exit %d: %s", args, code, errs)
		}
	}
	want := []string{"Drain b", "Transfer 3 b", "Pause"}
	if strings.Join(f.calls, ",") != strings.Join(want, ",") {
		t.Errorf("calls = %q, want %q", f.calls, want)
	}
	code, out, _ := ctl(t, "-addr", addr, "-o", "json", "transfer", "3", "b")
	if code != exitOK || !strings.Contains(out, `"transfer": "started"`) {
		t.Errorf("transfer -o json: exit %d, %q", code, out)
	}
}

// TestPlan prints the dry run as a table and as JSON, says when the list
// was cut and that rebalancing is paused, and passes refusals on.
func TestPlan(t *testing.T) {
	addr := serve(t, &fakeNode{})
	code, out, errs := ctl(t, "-addr", addr, "plan")
	if code != exitOK {
		t.Fatalf("plan: exit %d: %s", code, errs)
	}
	for _, want := range []string{"5 planned moves, the first 3 shown; rebalancing is paused", "SHARD", "0      a     b", "2      -     a"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = ctl(t, "-addr", addr, "-o", "json", "plan")
	if code != exitOK || !strings.Contains(out, `"total": 5`) || !strings.Contains(out, `"from": ""`) || !strings.Contains(out, `"paused": true`) {
		t.Errorf("plan -o json: exit %d:\n%s", code, out)
	}
	refusing := serve(t, &fakeNode{adminErr: fmt.Errorf("plan: %w", tenurev1.ErrUnauthenticated)})
	if code, _, errs := ctl(t, "-addr", refusing, "plan"); code != exitFailed || !strings.Contains(errs, "client certificate") {
		t.Errorf("plan refused: exit %d, %q", code, errs)
	}
	if code, _, errs := ctl(t, "-addr", addr, "plan", "x"); code != exitUsage {
		t.Errorf("plan x: exit %d, %q", code, errs)
	}
}

// TestShardsStopsOnARepeatedPageToken: a node that keeps answering with
// the same page token ends the listing with an error instead of a loop.
func TestShardsStopsOnARepeatedPageToken(t *testing.T) {
	addr := serve(t, &fakeNode{stuckPages: true})
	code, _, errs := ctl(t, "-addr", addr, "shards")
	if code != exitFailed || !strings.Contains(errs, "same page token") {
		t.Errorf("shards against a node that repeats its page token: exit %d, %q", code, errs)
	}
}

// TestWatch joins split events into one, and moves to the next node when
// a stream ends.
func TestWatch(t *testing.T) {
	first := &fakeNode{watch: []*tenurev1.WatchEvent{
		{Version: 5, Origin: 9, Reset_: true, More: true, Changed: []*tenurev1.ShardEntry{tenurev1.EntryToPB(fakeTable[0]), tenurev1.EntryToPB(fakeTable[1])}},
		{Version: 5, Origin: 9, Changed: []*tenurev1.ShardEntry{tenurev1.EntryToPB(fakeTable[2]), tenurev1.EntryToPB(fakeTable[3])}},
		{Version: 6, Origin: 9, Changed: []*tenurev1.ShardEntry{tenurev1.EntryToPB(shard.Entry{Shard: 1, State: shard.Led, Leader: "a", Epoch: 8, Addr: "x:1"})}},
	}}
	second := &fakeNode{watch: []*tenurev1.WatchEvent{
		{Version: 1, Origin: 4, Reset_: true, Changed: []*tenurev1.ShardEntry{tenurev1.EntryToPB(fakeTable[0])}},
	}}
	a1, a2 := serve(t, first), serve(t, second)
	code, out, errs := ctl(t, "-addr", a1+","+a2, "-o", "json", "watch", "-n", "3")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var evs []eventOut
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev eventOut
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 3 {
		t.Fatalf("events = %+v, want 3", evs)
	}
	if !evs[0].Reset || len(evs[0].Changed) != 4 || evs[0].Node != a1 {
		t.Errorf("first event = %+v, want the whole table from %s in one event", evs[0], a1)
	}
	if evs[1].Version != 6 || evs[1].Changed[0].Epoch != 8 {
		t.Errorf("second event = %+v", evs[1])
	}
	if !evs[2].Reset || evs[2].Node != a2 {
		t.Errorf("third event = %+v, want a reset from %s", evs[2], a2)
	}
	if !strings.Contains(errs, "trying the next node") {
		t.Errorf("stderr %q does not say it moved on", errs)
	}

	// Table form: one line per change.
	code, out, _ = ctl(t, "-addr", a1, "watch", "-n", "2")
	if code != exitOK || !strings.Contains(out, "table of 4 shards: 3 led, 1 unled") || !strings.Contains(out, "shard 1 led leader a epoch 8") {
		t.Errorf("table watch: exit %d\n%s", code, out)
	}

	// Nobody to watch.
	if code, _, _ := ctl(t, "-addr", deadAddr(t), "watch"); code != exitUnavailable {
		t.Errorf("watch with no node: exit %d, want %d", code, exitUnavailable)
	}
}

func TestClusterOutput(t *testing.T) {
	addr := serve(t, &fakeNode{})
	code, out, _ := ctl(t, "-addr", addr, "cluster")
	if code != exitOK || !strings.Contains(out, "shards without a leader  1") || !strings.Contains(out, "shards not converging    1") ||
		!strings.Contains(out, "a=10.0.0.1:7000 (NOT answering, 7 failed requests)") {
		t.Errorf("cluster: exit %d\n%s", code, out)
	}
	code, out, _ = ctl(t, "-addr", addr, "cluster", "-o", "json")
	var c clusterOut
	if code != exitOK || json.Unmarshal([]byte(out), &c) != nil || c.Shards != 4 || len(c.Members) != 2 ||
		c.NotConverging != 1 || len(c.Voters) != 1 || c.Voters[0].Failures != 7 || c.Voters[0].Answered {
		t.Errorf("cluster -o json: exit %d, %q", code, out)
	}
}
