package check

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
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
// document before it is sent: a planted bug in what the node reports.
type statusServer struct {
	*httptest.Server
	node *shard.Node
	lie  atomic.Pointer[func(doc *statusDoc)]
}

// statusDoc is the document a statusServer sends, in the shape of
// daemon/status.go's: a transition has a reason and a peer only when it
// is a release (and the peer only for a handoff).
type statusDoc struct {
	Node         string           `json:"node"`
	Ready        bool             `json:"ready"`
	TableVersion uint64           `json:"table_version"`
	Entries      []map[string]any `json:"entries"`
	Transitions  []map[string]any `json:"transitions"`
	Plan         any              `json:"plan"`
	Members      any              `json:"members"`
}

func newStatusServer(t *testing.T, n *shard.Node) *statusServer {
	s := &statusServer{node: n}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		tbl := n.Table()
		doc := statusDoc{Node: n.ID(), Ready: n.Ready(), TableVersion: tbl.Version(), Members: n.Members()}
		for _, e := range tbl.Entries() {
			doc.Entries = append(doc.Entries, map[string]any{"shard": e.Shard, "state": e.State.String(), "leader": e.Leader, "epoch": e.Epoch})
		}
		trs := n.Transitions()
		for i := len(trs) - 1; i >= 0; i-- { // newest first
			tr := trs[i]
			m := map[string]any{"time": tr.Time.UTC().Round(time.Millisecond), "shard": tr.Shard, "epoch": tr.Epoch, "event": tr.Event}
			if tr.Event == "released" {
				m["reason"] = tr.Reason.String()
				if tr.Peer != "" {
					m["peer"] = tr.Peer
				}
			}
			doc.Transitions = append(doc.Transitions, m)
		}
		plan, _ := n.Plan()
		doc.Plan = plan
		if lie := s.lie.Load(); lie != nil {
			(*lie)(&doc)
		}
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
	ck.Rule(EndRule{Faulted: []string{"node-3"}})
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
	lie := func(doc *statusDoc) {
		e := doc.Entries[victim.Shard]
		e["leader"], e["epoch"], e["state"] = "node-2", victim.Epoch, "led"
	}
	pages["node-2"].lie.Store(&lie)
	shardtest.Eventually(t, 10*time.Second, func() bool { return ck.Report().Count(DoubleLeader) > 0 }, "the checker to report a double leader")
	ck.End()
	v := ck.Report().Scenarios[1].Violations
	if len(v) == 0 || v[0].Kind != DoubleLeader || v[0].Shard != uint32(victim.Shard) || v[0].Epoch != victim.Epoch {
		t.Errorf("got %v, want a double leader of shard %d at epoch %d", v, victim.Shard, victim.Epoch)
	}

	// node-1's history now also shows two ends of leases it held, dated in
	// a scenario that faults node-3 and forbids expiries elsewhere: a
	// handoff, which is allowed, and an expiry of the victim's lease, which
	// is not. Real ends may join them: on a loaded machine the in-process
	// nodes lose leases too.
	const name = "node-1 loses a lease"
	ck.Begin(name)
	ck.Rule(EndRule{Faulted: []string{"node-3"}, Forbidden: []string{ReasonLeaseExpired, ReasonQuorumLost}})
	planted := time.Now().Add(time.Millisecond).UTC().Truncate(time.Millisecond) // in the scenario, at /status's resolution
	lost := func(doc *statusDoc) {
		doc.Transitions = append([]map[string]any{
			{"time": planted.Add(time.Millisecond), "shard": victim.Shard, "epoch": victim.Epoch, "event": "released", "reason": ReasonLeaseExpired},
			{"time": planted, "shard": victim.Shard, "epoch": victim.Epoch - 1, "event": "released", "reason": ReasonHandoff, "peer": "node-2"},
		}, doc.Transitions...)
	}
	pages["node-1"].lie.Store(&lost)
	shardtest.Eventually(t, 10*time.Second, func() bool { return ck.Report().Count(ForbiddenEnd) > 0 }, "the checker to report a forbidden end")
	ck.End()
	rep = ck.Report()
	t.Logf("\n%s", rep.Table())
	sc := scenarioNamed(rep, name)
	caught := slices.ContainsFunc(sc.Violations, func(v Violation) bool {
		return v.Kind == ForbiddenEnd && slices.Equal(v.Nodes, []string{"node-1"}) && v.Shard == uint32(victim.Shard) && v.Epoch == victim.Epoch
	})
	if !caught {
		t.Errorf("got violations %v, want node-1's planted expiry of shard %d at epoch %d", sc.Violations, victim.Shard, victim.Epoch)
	}
	if sc.Ends[ReasonLeaseExpired] < 1 || sc.Ends[ReasonHandoff] < 1 {
		t.Errorf("ends elsewhere %v, want the planted expiry and handoff among them", sc.Ends)
	}
}

func scenarioNamed(rep Report, name string) ScenarioResult {
	for _, s := range rep.Scenarios {
		if s.Name == name {
			return s
		}
	}
	return ScenarioResult{Name: name}
}

// TestReasonsAreTheNodes pins the reasons the check package names to the
// words nodes use for them on /status and in their logs.
func TestReasonsAreTheNodes(t *testing.T) {
	for _, tt := range []struct {
		give shard.Reason
		want string
	}{
		{shard.ReasonLeaseExpired, ReasonLeaseExpired},
		{shard.ReasonQuorumLost, ReasonQuorumLost},
		{shard.ReasonSuperseded, ReasonSuperseded},
		{shard.ReasonHandoff, ReasonHandoff},
		{shard.ReasonRebalance, ReasonRebalance},
		{shard.ReasonDrain, ReasonDrain},
		{shard.ReasonShutdown, ReasonShutdown},
	} {
		if got := tt.give.String(); got != tt.want {
			t.Errorf("shard says %q where check says %q", got, tt.want)
		}
	}
}
