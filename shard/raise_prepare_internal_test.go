package shard

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/tenurehq/tenure/lease"
	peerv1 "github.com/tenurehq/tenure/proto/peer/v1"
)

// prepHook is a Handler whose Preparer runs f: the loop handles what
// arrives meanwhile (the hook runs off the loop, between the peer server's
// incarnation check and the expect it asks the loop for).
type prepHook struct {
	HandlerFuncs
	f func()
}

func (p prepHook) Prepare(context.Context, uint32, uint64) error {
	p.f()
	return nil
}

// runLoop serves the driven node's ctl channel (what n.do sends) on a
// goroutine of its own until the test ends: only it touches d.st then.
func (d *drivenNode) runLoop(t *testing.T) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case f := <-d.n.ctl:
				f(d.st)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// exchange runs holder h against the driven node's voters until nothing is
// left to send, on the node's clock.
func (d *drivenNode) exchange(h *lease.Holder) {
	for range 10 {
		envs := h.Tick(d.n.now())
		if len(envs) == 0 {
			return
		}
		for _, e := range envs {
			rep, _ := d.voters[e.To].Handle(e.Req, d.n.now())
			h.Step(rep, d.n.now())
		}
	}
}

// A handoff target raises its incarnation while its Preparer hook runs.
// The peer server checked the request's incarnation before the hook; the
// expect after it must check again, or the target holds off its own
// acquisition for QuiesceTimeout + LeaseDuration while the source's
// Transfer, addressed to the old incarnation, is refused and its lease is
// over. The target must refuse the Prepare (the source keeps leading), or,
// if it expects the shard, acquire it at once on the source's abort.
func TestRaiseDuringPrepareLeavesNoShardUnled(t *testing.T) {
	const s = 2
	d := newDrivenNode(t)
	ld := d.n.cfg.LeaseDuration
	ids := d.n.cfg.voterIDs()
	// The source, node-s, leads shard s.
	src, err := lease.NewHolder(lease.HolderConfig{ID: "node-s", Inc: 1, Nonce: 7, Voters: ids,
		LeaseDuration: ld, MaxClockDrift: d.n.cfg.MaxClockDrift, SafetyMargin: d.n.cfg.SafetyMargin,
		KeepAliveInterval: d.n.cfg.KeepAliveInterval, Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	src.SetDesired(s, true)
	d.exchange(src)
	e, ok := src.Leads(s, d.n.now())
	if !ok {
		t.Fatal("setup: node-s does not lead the shard")
	}
	// The target, node-a (incarnation 1), has been answered by every voter.
	d.n.send(d.st)
	d.deliver()
	d.n.checkVouched(d.st) // as the loop does after replies
	if !d.st.vouched {
		t.Fatal("setup: node-a is not vouched for")
	}
	// v1 heard of a later process with node-a's ID (incarnation 5, whose
	// session is live there: node-a never led, so it raises either way).
	if rep, _ := d.voters["v1"].Handle(lease.Request{From: "node-a", Inc: 5, Nonce: 1, Seq: 1, LeaseDuration: ld}, d.n.now()); rep.Gen == 0 {
		t.Fatalf("setup: %+v", rep)
	}
	d.runLoop(t)
	// While node-a's Preparer runs, its loop keeps alive: v1 reports the
	// higher incarnation, node-a raises, and its next keep-alives carry the
	// new incarnation to every voter.
	d.n.cfg.Handler = prepHook{f: func() {
		d.n.do(func(st *loopState) {
			// A request to every voter now (an acquisition of shard 3);
			// v1's answer arrives first.
			st.holder.SetDesired(3, true)
			d.out = nil
			d.n.send(st)
			for _, env := range d.out {
				if env.To == "v1" {
					rep, _ := d.voters["v1"].Handle(env.Req, d.n.now())
					d.n.step(st, rep)
				}
			}
			d.out = nil
			st.holder.SetDesired(3, false)
			d.n.send(st)
			d.deliver()
			d.n.checkVouched(st)
		})
	}}
	rep, err := peerServer{n: d.n}.Prepare(context.Background(), &peerv1.PrepareRequest{
		Cluster: d.n.cfg.Cluster, Shard: s, Epoch: e, From: "node-s", To: "node-a", ToIncarnation: 1, TimeoutMs: 5000})
	if d.n.inc.Load() == 1 {
		t.Fatal("setup: node-a did not raise its incarnation")
	}
	if err != nil {
		return // refused: node-s keeps leading; nothing is unled
	}
	t.Logf("Prepare for incarnation 1 accepted by incarnation %d (min epoch %d)", d.n.inc.Load(), rep.GetMinEpoch())
	// node-s transfers to the incarnation gossip showed it; the voters know
	// node-a's new one and refuse. node-s's lease is over.
	src.SetDesired(s, false)
	if err := src.TransferAt(s, "node-a", 1, rep.GetMinEpoch(), d.n.now()); err != nil {
		t.Fatal(err)
	}
	d.exchange(src)
	failed := false
	for _, c := range src.TakeChanges() {
		failed = failed || c.Kind == lease.TransferFailed
	}
	if !failed {
		t.Fatal("setup: the transfer was not refused")
	}
	// node-s forwards the abort, as transferFailed does.
	_, lerr := peerServer{n: d.n}.Lead(context.Background(), &peerv1.LeadRequest{
		Cluster: d.n.cfg.Cluster, Shard: s, Epoch: e, From: "node-s", To: "node-a", ToIncarnation: 1, Aborted: true})
	// Nobody leads s now. node-a expects it: it must acquire it now, not
	// after its hold-off.
	grant := false
	d.n.do(func(st *loopState) {
		d.out = nil
		d.n.send(st)
		for _, env := range d.out {
			for _, op := range env.Req.Ops {
				grant = grant || (op.Kind == lease.OpGrant && op.Shard == s)
			}
		}
	})
	if !grant {
		t.Errorf("shard %d is unled (node-s's transfer was refused) and node-a, which expects it, sends no Grant: it holds off until %v from now (the abort was refused: %v)",
			s, d.n.cfg.QuiesceTimeout+ld, lerr)
	}
}
