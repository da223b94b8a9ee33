package shard

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/membership"
)

// deliverAt is deliver with the voters' clock at vt (a voter's clock is
// its own: only its own readings are compared with each other).
func (d *drivenNode) deliverAt(vt lease.Time) {
	for len(d.out) > 0 {
		out := d.out
		d.out = nil
		for _, e := range out {
			rep, _ := d.voters[e.To].Handle(e.Req, vt)
			d.n.step(d.st, rep)
		}
	}
}

// A voter that restarts forgets every session; its first reply to
// each node then lists every live session (Started) — the whole truth, not
// a change. The node only ever adds news and never drops a member a full
// list leaves out, so a member that was live at the voters when they
// restarted, and never reached them again, keeps its "started" news at
// every voter for good: it stays vouched (eligible, a handoff target)
// with no live session anywhere. Handoffs to it are then sent, refused,
// and leave their shards unled (the source's lease ends as it sends).
func TestRestartedVotersStopVouchingForASilentMember(t *testing.T) {
	d := newDrivenNode(t)
	ld := d.n.cfg.LeaseDuration
	vt := lease.Time(0)
	d.silentMember(vt) // node-x holds no record, and never comes back
	// node-a's first request: every voter lists node-x as live.
	d.st.holder.SetDesired(0, true)
	d.n.send(d.st)
	d.deliverAt(vt)
	if !d.n.vouched(d.st, "node-x") {
		t.Fatal("setup: node-x should be vouched after every voter listed it")
	}
	// Every voter restarts (keeping its records, a new boot): node-x's
	// session is forgotten, and node-x never comes back.
	vt = vt.Add(ld / 10)
	for id, v := range d.voters {
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
	// node-a's next requests: each restarted voter lists every live
	// session — node-x is not among them — and, after its grace, reports
	// nothing more of node-x (it has no session and no record).
	for i, s := range []uint32{1, 2} {
		if i == 0 {
			vt = vt.Add(ld / 10) // in the grace period
		} else {
			vt = vt.Add(2 * ld) // well after it
		}
		d.st.holder.SetDesired(s, true)
		d.n.send(d.st)
		if len(d.out) == 0 {
			t.Fatal("no request left")
		}
		d.deliverAt(vt)
	}
	for _, v := range d.voters {
		if got := fmt.Sprint(v.Record(0)); v.Record(0).Holder != "node-a" {
			t.Fatalf("setup: record of shard 0 is %s", got)
		}
	}
	if d.n.vouched(d.st, "node-x") {
		t.Errorf("node-x is vouched for (news %+v) though every voter restarted, listed its live sessions without node-x, and has heard nothing of node-x for %v since", d.st.sessions["node-x"], 2*ld)
	}
	if d.n.target(d.st, "node-x") {
		t.Errorf("node-x may receive shards: handoffs to it would be sent and refused")
	}
}

// Two incarnation raises in a row (voters that know different
// incarnations) persist on two goroutines with nothing ordering them: the
// earlier raise can read the file before the later one writes and write
// its lower value after it (both through the same temporary file), so
// the file ends below the incarnation this process sends and advertises.
// The next start then takes an incarnation below one the voters know.
func TestConcurrentIncarnationRaisesPersistInOrder(t *testing.T) {
	for i := range 300 {
		dir := t.TempDir()
		if err := writeIncarnation(dir, 100); err != nil {
			t.Fatal(err)
		}
		n := &Node{cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler)}
		n.inc.Store(100)
		n.raiseIncarnation(200)
		n.raiseIncarnation(300)
		n.bg.Wait()
		got, err := readIncarnation(dir)
		if err != nil || got != n.inc.Load() {
			t.Fatalf("run %d: the incarnation file holds %d (%v) after raises to 200 then 300; the process sends %d", i, got, err, n.inc.Load())
		}
	}
}

