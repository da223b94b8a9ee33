package lease_test

import (
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
)

// TestTransferAtIsWellFormed: whatever minimum the target names — below,
// at or above the led epoch — the transfer the holder sends is one a voter
// accepts on the wire (a malformed one would cost the whole request, its
// keep-alive included, and a retry a keep-alive interval later).
func TestTransferAtIsWellFormed(t *testing.T) {
	for _, min := range []uint64{0, 1, 2, 3, 9} {
		w := newWorld(t)
		h := w.newHolder("n1", 1)
		e := w.acquire(h, 7)
		h.SetDesired(7, false)
		if err := h.TransferAt(7, "n2", 5, min, w.now); err != nil {
			t.Fatal(err)
		}
		for _, env := range h.Tick(w.now.Add(time.Millisecond)) {
			_, req, err := voterv1.RequestFromPB(voterv1.RequestToPB("c", env.Req))
			if err != nil {
				t.Fatalf("min %d: request to %s is malformed: %v", min, env.To, err)
			}
			for _, op := range req.Ops {
				if op.Kind == lease.OpTransfer && op.TransferEpoch() != max(e+1, min) {
					t.Errorf("min %d: transfer to epoch %d, want %d", min, op.TransferEpoch(), max(e+1, min))
				}
			}
		}
	}
}

func TestVoterSetID(t *testing.T) {
	if got := lease.VoterSetID(nil); got != 0 {
		t.Errorf("VoterSetID(nil) = %x, want 0 (not given)", got)
	}
	a := lease.VoterSetID([]string{"v1", "v2", "v3"})
	if a == 0 {
		t.Fatal("VoterSetID of three voters is 0, which means \"not given\"")
	}
	if b := lease.VoterSetID([]string{"v3", "v1", "v2"}); b != a {
		t.Errorf("order changed the ID: %x != %x", b, a)
	}
	for _, other := range [][]string{
		{"v1", "v2"},
		{"v1", "v2", "v4"},
		{"v1", "v2", "v3", "v4", "v5"},
		{"v1v2", "v3"}, // the separator keeps IDs apart
	} {
		if lease.VoterSetID(other) == a {
			t.Errorf("%q has the same ID as v1, v2, v3", other)
		}
	}
}
