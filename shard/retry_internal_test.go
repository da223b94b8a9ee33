package shard

import (
	"testing"
	"time"

	"github.com/tenurehq/tenure/membership"
)

// A planned move that cannot start (its target has no live session at the
// voters yet, as right after a heal) is deferred, and the loop is told when
// to plan again: in a quiet cluster nothing else would, and the move would
// wait for good. Once the backoff is over the next plan starts it again.
func TestDeferredMoveSchedulesAPlan(t *testing.T) {
	d := newDrivenNode(t)
	d.lead(0)
	d.st.view["node-b"] = membership.Member{Meta: membership.Meta{NodeID: "node-b", State: membership.Active}}
	d.st.target = []string{"node-b", "node-a", "node-a", "node-a"}
	d.st.current = []string{"node-a", "node-a", "node-a", "node-a"}
	now := time.Now()
	d.n.act(d.st, now)
	at, deferred := d.st.retryAt[0]
	if !deferred || len(d.st.handoffs) != 0 {
		t.Fatalf("the move to an unvouched target: deferred %v, handoffs %v; want deferred, none started", deferred, d.st.handoffs)
	}
	if d.st.retryPlanAt.IsZero() || d.st.retryPlanAt.After(at) {
		t.Fatalf("retryPlanAt = %v, want the deferred move's time %v at the latest", d.st.retryPlanAt, at)
	}
	// Before the backoff ends a plan keeps it deferred, and still asks
	// for a plan then.
	d.st.retryPlanAt = time.Time{}
	d.n.act(d.st, now)
	if d.st.retryAt[0] != at || d.st.retryPlanAt != at {
		t.Fatalf("a plan within the backoff: retryAt %v, retryPlanAt %v; want both %v", d.st.retryAt[0], d.st.retryPlanAt, at)
	}
	// After it, the plan tries the move again (and, the target still
	// unvouched, defers it anew).
	d.n.act(d.st, at.Add(time.Millisecond))
	if again := d.st.retryAt[0]; !again.After(at) {
		t.Fatalf("after the backoff the move was not tried again: retryAt %v, was %v", again, at)
	}
}
