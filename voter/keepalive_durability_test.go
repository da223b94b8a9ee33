package voter_test

import (
	"context"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
	"github.com/tenurehq/tenure/voter"
)

type callOutcome struct {
	rep lease.Reply
	err error
}

// callAsync calls h with req on its own goroutine.
func callAsync(h *harness, req lease.Request) <-chan callOutcome {
	c := make(chan callOutcome, 1)
	go func() {
		rep, err := h.send(cluster, req)
		c <- callOutcome{rep, err}
	}()
	return c
}

// mustWait fails the test unless the call is waiting for the store.
func mustWait(t *testing.T, who string, entered <-chan struct{}, done <-chan callOutcome) {
	t.Helper()
	select {
	case <-entered:
	case o := <-done:
		t.Fatalf("%s replied before the records its reply reveals were durable: Held %+v (delta %v), err %v", who, o.rep.Held, o.rep.HeldDelta, o.err)
	case <-time.After(callTimeout):
		t.Fatalf("%s neither waited for the store nor replied", who)
	}
}

// mustAnswer fails the test unless the call replies while the store is
// held.
func mustAnswer(t *testing.T, who string, entered <-chan struct{}, done <-chan callOutcome) lease.Reply {
	t.Helper()
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatalf("%s: %v", who, o.err)
		}
		return o.rep
	case <-entered:
		t.Fatalf("%s waited for the store although its reply reveals nothing being written", who)
	case <-time.After(callTimeout):
		t.Fatalf("%s was not answered while the store was held", who)
	}
	return lease.Reply{}
}

// A record that moves from one node to another is revealed to both: the
// source's change list shows it naming the target, the target's lists show
// it naming the target. Neither keep-alive is answered before the transfer
// is durable; a third node's is.
func TestKeepAlivesWaitForATransferTheyReveal(t *testing.T) {
	h := serveNew(t, t.TempDir(), &fakeClock{})
	g := h.call(t, request("n1", grant(1, 1)))
	h.call(t, request("n2"))
	h.call(t, request("n3"))
	since := h.call(t, lease.Request{From: "n1", Inc: 1, HeldSince: g.HeldVer}).HeldVer

	entered, release := voter.HoldBarriers(h.srv)
	defer release()
	moved := callAsync(h, request("n1", lease.Op{Kind: lease.OpTransfer, Shard: 1, Epoch: 1, To: "n2", ToInc: 1}))
	mustWait(t, "the transfer", entered, moved)

	src := callAsync(h, lease.Request{From: "n1", Inc: 1, HeldSince: since})
	mustWait(t, "the source's keep-alive", entered, src)
	dst := callAsync(h, request("n2"))
	mustWait(t, "the target's keep-alive", entered, dst)
	mustAnswer(t, "a third node's keep-alive", entered, callAsync(h, request("n3")))

	release()
	for who, c := range map[string]<-chan callOutcome{"transfer": moved, "source": src, "target": dst} {
		if o := <-c; o.err != nil {
			t.Fatalf("%s: %v", who, o.err)
		}
	}
}

// A node whose session expired, and whose record another node was granted
// meanwhile, hears of the grant in its next keep-alive's change list:
// only once the grant is durable.
func TestKeepAliveWaitsForAGrantOverItsExpiredRecord(t *testing.T) {
	clock := &fakeClock{}
	h := serveNew(t, t.TempDir(), clock)
	g := h.call(t, request("n1", grant(1, 1)))
	clock.Advance(2 * ld) // n1's session expires
	h.call(t, request("n2"))

	entered, release := voter.HoldBarriers(h.srv)
	defer release()
	taken := callAsync(h, request("n2", grant(1, 2)))
	mustWait(t, "the grant", entered, taken)
	old := callAsync(h, lease.Request{From: "n1", Inc: 1, HeldSince: g.HeldVer})
	mustWait(t, "the old holder's keep-alive", entered, old)
	release()
	if o := <-old; o.err != nil || !o.rep.HeldDelta || len(o.rep.Held) != 1 || o.rep.Held[0].Holder != "n2" {
		t.Fatalf("old holder's keep-alive: %+v, %v; want a change list showing shard 1 naming n2", o.rep, o.err)
	}
	if o := <-taken; o.err != nil {
		t.Fatal(o.err)
	}
}

// A request abandoned while it waits for the store leaves its records
// queued, not known durable: the next keep-alive of the node they name
// still waits for them.
func TestKeepAliveAfterAnAbandonedCommitWaits(t *testing.T) {
	h := serveNew(t, t.TempDir(), &fakeClock{})
	h.call(t, request("n1"))
	entered, release := voter.HoldBarriers(h.srv)
	defer release()

	ctx, cancel := context.WithCancel(context.Background())
	abandoned := make(chan error, 1)
	go func() {
		_, err := h.client.Call(ctx, voterv1.RequestToPB(cluster, request("n1", grant(1, 1))))
		abandoned <- err
	}()
	<-entered
	cancel()
	if err := <-abandoned; err == nil {
		t.Fatal("the abandoned grant replied")
	}
	ka := callAsync(h, request("n1"))
	mustWait(t, "the keep-alive after the abandoned grant", entered, ka)
	release()
	o := <-ka
	if o.err != nil || len(o.rep.Held) != 1 || o.rep.Held[0].Epoch != 1 {
		t.Fatalf("keep-alive: %+v, %v; want the abandoned grant's record, durable", o.rep, o.err)
	}
}
