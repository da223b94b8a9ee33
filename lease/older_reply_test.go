package lease_test

import (
	"slices"
	"testing"

	"github.com/tenurehq/tenure/lease"
)

// A top-up grant whose reply is overtaken by a newer one from the same
// voter adds no vote itself (the reply is older than the Held state
// applied), and the top-up is not asked again (the voter is done): the
// vote must come from the newer reply's Held list, so that the lease
// still survives the loss of any one voter. a leads shard 0 on v1 and v2
// (v3 was cut during the acquisition); the top-up to v3 is accepted, but
// its reply arrives after that of a later request to v3, whose change
// list shows the record.
func TestOvertakenTopUpStillCountsTheVoter(t *testing.T) {
	for _, mode := range heldModes {
		t.Run(mode.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
			a := cHolder(t, "a", 1, mode.mu)
			a.SetDesired(0, true)
			w.roundTrip(a, 0, "v3")
			e, ok := a.Leads(0, ms(1))
			if !ok {
				t.Fatal("setup: a does not lead shard 0 on v1 and v2")
			}
			// v3 answers a keep-alive: it counts for a, with no vote.
			w.roundTrip(a, ms(300))
			if a.FullQuorum(0) {
				t.Fatal("setup: v3 backs the lease before the top-up")
			}

			var topUp lease.Envelope
			for _, env := range a.Tick(ms(560)) {
				if env.To == "v3" {
					topUp = env
					continue
				}
				a.Step(w.handle(env, ms(560)), ms(561))
			}
			if !slices.ContainsFunc(topUp.Req.Ops, func(op lease.Op) bool { return op.Kind == lease.OpGrant && op.Shard == 0 && op.Epoch == e }) {
				t.Fatalf("setup: no top-up of shard 0 at epoch %d to v3: %+v", e, topUp.Req.Ops)
			}
			late := w.handle(topUp, ms(560))

			// A later request to v3 (grants of shard 1), handled and
			// answered first.
			a.SetDesired(1, true)
			for _, env := range a.Tick(ms(562)) {
				rep := w.handle(env, ms(562))
				if env.To == "v3" && rep.HeldVer <= late.HeldVer {
					t.Fatalf("setup: the later reply of v3 is as of %#x, not after the top-up's %#x", rep.HeldVer, late.HeldVer)
				}
				a.Step(rep, ms(563))
			}
			a.Step(late, ms(564))

			if !a.FullQuorum(0) {
				t.Fatal("v3 does not back a's lease after its top-up was accepted")
			}
			// v1 becomes unreachable: the lease goes on with v2 and v3.
			for at := 570; at < 2000; at += 10 {
				w.roundTrip(a, ms(at), "v1")
				if _, ok := a.Leads(0, ms(at+1)); !ok {
					t.Fatalf("a stopped leading shard 0 at %d ms, after losing v1 only", at+1)
				}
			}
		})
	}
}

// Whatever makes a vote of the led epoch stop counting reports the shard
// in TakeShortened (or every shard), and the lease is then no longer
// backed by every voter: a change list that shows the record moved on,
// a voter's new session, a re-grant that moves the lease to a new epoch.
func TestEveryShorteningIsReported(t *testing.T) {
	t.Run("a change list withdraws a vote", func(t *testing.T) {
		w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
		a := cHolder(t, "a", 1, lease.HolderMutations{})
		a.SetDesired(0, true)
		w.roundTrip(a, 0)
		if !a.FullQuorum(0) {
			t.Fatal("setup: the lease is not backed by every voter")
		}
		a.TakeShortened()
		for _, env := range a.Tick(ms(300)) {
			rep := w.handle(env, ms(300))
			if env.To == "v1" {
				if !rep.HeldDelta {
					t.Fatalf("setup: v1 answered with a whole list")
				}
				rep.Held = append(rep.Held, lease.ShardRecord{Shard: 0, Record: lease.Record{Epoch: 2, Holder: "b", HolderGen: 7}})
			}
			a.Step(rep, ms(301))
		}
		shards, all := a.TakeShortened()
		if all || !slices.Equal(shards, []uint32{0}) {
			t.Fatalf("TakeShortened = %v, %v; want [0], false", shards, all)
		}
		if a.FullQuorum(0) {
			t.Fatal("FullQuorum still set after v1's vote was withdrawn")
		}
		if _, ok := a.Leads(0, ms(302)); !ok {
			t.Fatal("a stopped leading with two votes left")
		}
	})
	t.Run("a voter's new session", func(t *testing.T) {
		w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
		a := cHolder(t, "a", 1, lease.HolderMutations{})
		a.SetDesired(0, true)
		w.roundTrip(a, 0)
		a.TakeShortened()
		w.restart("v2", ms(100))
		w.roundTrip(a, ms(300))
		if _, all := a.TakeShortened(); !all {
			t.Fatal("TakeShortened does not report every shard after v2's new session")
		}
		if a.FullQuorum(0) {
			t.Fatal("FullQuorum still set with v2's vote from its old session")
		}
	})
	t.Run("a re-grant moves the lease", func(t *testing.T) {
		w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
		a := cHolder(t, "a", 1, lease.HolderMutations{})
		a.SetDesired(0, true)
		w.roundTrip(a, 0)
		w.restart("v2", ms(100))
		w.roundTrip(a, ms(300)) // v2's new session: a re-grants
		a.TakeShortened()
		w.roundTrip(a, ms(302))
		e, ok := a.Leads(0, ms(303))
		if !ok || e != 2 {
			t.Fatalf("setup: a leads shard 0 at %d (%v), want 2 after the re-grant", e, ok)
		}
		if shards, all := a.TakeShortened(); !all && !slices.Contains(shards, 0) {
			t.Fatalf("TakeShortened = %v, %v after the lease moved to epoch 2; want shard 0", shards, all)
		}
		if a.FullQuorum(0) {
			t.Fatal("FullQuorum set at epoch 2, which v2 (in its grace period) did not grant")
		}
	})
}

