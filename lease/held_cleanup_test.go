package lease_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// Records a node does not use, with Held lists as changes. A change list
// names a record once, when it changes; what the node decides then (count
// it, keep it, release it) is decided for good, while with whole lists
// every keep-alive decided again with the node's current wants. Each test
// runs one schedule twice: with whole lists (FullHeldOnly, what nodes did
// before change lists) and with change lists, and expects the same
// outcome from both.

// heldModes are the two ways a holder can ask for Held lists.
var heldModes = []struct {
	name string
	mu   lease.HolderMutations
}{
	{"whole lists", lease.HolderMutations{FullHeldOnly: true}},
	{"change lists", lease.HolderMutations{}},
}

// slowHolder is a holder on the voters ids whose failed acquisitions wait
// backoff before the next try.
func slowHolder(t *testing.T, id string, ids []string, backoff time.Duration, mu lease.HolderMutations) *lease.Holder {
	t.Helper()
	h, err := lease.NewHolder(lease.HolderConfig{ID: id, Inc: 1, Voters: ids, LeaseDuration: cLD,
		BackoffMin: backoff, BackoffMax: backoff,
		Rand: rand.New(rand.NewPCG(1, 2)), Nonce: cNonce.Add(1), Mutations: mu})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// tickDropping sends what h has at now and delivers every request; the
// replies of the voters in drop are lost, the others arrive 1 ms later.
func (w *cworld) tickDropping(h *lease.Holder, now lease.Time, drop ...string) {
	for _, env := range h.Tick(now) {
		rep := w.handle(env, now)
		if !contains(drop, env.To) {
			h.Step(rep, now+ms(1))
		}
	}
}

// A node that lost a contest for a shard and no longer wants it keeps
// nothing of it. Node a, whose view of the cluster says shard 0 is unled,
// acquires it while b leads it on v2 and v3 (v1 never heard b's grant).
// v1 accepts both of a's attempts (epochs 1 and 2), whose replies are
// lost; v2 and v3 refuse, and a backs off. a's next keep-alive reply from
// v1 lists (0, 2, a): a still wants the shard and counts it as a vote.
// Then a's view catches up — b leads — and a stops wanting shard 0.
//
// With whole lists, a's next keep-alive lists (0, 2, a) again and a
// releases it. With change lists the record does not change again, so it
// is never listed again: a keeps it (until the list it asks for every 64–96
// keep-alive intervals), and v1 refuses every other node shard 0 while a
// lives. b's lease rests on v2 and v3 alone; when v3 becomes unreachable
// b's lease runs out and b cannot win v1 and v2 back: the shard stays
// unled until a's backstop list, 16–24 LD later, where with whole lists
// b leads again within a backoff.
//
// §2.6: "A node releases every record naming its current gen that it does
// not lead, acquire or want, retrying until acknowledged."
func TestUnwantedRecordAdoptedFromAChangeListIsReleased(t *testing.T) {
	for _, mode := range heldModes {
		t.Run(mode.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
			ids := []string{"v1", "v2", "v3"}
			a := slowHolder(t, "a", ids, 5*time.Second, mode.mu)
			b := slowHolder(t, "b", ids, 100*time.Millisecond, mode.mu)
			w.roundTrip(a, 0) // a keeps alive: its next lists are changes
			b.SetDesired(0, true)
			w.roundTrip(b, ms(1), "v1")
			if e, ok := b.Leads(0, ms(3)); !ok || e != 1 {
				t.Fatalf("setup: b does not lead shard 0 at epoch 1 (%d, %v)", e, ok)
			}
			a.SetDesired(0, true)
			w.tickDropping(a, ms(10), "v1") // epoch 1: v1 accepts, v2 and v3 refuse (epoch)
			w.tickDropping(a, ms(12), "v1") // epoch 2: v1 accepts, v2 and v3 refuse (held by b)
			if r := w.voters["v1"].Record(0); r.Holder != "a" || r.Epoch != 2 {
				t.Fatalf("setup: v1 records %+v, want epoch 2 for a", r)
			}
			w.roundTrip(a, ms(265)) // the keep-alive whose list shows (0, 2, a)
			if _, ok := a.Leads(0, ms(267)); ok {
				t.Fatal("setup: a leads shard 0 on v1's record alone")
			}
			a.SetDesired(0, false) // a's view: b leads shard 0

			var unledSince lease.Time = -1
			for at := 270; at <= 6000; at += 10 {
				now := ms(at)
				var cut []string
				if at >= 1500 {
					cut = []string{"v3"} // v3 becomes unreachable
				}
				w.roundTrip(a, now, cut...)
				w.roundTrip(b, now, cut...)
				_, ok := b.Leads(0, now+ms(1))
				switch {
				case ok:
					unledSince = -1
				case unledSince < 0:
					unledSince = now
				}
				if unledSince >= 0 && now-unledSince > lease.Time(cLD) {
					t.Fatalf("shard 0 unled since %v (now %v): v1 records %+v for a, who does not want it",
						time.Duration(unledSince), time.Duration(now), w.voters["v1"].Record(0))
				}
			}
			if r := w.voters["v1"].Record(0); r.Holder == "a" && !r.Released {
				t.Fatalf("v1 still records %+v for a, which has not wanted shard 0 for 5.7 s", r)
			}
		})
	}
}

