package lease_test

import (
	"testing"

	"github.com/tenurehq/tenure/lease"
)

// A voter that recorded a rival's grant of the led epoch refuses the top-up
// of that epoch for good: the holder re-grants above it, so that its lease
// rests on every voter and survives the loss of any one. Node b's
// acquisition of epoch 1 reaches only v1, and b stops; a acquires epoch 1
// from v2 and v3, and v1 keeps b's record. Without the re-grant, cutting
// v2 off ends a's lease although v1 and v3 still answer it.
func TestTopUpRefusedByARivalsGrantRegrants(t *testing.T) {
	for _, tt := range []struct {
		name     string
		mu       lease.HolderMutations
		wantLost bool
	}{
		{name: "re-grant", wantLost: false},
		{name: "no re-grant IsCaught", mu: lease.HolderMutations{NoRegrantForUnbackedVoter: true}, wantLost: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
			a := cHolder(t, "a", 1, tt.mu)
			b := cHolder(t, "b", 1, lease.HolderMutations{})
			b.SetDesired(0, true)
			w.roundTrip(b, 0, "v2", "v3") // b's grant of epoch 1 lands at v1 only; b then stops
			a.SetDesired(0, true)
			w.roundTrip(a, ms(1), "v1") // a leads epoch 1 on v2 and v3
			if e, ok := a.Leads(0, ms(3)); !ok || e != 1 {
				t.Fatalf("setup: a does not lead shard 0 at epoch 1 (%d, %v)", e, ok)
			}
			for at := 10; at <= 1000; at += 10 {
				w.roundTrip(a, ms(at))
			}
			a.TakeChanges()
			// v2 is cut off from now on.
			lost := false
			for at := 1010; at <= 2500; at += 10 {
				w.roundTrip(a, ms(at), "v2")
				for _, c := range a.TakeChanges() {
					lost = lost || c.Kind == lease.Lost
				}
			}
			if lost != tt.wantLost {
				t.Fatalf("a's lease ended after v2 was cut off: %v, want %v (v1 records %+v)", lost, tt.wantLost, w.voters["v1"].Record(0))
			}
		})
	}
}
