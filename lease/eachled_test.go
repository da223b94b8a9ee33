package lease_test

import (
	"slices"
	"testing"

	"github.com/tenurehq/tenure/lease"
)

// EachLed visits exactly the shards Led returns, with Leads' epochs, and
// none once their voters stop counting.
func TestEachLedVisitsWhatLedReturns(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	a := cHolder(t, "a", 1, lease.HolderMutations{})
	for s := range uint32(5) {
		a.SetDesired(s, true)
	}
	w.roundTrip(a, 0)
	for _, at := range []lease.Time{ms(2), ms(2000)} {
		var got []uint32
		a.EachLed(at, func(s uint32, e uint64) {
			if want, ok := a.Leads(s, at); !ok || want != e {
				t.Errorf("at %v EachLed gave shard %d epoch %d, Leads says %d, %v", at, s, e, want, ok)
			}
			got = append(got, s)
		})
		slices.Sort(got)
		if want := a.Led(at); !slices.Equal(got, want) {
			t.Fatalf("at %v EachLed visited %v, Led returns %v", at, got, want)
		}
		if at == ms(2) && len(got) != 5 {
			t.Fatalf("a leads %v after one round, want 5 shards", got)
		}
		if at == ms(2000) && len(got) != 0 {
			t.Fatalf("a leads %v 2 s after its last keep-alive", got)
		}
	}
}