// A transfer leaves nothing behind at a voter that missed a re-grant.
// Five voters. n acquires shard 0 at epoch 1 from all five; v5's reply is
// lost, so n leads on v1..v4 without knowing v5 records (0, 1, n). v1
// restarts and v5 becomes unreachable; n re-grants at epoch 2, which v2..v4
// accept (v1 is in its grace period), and leads at 2. v5 comes back: its
// list shows (0, 1, n), an older epoch of the lease, which protects it and
// is kept. Before the next top-up would lift v5 to epoch 2, n hands the
// shard to d: v2..v4 accept. v5 refuses (its record is at epoch 1), and
// the release of epoch 2 that n sends it is refused too.
//
// With whole lists, n's next keep-alive lists (0, 1, n) again, n no
// longer leads shard 0, and releases it. With change lists the record
// never changes again: it is not among the voters that missed the re-grant
// (n learned of it after the re-grant), so nothing releases it until the
// list n asks for every 64 to 96 keep-alive intervals, and v5 refuses d's
// top-up meanwhile: d's lease rests on three of five voters.
func TestTransferReleasesAnOlderEpochLearnedWhileLeading(t *testing.T) {
	ids := []string{"v1", "v2", "v3", "v4", "v5"}
	for _, mode := range heldModes {
		t.Run(mode.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, ids...)
			n := slowHolder(t, "n", ids, 100*time.Millisecond, mode.mu)
			d := slowHolder(t, "d", ids, 100*time.Millisecond, mode.mu)
			w.roundTrip(d, 0)
			n.SetDesired(0, true)
			w.tickDropping(n, ms(1), "v5")
			if e, ok := n.Leads(0, ms(3)); !ok || e != 1 {
				t.Fatalf("setup: n does not lead shard 0 at epoch 1 (%d, %v)", e, ok)
			}
			w.restart("v1", ms(100))
			for at := 250; at < 270; at++ { // v1's new gen: n re-grants, v5 unreachable
				w.roundTrip(n, ms(at), "v5")
				w.roundTrip(d, ms(at), "v5")
			}
			if e, ok := n.Leads(0, ms(270)); !ok || e != 2 {
				t.Fatalf("setup: n does not lead shard 0 at epoch 2 (%d, %v)", e, ok)
			}
			w.roundTrip(n, ms(270)) // v5 answers: its whole list shows (0, 1, n)
			if r := w.voters["v5"].Record(0); r.Holder != "n" || r.Epoch != 1 {
				t.Fatalf("setup: v5 records %+v, want epoch 1 for n", r)
			}
			n.SetDesired(0, false)
			if err := n.TransferAt(0, "d", 1, n.MinTransferEpoch(0), ms(275)); err != nil {
				t.Fatal(err)
			}
			d.Expect(0, ms(1275))
			w.roundTrip(n, ms(275))
			var gens map[string]uint64
			var epoch uint64
			for _, c := range n.TakeChanges() {
				if c.Kind == lease.Transferred {
					gens, epoch = c.Gens, c.Epoch
				}
			}
			if gens == nil {
				t.Fatal("setup: the transfer was not accepted by a majority")
			}
			d.AcceptTransfer(0, epoch, gens, ms(277))
			for at := 280; at <= 3000; at += 10 {
				w.roundTrip(n, ms(at))
				w.roundTrip(d, ms(at))
			}
			if _, ok := d.Leads(0, ms(3001)); !ok {
				t.Fatal("d does not lead shard 0")
			}
			if r := w.voters["v5"].Record(0); r.Holder == "n" && !r.Released {
				t.Fatalf("2.7 s after the transfer v5 still records %+v for n, which leads nothing, and refuses d's top-ups", r)
			}
		})
	}
}

