package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"strings"
	"syscall"
	"testing"
)

// metricsText is a trimmed /metrics of a tenured node, as promhttp
// writes it.
const metricsText = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 85
# HELP tenure_leases_held Shards this node leads now.
# TYPE tenure_leases_held gauge
tenure_leases_held{node="node-2"} 1366
# HELP tenure_shards_unled Shards without a known leader in this node's table.
# TYPE tenure_shards_unled gauge
tenure_shards_unled{node="node-2"} 3
# HELP tenure_voter_request_failures_total Voter requests that failed or timed out (keep-alives included).
# TYPE tenure_voter_request_failures_total counter
tenure_voter_request_failures_total{node="node-2",voter="node-1"} 7
tenure_voter_request_failures_total{node="node-2",voter="node-3"} 2
tenure_voter_request_seconds_bucket{node="node-2",voter="node-1",le="+Inf"} 40
`

func TestParseMetrics(t *testing.T) {
	for _, tt := range []struct {
		name    string
		give    string
		want    nodeMetrics
		wantErr string
	}{
		{name: "a node's metrics", give: metricsText,
			want: nodeMetrics{led: 1366, unled: 3, voterFailures: map[string]int64{"node-1": 7, "node-3": 2}}},
		{name: "no failures yet: the counter is absent",
			give: "tenure_leases_held{node=\"n\"} 0\ntenure_shards_unled{node=\"n\"} 4096\n",
			want: nodeMetrics{led: 0, unled: 4096, voterFailures: map[string]int64{}}},
		{name: "a timestamp, blank lines and spaces",
			give: "\n  tenure_leases_held{node=\"n\"} 5 1700000000000\n\ntenure_shards_unled 0\n",
			want: nodeMetrics{led: 5, voterFailures: map[string]int64{}}},
		{name: "escapes in a label value, a brace among them",
			give: "tenure_leases_held 1\ntenure_shards_unled 0\n" +
				`tenure_voter_request_failures_total{voter="a\"b}\\c",node="x"} 4` + "\n",
			want: nodeMetrics{led: 1, voterFailures: map[string]int64{`a"b}\c`: 4}}},
		{name: "no leases gauge", give: "tenure_shards_unled 0\n", wantErr: "tenure_leases_held"},
		{name: "no unled gauge", give: "tenure_leases_held 0\n", wantErr: "tenure_shards_unled"},
		{name: "a value that is no number", give: "tenure_leases_held many\n", wantErr: "many"},
		{name: "no value", give: "tenure_leases_held{node=\"n\"}\n", wantErr: "want a value"},
		{name: "an unterminated label", give: "tenure_leases_held{node=\"n} 1\n", wantErr: "unterminated"},
		{name: "a label without quotes", give: "tenure_leases_held{node=n} 1\n", wantErr: "name=\"value\""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMetrics(strings.NewReader(tt.give))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseMetrics = %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.led != tt.want.led || got.unled != tt.want.unled || !maps.Equal(got.voterFailures, tt.want.voterFailures) {
				t.Fatalf("parseMetrics = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	for _, tt := range []struct {
		name   string
		give   string
		want   int64
		wantOK bool
	}{
		{name: "a running process", give: "Name:\ttenured\nVmPeak:\t 1300000 kB\nVmRSS:\t   45628 kB\nRssAnon:\t   30000 kB\n", want: 45628, wantOK: true},
		{name: "a zombie has no VmRSS", give: "Name:\ttenured\nState:\tZ (zombie)\n"},
		{name: "another unit", give: "VmRSS:\t 45 MB\n"},
		{name: "no number", give: "VmRSS:\t lots kB\n"},
		{name: "empty", give: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseVmRSS(tt.give)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("parseVmRSS = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCoverage(t *testing.T) {
	node := func(led, unled int) nodePoll { return nodePoll{m: nodeMetrics{led: led, unled: unled}} }
	failed := nodePoll{err: errors.New("connection refused")}
	for _, tt := range []struct {
		name         string
		give         []nodePoll
		wantLed      int
		wantUnled    int
		wantComplete bool
	}{
		{name: "every shard led once", give: []nodePoll{node(342, 0), node(342, 0), node(340, 0)}, wantLed: 1024, wantComplete: true},
		{name: "one shard short", give: []nodePoll{node(342, 0), node(342, 0), node(339, 0)}, wantLed: 1023},
		{name: "all led, but one node sees a shard unled", give: []nodePoll{node(342, 0), node(342, 1), node(340, 0)}, wantLed: 1024, wantUnled: 1},
		{name: "a node that did not answer", give: []nodePoll{node(512, 0), node(512, 0), failed}, wantLed: 1024},
		{name: "more leases than shards", give: []nodePoll{node(513, 0), node(512, 0)}, wantLed: 1025},
		{name: "the most unled of any node", give: []nodePoll{node(0, 1024), node(0, 7)}, wantUnled: 1024},
		{name: "no nodes", give: nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			led, unled, complete := coverage(tt.give, 1024)
			if led != tt.wantLed || unled != tt.wantUnled || complete != tt.wantComplete {
				t.Fatalf("coverage = %d, %d, %v; want %d, %d, %v", led, unled, complete, tt.wantLed, tt.wantUnled, tt.wantComplete)
			}
		})
	}
}

func TestFailuresSince(t *testing.T) {
	before := map[string]map[string]int64{
		"node-1": {"node-2": 1},
		"node-2": {"node-1": 2, "node-3": 1},
		"node-3": {},
	}
	after := map[string]map[string]int64{
		"node-1": {"node-2": 9, "node-3": 5}, // killed: its counters are not counted
		"node-2": {"node-1": 12, "node-3": 1},
		"node-3": {"node-1": 4, "node-2": 3},
	}
	toOthers, toKilled := failuresSince(before, after, "node-1")
	if toOthers != 3 || toKilled != 14 {
		t.Fatalf("failuresSince = %d to the others, %d to the killed; want 3 and 14", toOthers, toKilled)
	}
}

// TestColdstartFlags checks that bad flags fail at once, before anything is
// built or started, with an error naming the flag.
func TestColdstartFlags(t *testing.T) {
	for _, tt := range []struct {
		name    string
		give    []string
		wantErr string
	}{
		{name: "one node", give: []string{"-nodes", "1"}, wantErr: "-nodes"},
		{name: "four nodes, an even voter set", give: []string{"-nodes", "4"}, wantErr: "-nodes"},
		{name: "no shards", give: []string{"-shards", "0"}, wantErr: "-shards"},
		{name: "too many shards", give: []string{"-shards", "2000000"}, wantErr: "-shards"},
		{name: "no lease", give: []string{"-lease", "0s"}, wantErr: "-lease"},
		{name: "no poll interval", give: []string{"-poll", "0s"}, wantErr: "-poll"},
		{name: "no timeout", give: []string{"-timeout", "-1s"}, wantErr: "-timeout"},
		{name: "unknown profile", give: []string{"-profile", "moon"}, wantErr: "moon"},
		{name: "stray argument", give: []string{"now"}, wantErr: `"now"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(append([]string{"coldstart"}, tt.give...), &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("coldstart %q = %v, want an error naming %s", tt.give, err, tt.wantErr)
			}
			if strings.Contains(out.String(), "built") {
				t.Fatalf("coldstart %q went on to build tenured:\n%s", tt.give, out.String())
			}
		})
	}
}

// TestColdstartAtATinySize runs the scenario for real: it builds tenured,
// starts three of it, kills one, and must leave no process and no file.
func TestColdstartAtATinySize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tenured and runs three processes")
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // the scenario's temporary directory goes here
	var out bytes.Buffer
	err := run([]string{"coldstart", "-shards", "64", "-timeout", "1m", "-json"}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res coldstartResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("the last line is not the JSON summary: %v", err)
	}
	switch {
	case res.Scenario != "coldstart" || res.Nodes != 3 || res.Shards != 64:
		t.Errorf("summary: scenario %q, %d nodes, %d shards; want coldstart, 3, 64", res.Scenario, res.Nodes, res.Shards)
	case !res.Settled || res.SettleMS <= 0 || !res.FailedOver || res.FailoverMS <= 0:
		t.Errorf("settled %v after %v ms, failed over %v after %v ms; want both, after a positive time", res.Settled, res.SettleMS, res.FailedOver, res.FailoverMS)
	case res.KilledShards < 1 || res.LedEnd != 64 || res.UnledEnd != 0:
		t.Errorf("killed a node leading %d shards; at the end %d led, %d unled; want at least 1, 64 and 0", res.KilledShards, res.LedEnd, res.UnledEnd)
	case res.RSSMaxMB <= 0 || len(res.PerNode) != 3:
		t.Errorf("RSS max %v MB, %d node rows; want a positive RSS and 3 rows", res.RSSMaxMB, len(res.PerNode))
	}
	for _, n := range res.PerNode {
		// Signal 0 checks that the process exists. Every one was waited
		// for, so its PID is free (or, rarely, some other new process's).
		if p, err := os.FindProcess(n.PID); err == nil && p.Signal(syscall.Signal(0)) == nil {
			t.Errorf("%s (pid %d) still exists", n.ID, n.PID)
		}
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in the temporary directory: %s", e.Name())
	}
}
