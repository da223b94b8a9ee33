package voter_test

import (
	"testing"
	"time"

	"github.com/tenurehq/tenure/voter"
)

// A keep-alive without operations does not queue behind another request's
// commit when its reply reveals nothing that commit writes; one whose Held
// list would show the records being written waits for them like any other
// reply.
func TestKeepAliveWaitsOnlyForRecordsItReveals(t *testing.T) {
	h := serveNew(t, t.TempDir(), &fakeClock{})
	h.call(t, request("n2")) // n2 has a session and no records
	entered, release := voter.HoldBarriers(h.srv)
	defer release()

	granted := h.sendAsync(request("n1", grant(1, 1)))
	select {
	case <-entered:
	case o := <-granted:
		t.Fatalf("the grant replied without waiting for the store: %+v, %v", o.rep, o.err)
	case <-time.After(callTimeout):
		t.Fatal("the grant never reached the store")
	}

	// n2's keep-alive reveals nothing of n1's grant: it is answered while
	// the grant's commit is held.
	select {
	case o := <-h.sendAsync(request("n2")):
		if o.err != nil {
			t.Fatalf("n2's keep-alive: %v", o.err)
		}
	case <-entered:
		t.Fatal("n2's keep-alive waited for the store although its reply reveals nothing being written")
	case <-time.After(callTimeout):
		t.Fatal("n2's keep-alive was not answered while another request's commit was held")
	}

	// n1's keep-alive lists the record being written: it must wait.
	ka := h.sendAsync(request("n1"))
	select {
	case <-entered:
	case o := <-ka:
		t.Fatalf("n1's keep-alive replied before the record its Held list shows was durable: %+v, %v", o.rep, o.err)
	case <-time.After(callTimeout):
		t.Fatal("n1's keep-alive neither waited for the store nor replied")
	}
	release()
	if g, k := <-granted, <-ka; g.err != nil || k.err != nil {
		t.Fatalf("grant: %v; n1's keep-alive: %v", g.err, k.err)
	}
}