// A transfer's target whose forward was lost leads as soon as a majority
// of the voters that list the transfer answer it. n hands shard 0 to d;
// every voter accepts, and the forward is lost, so d, expecting the shard
// until 5 s, learns of the transfer only from its Held lists. v1's reply
// at 250 ms lists (0, 2, d): one vote. Then v1's replies are lost until
// 1.3 s, v2's until 1.2 s, and v3's for good (d's requests arrive, so its
// sessions stay live). v2's reply at 1.25 s lists (0, 2, d): a second
// vote, but v1's last answered keep-alive left at 250 ms and no longer
// counts, so d does not lead yet. At 1.5 s v1 and v2 both answer: a
// majority of fresh voters back epoch 2.
//
// With whole lists both replies list (0, 2, d) again and d leads at once.
// With change lists nothing changed at either voter, the replies list
// nothing, and only a listed or answered shard is promoted: d leads only
// when its hold-off ends and it acquires the shard itself, 3.5 s later.
// Nobody leads the shard meanwhile.
func TestTargetLeadsWhenItsVotersAnswerAgain(t *testing.T) {
	ids := []string{"v1", "v2", "v3"}
	for _, mode := range heldModes {
		t.Run(mode.name, func(t *testing.T) {
			w := newCWorld(t, lease.VoterMutations{}, ids...)
			n := slowHolder(t, "n", ids, 100*time.Millisecond, mode.mu)
			d := slowHolder(t, "d", ids, 100*time.Millisecond, mode.mu)
			w.roundTrip(d, 0)
			n.SetDesired(0, true)
			w.roundTrip(n, ms(1))
			n.SetDesired(0, false)
			if err := n.Transfer(0, "d", 1, ms(5)); err != nil {
				t.Fatal(err)
			}
			d.Expect(0, ms(5000))
			w.roundTrip(n, ms(5)) // every voter accepts; the forward is lost
			for at := 10; at <= 1600; at += 10 {
				var drop []string
				switch {
				case at < 300:
					drop = []string{"v2", "v3"}
				case at < 1200:
					drop = []string{"v1", "v2", "v3"}
				case at < 1300:
					drop = []string{"v1", "v3"}
				default:
					drop = []string{"v3"}
				}
				w.tickDropping(d, ms(at), drop...)
				w.roundTrip(n, ms(at))
				if at == 1260 {
					if _, ok := d.Leads(0, ms(at+1)); ok {
						t.Fatal("setup: d leads at 1.26 s with v1's keep-alive of 250 ms")
					}
				}
			}
			if _, ok := d.Leads(0, ms(1601)); !ok {
				t.Fatalf("d does not lead shard 0 at 1.6 s though v1 and v2 record (0, 2, d) and answered its keep-alives of 1.5 s (v1 %+v, v2 %+v)",
					w.voters["v1"].Record(0), w.voters["v2"].Record(0))
			}
		})
	}
}

