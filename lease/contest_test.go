package lease_test

// Contested leases, driven by hand: holders and voters on one clock with no
// drift, every message delivered or held back explicitly. Each test runs
// the same schedule with the rule intact and with a planted bug
// (lease.HolderMutations, lease.VoterMutations) that reproduces an earlier
// version of the rule, and expects two leaders at once (or a stuck node)
// only with the bug.

import (
	"maps"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

const cLD = time.Second

func ms(n int) lease.Time { return lease.Time(time.Duration(n) * time.Millisecond) }

type cworld struct {
	t      *testing.T
	voters map[string]*lease.Voter
	disk   map[string]map[uint32]lease.Record
	boot   map[string]uint32
	vmu    lease.VoterMutations
}

func newCWorld(t *testing.T, vmu lease.VoterMutations, ids ...string) *cworld {
	w := &cworld{t: t, voters: map[string]*lease.Voter{}, disk: map[string]map[uint32]lease.Record{}, boot: map[string]uint32{}, vmu: vmu}
	for _, id := range ids {
		w.boot[id] = 1
		w.disk[id] = map[uint32]lease.Record{}
		v, err := lease.NewVoter(lease.VoterConfig{ID: id, LeaseDuration: cLD, Boot: 1, Mutations: vmu}, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.voters[id] = v
	}
	return w
}

// handle delivers env at now and persists what the voter asks for before
// returning the reply.
func (w *cworld) handle(env lease.Envelope, now lease.Time) lease.Reply {
	rep, dirty := w.voters[env.To].Handle(env.Req, now)
	for _, r := range dirty {
		w.disk[env.To][r.Shard] = r.Record
	}
	return rep
}

// roundTrip sends what h has now and delivers every reply 1 ms later,
// except to and from the voters in cut.
func (w *cworld) roundTrip(h *lease.Holder, now lease.Time, cut ...string) {
	for _, env := range h.Tick(now) {
		if !contains(cut, env.To) {
			h.Step(w.handle(env, now), now+ms(1))
		}
	}
}

func (w *cworld) restart(id string, now lease.Time) {
	w.boot[id]++
	v, err := lease.NewVoter(lease.VoterConfig{ID: id, LeaseDuration: cLD, Boot: w.boot[id], Restarted: true, Mutations: w.vmu}, maps.Clone(w.disk[id]), now)
	if err != nil {
		w.t.Fatal(err)
	}
	w.voters[id] = v
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// cNonce numbers the processes of a test, so that twins are ordered the
// same way on every run.
var cNonce atomic.Uint64

func cHolder(t *testing.T, id string, inc uint64, mu lease.HolderMutations) *lease.Holder {
	h, err := lease.NewHolder(lease.HolderConfig{ID: id, Inc: inc, Voters: []string{"v1", "v2", "v3"}, LeaseDuration: cLD,
		Rand: rand.New(rand.NewPCG(1, 2)), Nonce: cNonce.Add(1), Mutations: mu})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// overlap reports the first instant in [from, to) at which a and one of
// rivals both lead shard 0, after letting each rival run its protocol with
// every voter but those in cut at each millisecond; a hears nothing.
func (w *cworld) overlap(a *lease.Holder, rivals []*lease.Holder, from, to int, cut ...string) (int, bool) {
	for t := from; t < to; t++ {
		a.Tick(ms(t))
		_, aLeads := a.Leads(0, ms(t))
		for _, b := range rivals {
			w.roundTrip(b, ms(t), cut...)
			if _, bLeads := b.Leads(0, ms(t)); aLeads && bLeads {
				return t, true
			}
		}
	}
	return 0, false
}

// A second process with a's NodeID (a replacement started beside it)
// reads a's records in its first Held lists. It must neither count nor
// release them: the voters refuse a Release naming a generation that is not
// the sender's while that generation is live, and the twin ignores records
// of other generations. Before, it released them and a rival was granted
// at once while a still led by its own clock.
func TestTwinCannotEndTheLiveProcessLease(t *testing.T) {
	for _, tt := range []struct {
		name        string
		twinWants   bool
		hmu         lease.HolderMutations
		vmu         lease.VoterMutations
		wantOverlap bool
	}{
		{name: "twin wants nothing", wantOverlap: false},
		{name: "twin wants the shard", twinWants: true, wantOverlap: false},
		{name: "voters ignore the gen and the twin adopts other gens (the old rule) IsCaught",
			hmu: lease.HolderMutations{AdoptOtherGens: true}, vmu: lease.VoterMutations{ReleaseIgnoresGen: true}, wantOverlap: true},
		{name: "twin that wants the shard under the old rule IsCaught", twinWants: true,
			hmu: lease.HolderMutations{AdoptOtherGens: true}, vmu: lease.VoterMutations{ReleaseIgnoresGen: true}, wantOverlap: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newCWorld(t, tt.vmu, "v1", "v2", "v3")
			a := cHolder(t, "a", 1, tt.hmu)
			a.SetDesired(0, true)
			w.roundTrip(a, 0)
			if _, ok := a.Leads(0, ms(2)); !ok {
				t.Fatal("a does not lead after a round with every voter")
			}
			// From here a hears nothing: its view of its lease is its own
			// clock alone, as for a process whose replies are delayed.
			twin := cHolder(t, "a", 2, tt.hmu)
			twin.SetDesired(0, tt.twinWants)
			for _, at := range []int{100, 350, 600} {
				w.roundTrip(twin, ms(at))
			}
			b := cHolder(t, "b", 1, tt.hmu)
			b.SetDesired(0, true)
			at, got := w.overlap(a, []*lease.Holder{twin, b}, 610, 1000)
			if got != tt.wantOverlap {
				t.Fatalf("overlap = %v at %d ms, want %v (records: v1 %+v, v2 %+v, v3 %+v)", got, at, tt.wantOverlap,
					w.voters["v1"].Record(0), w.voters["v2"].Record(0), w.voters["v3"].Record(0))
			}
			if got {
				t.Logf("planted bug caught: a and a rival both lead shard 0 at %d ms", at)
			}
		})
	}
}

// A holder leading at epoch 1 re-grants after a voter restart; the
// re-grant at epoch 2 is accepted by v1, refused by v3 (grace) and lost at
// v2. v1's single record for the shard now says (2, a): it protects a's
// lease as (1, a) did. Giving it back while the lease lasts would leave v1
// protecting nothing while a kept counting it; so a failed re-grant keeps
// its partial grants, and any release of an epoch at or above the led one
// stops the voter counting at once. Then a is cut off, and b, granted by
// v1 and v3 once v3's grace is over, must not lead while a does.
func TestFailedRegrantKeepsTheLeaseProtected(t *testing.T) {
	for _, tt := range []struct {
		name        string
		hmu         lease.HolderMutations
		wantOverlap bool
	}{
		{name: "partial re-grant kept", wantOverlap: false},
		{name: "partial re-grant released while the voter still counts IsCaught", hmu: lease.HolderMutations{KeepVoteAfterRelease: true}, wantOverlap: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
			a := cHolder(t, "a", 1, tt.hmu)
			b := cHolder(t, "b", 1, tt.hmu)
			a.SetDesired(0, true)
			w.roundTrip(a, 0)
			w.restart("v3", ms(100))
			w.roundTrip(a, ms(250)) // v3 answers with a new gen: re-grant
			// v2 never hears a again. The re-grant reaches v1 and v3.
			w.roundTrip(a, ms(260), "v2")
			if r := w.voters["v1"].Record(0); r.Epoch != 2 || r.Holder != "a" {
				t.Fatalf("v1 did not accept the re-grant at epoch 2: %+v", r)
			}
			// The attempt times out; what it sends reaches v1 only, and v1's
			// reply is lost: from here a hears nothing.
			for _, env := range a.Tick(ms(510)) {
				if env.To == "v1" {
					w.handle(env, ms(511))
				}
			}
			for t := 520; t <= 1100; t += 10 {
				a.Tick(ms(t))
			}
			b.SetDesired(0, true)
			at, got := w.overlap(a, []*lease.Holder{b}, 1101, 1300, "v2")
			if got != tt.wantOverlap {
				t.Fatalf("overlap = %v at %d ms, want %v (v1 %+v, v3 %+v)", got, at, tt.wantOverlap, w.voters["v1"].Record(0), w.voters["v3"].Record(0))
			}
			if got {
				t.Logf("planted bug caught: a and a rival both lead shard 0 at %d ms", at)
			}
		})
	}
}

// A process restarted after the wall clock stepped back starts with a
// lower incarnation than its dead predecessor. It takes one above the
// voters' instead of being stale at every voter for good — but only while
// nothing names it; a process that has been granted something and hears
// of a newer incarnation stops.
func TestIncarnationRisesAboveAStaleOne(t *testing.T) {
	t.Run("restart after a clock step leads", func(t *testing.T) {
		w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
		old := cHolder(t, "n", 2_000_000_000, lease.HolderMutations{})
		w.roundTrip(old, 0)
		nw := cHolder(t, "n", 1_000_000_000, lease.HolderMutations{})
		nw.SetDesired(0, true)
		for at := 10; at < 200; at += 10 {
			w.roundTrip(nw, ms(at))
		}
		if nw.Superseded() {
			t.Fatal("the restarted process stopped: a dead predecessor's incarnation outranks it")
		}
		if nw.Inc() != 2_000_000_001 {
			t.Errorf("Inc() = %d, want 2000000001", nw.Inc())
		}
		// The predecessor's gen still protects nothing (it held nothing),
		// so the new process leads at once.
		if _, ok := nw.Leads(0, ms(200)); !ok {
			t.Fatal("the restarted process does not lead")
		}
	})
	t.Run("without the rise the restart is stale for good IsCaught", func(t *testing.T) {
		w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
		old := cHolder(t, "n", 2_000_000_000, lease.HolderMutations{})
		w.roundTrip(old, 0)
		nw := cHolder(t, "n", 1_000_000_000, lease.HolderMutations{KeepStaleInc: true})
		nw.SetDesired(0, true)
		for at := 10; at < 200; at += 10 {
			w.roundTrip(nw, ms(at))
		}
		if !nw.Superseded() {
			t.Fatal("KeepStaleInc should leave the restarted process superseded")
		}
	})
	t.Run("a process that led stops when a newer one appears", func(t *testing.T) {
		w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
		a := cHolder(t, "n", 5, lease.HolderMutations{})
		a.SetDesired(0, true)
		w.roundTrip(a, 0)
		if _, ok := a.Leads(0, ms(1)); !ok {
			t.Fatal("a does not lead")
		}
		w.roundTrip(cHolder(t, "n", 6, lease.HolderMutations{}), ms(10))
		w.roundTrip(a, ms(1000)) // the keep-alives of the interval
		if !a.Superseded() || a.Inc() != 5 {
			t.Fatalf("Superseded() = %v, Inc() = %d; want true, 5", a.Superseded(), a.Inc())
		}
		if _, ok := a.Leads(0, ms(1001)); ok {
			t.Fatal("a superseded process still leads")
		}
	})
}

// Every node and voter of a cluster must use one LeaseDuration: a node
// that counts on a longer lease than the voters keep its session for would
// outlive its protection. The voter ignores such a node and says why.
func TestVoterRefusesAnotherLeaseDuration(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	h, err := lease.NewHolder(lease.HolderConfig{ID: "a", Inc: 1, Voters: []string{"v1", "v2", "v3"}, LeaseDuration: 2 * cLD, Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	h.SetDesired(0, true)
	w.roundTrip(h, 0)
	if _, ok := h.Leads(0, ms(1)); ok {
		t.Fatal("a node with twice the voters' lease duration leads")
	}
	if got, want := h.Mismatch(), "lease duration 2s, voter v"; len(got) < len(want) || got[:len(want)] != want {
		t.Fatalf("Mismatch() = %q, want it to start with %q", got, want)
	}
	if r := w.voters["v1"].Record(0); r.Epoch != 0 {
		t.Fatalf("v1 granted %+v to a node it refused", r)
	}
}

// Replies to two keep-alives to one voter can arrive in either order. The
// newer shows the shard gone from the voter's Held list (it moved on); the
// older, arriving after it, still lists it. The voter's clock orders them
// (NoticesAt), so the older list must not bring back the withdrawn vote.
func TestOlderHeldListDoesNotRestoreAWithdrawnVote(t *testing.T) {
	for _, tt := range []struct {
		name      string
		mu        lease.HolderMutations
		wantLeads bool
	}{
		{name: "older list skipped", mu: lease.HolderMutations{FullHeldOnly: true}, wantLeads: false},
		{name: "older list applied IsCaught", mu: lease.HolderMutations{FullHeldOnly: true, HeldOutOfOrder: true}, wantLeads: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
			a := cHolder(t, "a", 1, tt.mu)
			a.SetDesired(0, true)
			w.roundTrip(a, 0)
			// v2 is never heard from again; v1 and v3 answer keep-alives.
			var older, newer lease.Reply
			for i, at := range []int{300, 600} {
				for _, env := range a.Tick(ms(at)) {
					switch env.To {
					case "v1":
						rep := w.handle(env, ms(at))
						if i == 0 {
							older = rep
						} else {
							newer = rep
							newer.Held = nil // the voter moved on between the two
							newer.HeldVer++
						}
					case "v3":
						a.Step(w.handle(env, ms(at)), ms(at+1))
					}
				}
			}
			a.Step(newer, ms(601))
			a.Step(older, ms(602))
			// At 1000 ms v2's last answer (sent at 0) no longer counts: a
			// leads only if v1 still does.
			_, leads := a.Leads(0, ms(1000))
			if leads != tt.wantLeads {
				t.Fatalf("a leads at 1000 ms: %v, want %v", leads, tt.wantLeads)
			}
		})
	}
}

// A transfer's target names the lowest epoch it can lead at; one absurdly
// far above the led epoch (a corrupt Prepare reply) is refused rather than
// run the shard's epochs towards the end of uint64.
func TestTransferRefusesAnEpochJumpBeyondTheBound(t *testing.T) {
	for _, tt := range []struct {
		name    string
		toEpoch uint64
		wantErr bool
	}{
		{name: "default", toEpoch: 0},
		{name: "the target's floor", toEpoch: 40},
		{name: "exactly the bound", toEpoch: 1 + lease.MaxEpochJump},
		{name: "above the bound", toEpoch: 2 + lease.MaxEpochJump, wantErr: true},
		{name: "the last epoch", toEpoch: 1<<64 - 1, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
			a := cHolder(t, "a", 1, lease.HolderMutations{})
			a.SetDesired(0, true)
			w.roundTrip(a, 0)
			err := a.TransferAt(0, "b", 1, tt.toEpoch, ms(2))
			if (err != nil) != tt.wantErr {
				t.Fatalf("TransferAt(toEpoch %d) = %v, want error %v", tt.toEpoch, err, tt.wantErr)
			}
			// A transfer sent ends the lease; a refused one leaves it be.
			if _, leads := a.Leads(0, ms(3)); leads != tt.wantErr {
				t.Fatalf("a leads after TransferAt: %v, want %v", leads, tt.wantErr)
			}
		})
	}
}

// TestRestartedVoterResetsItsSessionNews: a voter that restarted forgot
// every session, so its first reply is a whole list and the holder says
// so (a Reset notice before the list): a member it reported live before
// and no longer lists is not live there any more.
func TestRestartedVoterResetsItsSessionNews(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	a, b := cHolder(t, "a", 1, lease.HolderMutations{}), cHolder(t, "b", 1, lease.HolderMutations{})
	w.roundTrip(b, ms(0))
	w.roundTrip(a, ms(10))
	news := func() (reset bool, live []string) {
		for _, x := range a.TakeNotices() {
			if x.Voter != "v1" {
				continue
			}
			switch {
			case x.Reset:
				reset, live = true, nil
			case !x.Expired:
				live = append(live, x.Node)
			}
		}
		return reset, live
	}
	if reset, live := news(); !reset || len(live) != 1 || live[0] != "b" {
		t.Fatalf("a's first news from v1: reset %v, live %v; want a whole list naming b", reset, live)
	}
	w.roundTrip(a, ms(200))
	if reset, _ := news(); reset {
		t.Fatal("a later reply from v1 reset its news")
	}
	// b falls silent; v1 restarts and forgets it.
	w.restart("v1", ms(300))
	w.roundTrip(a, ms(400))
	if reset, live := news(); !reset || len(live) != 0 {
		t.Fatalf("a's first news from v1 after its restart: reset %v, live %v; want a whole, empty list", reset, live)
	}
}

// TestUndesiredLeadKeepsItsPartialRegrant: a failed re-grant while leading
// keeps its partial grant (v1 records epoch 2), and v1 still protects the
// lease at epoch 1. The node's plan then moves the shard away (desired
// false, a handoff about to start): v1's Held list must not make the
// holder release the epoch-2 record, which would withdraw v1's vote and
// end a lease that v1 and v2 still protect.
func TestUndesiredLeadKeepsItsPartialRegrant(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	a, err := lease.NewHolder(lease.HolderConfig{ID: "a", Inc: 1, Voters: []string{"v1", "v2", "v3"}, LeaseDuration: cLD,
		RequestTimeout: 100 * time.Millisecond, BackoffMin: time.Minute, BackoffMax: time.Minute,
		Rand: rand.New(rand.NewPCG(1, 2)), Nonce: cNonce.Add(1)})
	if err != nil {
		t.Fatal(err)
	}
	a.SetDesired(0, true)
	w.roundTrip(a, 0)
	w.restart("v3", ms(100))
	w.roundTrip(a, ms(250)) // v3 answers with a new gen: re-grant
	// The re-grant reaches v1 and v3 (in its grace period, it refuses);
	// v2's copy is lost.
	w.roundTrip(a, ms(260), "v2")
	if r := w.voters["v1"].Record(0); r.Epoch != 2 || r.Holder != "a" {
		t.Fatalf("v1 did not accept the re-grant at epoch 2: %+v", r)
	}
	for at := 270; at <= 400; at += 10 {
		a.Tick(ms(at)) // the attempt times out; its partial grant is kept
	}
	if _, ok := a.Leads(0, ms(400)); !ok {
		t.Fatal("setup: the lease ended with the failed re-grant")
	}
	a.SetDesired(0, false)
	for at := 410; at <= 600; at += 10 {
		w.roundTrip(a, ms(at), "v3") // keep-alives; v1's Held list names epoch 2
	}
	if _, ok := a.Leads(0, ms(601)); !ok {
		t.Fatalf("the lease ended though v1 (epoch 2 record of a's session) and v2 (epoch 1) protect it; v1 %+v", w.voters["v1"].Record(0))
	}
	if r := w.voters["v1"].Record(0); r.Released {
		t.Fatalf("a released its epoch-2 record at v1 while leading: %+v", r)
	}
}
