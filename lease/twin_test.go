package lease_test

// Twins and incarnation raises: executions that broke earlier versions of
// the rules, each described where it is replayed.

import (
	"math"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// The incarnation raise takes rep.Inc+1: a value that depends only on what
// one voter reports, not on the process. Two processes with one NodeID that
// both start below the incarnation the voters know (a clock stepped back;
// a replacement started beside the process it replaces on the same host)
// can both take the SAME incarnation. A voter then sees one session: same
// inc, same gen. Every gen check (Release, Transfer, the Held filter,
// checkGrant's "same gen" clause) passes for the twin, so it releases (or
// adopts) the records protecting the other process's lease, and a rival is
// granted while that process leads by its own clock.
//
//	simultaneous: both twins' first requests reach the voters before either
//	  raised; both read Stale(100) and take 101. No message is lost.
//	leader cut from v3: a raised to 101 and leads via v1, v2 (v3 still knows
//	  only 100). b's first requests to v1, v2 are lost; v3 answers
//	  Stale(100), so b takes 101 too, instead of 102.
func TestRaisedTwinsNeverShareASession(t *testing.T) {
	for _, tt := range []struct {
		name string
		// setup returns the leading twin and the other one, both raised.
		setup func(w *cworld) (a, twin *lease.Holder)
	}{
		{name: "simultaneous", setup: func(w *cworld) (*lease.Holder, *lease.Holder) {
			a, twin := cHolder(w.t, "n", 50, lease.HolderMutations{}), cHolder(w.t, "n", 60, lease.HolderMutations{})
			a.SetDesired(0, true)
			ea, eb := a.Tick(ms(10)), twin.Tick(ms(10))
			for _, env := range ea {
				a.Step(w.handle(env, ms(10)), ms(11))
			}
			for _, env := range eb {
				twin.Step(w.handle(env, ms(10)), ms(11))
			}
			w.roundTrip(a, ms(20))
			return a, twin
		}},
		{name: "leader cut from v3", setup: func(w *cworld) (*lease.Holder, *lease.Holder) {
			a := cHolder(w.t, "n", 50, lease.HolderMutations{})
			a.SetDesired(0, true)
			w.roundTrip(a, ms(10), "v3") // Stale(100) from v1: a takes 101
			w.roundTrip(a, ms(20), "v3") // granted epoch 1 by v1, v2
			twin := cHolder(w.t, "n", 60, lease.HolderMutations{})
			for _, env := range twin.Tick(ms(30)) {
				if env.To == "v3" { // the requests to v1, v2 are lost
					twin.Step(w.handle(env, ms(30)), ms(31))
				}
			}
			return a, twin
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
			w.roundTrip(cHolder(t, "n", 100, lease.HolderMutations{}), 0) // the predecessor, then it dies
			a, twin := tt.setup(w)
			if _, ok := a.Leads(0, ms(25)); !ok {
				t.Fatal("setup: a does not lead")
			}
			t.Logf("a.Inc() = %d, twin.Inc() = %d, twin superseded %v", a.Inc(), twin.Inc(), twin.Superseded())
			// From here a hears nothing (its replies are delayed); the twin,
			// which wants nothing, and a rival b run normally.
			b := cHolder(t, "b", 1, lease.HolderMutations{})
			b.SetDesired(0, true)
			if at, got := w.overlap(a, []*lease.Holder{twin, b}, 40, 1000); got {
				t.Fatalf("two leaders of shard 0 at %d ms: a (inc %d) by its own clock and a rival; the twin took the same incarnation %d (v1 %+v)",
					at, a.Inc(), twin.Inc(), w.voters["v1"].Record(0))
			}
		})
	}
}

// A request sent before the raise (inc 50) is handled by a voter after one
// sent after it (inc 101) — requests to one voter run concurrently — and is
// answered Stale naming 101, the process's own incarnation. Step ignores a
// Stale reply only when rep.Inc < h.inc, so the process supersedes itself:
// it leads nothing and sends nothing, for good. In a cluster where it is
// the only candidate (here, the only node), the shard stays unled forever
// although every fault has stopped.
func TestStaleReplyToAPreRaiseRequestIsIgnored(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	w.roundTrip(cHolder(t, "n", 100, lease.HolderMutations{}), 0) // the predecessor, then it dies
	p := cHolder(t, "n", 50, lease.HolderMutations{})
	p.SetDesired(0, true)
	var late lease.Envelope
	for _, env := range p.Tick(ms(10)) {
		switch env.To {
		case "v1":
			p.Step(w.handle(env, ms(10)), ms(11)) // Stale(100): p takes 101
		case "v2":
			late = env // delayed in the network
		}
	}
	w.roundTrip(p, ms(20)) // inc 101 at every voter; granted epoch 1
	if _, ok := p.Leads(0, ms(21)); !ok || p.Inc() != 101 {
		t.Fatalf("setup: p leads %v at inc %d", ok, p.Inc())
	}
	p.Step(w.handle(late, ms(30)), ms(31)) // Stale, Inc 101: p's own incarnation
	for at := 40; at <= 5000; at += 10 {
		w.roundTrip(p, ms(at))
	}
	if _, ok := p.Leads(0, ms(5001)); !ok {
		t.Fatalf("p does not lead shard 0 at 5 s, faults over since 31 ms (superseded %v, inc %d): a reply to its own pre-raise request stopped it",
			p.Superseded(), p.Inc())
	}
}

// keepAlive: when a new incarnation arrives after the previous one's gen
// already expired, that gen goes neither to older nor to ended, and
// lastSeen moves on: no other node is ever told it expired. (Pre-existing;
// a holder blocked on that NodeGen waits its backoff instead of retrying
// at once, and a driver that tracks liveness by NodeGen keeps it alive.)
func TestExpiryBeforeANewIncarnationIsReported(t *testing.T) {
	v, err := lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: time.Second, Boot: 1}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := func(n int) lease.Time { return ms(n) }
	old, _ := v.Handle(lease.Request{From: "n", Inc: 1, Seq: 1}, at(0))
	v.Handle(lease.Request{From: "b", Inc: 1, Seq: 1}, at(0))
	kb, _ := v.Handle(lease.Request{From: "b", Inc: 1, Seq: 2, NoticesSince: at(0)}, at(900))
	// n's gen expires at 1000; n's next process starts at 1100.
	v.Handle(lease.Request{From: "n", Inc: 2, Seq: 1}, at(1100))
	rep, _ := v.Handle(lease.Request{From: "b", Inc: 1, Seq: 3, NoticesSince: kb.NoticesAt}, at(1200))
	for _, x := range rep.Expired {
		if x == (lease.NodeGen{Node: "n", Gen: old.Gen}) {
			return
		}
	}
	t.Fatalf("b never hears that n's gen %d expired at 1000 ms: Expired = %+v", old.Gen, rep.Expired)
}

