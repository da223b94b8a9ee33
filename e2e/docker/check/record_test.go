package check

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// at returns t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func leads(pairs ...uint64) map[uint32]uint64 {
	m := map[uint32]uint64{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[uint32(pairs[i])] = pairs[i+1]
	}
	return m
}

func TestRecorder(t *testing.T) {
	tests := []struct {
		name  string
		bound time.Duration
		end   int // ms: when the report is made
		run   func(r *Recorder)
		want  map[Kind]int
		// longest is the longest gap the only scenario must show, if set.
		longest time.Duration
	}{
		{
			name: "handoff within milliseconds", bound: time.Second, end: 1000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 1, true, leads(0, 1))
				r.Table("b", at(0), FromWatch, 1, true, leads())
				r.Expect(at(0), true, "steady")
				r.Begin(at(0), "handoff")
				r.Table("a", at(500), FromWatch, 2, false, leads())
				r.Table("b", at(503), FromWatch, 2, false, leads(0, 2))
				r.History("a", at(600), []Acquisition{{Shard: 0, Epoch: 1, At: at(-100), Event: "acquired"}}, false)
				r.History("b", at(600), []Acquisition{{Shard: 0, Epoch: 2, At: at(502), Event: "acquired"}}, false)
			},
			want:    map[Kind]int{},
			longest: 3 * time.Millisecond,
		},
		{
			name: "two nodes claim one epoch", bound: time.Second, end: 1000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 1, true, leads(0, 3))
				r.Table("b", at(10), FromStatus, 7, false, leads(0, 3))
			},
			want: map[Kind]int{DoubleLeader: 1},
		},
		{
			name: "two nodes claim one epoch in their histories", bound: time.Second, end: 1000,
			run: func(r *Recorder) {
				r.History("a", at(0), []Acquisition{{Shard: 4, Epoch: 9, At: at(-50), Event: "acquired"}}, false)
				r.History("b", at(0), []Acquisition{{Shard: 4, Epoch: 9, At: at(-40), Event: "acquired"}}, false)
			},
			want: map[Kind]int{DoubleLeader: 1},
		},
		{
			name: "the same claim seen again is one claim", bound: time.Second, end: 1000,
			run: func(r *Recorder) {
				for v := uint64(1); v < 5; v++ {
					r.Table("a", at(int(v)*100), FromStatus, v, false, leads(0, 3, 1, 3))
					r.History("a", at(int(v)*100), []Acquisition{{Shard: 0, Epoch: 3, At: at(-1), Event: "acquired"}}, false)
				}
			},
			want: map[Kind]int{},
		},
		{
			name: "a node goes back to a lower epoch", bound: time.Second, end: 1000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 1, true, leads(0, 5))
				r.Table("a", at(100), FromWatch, 2, false, leads(0, 4))
			},
			want: map[Kind]int{EpochRegressed: 1},
		},
		{
			name: "an acquisition at a lower epoch after a higher one", bound: time.Second, end: 1000,
			run: func(r *Recorder) {
				r.History("a", at(0), []Acquisition{{Shard: 2, Epoch: 5, At: at(-500), Event: "acquired"}}, false)
				r.History("b", at(0), []Acquisition{{Shard: 2, Epoch: 4, At: at(-200), Event: "acquired"}}, false)
			},
			want: map[Kind]int{EpochRegressed: 1},
		},
		{
			name: "acquisitions stamped in the same millisecond are ordered by epoch", bound: time.Second, end: 1000,
			run: func(r *Recorder) {
				r.History("b", at(0), []Acquisition{{Shard: 2, Epoch: 6, At: at(-200), Event: "acquired"}}, false)
				r.History("a", at(0), []Acquisition{{Shard: 2, Epoch: 5, At: at(-200), Event: "acquired"}}, false)
			},
			want: map[Kind]int{},
		},
		{
			name: "a late poll of an older table changes nothing", bound: time.Second, end: 1000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 5, true, leads(0, 2))
				r.Expect(at(0), true, "steady")
				r.Begin(at(0), "late poll")
				r.Table("a", at(100), FromStatus, 4, false, leads())
				r.Table("a", at(900), FromStatus, 5, false, leads(0, 2))
			},
			want:    map[Kind]int{},
			longest: 0,
		},
		{
			name: "a paused leader's claims end at its last answer", bound: time.Second, end: 3000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 1, true, leads(0, 1))
				r.Expect(at(0), true, "steady")
				r.Begin(at(0), "pause")
				r.Table("a", at(250), FromStatus, 1, false, leads(0, 1)) // last answer
				r.Unreachable("a", at(1500))
				r.Table("b", at(2000), FromWatch, 3, false, leads(0, 2))
			},
			want:    map[Kind]int{Unavailable: 1},
			longest: 1750 * time.Millisecond,
		},
		{
			name: "a failover within the bound", bound: 2 * time.Second, end: 3000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 1, true, leads(0, 1))
				r.Expect(at(0), true, "steady")
				r.Begin(at(0), "pause")
				r.Table("a", at(250), FromStatus, 1, false, leads(0, 1))
				r.Unreachable("a", at(1500))
				r.Table("b", at(2000), FromWatch, 3, false, leads(0, 2))
			},
			want:    map[Kind]int{},
			longest: 1750 * time.Millisecond,
		},
		{
			name: "a gap while the voters are cut off counts from the heal", bound: time.Second, end: 10000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 1, true, leads(0, 1))
				r.Expect(at(0), true, "steady")
				r.Begin(at(0), "majority cut")
				r.Expect(at(100), false, "voters cut off")
				r.Table("a", at(1200), FromWatch, 2, false, leads())
				r.Expect(at(6000), true, "healed")
				r.Table("b", at(6800), FromWatch, 5, false, leads(0, 2))
			},
			want:    map[Kind]int{},
			longest: 5600 * time.Millisecond,
		},
		{
			name: "service that does not return within the bound of the heal", bound: time.Second, end: 10000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 1, true, leads(0, 1))
				r.Expect(at(0), true, "steady")
				r.Begin(at(0), "majority cut")
				r.Expect(at(100), false, "voters cut off")
				r.Table("a", at(1200), FromWatch, 2, false, leads())
				r.Expect(at(6000), true, "healed")
				r.Table("b", at(7500), FromWatch, 5, false, leads(0, 2))
			},
			want:    map[Kind]int{Unavailable: 1},
			longest: 6300 * time.Millisecond,
		},
		{
			name: "a restarted node's first table applies whatever its version", bound: time.Second, end: 2000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 40, true, leads(0, 1, 1, 1))
				r.Expect(at(0), true, "steady")
				r.Begin(at(0), "restart")
				r.StreamDown("a")
				r.Unreachable("a", at(300))
				r.Table("a", at(900), FromStatus, 2, false, leads(0, 2, 1, 2))
			},
			want:    map[Kind]int{},
			longest: 900 * time.Millisecond,
		},
		{
			name: "a shard that never gets a leader back", bound: time.Second, end: 5000,
			run: func(r *Recorder) {
				r.Table("a", at(0), FromWatch, 1, true, leads(0, 1))
				r.Expect(at(0), true, "steady")
				r.Begin(at(0), "lost")
				r.Table("a", at(100), FromWatch, 2, false, leads())
			},
			want:    map[Kind]int{Unavailable: 1},
			longest: 4900 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecorder(1)
			tt.run(r)
			rep := r.Report(at(tt.end), tt.bound)
			got := map[Kind]int{}
			for _, v := range rep.Violations {
				got[v.Kind]++
				t.Log(v)
			}
			for _, k := range []Kind{DoubleLeader, EpochRegressed, Unavailable} {
				if got[k] != tt.want[k] {
					t.Errorf("%s: got %d, want %d", k, got[k], tt.want[k])
				}
			}
			if len(rep.Scenarios) == 1 {
				if g := rep.Scenarios[0].LongestGap; g != tt.longest {
					t.Errorf("longest gap %v, want %v", g, tt.longest)
				}
			}
		})
	}
}

