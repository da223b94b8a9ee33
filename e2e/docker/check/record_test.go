package check

import (
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