// "No epoch may be granted that cannot be followed by another": the voter
// refuses Epoch or ToEpoch = MaxUint64, yet accepts a transfer to
// MaxUint64−1, after which every grant (it must ask MaxUint64) is refused
// and the shard can never be led again once the target releases it. Only
// a corrupt or hostile sender reaches this (TransferAt bounds the jump).
func TestVoterRefusesAnEpochWithNoSuccessor(t *testing.T) {
	v, err := lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: time.Second, Boot: 1}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	v.Handle(lease.Request{From: "b", Inc: 1, Seq: 1}, ms(0))
	v.Handle(lease.Request{From: "a", Inc: 1, Seq: 1, Ops: []lease.Op{{Kind: lease.OpGrant, Shard: 0, Epoch: 1}}}, ms(0))
	v.Handle(lease.Request{From: "a", Inc: 1, Seq: 2, Ops: []lease.Op{{Kind: lease.OpTransfer, Shard: 0, Epoch: 1, To: "b", ToInc: 1, ToEpoch: math.MaxUint64 - 1}}}, ms(1))
	v.Handle(lease.Request{From: "b", Inc: 1, Seq: 2, Ops: []lease.Op{{Kind: lease.OpRelease, Shard: 0, Epoch: math.MaxUint64 - 1}}}, ms(2))
	rep, _ := v.Handle(lease.Request{From: "c", Inc: 1, Seq: 1, Ops: []lease.Op{{Kind: lease.OpGrant, Shard: 0, Epoch: math.MaxUint64}}}, ms(3))
	if r := v.Record(0); r.Epoch == math.MaxUint64-1 && !rep.Results[0].OK() {
		t.Fatalf("shard 0 recorded at epoch MaxUint64-1 (%+v): no grant can ever follow it", r)
	}
}
