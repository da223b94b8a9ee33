package lease_test

import (
	"testing"

	"github.com/tenurehq/tenure/lease"
)

// A rival that reaches one voter only and keeps wanting the shard wins that
// voter again after each of its attempts times out: its next grant there is
// one above the record it released. The leader's top-up refused by the
// rival's record makes it re-grant above it; that re-grant must win the
// voter once the rival releases (its release and its next grant leave
// apart), so the re-grants end rather than follow the rival's epochs for
// as long as it tries. No two leaders at once, at any timing.
func TestRegrantFollowsARivalCutOffFromTheMajority(t *testing.T) {
	for _, step := range []int{1, 3, 7, 10, 25, 50} {
		for _, off := range []int{0, 1, 2} {
			regrantFollowsRival(t, step, off)
		}
	}
}

func regrantFollowsRival(t *testing.T, step, off int) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	a := cHolder(t, "a", 1, lease.HolderMutations{})
	b := cHolder(t, "b", 1, lease.HolderMutations{})
	b.SetDesired(0, true)
	w.roundTrip(b, 0, "v2", "v3") // b's grant of epoch 1 lands at v1 only
	a.SetDesired(0, true)
	w.roundTrip(a, ms(1), "v1") // a leads epoch 1 on v2 and v3
	if e, ok := a.Leads(0, ms(3)); !ok || e != 1 {
		t.Fatalf("setup: a does not lead shard 0 at epoch 1 (%d, %v)", e, ok)
	}
	a.TakeChanges()
	renewed, lost := 0, 0
	for at := 10; at <= 20000; at += step {
		w.roundTrip(b, ms(at), "v2", "v3")
		w.roundTrip(a, ms(at+off))
		for _, c := range a.TakeChanges() {
			switch c.Kind {
			case lease.Renewed:
				renewed++
			case lease.Lost:
				lost++
			}
		}
		_, aLeads := a.Leads(0, ms(at+off+1))
		_, bLeads := b.Leads(0, ms(at+off+1))
		if aLeads && bLeads {
			t.Fatalf("a and b both lead shard 0 at %d ms", at+6)
		}
	}
	e, ok := a.Leads(0, ms(20006))
	if !ok || e > 5 || renewed > 3 || lost > 0 {
		t.Fatalf("step %d off %d: after 20 s a leads %v at epoch %d (%d renewals, %d losses): re-grants did not settle; v1 %+v",
			step, off, ok, e, renewed, lost, w.voters["v1"].Record(0))
	}
	t.Logf("step %d off %d: after 20 s:", step, off)
	t.Logf(" a leads %v at epoch %d; %d renewals, %d losses; v1 %+v", ok, e, renewed, lost, w.voters["v1"].Record(0))
}
