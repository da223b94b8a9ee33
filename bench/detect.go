package main

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/tenurehq/tenure/membership"
)

type detectResult struct {
	Scenario string    `json:"scenario"`
	Nodes    int       `json:"nodes"`
	Profile  string    `json:"profile"`
	Reps     int       `json:"reps"`
	P50MS    float64   `json:"p50_ms"`
	MaxMS    float64   `json:"max_ms"`
	MinMS    float64   `json:"min_ms"`
	RunsMS   []float64 `json:"runs_ms"`
}

// runDetect measures gossip failure detection alone: how long after a node
// stops (no Leave) every survivor has dropped it from its membership.
func runDetect(args []string, out io.Writer) error {
	fs := flags("detect")
	nodes := fs.Int("nodes", 5, "nodes in the cluster")
	reps := fs.Int("reps", 5, "crashes to time")
	profileName := fs.String("profile", "lan", "gossip profile: lan, local or wan")
	asJSON := fs.Bool("json", false, "print a JSON summary as the last line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	profile, err := membership.ParseProfile(*profileName)
	if err != nil {
		return err
	}
	if *nodes < 3 || *reps < 1 {
		return fmt.Errorf("need at least 3 nodes and 1 rep")
	}
	fmt.Fprintf(out, "detect: %d nodes, %s gossip profile, %d crashes\n", *nodes, profile, *reps)
	res := detectResult{Scenario: "detect", Nodes: *nodes, Profile: profile.String(), Reps: *reps}
	var runs []time.Duration
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "rep\tdetected after\t")
	for rep := range *reps {
		took, err := detectOnce(*nodes, profile)
		if err != nil {
			return err
		}
		runs = append(runs, took)
		fmt.Fprintf(w, "%d\t%v\t\n", rep+1, took.Round(time.Millisecond))
	}
	w.Flush()
	slices.Sort(runs)
	res.P50MS, res.MinMS, res.MaxMS = msOf(percentile(runs, 50)), msOf(runs[0]), msOf(runs[len(runs)-1])
	for _, r := range runs {
		res.RunsMS = append(res.RunsMS, msOf(r))
	}
	fmt.Fprintf(out, "detection median %.0f ms (min %.0f, max %.0f)\n", res.P50MS, res.MinMS, res.MaxMS)
	if *asJSON {
		return emit(out, res)
	}
	return nil
}

func detectOnce(nodes int, profile membership.Profile) (time.Duration, error) {
	var ms []*membership.Membership
	defer func() {
		for _, m := range ms {
			m.Stop()
		}
	}()
	for i := range nodes {
		var seeds []string
		if i > 0 {
			seeds = []string{ms[0].Addr()}
		}
		m, err := membership.Start(membership.Config{
			NodeID: fmt.Sprintf("node-%d", i+1), Shards: 1, BindAddr: "127.0.0.1:0", Seeds: seeds, Profile: profile,
		})
		if err != nil {
			return 0, err
		}
		go func() {
			for range m.Events() { // keep the single consumer reading
			}
		}()
		ms = append(ms, m)
	}
	all := func(n int) bool {
		for _, m := range ms {
			if len(m.Members()) != n {
				return false
			}
		}
		return true
	}
	if !waitFor(time.Minute, func() bool { return all(nodes) }) {
		return 0, fmt.Errorf("the cluster did not converge")
	}
	victim := ms[len(ms)-1]
	ms = ms[:len(ms)-1]
	began := time.Now()
	victim.Stop()
	if !waitFor(2*time.Minute, func() bool { return all(nodes - 1) }) {
		return 0, fmt.Errorf("the crash was not detected within 2 minutes")
	}
	return time.Since(began), nil
}