// A shard this node leads but plans onto another node is undesired in
// the holder (act, and switchOver before TransferAt). A failed re-grant
// while leading keeps its partial grants (docs/design.md §2.4: each
// protects the lease at its voter as the record it replaced did; they are
// released when the lease ends). But the holder's applyHeld releases any
// Held record of an undesired shard that is neither the led epoch nor the
// current attempt's — the kept partial grant among them — and withdraws
// that voter's vote for the led epoch as it queues the release. A lease
// that a majority still protects ends (quorum lost) only because a
// handoff was planned.
func TestPlannedAwayLeaseKeepsItsPartialRegrant(t *testing.T) {
	for _, desired := range []bool{true, false} {
		t.Run(fmt.Sprintf("desired=%v", desired), func(t *testing.T) {
			d := newDrivenNode(t)
			hc := d.n.cfg.holder(1, d.n.holderRand)
			hc.RequestTimeout = time.Millisecond
			hc.BackoffMin, hc.BackoffMax = time.Minute, time.Minute
			h, err := lease.NewHolder(hc)
			if err != nil {
				t.Fatal(err)
			}
			d.st.holder = h
			const s = 0
			d.lead(s) // epoch 1 at v1, v2, v3
			e, _ := h.Leads(s, d.n.now())
			// v3 restarts: its session for node-a is new, so node-a re-grants.
			recs := map[uint32]lease.Record{s: d.voters["v3"].Record(s)}
			d.voters["v3"], err = lease.NewVoter(lease.VoterConfig{ID: "v3", LeaseDuration: d.n.cfg.LeaseDuration, Boot: 2, Restarted: true}, recs, d.n.now())
			if err != nil {
				t.Fatal(err)
			}
			h.SetDesired(1, true) // a request to every voter
			d.n.send(d.st)
			d.deliver()
			// The re-grant at e+1 reaches v1 only (v2's copy is lost, v3 is in
			// its grace period).
			d.n.send(d.st)
			regrant := false
			for _, env := range d.out {
				for _, op := range env.Req.Ops {
					if op.Kind == lease.OpGrant && op.Shard == s && op.Epoch > e {
						regrant = true
					}
				}
			}
			if !regrant {
				t.Fatalf("no re-grant of shard %d was sent: %+v", s, d.out)
			}
			var keep []lease.Envelope
			for _, env := range d.out {
				if env.To == "v1" {
					keep = append(keep, env)
				}
			}
			d.out = keep
			d.deliver()
			// The attempt times out: a failed re-grant while leading keeps
			// its partial grant at v1.
			for t0 := d.n.now(); d.n.now().Sub(t0) < 2*time.Millisecond; {
			}
			d.n.send(d.st)
			d.out = nil
			if _, ok := h.Leads(s, d.n.now()); !ok {
				t.Fatal("setup: the lease ended with the re-grant")
			}
			// The plan targets another node (or a handoff is switching over).
			h.SetDesired(s, desired)
			// The next keep-alives: v1's Held list shows the kept partial
			// grant; v2 still answers with the vote for e.
			h.SetDesired(2, true)
			d.n.send(d.st)
			keep = nil
			for _, env := range d.out {
				if env.To != "v3" {
					keep = append(keep, env)
				}
			}
			d.out = keep
			d.deliver()
			if _, ok := h.Leads(s, d.n.now()); !ok {
				t.Errorf("the lease on shard %d ended though v1 (partial re-grant above it, this session) and v2 (vote for it) still protect it; the lease's context: %v", s, context.Cause(d.n.getLease(s).Context()))
			}
		})
	}
}

// silentMember makes node-x keep alive once at every voter of d, then fall
// silent for good, while gossip still shows it active.
func (d *drivenNode) silentMember(vt lease.Time) {
	d.t.Helper()
	for _, v := range d.voters {
		if rep, _ := v.Handle(lease.Request{From: "node-x", Inc: 1, Nonce: 1, Seq: 1, LeaseDuration: d.n.cfg.LeaseDuration}, vt); rep.Gen == 0 {
			d.t.Fatalf("node-x got no session: %+v", rep)
		}
	}
	d.st.view["node-x"] = membership.Member{Meta: membership.Meta{NodeID: "node-x", State: membership.Active, Incarnation: 1}}
}
