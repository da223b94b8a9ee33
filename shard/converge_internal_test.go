package shard

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A node whose planned shards stay unled across two convergence checks
// says so: one WARN with the numbers, and the gauge. Shards it leads, or
// that became unled only since the last check, are not counted.
func TestNodeWarnsWhenItsShardsDoNotConverge(t *testing.T) {
	d := newDrivenNode(t)
	var logs bytes.Buffer
	d.n.log = slog.New(slog.NewTextHandler(&logs, nil))
	led := d.lead(0)
	if led == nil {
		t.Fatal("setup: shard 0 not led")
	}
	d.st.target = []string{"node-a", "node-a", "node-a", "node-b"}
	logs.Reset()
	d.n.checkConverging(d.st)
	if logs.Len() != 0 || testutil.ToFloat64(d.n.metrics.notConverging) != 0 {
		t.Fatalf("warned at the first check: %q", logs.String())
	}
	d.n.checkConverging(d.st)
	if got := testutil.ToFloat64(d.n.metrics.notConverging); got != 2 {
		t.Errorf("tenure_shards_not_converging = %v, want 2 (shards 1 and 2)", got)
	}
	out := logs.String()
	for _, want := range []string{"level=WARN", "shards this node should lead are still not led", "shards=2", "planned_here=3", "led=1", "queued_ops=", "voter_failures="} {
		if !strings.Contains(out, want) {
			t.Errorf("warning %q lacks %q", out, want)
		}
	}
	// Once the plan gives it nothing unled, the gauge falls back to 0.
	d.st.target = []string{"node-a", "node-b", "node-b", "node-b"}
	d.n.checkConverging(d.st)
	if got := testutil.ToFloat64(d.n.metrics.notConverging); got != 0 {
		t.Errorf("tenure_shards_not_converging = %v after convergence, want 0", got)
	}
}
