package lease_test

import (
	"testing"

	"github.com/tenurehq/tenure/lease"
)

// heldVoter is one voter driven directly: node "a" and node "b" keep alive
// and ask for grants.
type heldVoter struct {
	t   *testing.T
	v   *lease.Voter
	seq uint64
}

func newHeldVoter(t *testing.T, boot uint32, records map[uint32]lease.Record) *heldVoter {
	t.Helper()
	v, err := lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: cLD, Boot: boot}, records, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &heldVoter{t: t, v: v}
}

func (hv *heldVoter) call(from string, since uint64, at int, ops ...lease.Op) lease.Reply {
	hv.seq++
	rep, _ := hv.v.Handle(lease.Request{From: from, Inc: 1, Seq: hv.seq, NoticesSince: ms(at), HeldSince: since, Ops: ops}, ms(at))
	return rep
}

func heldShards(rep lease.Reply) map[uint32]lease.Record {
	m := make(map[uint32]lease.Record, len(rep.Held))
	for _, r := range rep.Held {
		m[r.Shard] = r.Record
	}
	return m
}

// A keep-alive that names the version of the last list it applied gets the
// records that changed since — the ones that moved to another node or were
// released included — and nothing else.
func TestVoterListsHeldChangesSinceTheVersionAsked(t *testing.T) {
	hv := newHeldVoter(t, 3, nil)
	first := hv.call("a", 0, 1, grant(1, 1), grant(2, 1), grant(3, 1))
	if first.HeldDelta || len(first.Held) != 3 {
		t.Fatalf("first reply: delta %v, %d records, want a whole list of 3", first.HeldDelta, len(first.Held))
	}
	if first.HeldVer <= 3<<32 {
		t.Fatalf("HeldVer %#x, want above boot 3's first version %#x", first.HeldVer, uint64(3)<<32)
	}
	// Nothing changed: an empty change list.
	quiet := hv.call("a", first.HeldVer, 100)
	if !quiet.HeldDelta || len(quiet.Held) != 0 || quiet.HeldVer != first.HeldVer || quiet.HeldSince != first.HeldVer {
		t.Fatalf("quiet keep-alive: %+v, want an empty change list at the same version", quiet)
	}
	// a releases shard 2; its session at the voter expires and b takes
	// shard 3; a acquires shard 4.
	hv.call("a", 0, 200, release(2, 1))
	hv.call("b", 0, 200+int(cLD.Milliseconds())+1, grant(3, 2))
	rep := hv.call("a", first.HeldVer, 200+int(cLD.Milliseconds())+2, grant(4, 1))
	if !rep.HeldDelta {
		t.Fatalf("reply is a whole list, want changes since %#x", first.HeldVer)
	}
	got := heldShards(rep)
	if len(got) != 3 {
		t.Fatalf("changes %+v, want shards 2, 3 and 4 only", rep.Held)
	}
	if !got[2].Released || got[3].Holder != "b" || got[4].Holder != "a" {
		t.Fatalf("changes %+v, want 2 released, 3 naming b, 4 naming a", rep.Held)
	}
	if _, ok := got[1]; ok {
		t.Fatal("shard 1 did not change but is listed")
	}
	if rep.HeldVer != first.HeldVer+3 {
		t.Fatalf("HeldVer %#x, want %#x (three record changes)", rep.HeldVer, first.HeldVer+3)
	}
}

// A version the voter cannot answer with changes gets a whole list: one
// from before the voter's restart (versions start at Boot<<32), one from
// the future, and one older than the changes it still keeps.
func TestVoterListsEveryRecordWhenItCannotListChanges(t *testing.T) {
	hv := newHeldVoter(t, 3, nil)
	rep := hv.call("a", 0, 1, grant(1, 1))
	restarted := newHeldVoter(t, 4, map[uint32]lease.Record{1: hv.v.Record(1)})
	for _, tt := range []struct {
		name  string
		v     *heldVoter
		since uint64
	}{
		{"a version of the voter's previous run", restarted, rep.HeldVer},
		{"a version the voter has not reached", hv, rep.HeldVer + 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.v.call("a", tt.since, 2)
			if got.HeldDelta || len(got.Held) != 1 || got.Held[0].Shard != 1 {
				t.Fatalf("reply %+v, want the whole list (shard 1)", got)
			}
		})
	}
	t.Run("a version older than the changes kept", func(t *testing.T) {
		hv := newHeldVoter(t, 5, nil)
		base := hv.call("a", 0, 1, grant(0, 1)).HeldVer
		// Re-grant shard 0 until the log of a's changes was trimmed.
		for e := uint64(2); e < 3*8192; e++ {
			hv.call("a", 0, 2, grant(0, e))
		}
		got := hv.call("a", base, 3)
		if got.HeldDelta || len(got.Held) != 1 {
			t.Fatalf("reply: delta %v with %d records, want the whole list", got.HeldDelta, len(got.Held))
		}
	})
}

// A holder applies change lists in the voter's version order: one older than
// what it applied is skipped, and a change list that shows a led shard's
// record naming someone else withdraws that voter's vote.
func TestHolderAppliesHeldChangesInVersionOrder(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	a := cHolder(t, "a", 1, lease.HolderMutations{})
	a.SetDesired(0, true)
	w.roundTrip(a, 0)
	if _, ok := a.Leads(0, ms(1)); !ok {
		t.Fatal("a does not lead after one round")
	}
	var older, newer lease.Reply
	for i, at := range []int{300, 600} {
		for _, env := range a.Tick(ms(at)) {
			if env.Req.HeldSince == 0 {
				t.Fatalf("keep-alive at %d ms to %s asks for a whole list", at, env.To)
			}
			switch env.To {
			case "v1":
				rep := w.handle(env, ms(at))
				if i == 0 {
					older = rep
				} else {
					// The voter moved on between the two: the record
					// names another process now.
					newer = rep
					newer.HeldVer++
					newer.Held = []lease.ShardRecord{{Shard: 0, Record: lease.Record{Epoch: 9, Holder: "b", HolderGen: 7}}}
				}
			case "v3":
				a.Step(w.handle(env, ms(at)), ms(at+1))
			}
		}
	}
	a.Step(newer, ms(601))
	// An older reply, listing shard 0 as a's again, must not bring back
	// the vote.
	older.Held = []lease.ShardRecord{{Shard: 0, Record: w.voters["v1"].Record(0)}}
	older.HeldDelta, older.HeldSince = true, older.HeldVer-1
	a.Step(older, ms(602))
	if _, ok := a.Leads(0, ms(1000)); ok {
		t.Fatal("a leads at 1000 ms with v1's withdrawn vote and v3's alone")
	}
}