// A change list answering a request that left before a forward arrived
// cannot withdraw the forwarded vote. d leads shard 0 and hands it to n;
// a keep-alive of d to v1, sent just before the transfer, is handled by v1
// after it and lists (0, 2, n): the record moved on from d. Its reply is
// delayed. n hands the shard back at epoch 3, and the forward names v1
// and v2 only. Then the delayed reply arrives, newer than every list d
// applied from v1: it shows shard 0 naming n, but its request left before
// the forward confirmed v1's vote, so the record may (and does) predate
// the vote. d keeps counting v1 and asks for a whole list, which lists
// (0, 3, d).
func TestChangeListAfterForwardKeepsTheVote(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	d := cHolder(t, "d", 1, lease.HolderMutations{})
	n := cHolder(t, "n", 1, lease.HolderMutations{})
	w.roundTrip(n, 0)
	d.SetDesired(0, true)
	w.roundTrip(d, ms(1))
	if e, ok := d.Leads(0, ms(3)); !ok || e != 1 {
		t.Fatalf("setup: d does not lead shard 0 at epoch 1 (%d, %v)", e, ok)
	}
	var early lease.Envelope // d's keep-alive to v1, delivered after the transfer
	for _, env := range d.Tick(ms(260)) {
		if env.To == "v1" {
			early = env
			continue
		}
		d.Step(w.handle(env, ms(260)), ms(261))
	}
	if early.To == "" || early.Req.HeldSince == 0 {
		t.Fatalf("setup: no keep-alive to v1 asking for changes: %+v", early)
	}
	d.SetDesired(0, false)
	if err := d.Transfer(0, "n", 1, ms(262)); err != nil {
		t.Fatal(err)
	}
	w.roundTrip(d, ms(262))
	fwd := transferred(t, d)
	late := w.handle(early, ms(264))
	if got := heldShards(late); !late.HeldDelta || got[0].Holder != "n" {
		t.Fatalf("setup: the delayed reply lists %+v (delta %v), want (0, 2, n)", late.Held, late.HeldDelta)
	}
	n.SetDesired(0, true)
	n.AcceptTransfer(0, fwd.Epoch, fwd.Gens, ms(265))
	if e, ok := n.Leads(0, ms(265)); !ok || e != 2 {
		t.Fatalf("setup: n does not lead shard 0 at epoch 2 (%d, %v)", e, ok)
	}
	n.SetDesired(0, false)
	d.Expect(0, ms(2000))
	if err := n.Transfer(0, "d", 1, ms(270)); err != nil {
		t.Fatal(err)
	}
	w.roundTrip(n, ms(270))
	back := transferred(t, n)
	d.AcceptTransfer(0, back.Epoch, map[string]uint64{"v1": back.Gens["v1"], "v2": back.Gens["v2"]}, ms(272))
	if e, ok := d.Leads(0, ms(272)); !ok || e != 3 {
		t.Fatalf("setup: d does not lead shard 0 at epoch 3 (%d, %v)", e, ok)
	}
	d.Step(late, ms(273))
	if _, ok := d.Leads(0, ms(274)); !ok {
		t.Fatal("d stopped counting v1 for a change list older than the forward")
	}
	for _, env := range d.Tick(ms(520)) {
		if env.To == "v1" {
			if env.Req.HeldSince != 0 {
				t.Fatalf("d asks v1 for changes since %#x, want a whole list", env.Req.HeldSince)
			}
			d.Step(w.handle(env, ms(520)), ms(521))
		}
	}
	if e, ok := d.Leads(0, ms(521)); !ok || e != 3 {
		t.Fatalf("d does not lead shard 0 at epoch 3 after v1's whole list (%d, %v)", e, ok)
	}
}