// A top-up refused because the voter records this lease for an older
// session of the node (it granted the top-up, the reply was lost, and it
// restarted) calls for a re-grant: only a higher epoch brings that voter
// back. When the refusal's reply is overtaken by a newer one from the same
// voter, it is older than the Held state applied, and that state cannot
// decide a re-grant (the newer list shows the record naming another
// generation, which withdraws nothing: there was no vote). The refusal
// must still lead to a re-grant, or the lease rests on a bare majority
// for good and the loss of any one voter of it ends the lease although a
// majority is reachable.
func TestOvertakenTopUpRefusalStillRegrants(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	a := cHolder(t, "a", 1, lease.HolderMutations{})
	a.SetDesired(0, true)
	w.roundTrip(a, 0, "v3")
	e, ok := a.Leads(0, ms(1))
	if !ok {
		t.Fatal("setup: a does not lead shard 0 on v1 and v2")
	}
	w.roundTrip(a, ms(300)) // v3 answers a keep-alive: it counts, with no vote

	// The top-up reaches v3, which grants it; the reply is lost. v3
	// restarts.
	topped := false
	for _, env := range a.Tick(ms(560)) {
		rep := w.handle(env, ms(560))
		if env.To == "v3" {
			topped = slices.ContainsFunc(env.Req.Ops, func(op lease.Op) bool { return op.Kind == lease.OpGrant && op.Shard == 0 })
			continue
		}
		a.Step(rep, ms(561))
	}
	if !topped || w.voters["v3"].Record(0).Holder != "a" {
		t.Fatalf("setup: the top-up did not reach v3 (record %+v)", w.voters["v3"].Record(0))
	}
	w.restart("v3", ms(600))

	// Every 10 ms until v3's grace period is over: the first top-up v3
	// refuses for its record of the old session is answered after a
	// later request to v3 (grants of shard 1).
	overtaken := false
	for at := 610; at < 2000 && !overtaken; at += 10 {
		for _, env := range a.Tick(ms(at)) {
			rep := w.handle(env, ms(at))
			if env.To == "v3" && len(rep.Results) > 0 && rep.Results[0].Op.Shard == 0 && rep.Results[0].Refusal == lease.RefusedEpoch {
				a.SetDesired(1, true)
				for _, env2 := range a.Tick(ms(at + 1)) {
					if env2.To == "v3" {
						newer := w.handle(env2, ms(at+1))
						if newer.HeldVer <= rep.HeldVer {
							t.Fatalf("setup: the later reply is as of %#x, not after %#x", newer.HeldVer, rep.HeldVer)
						}
						a.Step(newer, ms(at+2))
					}
				}
				a.Step(rep, ms(at+3))
				overtaken = true
				continue
			}
			a.Step(rep, ms(at+1))
		}
	}
	if !overtaken {
		t.Fatal("setup: v3 never refused a top-up for its record of the old session")
	}
	// A few more keep-alive intervals with every voter.
	end := 0
	for at := 2000; at < 3000; at += 10 {
		w.roundTrip(a, ms(at))
		end = at
	}
	if got, ok := a.Leads(0, ms(end+1)); !ok {
		t.Fatalf("setup: a does not lead shard 0 (%d)", got)
	}
	// v1 becomes unreachable: v2 and v3 are a majority.
	last, _ := a.Leads(0, ms(end+1))
	for at := end + 10; at < end+2000; at += 10 {
		w.roundTrip(a, ms(at), "v1")
		got, ok := a.Leads(0, ms(at+1))
		if !ok {
			t.Fatalf("a stopped leading shard 0 at %d ms after losing v1 alone (it led at epoch %d, first %d): v3 was never brought back to the lease", at+1, last, e)
		}
		last = got
	}
}
