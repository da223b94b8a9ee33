package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tenurehq/tenure/client"
	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/server/servertest"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ld = 500 * time.Millisecond

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// shardService is an application service on every node: Check with the
// shard number as the service name succeeds on the shard's leader and
// answers NOT_LEADER (through the status mapping) anywhere else, as a real
// service sharded by Tenure does.
type shardService struct {
	healthpb.UnimplementedHealthServer
	node *servertest.Lazy[*shard.Node]
}

func (s shardService) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	n, ok := s.node.Get()
	if !ok {
		return nil, tenurev1.ToStatus(shard.ErrNotStarted)
	}
	id, err := strconv.ParseUint(req.GetService(), 10, 32)
	if err != nil {
		return nil, tenurev1.ToStatus(&tenurev1.FieldError{Field: "HealthCheckRequest.service", Reason: "not a shard"})
	}
	if _, leads := n.Leases()[uint32(id)]; leads {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	e, err := n.Table().Shard(int64(id))
	if err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	if e.Leader == n.ID() { // the table lags the lease's end
		e.Leader = ""
	}
	return nil, tenurev1.ToStatus(&shard.NotLeaderError{Shard: uint32(id), Leader: e.Leader, Addr: e.Addr, Epoch: e.Epoch})
}

// cluster starts a 3-node cluster, all voters, serving the API and the
// shard service, and waits until every node's table shows every shard
// led by its desired owner.
func cluster(t *testing.T, shards int) *servertest.Cluster {
	t.Helper()
	c := servertest.NewCluster(t, 3, shards, ld)
	c.Register = func(n *servertest.Lazy[*shard.Node], g *grpc.Server) {
		healthpb.RegisterHealthServer(g, shardService{node: n})
	}
	c.Start(3)
	shardtest.Eventually(t, 40*time.Second, func() bool { return settled(c) },
		"every shard led by its desired owner, in every node's table")
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

// newClient returns a client of the given nodes, dialing through the
// cluster's network, closed when the test ends.
func newClient(t *testing.T, c *servertest.Cluster, endpoints []string, mod func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{
		Endpoints:   endpoints,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(c.Net.Dialer("client"))},
		Logger:      shardtest.Logger().With("component", "client"),
		BackoffBase: 10 * time.Millisecond,
		BackoffMax:  200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func addrs(c *servertest.Cluster, ids ...string) []string {
	var out []string
	for _, id := range ids {
		out = append(out, c.Addr(id))
	}
	return out
}

// sameTable reports whether the client holds exactly node n's table.
func sameTable(cl *client.Client, n *shard.Node) bool {
	t := cl.Table()
	return t != nil && slices.Equal(t.Entries(), n.Table().Entries())
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name, wantField string
		give            client.Config
	}{
		{"no endpoints", "Config.Endpoints", client.Config{}},
		{"endpoint without port", "Config.Endpoints[1]", client.Config{Endpoints: []string{"a:1", "b"}}},
		{"negative backoff", "Config.BackoffBase", client.Config{Endpoints: []string{"a:1"}, BackoffBase: -1}},
		{"max below base", "Config.BackoffMax", client.Config{Endpoints: []string{"a:1"}, BackoffBase: time.Second, BackoffMax: time.Millisecond}},
		{"negative timeout", "Config.CallTimeout", client.Config{Endpoints: []string{"a:1"}, CallTimeout: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cl, err := client.New(tt.give)
			if err == nil {
				cl.Close()
				t.Fatalf("New accepted %+v", tt.give)
			}
			if !strings.Contains(err.Error(), tt.wantField) {
				t.Errorf("New: %v, want it to name %s", err, tt.wantField)
			}
		})
	}
}

// The client's table is the followed node's, and lookups answer from it.
func TestClientFollowsTheTable(t *testing.T) {
	c := cluster(t, 64)
	cl := newClient(t, c, addrs(c, "node-1", "node-2"), nil)
	if _, ok := cl.LookupString("k"); ok && cl.Table() == nil {
		t.Fatal("a lookup answered before any table")
	}
	if err := cl.WaitReady(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	shardtest.Eventually(t, 10*time.Second, func() bool { return sameTable(cl, c.Node("node-1")) }, "the client holds node-1's table")
	for i := range 100 {
		k := fmt.Sprintf("customer/%d", i)
		got, ok := cl.LookupString(k)
		if want := cl.Table().LookupString(k); !ok || got != want || got.Shard != shard.OfString(k, 64) {
			t.Fatalf("LookupString(%s) = %+v, %v; want %+v", k, got, ok, want)
		}
	}

	// A leadership change reaches the client.
	ctx := ctxFor(t, 20*time.Second)
	if err := cl.PauseRebalance(ctx); err != nil {
		t.Fatal(err)
	}
	shardtest.Eventually(t, 10*time.Second, func() bool { return c.Node("node-2").RebalancePaused() }, "node-2 paused")
	var s uint32
	for s = range c.Node("node-2").Leases() {
		break
	}
	// node-2 may not count node-3 as an active member vouched for by the
	// voters yet (gossip and voter news on a busy machine): it refuses
	// the transfer, naming node-3, until it does.
	var terr error
	shardtest.Within(10*time.Second, func() bool {
		terr = cl.Transfer(ctx, s, "node-3")
		return terr == nil || !strings.Contains(terr.Error(), `"node-3"`)
	})
	if terr != nil {
		t.Fatalf("Transfer(%d, node-3): %v", s, terr)
	}
	shardtest.Eventually(t, 10*time.Second, func() bool {
		e, _ := cl.Table().Shard(int64(s))
		return e.Leader == "node-3"
	}, "the client sees node-3 lead shard %d", s)
}

// When the followed node stops, the client moves to the next endpoint and
// keeps its table current from there; a dead first endpoint is skipped.
func TestClientFailsOverBetweenEndpoints(t *testing.T) {
	c := cluster(t, 32)
	dead := "127.0.0.1:1" // nothing listens on port 1
	cl := newClient(t, c, append([]string{dead}, addrs(c, "node-1", "node-2")...), nil)
	if err := cl.WaitReady(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("with a dead first endpoint: %v", err)
	}
	shardtest.Eventually(t, 10*time.Second, func() bool { return sameTable(cl, c.Node("node-1")) }, "the client holds node-1's table")

	c.Crash("node-1")
	shardtest.Eventually(t, 20*time.Second, func() bool {
		if !sameTable(cl, c.Node("node-2")) {
			return false
		}
		for _, e := range cl.Table().Entries() {
			if e.Leader == "node-1" || e.Desired == "node-1" || e.State != shard.Led {
				return false
			}
		}
		return true
	}, "the client follows node-2 and sees node-1's shards led elsewhere")

	// Calls move past the dead endpoints too. (The voters fail node-1's
	// shards over before gossip declares it dead, so its membership may
	// outlive them for a moment.)
	var ids []string
	shardtest.Eventually(t, 20*time.Second, func() bool {
		members, err := cl.Members(ctxFor(t, 10*time.Second))
		if err != nil {
			t.Fatalf("Members: %v", err)
		}
		ids = ids[:0]
		for _, m := range members {
			ids = append(ids, m.GetNodeId())
		}
		return slices.Equal(ids, []string{"node-2", "node-3"})
	}, "members are node-2 and node-3, from past the dead endpoints")
}

// conns dials each address once, for the work functions of the tests.
type conns struct {
	t  *testing.T
	c  *servertest.Cluster
	mu sync.Mutex
	m  map[string]*grpc.ClientConn
}

func (cs *conns) health(addr string) healthpb.HealthClient {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.m == nil {
		cs.m = map[string]*grpc.ClientConn{}
	}
	conn := cs.m[addr]
	if conn == nil {
		var err error
		conn, err = grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(cs.c.Net.Dialer("client")))
		if err != nil {
			cs.t.Fatal(err)
		}
		cs.m[addr] = conn
		cs.t.Cleanup(func() { conn.Close() })
	}
	return healthpb.NewHealthClient(conn)
}

// A "not leader" answer sent through the status mapping sends Do straight
// to the leader it names: here the first attempt goes, as a stale table
// would send it, to a node that does not lead the shard.
func TestDoFollowsNotLeaderRedirects(t *testing.T) {
	c := cluster(t, 16)
	cl := newClient(t, c, addrs(c, "node-1"), nil)
	cs := &conns{t: t, c: c}
	if err := cl.WaitReady(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	key := []byte("customer/42")
	s := uint32(shard.Of(key, 16))
	leader := c.Leaders()[s]
	var wrong string
	for _, id := range c.IDs() {
		if _, ok := leader[id]; !ok {
			wrong = id
			break
		}
	}
	var tried []shard.Entry
	err := cl.Do(ctxFor(t, 20*time.Second), key, func(ctx context.Context, e shard.Entry) error {
		tried = append(tried, e)
		addr := e.Addr
		if len(tried) == 1 {
			addr = c.Addr(wrong)
		}
		_, err := cs.health(addr).Check(ctx, &healthpb.HealthCheckRequest{Service: strconv.Itoa(int(s))})
		return err
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if len(tried) != 2 {
		t.Fatalf("Do took %d attempts (%+v), want 2: the stale one and the redirect", len(tried), tried)
	}
	if _, ok := leader[tried[1].Leader]; !ok || tried[1].Addr != c.Addr(tried[1].Leader) {
		t.Errorf("second attempt went to %+v, want the leader %v", tried[1], leader)
	}
}

// Do keeps trying across a leader's crash: the attempts fail until a new
// leader takes over, then one succeeds on it.
func TestDoRetriesAcrossALeaderCrash(t *testing.T) {
	c := cluster(t, 16)
	cl := newClient(t, c, addrs(c, "node-1", "node-2"), nil)
	cs := &conns{t: t, c: c}
	if err := cl.WaitReady(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	var s uint32
	for s = range c.Node("node-3").Leases() {
		break
	}
	dead := c.Addr("node-3")
	c.Crash("node-3")
	var last shard.Entry
	attempts := 0
	err := cl.DoShard(ctxFor(t, 30*time.Second), s, func(ctx context.Context, e shard.Entry) error {
		attempts++
		last = e
		_, err := cs.health(e.Addr).Check(ctx, &healthpb.HealthCheckRequest{Service: strconv.Itoa(int(s))})
		return err
	})
	if err != nil {
		t.Fatalf("DoShard(%d) after its leader crashed: %v", s, err)
	}
	// The work succeeded where the shard is led now: at the new leader, or
	// at the desired owner an unled entry points to, which had just won it.
	if last.Leader == "node-3" || last.Addr == dead || last.Addr == "" {
		t.Errorf("succeeded on %+v, want the new leader", last)
	}
	t.Logf("%d attempts", attempts)
}

// Work that fails for good is not retried; ctx bounds the retries of work
// that never finds a leader.
func TestDoStopsOnPermanentErrorsAndContext(t *testing.T) {
	c := cluster(t, 16)
	cl := newClient(t, c, addrs(c, "node-1"), nil)
	if err := cl.WaitReady(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	calls := 0
	permanent := tenurev1.ToStatus(&tenurev1.FieldError{Field: "x", Reason: "bad"})
	err := cl.DoShard(ctxFor(t, 10*time.Second), 1, func(context.Context, shard.Entry) error { calls++; return permanent })
	if !errors.Is(err, tenurev1.ErrInvalid) || calls != 1 {
		t.Errorf("DoShard with a permanent error: %v after %d calls, want ErrInvalid after 1", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = cl.DoShard(ctx, 1, func(context.Context, shard.Entry) error {
		return tenurev1.ToStatus(&shard.NotLeaderError{Shard: 1})
	})
	if !errors.Is(err, shard.ErrNotLeader) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DoShard without a leader: %v, want ErrNotLeader joined with the deadline", err)
	}
}

// The admin helpers reach the cluster and map its errors.
func TestAdminHelpers(t *testing.T) {
	c := cluster(t, 16)
	cl := newClient(t, c, addrs(c, "node-2"), nil)
	ctx := ctxFor(t, 20*time.Second)

	entries, err := cl.Shards(ctx, client.ShardFilter{Node: "node-1", ByState: true, State: shard.Led})
	if err != nil {
		t.Fatalf("Shards: %v", err)
	}
	if len(entries) == 0 {
		t.Error("Shards(node-1, led) is empty")
	}
	for _, e := range entries {
		if e.Leader != "node-1" && e.Desired != "node-1" {
			t.Errorf("Shards(node-1) returned %+v", e)
		}
	}
	restore := client.SetShardsPageSize(3)
	paged, err := cl.Shards(ctx, client.ShardFilter{Node: "node-1", ByState: true, State: shard.Led})
	restore()
	if err != nil || len(paged) != len(entries) {
		t.Errorf("Shards over pages of 3: %d entries, %v; in one page: %d", len(paged), err, len(entries))
	}
	for i := range min(len(paged), len(entries)) {
		if paged[i].Shard != entries[i].Shard {
			t.Errorf("entry %d: shard %d over pages, %d in one page", i, paged[i].Shard, entries[i].Shard)
		}
	}
	e, err := cl.Shard(ctx, uint32(entries[0].Shard))
	if err != nil || e.Shard != entries[0].Shard {
		t.Errorf("Shard(%d) = %+v, %v", entries[0].Shard, e, err)
	}
	if _, err := cl.Shard(ctx, 16); !errors.Is(err, shard.ErrUnknownShard) {
		t.Errorf("Shard(16): %v, want ErrUnknownShard", err)
	}
	got, err := cl.LookupRemote(ctx, [][]byte{[]byte("a"), []byte("b")})
	if err != nil || len(got) != 2 || got[0].Shard != shard.Of([]byte("a"), 16) {
		t.Errorf("LookupRemote = %+v, %v", got, err)
	}
	if err := cl.Drain(ctx, "node-9"); !errors.Is(err, shard.ErrUnknownNode) {
		t.Errorf("Drain(node-9): %v, want ErrUnknownNode", err)
	}
	if err := cl.Drain(ctx, "no such node!"); !errors.Is(err, tenurev1.ErrInvalid) {
		t.Errorf("Drain(bad ID): %v, want ErrInvalid", err)
	}
	if err := cl.ResumeRebalance(ctx); err != nil {
		t.Errorf("ResumeRebalance: %v", err)
	}
}
