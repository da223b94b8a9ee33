package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/server"
	"github.com/tenurehq/tenure/server/servertest"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

const ld = 500 * time.Millisecond

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// standalone returns a node that was never started, and a server on it:
// its table has every shard unled, which is all request validation needs.
func standalone(t *testing.T, shards int, mod func(*server.Config)) (*shard.Node, *server.Server) {
	t.Helper()
	n, err := shard.New(shard.Config{NodeID: "node-1", Shards: shards, GossipAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{Node: n}
	if mod != nil {
		mod(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return n, s
}

func TestConfigValidate(t *testing.T) {
	n, err := shard.New(shard.Config{NodeID: "node-1", Shards: 4, GossipAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		give      server.Config
		wantField string // "" for valid
	}{
		{"defaults", server.Config{Node: n}, ""},
		{"no node", server.Config{}, "Config.Node"},
		{"negative batch", server.Config{Node: n, MaxBatchKeys: -1}, "Config.MaxBatchKeys"},
		{"negative history", server.Config{Node: n, WatchHistory: -1}, "Config.WatchHistory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := server.New(tt.give)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantField) {
				s.Close()
				t.Fatalf("New = %v, want an error naming %s", err, tt.wantField)
			}
		})
	}
}

// wantStatus checks err's code, ErrorInfo reason (through FromStatus) and,
// for INVALID_MESSAGE, the field.
func wantStatus(t *testing.T, err error, code codes.Code, is error, field string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("error %v: code %v, want %v", err, status.Code(err), code)
	}
	got := tenurev1.FromStatus(err)
	if is != nil && !errors.Is(got, is) {
		t.Fatalf("error %v does not match %v", got, is)
	}
	if field == "" {
		return
	}
	var fe *tenurev1.FieldError
	if errors.As(got, &fe) {
		if fe.Field != field {
			t.Fatalf("error names field %q, want %q", fe.Field, field)
		}
		return
	}
	if !strings.Contains(got.Error(), field) {
		t.Fatalf("error %q does not name %s", got, field)
	}
}

// Malformed requests are refused with INVALID_ARGUMENT (or NOT_FOUND for a
// shard outside [0, P)) naming the field, before anything else happens.
func TestInvalidRequestsNameTheField(t *testing.T) {
	_, s := standalone(t, 16, func(c *server.Config) { c.MaxBatchKeys = 3 })
	ctx := ctxFor(t, 10*time.Second)
	big := make([]byte, shard.MaxKeyBytes+1)
	for _, tt := range []struct {
		name  string
		call  func() error
		code  codes.Code
		is    error
		field string
	}{
		{"lookup key too large", func() error { _, err := s.Lookup(ctx, &tenurev1.LookupRequest{Key: big}); return err },
			codes.InvalidArgument, shard.ErrKeyTooLarge, "LookupRequest.key"},
		{"batch key too large", func() error {
			_, err := s.BatchLookup(ctx, &tenurev1.BatchLookupRequest{Keys: [][]byte{[]byte("a"), nil, big}})
			return err
		}, codes.InvalidArgument, shard.ErrKeyTooLarge, "BatchLookupRequest.keys[2]"},
		{"batch too many keys", func() error {
			_, err := s.BatchLookup(ctx, &tenurev1.BatchLookupRequest{Keys: make([][]byte, 4)})
			return err
		}, codes.InvalidArgument, tenurev1.ErrInvalid, "BatchLookupRequest.keys"},
		{"get shard out of range", func() error { _, err := s.GetShard(ctx, &tenurev1.GetShardRequest{Shard: 16}); return err },
			codes.NotFound, shard.ErrUnknownShard, "GetShardRequest.shard"},
		{"list bad node", func() error { _, err := s.ListShards(ctx, &tenurev1.ListShardsRequest{Node: "a b"}); return err },
			codes.InvalidArgument, tenurev1.ErrInvalid, "ListShardsRequest.node"},
		{"list unknown state", func() error {
			_, err := s.ListShards(ctx, &tenurev1.ListShardsRequest{FilterState: true, State: 42})
			return err
		}, codes.InvalidArgument, tenurev1.ErrInvalid, "ListShardsRequest.state"},
		{"list negative page size", func() error {
			_, err := s.ListShards(ctx, &tenurev1.ListShardsRequest{PageSize: -1})
			return err
		}, codes.InvalidArgument, tenurev1.ErrInvalid, "ListShardsRequest.page_size"},
		{"list bad page token", func() error {
			_, err := s.ListShards(ctx, &tenurev1.ListShardsRequest{PageToken: "12"})
			return err
		}, codes.InvalidArgument, tenurev1.ErrInvalid, "ListShardsRequest.page_token"},
		{"list page token of other filters", func() error {
			tok := tenurev1.NextPageToken(&tenurev1.ListShardsRequest{Node: "node-1"}, 3)
			_, err := s.ListShards(ctx, &tenurev1.ListShardsRequest{Node: "node-2", PageToken: tok})
			return err
		}, codes.InvalidArgument, tenurev1.ErrInvalid, "ListShardsRequest.page_token"},
		{"plan negative limit", func() error { _, err := s.Plan(ctx, &tenurev1.PlanRequest{Limit: -1}); return err },
			codes.InvalidArgument, tenurev1.ErrInvalid, "PlanRequest.limit"},
		{"plan of a node not started", func() error { _, err := s.Plan(ctx, &tenurev1.PlanRequest{}); return err },
			codes.Unavailable, shard.ErrNotStarted, ""},
		{"drain without node", func() error { _, err := s.Drain(ctx, &tenurev1.DrainRequest{}); return err },
			codes.InvalidArgument, tenurev1.ErrInvalid, "DrainRequest.node"},
		{"drain unknown node", func() error { _, err := s.Drain(ctx, &tenurev1.DrainRequest{Node: "node-9"}); return err },
			codes.NotFound, shard.ErrUnknownNode, ""},
		{"transfer bad node", func() error {
			_, err := s.Transfer(ctx, &tenurev1.TransferRequest{Shard: 1, Node: strings.Repeat("n", 65)})
			return err
		}, codes.InvalidArgument, tenurev1.ErrInvalid, "TransferRequest.node"},
		{"transfer shard out of range", func() error {
			_, err := s.Transfer(ctx, &tenurev1.TransferRequest{Shard: 1 << 30, Node: "node-2"})
			return err
		}, codes.NotFound, shard.ErrUnknownShard, "TransferRequest.shard"},
	} {
		t.Run(tt.name, func(t *testing.T) { wantStatus(t, tt.call(), tt.code, tt.is, tt.field) })
	}
}

// ListShards with filter_state and no state matches nothing, as the proto
// documents; an empty batch is answered with no entries.
func TestEmptyAnswers(t *testing.T) {
	_, s := standalone(t, 16, nil)
	ctx := ctxFor(t, 10*time.Second)
	rep, err := s.ListShards(ctx, &tenurev1.ListShardsRequest{FilterState: true})
	if err != nil || len(rep.GetEntries()) != 0 {
		t.Errorf("ListShards(filter UNSPECIFIED) = %v, %v; want no entries", rep, err)
	}
	b, err := s.BatchLookup(ctx, &tenurev1.BatchLookupRequest{})
	if err != nil || len(b.GetEntries()) != 0 {
		t.Errorf("BatchLookup(no keys) = %v, %v; want no entries", b, err)
	}
}

// ListShards pages: every page but the last is full, the pages together
// are the whole listing, a filtered listing pages over the matches only,
// and the page size is capped.
func TestListShardsPages(t *testing.T) {
	_, s := standalone(t, 50, nil)
	ctx := ctxFor(t, 10*time.Second)
	all, err := s.ListShards(ctx, &tenurev1.ListShardsRequest{})
	if err != nil || len(all.GetEntries()) != 50 || all.GetNextPageToken() != "" {
		t.Fatalf("one page of 50 shards: %d entries, next %q, %v", len(all.GetEntries()), all.GetNextPageToken(), err)
	}
	for _, tt := range []struct {
		name string
		req  *tenurev1.ListShardsRequest
		want int // matching shards
	}{
		{"all", &tenurev1.ListShardsRequest{PageSize: 7}, 50},
		{"a page size that divides", &tenurev1.ListShardsRequest{PageSize: 10}, 50},
		{"filtered", &tenurev1.ListShardsRequest{PageSize: 4, FilterState: true, State: tenurev1.ShardState_SHARD_STATE_UNLED}, 50},
		{"no match", &tenurev1.ListShardsRequest{PageSize: 4, Node: "node-9"}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint32
			pages := 0
			for {
				rep, err := s.ListShards(ctx, tt.req)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				for _, e := range rep.GetEntries() {
					got = append(got, e.GetShard())
				}
				if rep.GetNextPageToken() == "" {
					break
				}
				if len(rep.GetEntries()) != int(tt.req.GetPageSize()) {
					t.Fatalf("page %d has %d entries and another page follows; page size %d", pages, len(rep.GetEntries()), tt.req.GetPageSize())
				}
				tt.req.PageToken = rep.GetNextPageToken()
			}
			if len(got) != tt.want {
				t.Fatalf("%d entries over %d pages, want %d", len(got), pages, tt.want)
			}
			for i, sh := range got {
				if sh != uint32(i) {
					t.Fatalf("entry %d is shard %d: pages overlap or skip", i, sh)
				}
			}
			if size := max(int(tt.req.GetPageSize()), 1); pages != max(1, (tt.want+size-1)/size) {
				t.Errorf("%d pages for %d entries of %d per page", pages, tt.want, size)
			}
		})
	}
	// A page ends before its entries exceed the byte bound, whatever the
	// page size; a listing asked for whole is refused rather than cut.
	restore := server.SetMaxPageBytes(40, 100)
	defer restore()
	_, err = s.ListShards(ctx, &tenurev1.ListShardsRequest{})
	wantStatus(t, err, codes.InvalidArgument, tenurev1.ErrInvalid, "ListShardsRequest.page_size")
	req := &tenurev1.ListShardsRequest{PageSize: tenurev1.MaxPageSize}
	var got []uint32
	for pages := 1; ; pages++ {
		rep, err := s.ListShards(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, e := range rep.GetEntries() {
			got = append(got, e.GetShard())
			size += proto.Size(e) + 4
		}
		if len(rep.GetEntries()) == 0 || size > 40 {
			t.Fatalf("page %d: %d entries of %d bytes; the bound is 40", pages, len(rep.GetEntries()), size)
		}
		if rep.GetNextPageToken() == "" {
			if pages < 5 || len(got) != 50 {
				t.Fatalf("%d entries in %d pages of at most 40 bytes", len(got), pages)
			}
			break
		}
		req.PageToken = rep.GetNextPageToken()
	}
	if n, err := tenurev1.PageSize(&tenurev1.ListShardsRequest{PageSize: 1 << 30}); err != nil || n != tenurev1.MaxPageSize {
		t.Errorf("PageSize(1<<30) = %d, %v; want %d", n, err, tenurev1.MaxPageSize)
	}
	if n, err := tenurev1.PageSize(&tenurev1.ListShardsRequest{}); err != nil || n != 0 {
		t.Errorf("PageSize(0) = %d, %v; want 0, the whole listing", n, err)
	}
	if n, err := tenurev1.PageSize(&tenurev1.ListShardsRequest{PageToken: "t"}); err != nil || n != tenurev1.MaxPageSize {
		t.Errorf("PageSize(0, with a token) = %d, %v; want %d", n, err, tenurev1.MaxPageSize)
	}
}

// settledCluster returns a 3-node cluster, all voters, in which every shard
// is led by its desired owner.
func settledCluster(t *testing.T, shards int) *servertest.Cluster {
	t.Helper()
	c := servertest.NewCluster(t, 3, shards, ld)
	c.Start(3)
	if !shardtest.Within(40*time.Second, func() bool { return settled(c) }) {
		t.Fatalf("not true after 40s: every shard led by its desired owner, in every node's table:%s", c.Describe())
	}
	return c
}

// settled reports whether every live node owns shards in the agreed
// assignment, leads exactly those, and every node's table shows it. (A
// cluster whose later nodes are not active yet is settled in shardtest's
// sense, with the first node owning everything.)
func settled(c *servertest.Cluster) bool {
	ids := c.IDs()
	return c.Agree(ids, ids) && c.Settled() && tablesLed(c)
}

// tablesLed reports whether every live node's table shows a leader for
// every shard: leadership gossip has reached every node.
func tablesLed(c *servertest.Cluster) bool {
	for _, id := range c.IDs() {
		for _, e := range c.Node(id).Table().Entries() {
			if e.State != shard.Led {
				return false
			}
		}
	}
	return true
}

// Lookups over gRPC answer what the node's table says, one key or a batch,
// and the batch from one snapshot.
func TestLookupsAnswerFromTheTable(t *testing.T) {
	c := settledCluster(t, 64)
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-2"))
	node := c.Node("node-2")
	ctx := ctxFor(t, 20*time.Second)

	var keys [][]byte
	for i := range 300 {
		keys = append(keys, fmt.Appendf(nil, "customer/%d", i))
	}
	for _, k := range keys[:50] {
		before := node.Table()
		rep, err := client.Lookup(ctx, &tenurev1.LookupRequest{Key: k})
		if err != nil {
			t.Fatalf("Lookup(%s): %v", k, err)
		}
		got, err := tenurev1.EntryFromPB(rep.GetEntry())
		if err != nil {
			t.Fatalf("Lookup(%s) answered an invalid entry: %v", k, err)
		}
		if got != before.Lookup(k) && got != node.Table().Lookup(k) {
			t.Fatalf("Lookup(%s) = %+v, the table says %+v", k, got, node.Table().Lookup(k))
		}
		if got.State != shard.Led || got.Leader == "" || got.Epoch == 0 || got.Addr == "" {
			t.Fatalf("Lookup(%s) = %+v in a settled cluster, want a leader with epoch and address", k, got)
		}
		if got.Shard != shard.Of(k, 64) {
			t.Fatalf("Lookup(%s) answered shard %d, want %d", k, got.Shard, shard.Of(k, 64))
		}
	}

	before := node.Table()
	rep, err := client.BatchLookup(ctx, &tenurev1.BatchLookupRequest{Keys: keys})
	if err != nil {
		t.Fatalf("BatchLookup: %v", err)
	}
	after := node.Table()
	if len(rep.GetEntries()) != len(keys) {
		t.Fatalf("BatchLookup answered %d entries for %d keys", len(rep.GetEntries()), len(keys))
	}
	// Every answer comes from one table: before, after, or one between
	// that agrees with both wherever they agree.
	for i, m := range rep.GetEntries() {
		got, err := tenurev1.EntryFromPB(m)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if b, a := before.Lookup(keys[i]), after.Lookup(keys[i]); b == a && got != b {
			t.Fatalf("entry %d (%s) = %+v, the table says %+v", i, keys[i], got, b)
		}
	}

	// GetShard and ListShards agree with the table too.
	tab := node.Table()
	for _, s := range []uint32{0, 17, 63} {
		pb, err := client.GetShard(ctx, &tenurev1.GetShardRequest{Shard: s})
		if err != nil {
			t.Fatalf("GetShard(%d): %v", s, err)
		}
		want, _ := tab.Shard(int64(s))
		if got, _ := tenurev1.EntryFromPB(pb); got != want {
			t.Errorf("GetShard(%d) = %+v, want %+v", s, got, want)
		}
	}
	list, err := client.ListShards(ctx, &tenurev1.ListShardsRequest{Node: "node-3", FilterState: true, State: tenurev1.ShardState_SHARD_STATE_LED})
	if err != nil {
		t.Fatalf("ListShards: %v", err)
	}
	var want []uint32
	for _, e := range tab.Entries() {
		if e.State == shard.Led && (e.Leader == "node-3" || e.Desired == "node-3") {
			want = append(want, uint32(e.Shard))
		}
	}
	var got []uint32
	for _, m := range list.GetEntries() {
		got = append(got, m.GetShard())
	}
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("ListShards(node-3, led) = %v, want %v", got, want)
	}
}

// Cluster reports the members with their addresses and roles, the voters,
// the configuration in effect and the health of the node's view.
func TestClusterReportsMembersConfigAndHealth(t *testing.T) {
	c := settledCluster(t, 32)
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	rep, err := client.Cluster(ctxFor(t, 10*time.Second), &tenurev1.ClusterRequest{})
	if err != nil {
		t.Fatalf("Cluster: %v", err)
	}
	var ids []string
	for _, m := range rep.GetMembers() {
		ids = append(ids, m.GetNodeId())
		if m.GetGrpcAddress() != c.Addr(m.GetNodeId()) || m.GetGossipAddress() == "" || !m.GetVoter() ||
			m.GetState() != tenurev1.MemberState_MEMBER_STATE_ACTIVE || m.GetWeight() != 1 {
			t.Errorf("member %+v: want an active voter of weight 1 at %s", m, c.Addr(m.GetNodeId()))
		}
	}
	if !slices.Equal(ids, []string{"node-1", "node-2", "node-3"}) {
		t.Errorf("members = %v", ids)
	}
	if len(rep.GetVoters()) != 3 || rep.GetVoters()[0].GetId() != "node-1" {
		t.Errorf("voters = %v", rep.GetVoters())
	}
	cfg := rep.GetConfig()
	if cfg.GetShards() != 32 || cfg.GetCluster() != "test" || cfg.GetLeaseDurationMs() != 500 ||
		cfg.GetKeepAliveIntervalMs() != 125 || cfg.GetReplicationFactor() != shard.DefaultReplicationFactor || cfg.GetLoad() != shard.DefaultLoad {
		t.Errorf("config = %+v", cfg)
	}
	h := rep.GetHealth()
	// The cluster is settled, so every node has heard from every voter.
	if h.GetShardsUnled() != 0 || h.GetTableVersion() == 0 || h.GetVotersReachable() != 3 || h.GetShardsNotConverging() != 0 {
		t.Errorf("health = %+v, want no unled shard, a table version, 3 voters reachable and every shard converged", h)
	}
	// Per voter, what the answering node's requests say of it.
	for _, v := range rep.GetVoters() {
		if !v.GetAnswered() {
			t.Errorf("voter %s: answered false in a settled cluster", v.GetId())
		}
	}
}

// A shard without a leader cannot be transferred: the answer is a NOT_LEADER
// redirect whose address is the desired owner's, and it survives the round
// trip through the status mapping as a *shard.NotLeaderError.
func TestTransferOfAnUnledShardRedirects(t *testing.T) {
	c := servertest.NewCluster(t, 0, 16, 0) // no voters: nothing is ever led
	c.Start(2)
	c.WaitAgree(10*time.Second, "node-1", "node-2")
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	want, _ := c.Node("node-1").Table().Shard(5)

	_, err := client.Transfer(ctxFor(t, 10*time.Second), &tenurev1.TransferRequest{Shard: 5, Node: "node-2"})
	err = tenurev1.FromStatus(err)
	var nle *shard.NotLeaderError
	if !errors.As(err, &nle) {
		t.Fatalf("Transfer of an unled shard: %v, want a *shard.NotLeaderError", err)
	}
	if nle.Shard != 5 || nle.Leader != "" || nle.Addr != want.Addr || nle.Addr != c.Addr(want.Desired) {
		t.Errorf("redirect = %+v, want shard 5, no leader, the desired owner %s's address %s", *nle, want.Desired, c.Addr(want.Desired))
	}
}

// Drain of another node is forwarded to it: the node named runs the drain,
// whatever its outcome, and the caller's node does not.
func TestDrainIsForwardedToTheNodeNamed(t *testing.T) {
	c := servertest.NewCluster(t, 0, 16, 0)
	c.Start(3)
	c.WaitAgree(10*time.Second, "node-1", "node-2", "node-3")
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	if _, err := client.Drain(ctxFor(t, 10*time.Second), &tenurev1.DrainRequest{Node: "node-3"}); err != nil {
		t.Fatalf("Drain(node-3) through node-1: %v", err)
	}
	select {
	case <-c.Server("node-3").Drained():
	case <-time.After(20 * time.Second):
		t.Fatal("node-3 did not finish a drain")
	}
	select {
	case <-c.Server("node-1").Drained():
		t.Fatal("node-1 drained itself")
	default:
	}
}

// watcher reads a Watch stream and keeps the table it describes.
type watcher struct {
	t       *testing.T
	stream  tenurev1.Tenure_WatchClient
	held    map[uint32]shard.Entry
	version uint64
	origin  uint64
	resets  int
}

func watch(t *testing.T, ctx context.Context, client tenurev1.TenureClient, from, origin uint64) *watcher {
	t.Helper()
	st, err := client.Watch(ctx, &tenurev1.WatchRequest{FromVersion: from, Origin: origin})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	return &watcher{t: t, stream: st, held: map[uint32]shard.Entry{}}
}

// next applies one complete update (every event up to one without more)
// and reports whether it was a reset.
func (w *watcher) next() (reset bool, err error) {
	first := true
	for {
		ev, err := w.stream.Recv()
		if err != nil {
			return false, err
		}
		if first && ev.GetReset_() {
			reset = true
			w.resets++
			w.held = map[uint32]shard.Entry{}
		}
		first = false
		for _, m := range ev.GetChanged() {
			e, err := tenurev1.EntryFromPB(m)
			if err != nil {
				w.t.Fatalf("watch sent an invalid entry: %v", err)
			}
			w.held[uint32(e.Shard)] = e
		}
		w.version, w.origin = ev.GetVersion(), ev.GetOrigin()
		if !ev.GetMore() {
			return reset, nil
		}
	}
}

// matches reports whether the watcher holds exactly tab.
func (w *watcher) matches(tab *shard.Table) bool {
	if len(w.held) != tab.Shards() {
		return false
	}
	for _, e := range tab.Entries() {
		if w.held[uint32(e.Shard)] != e {
			return false
		}
	}
	return true
}

// Watch starts with the whole table, follows changes with diffs, and a
// client that reconnects with its version and origin gets only what
// changed meanwhile; another origin gets a reset.
func TestWatchResetThenDiffsThenResume(t *testing.T) {
	c := settledCluster(t, 128)
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	node := c.Node("node-1")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	w := watch(t, ctx, client, 0, 0)
	if reset, err := w.next(); err != nil || !reset {
		t.Fatalf("first update: reset %v, %v; want a reset", reset, err)
	}
	if len(w.held) != 128 || w.origin == 0 {
		t.Fatalf("reset held %d entries, origin %d; want 128 and an origin", len(w.held), w.origin)
	}

	// A node fails: node-1's table changes in several versions, which the
	// stream delivers as changes.
	c.Crash("node-3")
	for !w.matches(node.Table()) || c.Node("node-1").Table().DesiredCounts()["node-3"] > 0 || !c.AllLedOnceBy("node-1", "node-2") {
		if reset, err := w.next(); err != nil || reset {
			t.Fatalf("update after a crash: reset %v, %v; want changes", reset, err)
		}
	}
	cancel()
	version, origin := w.version, w.origin

	// Changes while the client is away: node-3 comes back and takes its
	// shards again.
	c.Restart("node-3")
	shardtest.Eventually(t, 40*time.Second, func() bool { return settled(c) }, "node-3 leads its shards again")

	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	w2 := watch(t, ctx2, client, version, origin)
	w2.held = maps(w.held)
	for !w2.matches(node.Table()) {
		if reset, err := w2.next(); err != nil || reset {
			t.Fatalf("resumed from %d: reset %v, %v; want the changes since", version, reset, err)
		}
	}

	// Another origin (another node, a restarted one) starts over.
	w3 := watch(t, ctx2, client, version, origin+1)
	if reset, err := w3.next(); err != nil || !reset || !w3.matches(node.Table()) && w3.version == node.Table().Version() {
		t.Fatalf("foreign origin: reset %v, %v; want a reset", reset, err)
	}
}

func maps(m map[uint32]shard.Entry) map[uint32]shard.Entry {
	out := make(map[uint32]shard.Entry, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Close ends open Watch streams with UNAVAILABLE at once (the node's gRPC
// server would otherwise wait for them), and refuses new ones.
func TestCloseEndsWatchStreams(t *testing.T) {
	c := servertest.NewCluster(t, 0, 8, 0)
	c.Start(1)
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	ctx := ctxFor(t, 20*time.Second)
	w := watch(t, ctx, client, 0, 0)
	if _, err := w.next(); err != nil {
		t.Fatal(err)
	}
	c.Server("node-1").Close()
	if _, err := w.next(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after Close the stream ended with %v, want UNAVAILABLE", err)
	}
	w2 := watch(t, ctx, client, 0, 0)
	if _, err := w2.next(); status.Code(err) != codes.Unavailable {
		t.Fatalf("a Watch after Close: %v, want UNAVAILABLE", err)
	}
	// Lookups keep working on a closed server.
	if _, err := client.Lookup(ctx, &tenurev1.LookupRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("Lookup after Close: %v", err)
	}
}

// A client that reads nothing does not hold up the node or Close: the
// stream's sender is blocked by flow control, and Close still returns.
func TestCloseWithAStalledWatcher(t *testing.T) {
	c := servertest.NewCluster(t, 0, 50000, 0) // a reset of several MB
	c.Start(1)
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	ctx := ctxFor(t, 20*time.Second)
	st, err := client.Watch(ctx, &tenurev1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Read one event so that the stream is surely open, then stop reading:
	// the remaining events of the reset fill the flow-control windows.
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Server("node-1").Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on a stalled Watch stream")
	}
	for {
		if _, err := st.Recv(); err != nil {
			if status.Code(err) != codes.Unavailable && !errors.Is(err, io.EOF) {
				t.Fatalf("stalled stream ended with %v, want UNAVAILABLE", err)
			}
			break
		}
	}
}