func TestReportAttributesViolationsToScenarios(t *testing.T) {
	r := NewRecorder(2)
	r.Table("a", at(0), FromWatch, 1, true, leads(0, 1, 1, 1))
	r.Expect(at(0), true, "steady")
	r.Begin(at(0), "quiet")
	r.End(at(1000))
	r.Begin(at(1000), "broken")
	r.Table("b", at(1500), FromWatch, 1, true, leads(1, 1))
	r.End(at(2000))
	rep := r.Report(at(2000), time.Second)
	if n := len(rep.Scenarios); n != 2 {
		t.Fatalf("got %d scenarios, want 2", n)
	}
	if v := rep.Scenarios[0].Violations; len(v) != 0 {
		t.Errorf("quiet: got violations %v", v)
	}
	if v := rep.Scenarios[1].Violations; len(v) != 1 || v[0].Kind != DoubleLeader {
		t.Errorf("broken: got %v, want one double leader", v)
	}
	table := rep.Table()
	for _, want := range []string{"scenario", "quiet", "broken"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestHistoryNotesMissedEntries(t *testing.T) {
	r := NewRecorder(1)
	full := make([]Acquisition, historyCapacity)
	for i := range full {
		full[i] = Acquisition{Shard: 0, Epoch: uint64(i + 1), At: at(i), Event: "acquired"}
	}
	r.History("a", at(0), full[:10], false)
	r.History("a", at(1000), full[20:], true) // entries 10-19 never seen
	if rep := r.Report(at(1000), time.Second); len(rep.Notes) != 1 {
		t.Errorf("got notes %q, want one about missed entries", rep.Notes)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Nodes: []Node{{ID: "n1", GRPCAddr: "10.0.0.1:7000", HTTPAddr: "10.0.0.1:7080"}}, Shards: 8, Bound: time.Second}
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // substring of the error; "" for none
	}{
		{name: "valid", modify: func(*Config) {}},
		{name: "no nodes", modify: func(c *Config) { c.Nodes = nil }, want: "Config.Nodes is empty"},
		{name: "no shards", modify: func(c *Config) { c.Shards = 0 }, want: "Config.Shards"},
		{name: "no bound", modify: func(c *Config) { c.Bound = 0 }, want: "Config.Bound"},
		{name: "bad address", modify: func(c *Config) { c.Nodes[0].HTTPAddr = "10.0.0.1" }, want: "Config.Nodes[0].HTTPAddr"},
		{name: "duplicate node", modify: func(c *Config) { c.Nodes = append(c.Nodes, c.Nodes[0]) }, want: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			c.Nodes = append([]Node(nil), good.Nodes...)
			tt.modify(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestGapsBelongToTheScenarioTheyOverlapMost(t *testing.T) {
	r := NewRecorder(1)
	r.Table("a", at(0), FromWatch, 1, true, leads(0, 1))
	r.Expect(at(0), true, "steady")
	r.Begin(at(0), "quiet")
	r.Table("a", at(980), FromStatus, 1, false, leads(0, 1)) // a's last answer
	r.End(at(1000))
	r.Begin(at(1000), "pause a")
	r.Unreachable("a", at(2000))
	r.Table("b", at(4000), FromWatch, 1, true, leads(0, 2))
	r.End(at(5000))
	rep := r.Report(at(5000), 2*time.Second)
	quiet, pause := rep.Scenarios[0], rep.Scenarios[1]
	if quiet.ShardsLeaderless != 0 || len(quiet.Violations) != 0 {
		t.Errorf("quiet: %d shards leaderless, violations %v; want none", quiet.ShardsLeaderless, quiet.Violations)
	}
	if pause.LongestGap != 3020*time.Millisecond || len(pause.Violations) != 1 || pause.Violations[0].Kind != Unavailable {
		t.Errorf("pause a: longest gap %v, violations %v; want 3.02s and one over the bound", pause.LongestGap, pause.Violations)
	}
}

func TestOverlapsAreMeasuredNotViolations(t *testing.T) {
	r := NewRecorder(1)
	r.Table("a", at(0), FromWatch, 1, true, leads(0, 1))
	r.Expect(at(0), true, "steady")
	r.Begin(at(0), "late release")
	r.Table("b", at(500), FromWatch, 1, true, leads(0, 2))
	r.Table("a", at(520), FromWatch, 2, false, leads()) // a's release arrives after b's claim
	r.End(at(1000))
	rep := r.Report(at(1000), time.Second)
	if len(rep.Violations) != 0 {
		t.Errorf("got violations %v, want none", rep.Violations)
	}
	if got := rep.Scenarios[0].LongestOverlap; got != 20*time.Millisecond {
		t.Errorf("longest overlap %v, want 20ms", got)
	}
}

// TestEndRules plants lease ends in a scenario "pause b" (0 to 3 s),
// which faults b, and checks what the report counts and which ends it calls
// violations.
func TestEndRules(t *testing.T) {
	unplanned := []string{ReasonLeaseExpired, ReasonQuorumLost, ReasonSuperseded}
	end := func(node string, ms int, shard uint32, epoch uint64, reason string) func(*Recorder) {
		return func(r *Recorder) {
			r.Releases(node, []Release{{Shard: shard, Epoch: epoch, At: at(ms), Reason: reason}})
		}
	}
	tests := []struct {
		name            string
		rule            EndRule
		ends            []func(*Recorder) // each records ends, in order
		wantEnds        map[string]int    // elsewhere
		wantFaulted     map[string]int
		wantForbidden   int
		wantForbiddenOn []string // the nodes of the violations, in time order
	}{
		{
			name: "handoffs elsewhere are planned", rule: EndRule{Faulted: []string{"b"}, Forbidden: unplanned},
			ends:     []func(*Recorder){end("a", 100, 1, 4, ReasonHandoff), end("c", 200, 2, 4, ReasonRebalance)},
			wantEnds: map[string]int{ReasonHandoff: 1, ReasonRebalance: 1}, wantFaulted: map[string]int{},
		},
		{
			name: "an expiry elsewhere is forbidden", rule: EndRule{Faulted: []string{"b"}, Forbidden: unplanned},
			ends:     []func(*Recorder){end("a", 100, 1, 4, ReasonLeaseExpired), end("c", 200, 2, 4, ReasonQuorumLost)},
			wantEnds: map[string]int{ReasonLeaseExpired: 1, ReasonQuorumLost: 1}, wantFaulted: map[string]int{},
			wantForbidden: 2, wantForbiddenOn: []string{"a", "c"},
		},
		{
			name: "the faulted node may lose its leases", rule: EndRule{Faulted: []string{"b"}, Forbidden: unplanned},
			ends:     []func(*Recorder){end("b", 100, 1, 4, ReasonLeaseExpired), end("b", 100, 2, 4, ReasonLeaseExpired)},
			wantEnds: map[string]int{}, wantFaulted: map[string]int{ReasonLeaseExpired: 2},
		},
		{
			name: "FaultedToo forbids them there as well", rule: EndRule{Faulted: []string{"b"}, Forbidden: unplanned, FaultedToo: true},
			ends:     []func(*Recorder){end("b", 100, 1, 4, ReasonLeaseExpired), end("b", 300, 2, 4, ReasonDrain)},
			wantEnds: map[string]int{}, wantFaulted: map[string]int{ReasonLeaseExpired: 1, ReasonDrain: 1},
			wantForbidden: 1, wantForbiddenOn: []string{"b"},
		},
		{
			name: "an end outside the scenario is neither counted nor judged", rule: EndRule{Faulted: []string{"b"}, Forbidden: unplanned},
			ends:     []func(*Recorder){end("a", -1, 1, 4, ReasonLeaseExpired), end("a", 3000, 1, 5, ReasonLeaseExpired)},
			wantEnds: map[string]int{}, wantFaulted: map[string]int{},
		},
		{
			name: "one end seen in the history and in the log counts once", rule: EndRule{Faulted: []string{"b"}, Forbidden: unplanned},
			ends: []func(*Recorder){end("a", 100, 1, 4, ReasonLeaseExpired), end("a", 100, 1, 4, ReasonLeaseExpired),
				end("a", 130, 1, 4, ReasonLeaseExpired)},
			wantEnds: map[string]int{ReasonLeaseExpired: 1}, wantFaulted: map[string]int{},
			wantForbidden: 1, wantForbiddenOn: []string{"a"},
		},
		{
			name: "a lease of one epoch that ends twice, far apart, counts twice", rule: EndRule{Faulted: []string{"b"}, Forbidden: unplanned},
			ends:     []func(*Recorder){end("a", 0, 1, 4, ReasonLeaseExpired), end("a", 1200, 1, 4, ReasonLeaseExpired)},
			wantEnds: map[string]int{ReasonLeaseExpired: 2}, wantFaulted: map[string]int{},
			wantForbidden: 2, wantForbiddenOn: []string{"a", "a"},
		},
		{
			name: "a scenario without a rule counts every end and forbids none", rule: EndRule{},
			ends:     []func(*Recorder){end("a", 100, 1, 4, ReasonLeaseExpired), end("b", 100, 2, 4, ReasonSuperseded)},
			wantEnds: map[string]int{ReasonLeaseExpired: 1, ReasonSuperseded: 1}, wantFaulted: map[string]int{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecorder(4)
			r.Begin(at(0), "pause b")
			r.Rule(tt.rule)
			for _, f := range tt.ends {
				f(r)
			}
			r.End(at(3000))
			rep := r.Report(at(3000), time.Second)
			sc := rep.Scenarios[0]
			if !maps.Equal(sc.Ends, tt.wantEnds) || !maps.Equal(sc.EndsFaulted, tt.wantFaulted) {
				t.Errorf("ends elsewhere %v, on b %v; want %v and %v", sc.Ends, sc.EndsFaulted, tt.wantEnds, tt.wantFaulted)
			}
			var on []string
			for _, v := range sc.Violations {
				t.Log(v)
				if v.Kind == ForbiddenEnd {
					on = append(on, v.Nodes...)
				}
			}
			if got := rep.Count(ForbiddenEnd); got != tt.wantForbidden || !slices.Equal(on, tt.wantForbiddenOn) {
				t.Errorf("%d forbidden ends on %v, want %d on %v", got, on, tt.wantForbidden, tt.wantForbiddenOn)
			}
			if !strings.Contains(rep.Table(), ByReason(sc.Ends)) {
				t.Errorf("the table lacks the ends elsewhere %q:\n%s", ByReason(sc.Ends), rep.Table())
			}
		})
	}
}

func TestRuleCopiesAndNeedsAScenario(t *testing.T) {
	r := NewRecorder(1)
	r.Rule(EndRule{Forbidden: []string{ReasonLeaseExpired}}) // no scenario yet: ignored
	forbidden := []string{ReasonHandoff}
	r.Begin(at(0), "s")
	r.Rule(EndRule{Forbidden: forbidden})
	forbidden[0] = ReasonLeaseExpired // the caller's slice changes afterwards
	r.Releases("a", []Release{{Shard: 0, Epoch: 1, At: at(-10), Reason: ReasonLeaseExpired}, {Shard: 0, Epoch: 2, At: at(10), Reason: ReasonLeaseExpired}})
	if n := r.Report(at(100), time.Second).Count(ForbiddenEnd); n != 0 {
		t.Errorf("%d forbidden ends, want 0: only handoffs are forbidden, in the scenario", n)
	}
}

func TestByReason(t *testing.T) {
	tests := []struct {
		name string
		give map[string]int
		want string
	}{
		{name: "none", give: nil, want: "none"},
		{name: "zero counts", give: map[string]int{ReasonHandoff: 0}, want: "none"},
		{name: "most first, then by name", give: map[string]int{ReasonQuorumLost: 1, ReasonHandoff: 5, ReasonLeaseExpired: 1},
			want: "handoff 5, lease expired 1, quorum lost 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ByReason(tt.give); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLogReleases(t *testing.T) {
	ms := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		name    string
		give    string
		want    []Release
		wantErr bool
	}{
		{
			name: "a drain, an expiry and lines of other kinds",
			give: `time=2026-12-07T18:39:41.251Z level=INFO msg="signal: draining" signal=terminated timeout=30s
time=2026-12-07T18:39:41.277Z level=INFO msg="stopped leading shard" node=n3 shard=13 epoch=33 reason=drain
time=2026-12-07T18:39:41.280Z level=INFO msg=transition event=released shard=13 epoch=33 reason=drain to=n4
time=2026-12-07T18:39:43.041Z level=INFO msg=transition event=released shard=3 epoch=35 reason="lease expired"
time=2026-12-07T18:39:43.626Z level=INFO msg=transition event=acquired shard=3 epoch=42
`,
			want: []Release{
				{Shard: 13, Epoch: 33, At: ms("2026-12-07T18:39:41.280Z"), Reason: ReasonDrain, Peer: "n4"},
				{Shard: 3, Epoch: 35, At: ms("2026-12-07T18:39:43.041Z"), Reason: ReasonLeaseExpired},
			},
		},
		{name: "no transitions", give: "time=2026-12-07T18:39:41.251Z level=INFO msg=serving grpc=10.0.0.1:7000\nnot a log line\n"},
		{
			name:    "a transition without a shard",
			give:    `time=2026-12-07T18:39:43.041Z level=INFO msg=transition event=released epoch=35 reason="quorum lost"`,
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LogReleases(tt.give)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want one: %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestGapsSayWhatTheHistoriesShow: a leader the checker loses sight of
// may have kept its lease all along, or ended it. The gap names the
// leader last seen, and a gap over the bound says what the histories
// show.
func TestGapsSayWhatTheHistoriesShow(t *testing.T) {
	tests := []struct {
		name string
		// after runs once a, which led shard 0 at epoch 5, stopped
		// answering at 500 ms (last seen at 200) and answers again at
		// 3 s.
		after    func(r *Recorder)
		wantNote string
	}{
		{name: "a kept its lease, unseen", after: func(*Recorder) {}, wantNote: "a, seen leading it at epoch 5 until 03:04:05.200, recorded no end of that lease"},
		{
			name: "a ended its lease and b took the shard over",
			after: func(r *Recorder) {
				r.Releases("a", []Release{{Shard: 0, Epoch: 5, At: at(900), Reason: ReasonLeaseExpired}})
				r.History("b", at(3000), []Acquisition{{Shard: 0, Epoch: 6, At: at(1400), Event: "acquired"}}, false)
			},
			wantNote: "a, seen leading it at epoch 5 until 03:04:05.200, ended that lease at 03:04:05.900 (lease expired); b acquired it at 03:04:06.400 (epoch 6), 1.2s into the gap",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRecorder(1)
			r.Table("a", at(0), FromWatch, 1, true, leads(0, 5))
			r.Expect(at(0), true, "steady")
			r.Begin(at(0), "overload")
			r.Table("a", at(200), FromStatus, 1, false, leads(0, 5))
			r.Unreachable("a", at(500))
			tt.after(r)
			r.Table("a", at(3000), FromStatus, 1, false, leads(0, 5))
			r.End(at(3500))
			rep := r.Report(at(3500), time.Second)
			if len(rep.Gaps) != 1 {
				t.Fatalf("got gaps %+v, want one", rep.Gaps)
			}
			if g := rep.Gaps[0]; g.Last.Node != "a" || g.Last.Epoch != 5 || !g.Last.End.Equal(at(200)) {
				t.Errorf("the gap's last claim is %+v, want a's at epoch 5, seen until 200 ms", g.Last)
			}
			if n := rep.Count(Unavailable); n != 1 || !strings.Contains(rep.Violations[0].Detail, tt.wantNote) {
				t.Errorf("got %v, want one shard leaderless beyond the bound, saying %q", rep.Violations, tt.wantNote)
			}
		})
	}
}
