package shard

import (
	"fmt"
	"testing"

	"github.com/tenurehq/tenure/lease"
)

// refreshDeadlines ends a lease as quorum lost when the holder's Deadline
// is not ok at that instant, but the holder still says led until its next
// Tick visits the shard. A reply applied before that Tick can make the same
// epoch valid again (a slow voter's grant reply arrives), and the holder
// then keeps leading it without ever reporting Lost: the node must still
// replace the ended lease with a new one for the application.
func TestQuorumLostLeaseIsReplacedWhenTheHolderStillLeads(t *testing.T) {
	const s, s2 = 1, 2
	d := newDrivenNode(t)
	h := d.st.holder

	// Round 1: grants of s to v1, v2, v3. v3 grants but its reply is late.
	h.SetDesired(s, true)
	d.n.send(d.st)
	round1 := d.out
	d.out = nil
	var late lease.Reply
	for _, e := range round1 {
		rep, _ := d.voters[e.To].Handle(e.Req, d.n.now())
		if e.To == "v3" {
			late = rep
			continue
		}
		d.n.step(d.st, rep)
	}
	d.n.refreshDeadlines(d.st)
	l := d.n.getLease(s)
	if l == nil {
		t.Fatal("not leading s after v1 and v2 granted")
	}
	ep := l.Epoch()

	// v2's session for this node changes gen (v2 restarted, say): its
	// next reply names a new gen. Any request to v2 will do: one carrying
	// grants of another shard leaves at once.
	h.SetDesired(s2, true)
	d.n.send(d.st)
	round2 := d.out
	d.out = nil
	for _, e := range round2 {
		if e.To != "v2" {
			continue
		}
		// v2 restarts (its records survive, on disk) and answers
		// under a new boot: a new gen for this node.
		old := d.voters["v2"]
		recs := map[uint32]lease.Record{s: old.Record(s), s2: old.Record(s2)}
		nv, err := lease.NewVoter(lease.VoterConfig{ID: "v2", LeaseDuration: d.n.cfg.LeaseDuration, Boot: 2, Restarted: true}, recs, d.n.now())
		if err != nil {
			t.Fatal(err)
		}
		d.voters["v2"] = nv
		rep, _ := nv.Handle(e.Req, d.n.now())
		d.n.step(d.st, rep)
	}
	d.n.refreshDeadlines(d.st) // end of that burst
	if endedFor(t, l) != ReasonQuorumLost {
		t.Fatalf("lease after v2's new gen: ended for %v, want quorum lost", endedFor(t, l))
	}

	// Next burst, before the next Tick: v3's late grant reply.
	d.n.step(d.st, late)
	d.n.refreshDeadlines(d.st)

	{
		e, leads := h.Leads(s, d.n.now())
		t.Logf("after the late reply: holder leads %v at %d; changes heard %q", leads, e, d.handled())
	}
	// A few ticks and voter rounds.
	for range 3 {
		d.n.reconcile(d.st)
		d.n.send(d.st)
		d.deliver()
		d.n.refreshDeadlines(d.st)
	}
	e, leads := h.Leads(s, d.n.now())
	cur := d.n.getLease(s)
	t.Logf("holder leads s: %v at %d (first epoch %d); lease %p (first %p); handler heard %q",
		leads, e, ep, cur, l, d.handled())
	if leads && (cur == nil || cur.Context().Err() != nil) {
		t.Errorf("the holder leads shard %d at epoch %d but the application's lease ended (%v) and was never replaced: %s",
			s, e, endedFor(t, cur), fmt.Sprint(d.heard))
	}
}
