package voterstore_test

import (
	"errors"
	"testing"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/voterstore"
)

// FuzzDecodeRecord checks that decoding never panics, that every rejection
// wraps ErrCorrupt, and that whatever decodes survives a round trip.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []lease.Record{
		{},
		{Epoch: 1, Holder: "node-a", HolderGen: 1<<32 | 1},
		{Epoch: 1 << 63, Holder: "", HolderGen: 0, Released: true},
	} {
		f.Add(voterstore.EncodeRecord(r))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0xff})
	f.Add([]byte{2, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := voterstore.DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, voterstore.ErrCorrupt) {
				t.Fatalf("DecodeRecord(%x) = %v, not ErrCorrupt", b, err)
			}
			return
		}
		again, err := voterstore.DecodeRecord(voterstore.EncodeRecord(r))
		if err != nil || again != r {
			t.Fatalf("round trip of %+v = %+v, %v", r, again, err)
		}
	})
}
