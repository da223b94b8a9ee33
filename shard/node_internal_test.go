package shard

import (
	"context"
	"fmt"
	"testing"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/membership"
)

// drivenNode is a Node whose loop a test runs by hand, step by step: its
// requests go to in-process lease.Voters, answered on the node's own
// clock, and sent sees each request at the moment it leaves.
type drivenNode struct {
	t      *testing.T
	n      *Node
	st     *loopState
	voters map[string]*lease.Voter
	out    []lease.Envelope
	sent   func(lease.Envelope)
	heard  []string // what the Handler was told, in order
}

func newDrivenNode(t *testing.T) *drivenNode {
	t.Helper()
	cfg := Config{NodeID: "node-a", Shards: 4, GRPCAddr: "127.0.0.1:1"}
	for _, id := range []string{"v1", "v2", "v3"} {
		cfg.Voters = append(cfg.Voters, VoterAddr{ID: id, Addr: "127.0.0.1:1"})
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.inc.Store(1)
	h, err := lease.NewHolder(n.cfg.holder(1, n.holderRand))
	if err != nil {
		t.Fatal(err)
	}
	d := &drivenNode{t: t, n: n, voters: make(map[string]*lease.Voter)}
	d.st = &loopState{view: make(map[string]membership.Member), holder: h,
		sessions: make(map[string]map[string]sessionNews), answered: make(map[string]lease.Time),
		planState: newPlanState()}
	for _, v := range cfg.Voters {
		if d.voters[v.ID], err = lease.NewVoter(lease.VoterConfig{ID: v.ID, LeaseDuration: n.cfg.LeaseDuration, Boot: 1}, nil, n.now()); err != nil {
			t.Fatal(err)
		}
	}
	n.rpc = &rpcPlane{byID: make(map[string]*voterClient), observe: func(e lease.Envelope) {
		if d.sent != nil {
			d.sent(e)
		}
		d.out = append(d.out, e)
	}}
	n.handlers = newHandlerQueue(HandlerFuncs{
		OnAcquired: func(l *Lease) { d.heard = append(d.heard, fmt.Sprintf("acquired %d@%d", l.Shard(), l.Epoch())) },
		OnReleased: func(l *Lease, r Reason) {
			d.heard = append(d.heard, fmt.Sprintf("released %d@%d: %v", l.Shard(), l.Epoch(), r))
		},
	})
	t.Cleanup(func() { n.endAll(d.st, ReasonShutdown) })
	return d
}

// deliver hands every request sent to its voter and the replies to the
// node, until nothing is left to send.
func (d *drivenNode) deliver() {
	for len(d.out) > 0 {
		out := d.out
		d.out = nil
		for _, e := range out {
			rep, _ := d.voters[e.To].Handle(e.Req, d.n.now())
			d.n.step(d.st, rep)
		}
	}
}

// lead makes the node lead shard s and returns its lease.
func (d *drivenNode) lead(s uint32) *Lease {
	d.t.Helper()
	d.st.holder.SetDesired(s, true)
	d.n.send(d.st)
	d.deliver()
	l := d.n.getLease(s)
	if l == nil {
		d.t.Fatalf("node does not lead shard %d after a voter round", s)
	}
	return l
}

// handled runs the Handler calls queued so far.
func (d *drivenNode) handled() []string {
	q := d.n.handlers
	q.mu.Lock()
	calls := q.calls
	q.calls = nil
	q.mu.Unlock()
	for _, c := range calls {
		c(q.h)
	}
	return d.heard
}

// A node's lease on a shard ends when it sends a Transfer or a Release for
// it (docs/design.md §2.4, rule 1): the application's context is cancelled before
// the request leaves, not after.
func TestTransferCancelsContextBeforeSending(t *testing.T) {
	const s = 2
	tests := []struct {
		name string
		op   lease.OpKind
		// give makes the node give s up the way the node does.
		give func(d *drivenNode)
	}{
		{
			name: "handoff",
			op:   lease.OpTransfer,
			give: func(d *drivenNode) {
				// node-b has prepared, is active and the voters vouch for it.
				d.st.view["node-b"] = membership.Member{Meta: membership.Meta{NodeID: "node-b", State: membership.Active, Incarnation: 5}}
				d.st.sessions["node-b"] = map[string]sessionNews{"v1": {gen: 1}, "v2": {gen: 1}, "v3": {gen: 1}}
				e, _ := d.st.holder.Leads(s, d.n.now())
				hf := &handoff{shard: s, epoch: e, to: "node-b", toInc: 5, cancel: func() {}}
				d.st.handoffs[s] = hf
				d.n.switchOver(d.st, hf, 0)
				if !d.st.sendNow {
					t.Fatal("switchOver sent no transfer")
				}
				d.n.sendNow(d.st, nil)
			},
		},
		{
			name: "leave",
			op:   lease.OpRelease,
			give: func(d *drivenNode) { d.n.releaseAll(d.st, ReasonShutdown) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDrivenNode(t)
			l := d.lead(s)
			seen := 0
			d.sent = func(e lease.Envelope) {
				for _, op := range e.Req.Ops {
					if op.Kind != tt.op || op.Shard != s {
						continue
					}
					seen++
					if err := l.Context().Err(); err == nil {
						t.Errorf("%v of shard %d sent to %s while the lease's context is live", op.Kind, s, e.To)
					}
				}
			}
			tt.give(d)
			if seen == 0 {
				t.Fatalf("no %v of shard %d was sent", tt.op, s)
			}
		})
	}
}

// A lease whose deadline passed while the node was late (its loop
// starved), and which the holder renewed afterwards from replies that
// were waiting, stays ended: the application is told so and receives a
// new Lease at the holder's epoch, without a voter round.
func TestLeaseRenewedAfterItsDeadlineIsReplaced(t *testing.T) {
	const s = 1
	d := newDrivenNode(t)
	old := d.lead(s)
	e := old.Epoch()
	// The deadline passes while the loop is late: the application's check
	// (or the lease's timer) ends the lease there.
	old.timer.Stop()
	old.deadline.Store(int64(d.n.now() - 1))
	if _, ok := d.st.holder.Leads(s, d.n.now()); !ok {
		t.Fatal("the holder stopped leading: the test needs a lease it still counts")
	}
	if old.Context().Err() == nil {
		t.Fatal("the lease's context is live past its deadline")
	}
	d.n.reconcile(d.st)
	if r := endedFor(t, old); r != ReasonLeaseExpired {
		t.Fatalf("the old lease ended for %v, want %v", r, ReasonLeaseExpired)
	}
	l := d.n.getLease(s)
	if l == nil || l == old || l.Epoch() != e || l.Context().Err() != nil {
		t.Fatalf("lease after reconcile: %+v, want a new live lease at epoch %d", l, e)
	}
	if len(d.out) != 0 {
		t.Errorf("reconcile sent %d requests, want none", len(d.out))
	}
	want := []string{fmt.Sprintf("acquired %d@%d", s, e), fmt.Sprintf("released %d@%d: lease expired", s, e), fmt.Sprintf("acquired %d@%d", s, e)}
	if got := d.handled(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the Handler heard %q, want %q", got, want)
	}
	if err := context.Cause(l.Context()); err != nil {
		t.Errorf("the new lease's context ended: %v", err)
	}
}
