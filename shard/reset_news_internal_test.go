package shard

import (
	"testing"

	"github.com/tenurehq/tenure/lease"
)

// A Reset drops what a voter said of live sessions; the complete list that
// follows it is the voter's truth. A late reply of the voter's previous run
// (a request in flight when it restarted; up to voterInflight requests per
// voter run at once and their replies reach the loop in any order) must
// not re-add a session the restarted voter no longer has: that voter never
// mentions it again, and with two such voters of three the member would be
// vouched for (eligible, a handoff target, planned unled shards) forever,
// with no live session anywhere.
func TestLateStartedNewsDoesNotOutliveAReset(t *testing.T) {
	d := newDrivenNode(t)
	ld := d.n.cfg.LeaseDuration
	vt := lease.Time(0)
	d.silentMember(vt) // node-x holds no record, and never comes back

	// node-a's first requests leave; v3 answers at once. The replies of v1
	// and v2 (each listing node-x live) are late: handled by the voters
	// now, delivered to the loop only later.
	d.st.holder.SetDesired(0, true)
	d.n.send(d.st)
	var late []lease.Reply
	for _, e := range d.out {
		rep, _ := d.voters[e.To].Handle(e.Req, vt)
		if e.To == "v3" {
			d.n.step(d.st, rep)
		} else {
			late = append(late, rep)
		}
	}
	d.out = nil
	if len(late) != 2 {
		t.Fatalf("setup: %d late replies, want 2", len(late))
	}

	// v1 and v2 restart (records kept, new boot): node-x's session is
	// forgotten there.
	vt = vt.Add(ld / 10)
	for _, id := range []string{"v1", "v2"} {
		v := d.voters[id]
		recs := map[uint32]lease.Record{}
		for s := range uint32(d.n.cfg.Shards) {
			if r := v.Record(s); r.Epoch != 0 {
				recs[s] = r
			}
		}
		nv, err := lease.NewVoter(lease.VoterConfig{ID: id, LeaseDuration: ld, Boot: 2, Restarted: true}, recs, vt)
		if err != nil {
			t.Fatal(err)
		}
		d.voters[id] = nv
	}
	// node-a's next requests reach the restarted voters: each lists every
	// live session (AllStarted) without node-x; a Reset for each.
	d.st.holder.SetDesired(1, true)
	d.n.send(d.st)
	d.deliverAt(vt)
	// Only now do the replies of the voters' previous run reach the loop.
	for _, rep := range late {
		t.Logf("late reply from %s: gen %d, started %v", rep.Voter, rep.Gen, rep.Started)
		d.n.step(d.st, rep)
	}
	t.Logf("after the late replies, news of node-x: %+v", d.st.sessions["node-x"])
	// Time passes, node-a keeping alive well within a lease (its own
	// sessions never lapse, so no voter lists every session again): v3
	// reports node-x's session expired; v1 and v2, which have no session
	// of node-x, say nothing of it ever again.
	for i, at := range []lease.Time{lease.Time(0).Add(ld / 2), lease.Time(0).Add(ld + ld/20)} {
		vt = at
		d.st.holder.SetDesired(uint32(2+i), true)
		d.n.send(d.st)
		if len(d.out) == 0 {
			t.Fatal("setup: no request left")
		}
		d.deliverAt(vt)
	}
	for id, v := range d.voters {
		// A probe's first request lists every live session there.
		rep, _ := v.Handle(lease.Request{From: "probe", Inc: 1, Nonce: 1, Seq: 1, LeaseDuration: ld}, vt)
		for _, ng := range rep.Started {
			if ng.Node == "node-x" {
				t.Fatalf("setup: voter %s still has a live session of node-x", id)
			}
		}
	}
	t.Logf("news of node-x: %+v", d.st.sessions["node-x"])
	if d.n.vouched(d.st, "node-x") {
		t.Errorf("node-x is vouched for (news %+v): no voter has a session of it; the 'started' news of v1 and v2 came in replies of their previous run, after their restarted selves listed every live session without node-x", d.st.sessions["node-x"])
	}
}
