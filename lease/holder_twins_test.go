package lease_test

import (
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// exchangeWith is world.exchange with a per-holder set of unreachable voters.
func (w *world) exchangeWith(h *lease.Holder, rtt time.Duration, cut ...string) {
	w.t.Helper()
	var reps []lease.Reply
	for _, env := range h.Tick(w.now) {
		if contains(cut, env.To) {
			continue
		}
		rep, _ := w.voters[env.To].Handle(env.Req, w.now)
		reps = append(reps, rep)
	}
	w.now = w.now.Add(rtt)
	for _, rep := range reps {
		h.Step(rep, w.now)
	}
}

// A process that led does not raise above a newer incarnation on one
// voter's word that it is not live: a process a that led is cut off from v2
// and v3; its replacement b reaches v1 once, then only v2 and v3, and leads
// there. v1 answers a Stale with IncLive false (b is not live at v1), but b
// is live at a majority, so a waits; once a reaches v2 and v3 it stops,
// and b goes on leading.
func TestOlderProcessDoesNotRaiseAboveALiveLeadingTwin(t *testing.T) {
	w := newWorld(t)
	a := w.newHolder("n1", 1)
	w.acquire(a, 7)
	b := w.newHolder("n1", 3)
	b.SetDesired(7, true)
	w.exchangeWith(b, time.Millisecond) // b reaches every voter once
	// From now on b reaches only v2 and v3; a reaches no voter for a
	// lease (its own lease runs out), then only v1.
	for i := range 12 {
		w.at(time.Duration(w.now) + ld/4)
		w.exchangeWith(b, time.Millisecond, "v1")
		if i < 5 {
			w.exchangeWith(a, time.Millisecond, "v1", "v2", "v3")
		} else {
			w.exchangeWith(a, time.Millisecond, "v2", "v3")
		}
	}
	if _, ok := b.Leads(7, w.now); !ok {
		t.Fatalf("setup: b does not lead shard 7 with v2 and v3")
	}
	if a.Inc() != 1 || a.Superseded() {
		t.Fatalf("a raised to %d (superseded %v) on v1's word alone; b is live at v2 and v3", a.Inc(), a.Superseded())
	}
	w.at(time.Duration(w.now) + ld/4)
	w.exchangeWith(a, time.Millisecond)
	w.exchangeWith(b, time.Millisecond, "v1")
	if !a.Superseded() || b.Superseded() {
		t.Fatalf("a superseded %v (inc %d), b superseded %v; want a stopped and b going on", a.Superseded(), a.Inc(), b.Superseded())
	}
	if _, ok := b.Leads(7, w.now); !ok {
		t.Fatal("b stopped leading shard 7")
	}
}
