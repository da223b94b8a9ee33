package scalesim

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// runAll runs start, join, leave and a 25 % crash on a small cluster and
// returns the phases (crash last, its gossip finished).
func runAll(t *testing.T, cfg Config) (*Sim, []Phase) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []Phase
	for _, f := range []func() (Phase, error){s.Start, s.Join, s.Leave, func() (Phase, error) { return s.Crash(0.25) }} {
		p, err := f()
		if err != nil {
			t.Fatalf("%s: %v", p.Event, err)
		}
		t.Logf("%s: settled %v in %v, moved %d (ideal %.0f), %d handoffs, %d acquisitions, gossip %v",
			p.Event, p.Settled, p.SettleTime, p.Moved, p.Ideal, p.Handoffs, p.Acquisitions, p.GossipSpread)
		out = append(out, p)
	}
	s.FinishGossip(&out[3])
	return s, out
}

func TestSmallClusterSettlesAfterEveryEvent(t *testing.T) {
	s, phases := runAll(t, Config{Seed: 7, Nodes: 8, Shards: 512})
	if n, vs := s.Violations(); n != 0 {
		t.Fatalf("%d safety violations: %v", n, vs)
	}
	for _, p := range phases {
		if !p.Settled {
			t.Fatalf("%s did not settle", p.Event)
		}
	}
	start, join, leave, crash := phases[0], phases[1], phases[2], phases[3]
	if start.Moved != 512 || start.Acquisitions != 512 {
		t.Errorf("start: %d shards led, %d acquired; want every one of 512", start.Moved, start.Acquisitions)
	}
	// The joiner is lifted to the policy's floor, 0.75 × its fair share,
	// by handoffs, and receives shards only after JoinSettle.
	if join.Moved == 0 || float64(join.Moved) > join.Ideal || join.Handoffs == 0 {
		t.Errorf("join moved %d shards by %d handoffs; want some, at most the ideal %.0f", join.Moved, join.Handoffs, join.Ideal)
	}
	if join.SettleTime < s.cfg.JoinSettle {
		t.Errorf("join settled in %v, before JoinSettle (%v) let the joiner receive shards", join.SettleTime, s.cfg.JoinSettle)
	}
	// A drain moves exactly the leaver's shards, all by handoff.
	if float64(leave.Moved) != leave.Ideal || leave.Handoffs != leave.Moved {
		t.Errorf("leave moved %d by %d handoffs; want the leaver's %.0f, all handed off", leave.Moved, leave.Handoffs, leave.Ideal)
	}
	// A crash moves exactly the victims' shards, acquired once their
	// leases ran out: about a lease after the crash, long before gossip
	// declares the victims dead.
	if float64(crash.Moved) != crash.Ideal || crash.Acquisitions != crash.Moved {
		t.Errorf("crash moved %d by %d acquisitions; want the victims' %.0f", crash.Moved, crash.Acquisitions, crash.Ideal)
	}
	if ld := s.cfg.LeaseDuration; crash.SettleTime < ld/2 || crash.SettleTime > 3*ld {
		t.Errorf("crash settled in %v; want about one lease (%v)", crash.SettleTime, ld)
	}
	if crash.GossipSpread <= crash.SettleTime {
		t.Errorf("gossip knew of the crash after %v, before the voters' failover (%v): the failure detector is too fast", crash.GossipSpread, crash.SettleTime)
	}
}

func TestRunsReplayExactlyFromTheSeed(t *testing.T) {
	strip := func(ps []Phase) []Phase {
		for i := range ps {
			ps[i].Wall, ps[i].PlanWall = 0, 0
		}
		return ps
	}
	_, a := runAll(t, Config{Seed: 11, Nodes: 6, Shards: 256})
	_, b := runAll(t, Config{Seed: 11, Nodes: 6, Shards: 256})
	_, c := runAll(t, Config{Seed: 12, Nodes: 6, Shards: 256})
	a, b, c = strip(a), strip(b), strip(c)
	for i := range a {
		if !reflect.DeepEqual(a[i], b[i]) {
			t.Fatalf("seed 11 twice: %s differs:\n%+v\n%+v", a[i].Event, a[i], b[i])
		}
	}
	same := true
	for i := range a {
		same = same && reflect.DeepEqual(a[i], c[i])
	}
	if same {
		t.Fatal("seeds 11 and 12 gave identical runs: the seed does not reach the simulation")
	}
}

// TestCheckerCatchesAnEarlyForward plants a driver bug: the source of a
// handoff tells the target to lead before it transfers. The checker must
// see two leaders.
func TestCheckerCatchesAnEarlyForward(t *testing.T) {
	s, err := New(Config{Seed: 3, Nodes: 6, Shards: 256, Bug: BugEarlyForward})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Violations(); n != 0 {
		t.Fatalf("%d violations before any handoff", n)
	}
	if _, err := s.Join(); err != nil {
		t.Logf("join: %v", err)
	}
	n, vs := s.Violations()
	if n == 0 {
		t.Fatal("the checker missed two leaders at once")
	}
	if vs[0].Rule != RuleOneLeader {
		t.Fatalf("first violation %v; want %q", vs[0], RuleOneLeader)
	}
	t.Logf("%d violations, first: %v", n, vs[0])
}

func TestGossipReachesEveryNodeInLogRounds(t *testing.T) {
	for _, tt := range []struct {
		name  string
		nodes int
	}{
		{name: "10 nodes", nodes: 10},
		{name: "300 nodes", nodes: 300},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{Seed: 5, Nodes: tt.nodes, Shards: 4 * tt.nodes})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Start(); err != nil {
				t.Fatal(err)
			}
			p, err := s.Join()
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range s.live() {
				if n.view[len(s.nodes)-1].state != stateActive {
					t.Fatalf("%s does not see the joiner", n.id)
				}
			}
			// Each round multiplies the informed nodes by about
			// GossipNodes+1; allow twice that many rounds, plus one for
			// the seed's round trip.
			gi := s.cfg.Gossip.GossipInterval
			rounds := 1
			for k := 1; k < tt.nodes; k *= s.cfg.Gossip.GossipNodes + 1 {
				rounds++
			}
			if bound := time.Duration(2*rounds+1) * gi; p.GossipSpread > bound {
				t.Fatalf("the join reached every node after %v; want within %v (%d rounds of %v)", p.GossipSpread, bound, 2*rounds+1, gi)
			}
			t.Logf("spread %v", p.GossipSpread)
		})
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "one node", cfg: Config{Nodes: 1}, want: "Config.Nodes"},
		{name: "too few shards", cfg: Config{Nodes: 10, Shards: 11}, want: "Config.Shards"},
		{name: "even voters", cfg: Config{Nodes: 4, Voters: 2}, want: "Config.Voters"},
		{name: "latency beyond a LAN", cfg: Config{Nodes: 4, LatencyMax: time.Second}, want: "Config.LatencyMax"},
		{name: "inverted latency", cfg: Config{Nodes: 4, LatencyMin: 2 * time.Millisecond, LatencyMax: time.Millisecond}, want: "Config.LatencyMin"},
		{name: "plans per round", cfg: Config{Nodes: 4, PlansPerRound: -2}, want: "Config.PlansPerRound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want an error naming %s", err, tt.want)
			}
		})
	}
	if err := (Config{Nodes: 4}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}
