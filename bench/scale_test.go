package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestScaleScenarioAtATinySize(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"scale", "-nodes", "4,8", "-shards", "256", "-steady", "2s", "-json"}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res scaleResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("the last line is not the JSON summary: %v", err)
	}
	if res.Scenario != "scale" || res.Shards != 256 || len(res.Runs) != 2 {
		t.Fatalf("summary: scenario %q, %d shards, %d runs; want scale, 256, 2", res.Scenario, res.Shards, len(res.Runs))
	}
	for _, r := range res.Runs {
		if r.Violations != 0 {
			t.Errorf("%d nodes: %d violations", r.Nodes, r.Violations)
		}
		for _, p := range []scalePhase{r.Start, r.Join, r.Leave, r.Crash} {
			if !p.Settled || p.SettleMS <= 0 {
				t.Errorf("%d nodes, %s: settled %v after %v ms", r.Nodes, p.Event, p.Settled, p.SettleMS)
			}
		}
		if r.Steady.PerNode.VoterRequests <= 0 || r.Steady.PerVoter.BytesOut <= 0 || r.Steady.PerNode.ClaimBytes <= 0 {
			t.Errorf("%d nodes: no steady traffic measured: %+v", r.Nodes, r.Steady)
		}
		if r.Memory.Voter <= 0 || r.Memory.Holders <= 0 || r.Memory.TablePerNode <= 0 {
			t.Errorf("%d nodes: memory not measured: %+v", r.Nodes, r.Memory)
		}
	}
	if res.Growth["nodes"] != 2 {
		t.Errorf("growth: nodes %v; want 2", res.Growth["nodes"])
	}
}

func TestScaleFlagsAreChecked(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "a node list with a word", args: []string{"-nodes", "10,many"}, want: "-nodes"},
		{name: "a cluster of one", args: []string{"-nodes", "1"}, want: "-nodes"},
		{name: "more nodes than shards", args: []string{"-nodes", "100", "-shards", "64"}, want: "Config.Shards"},
		{name: "crash everyone", args: []string{"-crash", "0.9"}, want: "-crash"},
		{name: "a steady window shorter than a lease", args: []string{"-steady", "10ms"}, want: "-steady"},
		{name: "four voters", args: []string{"-voters", "4", "-nodes", "4", "-shards", "64"}, want: "Config.Voters"},
		{name: "a stray argument", args: []string{"-nodes", "4", "extra"}, want: "extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(append([]string{"scale"}, tt.args...), &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want an error naming %s", err, tt.want)
			}
		})
	}
}
