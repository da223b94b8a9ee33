package check

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/tenurehq/tenure/server/servertest"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// statusServer serves the fields of tenured's /status?format=json that the
// Checker reads, from an in-process node. lie, when set, may rewrite the
// entries: a planted bug in what the node reports.
type statusServer struct {
	*httptest.Server
	node *shard.Node
	lie  atomic.Pointer[func([]map[string]any)]
}

func newStatusServer(t *testing.T, n *shard.Node) *statusServer {
	s := &statusServer{node: n}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		tbl := n.Table()
		doc := map[string]any{"node": n.ID(), "ready": n.Ready(), "table_version": tbl.Version()}
		var entries []map[string]any
		for _, e := range tbl.Entries() {
			entries = append(entries, map[string]any{"shard": e.Shard, "state": e.State.String(), "leader": e.Leader, "epoch": e.Epoch})
		}
		if lie := s.lie.Load(); lie != nil {
			(*lie)(entries)
		}
		doc["entries"] = entries
		var trs []map[string]any
		for _, tr := range n.Transitions() {
			trs = append(trs, map[string]any{"time": tr.Time.UTC(), "shard": tr.Shard, "epoch": tr.Epoch, "event": tr.Event})
		}
		plan, _ := n.Plan()
		doc["transitions"], doc["plan"], doc["members"] = trs, plan, n.Members()
		json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(s.Close)
	return s
}

// TestCheckerFollowsAnInProcessCluster runs a 3-node cluster in process,
// follows it, crashes a node and checks what the Checker concluded; then
// a node's status page claims a shard another node leads, at its epoch,
// and the Checker must report a double leader.
func TestCheckerFollowsAnInProcessCluster(t *testing.T) {
	const (
		shards = 16
		ld     = 500 * time.Millisecond
	)
	c := servertest.NewCluster(t, 3, shards, ld)
	c.Start(3)
	ids := []string{"node-1", "node-2", "node-3"}
	pages := map[string]*statusServer{}
	var nodes []Node
	for _, id := range ids {
		pages[id] = newStatusServer(t, c.Node(id))
		nodes = append(nodes, Node{ID: id, GRPCAddr: c.Addr(id), HTTPAddr: strings.TrimPrefix(pages[id].URL, "http://")})
	}
	ck, err := New(Config{
		// Generous: this checks the followers, not failover times, and runs
		// next to the rest of the test suite.
		Nodes: nodes, Shards: shards, Bound: 10 * ld, PollInterval: 50 * time.Millisecond,
		Logger:      shardtest.Logger(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(c.Net.Dialer("checker"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	ck.Start()
	defer ck.Stop()

	ledBy := func(want ...string) func() bool {
		return func() bool {
			v := ck.View()
			for _, id := range want {
				if !v.Nodes[id].Reachable || v.Nodes[id].Leads == 0 {
					return false
				}
			}
			return v.Led == shards
		}
	}
	shardtest.Eventually(t, 20*time.Second, ledBy(ids...), "every node to lead and every shard to be led")
	ck.Expect(true, "steady")

	ck.Begin("crash node-3")
	c.Crash("node-3")
	pages["node-3"].Close()
	shardtest.Eventually(t, 20*time.Second, func() bool {
		return !ck.View().Nodes["node-3"].Reachable && ledBy("node-1", "node-2")()
	}, "node-1 and node-2 to lead every shard")
	ck.End()

	rep := ck.Report()
	for _, v := range rep.Violations {
		t.Errorf("violation: %v", v)
	}
	crash := rep.Scenarios[0]
	t.Logf("\n%s", rep.Table())
	if crash.ShardsLeaderless == 0 || crash.LongestGap < ld/2 || crash.LongestGap > 10*ld {
		t.Errorf("crash: %d shards leaderless for up to %v; want node-3's shards, for about a lease (%v)",
			crash.ShardsLeaderless, crash.LongestGap, ld)
	}
	if rep.Tokens == 0 || rep.Acquisitions == 0 {
		t.Errorf("saw %d leaderships and %d acquisitions, want some", rep.Tokens, rep.Acquisitions)
	}

	// node-2's page now also claims, at its epoch, a shard node-1 leads.
	// A poll is stamped when it was sent: the lie goes in only once a poll
	// of node-2 sent after the scenario began has come back, so that no
	// poll sent before it can carry the lie (and date it before the
	// scenario).
	began := time.Now()
	ck.Begin("node-2 lies")
	shardtest.Eventually(t, 10*time.Second, func() bool { return ck.View().Nodes["node-2"].Polled.After(began) }, "a poll of node-2 sent in the scenario")
	var victim shard.Entry
	for _, e := range c.Node("node-1").Table().Entries() {
		if e.Leader == "node-1" && e.State == shard.Led {
			victim = e
			break
		}
	}
	lie := func(entries []map[string]any) {
		entries[victim.Shard]["leader"], entries[victim.Shard]["epoch"], entries[victim.Shard]["state"] = "node-2", victim.Epoch, "led"
	}
	pages["node-2"].lie.Store(&lie)
	shardtest.Eventually(t, 10*time.Second, func() bool { return ck.Report().Count(DoubleLeader) > 0 }, "the checker to report a double leader")
	ck.End()
	v := ck.Report().Scenarios[1].Violations
	if len(v) == 0 || v[0].Kind != DoubleLeader || v[0].Shard != uint32(victim.Shard) || v[0].Epoch != victim.Epoch {
		t.Errorf("got %v, want a double leader of shard %d at epoch %d", v, victim.Shard, victim.Epoch)
	}
}
