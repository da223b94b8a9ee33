package shard

import (
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// withdrawnAt returns rep, a voter's answer to a request of the node, with
// its Held list also showing shard s's record naming node-b at epoch e:
// the voter has moved on from the node's record. The holder treats that as
// a withdrawal of the voter's vote (docs/design.md §2.4), whatever made the
// record move.
func withdrawnAt(t *testing.T, rep lease.Reply, s uint32, e uint64) lease.Reply {
	t.Helper()
	if !rep.HeldDelta {
		t.Fatalf("reply of %s: a whole Held list, want a change list", rep.Voter)
	}
	rep.Held = append(rep.Held, lease.ShardRecord{Shard: s, Record: lease.Record{Epoch: e, Holder: "node-b", HolderGen: 1}})
	return rep
}

// fullLease makes the node lead s with a vote from every voter, the
// lease's flag set (Lease.full), and sends one more request to each voter
// (grants of s2): the answers, which the caller hands to the node, come
// from requests sent after every vote of s was confirmed.
func fullLease(t *testing.T, d *drivenNode, s, s2 uint32) (*Lease, map[string]lease.Envelope) {
	t.Helper()
	h := d.st.holder
	l := d.lead(s)
	d.n.refreshDeadlines(d.st)
	if !h.FullQuorum(s) || !l.full.Load() {
		t.Fatalf("after a round every voter answered: holder's FullQuorum %v, lease's flag %v; want both set", h.FullQuorum(s), l.full.Load())
	}
	time.Sleep(5 * time.Millisecond) // the next requests leave after the votes were confirmed
	h.SetDesired(s2, true)
	d.n.send(d.st)
	reqs := make(map[string]lease.Envelope)
	for _, e := range d.out {
		reqs[e.To] = e
	}
	d.out = nil
	if len(reqs) != 3 {
		t.Fatalf("requests to %d voters, want 3", len(reqs))
	}
	return l, reqs
}

// A burst of replies that withdraws a led shard's votes is applied to the
// application's lease at once, also when the burst falls on one of the
// periodic refreshes of every lease (every KeepAliveInterval/8). Those
// extend only leases whose deadline is near, and the holder's report of
// the shortened shard (TakeShortened, which the refresh consumes) is lost
// for the others: the lease keeps its flag, follows the shared quorum
// deadline the same refresh publishes, and its context stays live after
// the holder stopped leading.
func TestWithdrawnVotesEndTheLeaseOnAPeriodicRefresh(t *testing.T) {
	const s, s2 = 1, 2
	d := newDrivenNode(t)
	h := d.st.holder
	l, reqs := fullLease(t, d, s, s2)
	e := l.Epoch()

	// The last refresh of every lease was a while ago: this burst's
	// refresh is a periodic one.
	d.st.refreshedAt = d.n.now() - lease.Time(d.n.cfg.KeepAliveInterval)
	for _, v := range []string{"v1", "v2"} {
		rep, _ := d.voters[v].Handle(reqs[v].Req, d.n.now())
		d.n.step(d.st, withdrawnAt(t, rep, s, e+1))
	}
	d.n.refreshDeadlines(d.st)

	now := d.n.now()
	if _, ok := h.Leads(s, now); ok {
		t.Fatal("the holder still leads after two of three votes were withdrawn")
	}
	if err := l.Context().Err(); err == nil {
		t.Errorf("the holder no longer leads shard %d (two of three votes withdrawn), but after the burst's refresh the lease's context is live: "+
			"flag %v, own deadline in %v, quorum deadline in %v",
			s, l.full.Load(), lease.Time(l.deadline.Load()).Sub(now), lease.Time(d.n.quorumUntil.Load()).Sub(now))
	}
}

// The same with one vote withdrawn while v3 is silent: the holder still
// leads, on v2 and v3, until v3's last answered keep-alive runs out. The
// lease must not last longer. With the flag left set it follows the quorum
// deadline of v1 and v2 instead, and a loop that stalls after the burst
// (the case the shared deadline exists for) leaves the application's
// context live after the holder stopped leading, for as long as v3 has
// been silent: v3's session for the node expires meanwhile, and v1, which
// moved on, and v3 are a majority for another node.
func TestWithdrawnVoteShortensTheLeaseOnAPeriodicRefresh(t *testing.T) {
	const s, s2 = 1, 2
	d := newDrivenNode(t)
	h := d.st.holder
	l := d.lead(s)
	d.n.refreshDeadlines(d.st)
	if !l.full.Load() {
		t.Fatal("setup: the lease is not flagged as backed by every voter")
	}
	e := l.Epoch()

	// 300 ms later the keep-alives leave; v3's is lost, v1 and v2 answer,
	// and v1's change list shows that it moved on.
	time.Sleep(300 * time.Millisecond)
	d.n.send(d.st)
	out := d.out
	d.out = nil
	d.st.refreshedAt = d.n.now() - lease.Time(d.n.cfg.KeepAliveInterval)
	for _, env := range out {
		rep, _ := d.voters[env.To].Handle(env.Req, d.n.now())
		switch env.To {
		case "v1":
			d.n.step(d.st, withdrawnAt(t, rep, s, e+1))
		case "v2":
			d.n.step(d.st, rep)
		}
	}
	d.n.refreshDeadlines(d.st)

	now := d.n.now()
	want, ok := h.Deadline(s, now)
	if !ok || h.FullQuorum(s) {
		t.Fatalf("setup: the holder's deadline %v (leads %v), FullQuorum %v; want it leading on v2 and v3 alone", want, ok, h.FullQuorum(s))
	}
	if l.full.Load() {
		t.Errorf("the lease still follows the shared quorum deadline after v1's vote was withdrawn")
	}
	if got := l.until(); got > want {
		t.Errorf("the lease lasts until %v, %v after the holder's deadline %v", got, got.Sub(want), want)
	}

	// The loop stalls: nothing runs but the clock and the application.
	time.Sleep(want.Sub(d.n.now()) + 5*time.Millisecond)
	now = d.n.now()
	if _, ok := h.Leads(s, now); ok {
		t.Fatal("setup: the holder still leads past its deadline")
	}
	if err := l.Context().Err(); err == nil {
		t.Errorf("the lease's context is live %v after the holder's deadline (it lasts until %v more)", now.Sub(want), l.until().Sub(now))
	}
}

// A lease that lives on the shared quorum deadline after its own, lazily
// refreshed one passed is not ended when its flag is cleared while the
// holder still leads it. The node leads s on every voter (own deadline
// about 950 ms, set when it was gained and not near at the refreshes
// since). At 500 ms keep-alives leave; v3 has restarted and answers with a
// new session. The loop stalls until after 950 ms: the lease lives on the
// quorum deadline (about 1.45 s). When it wakes, the replies are applied
// first: the lease is no longer backed by every voter, the holder still
// leads on v1 and v2, and the lease must go on.
func TestClearedFlagKeepsALeaseTheHolderStillLeads(t *testing.T) {
	const s = 1
	d := newDrivenNode(t)
	h := d.st.holder
	l := d.lead(s)
	d.n.refreshDeadlines(d.st)
	if !l.full.Load() {
		t.Fatal("setup: the lease is not flagged as backed by every voter")
	}
	ka := d.n.cfg.KeepAliveInterval
	time.Sleep(ka)
	d.n.send(d.st)
	d.deliver()
	d.n.refreshDeadlines(d.st)

	time.Sleep(ka)
	old := d.voters["v3"]
	nv, err := lease.NewVoter(lease.VoterConfig{ID: "v3", LeaseDuration: d.n.cfg.LeaseDuration, Boot: 2, Restarted: true},
		map[uint32]lease.Record{s: old.Record(s)}, d.n.now())
	if err != nil {
		t.Fatal(err)
	}
	d.voters["v3"] = nv
	d.n.send(d.st)
	var reps []lease.Reply
	for _, env := range d.out {
		rep, _ := d.voters[env.To].Handle(env.Req, d.n.now())
		reps = append(reps, rep)
	}
	d.out = nil
	if len(reps) != 3 {
		t.Fatalf("setup: %d keep-alives at %v, want 3", len(reps), time.Duration(d.n.now()))
	}

	own := lease.Time(l.deadline.Load())
	time.Sleep(own.Sub(d.n.now()) + 10*time.Millisecond) // the stall
	if err := l.Context().Err(); err != nil {
		t.Fatalf("setup: the lease ended on its own deadline although the quorum deadline was %v ahead", lease.Time(d.n.quorumUntil.Load()).Sub(d.n.now()))
	}
	for _, rep := range reps {
		d.n.step(d.st, rep)
	}
	d.n.refreshDeadlines(d.st)

	now := d.n.now()
	dl, ok := h.Deadline(s, now)
	if !ok {
		t.Fatal("setup: the holder stopped leading")
	}
	if err := l.Context().Err(); err != nil {
		t.Errorf("the lease ended (%v) when v3's new session cleared its flag, although the holder leads until %v from now", endedFor(t, l), dl.Sub(now))
	}
}