// transferred returns the Transferred change h reported.
func transferred(t *testing.T, h *lease.Holder) lease.Change {
	t.Helper()
	for _, c := range h.TakeChanges() {
		if c.Kind == lease.Transferred {
			return c
		}
	}
	t.Fatalf("setup: %s's transfer was not accepted by a majority", h.ID())
	return lease.Change{}
}

// A change list applied to the list it follows is the voter's whole list:
// whatever grants, releases and transfers happened between, by the node or
// by others, and however far the voter trimmed its log of changes (a node
// that fell behind the trim gets a whole list). Three nodes run random
// operations on a few shards at one voter; node a keeps its view from
// the lists it gets, asking at random versions it applied before, and
// after every reply its view must equal the voter's whole list.
func TestChangeListsAddUpToTheWholeList(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	hv := newHeldVoter(t, 9, nil)
	nodes := []string{"a", "b", "c"}
	const shards = 6
	type view struct {
		ver  uint64
		recs map[uint32]lease.Record
	}
	whole := func(rep lease.Reply) map[uint32]lease.Record {
		m := map[uint32]lease.Record{}
		for _, x := range rep.Held {
			m[x.Shard] = x.Record
		}
		return m
	}
	first := hv.call("a", 0, 0)
	views := []view{{first.HeldVer, whole(first)}}
	oldest := views[0]
	deltas, wholes := 0, 0
	epoch := uint64(0)
	for i := 1; i <= 60000; i++ {
		from := nodes[r.IntN(len(nodes))]
		s := uint32(r.IntN(shards))
		rec := hv.v.Record(s)
		var op lease.Op
		switch r.IntN(3) {
		case 0:
			epoch++
			op = grant(s, epoch)
		case 1:
			op = release(s, rec.Epoch)
		default:
			epoch++
			op = lease.Op{Kind: lease.OpTransfer, Shard: s, Epoch: rec.Epoch, To: nodes[r.IntN(len(nodes))], ToInc: 1, ToEpoch: epoch}
		}
		if op.Kind != lease.OpGrant && rec.Holder != "" && r.IntN(4) != 0 {
			from = rec.Holder // mostly the holder's own release or transfer
		}
		if from != "a" {
			hv.call(from, 0, i, op)
			continue
		}
		base := views[r.IntN(len(views))]
		switch r.IntN(8) {
		case 0, 1:
			base = views[len(views)-1]
		case 2:
			base = oldest // far behind: the voter may have trimmed past it
		}
		rep := hv.call("a", base.ver, i, op)
		got := map[uint32]lease.Record{}
		if rep.HeldDelta {
			deltas++
			if rep.HeldSince != base.ver {
				t.Fatalf("op %d: changes since %#x, asked since %#x", i, rep.HeldSince, base.ver)
			}
			for sh, x := range base.recs {
				got[sh] = x
			}
			for _, x := range rep.Held {
				if x.Holder == "a" && !x.Released {
					got[x.Shard] = x.Record
				} else {
					delete(got, x.Shard)
				}
			}
		} else {
			wholes++
			got = whole(rep)
		}
		want := whole(hv.call("a", 0, i))
		if len(got) != len(want) {
			t.Fatalf("op %d: view %+v from changes since %#x, voter's whole list %+v", i, got, base.ver, want)
		}
		for sh, x := range want {
			if got[sh] != x {
				t.Fatalf("op %d: view %+v from changes since %#x, voter's whole list %+v", i, got, base.ver, want)
			}
		}
		views = append(views, view{rep.HeldVer, got})
		if len(views) > 64 {
			views = views[len(views)-64:]
		}
		if i%25000 == 0 {
			oldest = views[0]
		}
	}
	if deltas == 0 || wholes == 0 {
		t.Fatalf("%d change lists and %d whole lists: both kinds must be checked", deltas, wholes)
	}
	t.Logf("%d change lists, %d whole lists, %d record changes", deltas, wholes, hv.call("a", 0, 60001).HeldVer-first.HeldVer)
}
