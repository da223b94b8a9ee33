package lease_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// Holders driven against three real voters in process. One clock serves
// every party, and the tests move it by hand: requests reach the voters
// the moment they are sent, and replies come back after a chosen round
// trip, so that the send time of a keep-alive and the arrival of its reply
// differ.

const (
	drift    = 0.01
	margin   = 300 * time.Millisecond
	interval = 2 * time.Second
)

// usable is the lease rule's bound LD·(1−ρ)/(1+ρ) − SafetyMargin, computed
// from the holder configuration below.
var usable = func() time.Duration {
	d, rho := float64(ld), drift
	return time.Duration(d*(1-rho)/(1+rho)) - margin
}()

var voterIDs = []string{"v1", "v2", "v3"}

func holderConfig(id string, inc uint64) lease.HolderConfig {
	return lease.HolderConfig{
		ID: id, Inc: inc, Voters: voterIDs,
		LeaseDuration: ld, MaxClockDrift: drift, SafetyMargin: margin,
		KeepAliveInterval: interval,
		Rand:              rand.New(rand.NewPCG(1, 2)),
	}
}

type world struct {
	t      *testing.T
	now    lease.Time
	voters map[string]*lease.Voter
	// lost names the voters whose requests are lost.
	lost map[string]bool
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, voters: map[string]*lease.Voter{}, lost: map[string]bool{}}
	for _, id := range voterIDs {
		v, err := lease.NewVoter(lease.VoterConfig{ID: id, LeaseDuration: ld, Boot: 1}, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.voters[id] = v
	}
	return w
}

func (w *world) newHolder(id string, inc uint64) *lease.Holder {
	return w.newHolderWith(holderConfig(id, inc))
}

func (w *world) newHolderWith(cfg lease.HolderConfig) *lease.Holder {
	h, err := lease.NewHolder(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	return h
}

func (w *world) at(d time.Duration) { w.now = lease.Time(d) }

// exchange sends what h has to send now, lets every voter that is not
// lost answer at once, advances the clock by rtt and delivers the replies.
// It returns them by voter.
func (w *world) exchange(h *lease.Holder, rtt time.Duration) map[string]lease.Reply {
	w.t.Helper()
	var reps []lease.Reply
	for _, env := range h.Tick(w.now) {
		if w.lost[env.To] {
			continue
		}
		rep, _ := w.voters[env.To].Handle(env.Req, w.now)
		w.t.Logf("%v: %s → %s %+v: %+v", time.Duration(w.now), env.Req.From, env.To, env.Req.Ops, rep.Results)
		reps = append(reps, rep)
	}
	w.now = w.now.Add(rtt)
	out := map[string]lease.Reply{}
	for _, rep := range reps {
		h.Step(rep, w.now)
		out[rep.Voter] = rep
	}
	return out
}

// acquire makes h lead shard s, at time 0 plus whatever the clock says,
// with 1 ms round trips.
func (w *world) acquire(h *lease.Holder, s uint32) uint64 {
	w.t.Helper()
	h.SetDesired(s, true)
	w.exchange(h, time.Millisecond)
	e, ok := h.Leads(s, w.now)
	if !ok {
		w.t.Fatalf("%s does not lead shard %d after a round with every voter", h.ID(), s)
	}
	return e
}

func TestHolderAcquiresWithThreeVoters(t *testing.T) {
	w := newWorld(t)
	h := w.newHolder("n1", 1)
	h.SetDesired(7, true)
	if _, ok := h.Leads(7, w.now); ok {
		t.Fatal("leads before any voter answered")
	}
	reps := w.exchange(h, time.Millisecond)
	if len(reps) != 3 {
		t.Fatalf("%d voters answered, want 3", len(reps))
	}
	if e, ok := h.Leads(7, w.now); !ok || e != 1 {
		t.Fatalf("Leads(7) = %d, %v; want epoch 1, true", e, ok)
	}
	if got, want := h.Led(w.now), []uint32{7}; !slices.Equal(got, want) {
		t.Fatalf("Led = %v, want %v", got, want)
	}
	if got, want := h.TakeChanges(), []lease.Change{{Kind: lease.Gained, Shard: 7, Epoch: 1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("changes %+v, want %+v", got, want)
	}
	for id, v := range w.voters {
		if got, want := v.Record(7), rec(1, "n1", reps[id].Gen); got != want {
			t.Errorf("%s: Record(7) = %+v, want %+v", id, got, want)
		}
	}
}

// TestHolderLeaseEndsAtDeadline checks the lease rule to the nanosecond:
// the lease lasts the usable lease past the SEND time of the keep-alive
// that a majority last answered, and replies from a minority do not
// extend it.
func TestHolderLeaseEndsAtDeadline(t *testing.T) {
	w := newWorld(t)
	h := w.newHolder("n1", 1)
	w.acquire(h, 7)
	h.TakeChanges()
	if d, ok := h.Deadline(7, w.now); !ok || d != lease.Time(usable) {
		t.Fatalf("after acquiring at 0: Deadline = %v, %v; want %v", time.Duration(d), ok, usable)
	}

	// v1 and v2 answer the keep-alive sent at 2 s, 400 ms later; v3's is
	// lost. The lease now runs from 2 s, not from 2.4 s.
	w.at(interval)
	w.lost["v3"] = true
	if reps := w.exchange(h, 400*time.Millisecond); len(reps) != 2 {
		t.Fatalf("%d replies to the keep-alive at %v, want 2", len(reps), interval)
	}
	deadline := lease.Time(interval + usable)
	if d, ok := h.Deadline(7, w.now); !ok || d != deadline {
		t.Fatalf("Deadline = %v, %v; want %v (send time + usable lease)", time.Duration(d), ok, time.Duration(deadline))
	}

	// A later keep-alive answered by v1 alone does not move it.
	w.at(2 * interval)
	w.lost["v2"] = true
	if reps := w.exchange(h, 400*time.Millisecond); len(reps) != 1 {
		t.Fatalf("%d replies at %v, want 1", len(reps), 2*interval)
	}
	if d, ok := h.Deadline(7, w.now); !ok || d != deadline {
		t.Fatalf("after a minority's reply: Deadline = %v, %v; want %v", time.Duration(d), ok, time.Duration(deadline))
	}

	// Then nobody answers.
	w.lost["v1"] = true
	for _, at := range []time.Duration{3 * interval, 4 * interval} {
		w.at(at)
		w.exchange(h, 0)
	}
	if got := h.TakeChanges(); len(got) != 0 {
		t.Fatalf("changes before the deadline: %+v", got)
	}

	before := deadline - 1
	if e, ok := h.Leads(7, before); !ok || e != 1 {
		t.Fatalf("Leads one nanosecond before the deadline = %d, %v; want 1, true", e, ok)
	}
	if d, ok := h.Deadline(7, before); !ok || d != deadline {
		t.Fatalf("Deadline one nanosecond before it = %v, %v", time.Duration(d), ok)
	}
	h.Tick(before)
	if got := h.TakeChanges(); len(got) != 0 {
		t.Fatalf("changes one nanosecond before the deadline: %+v", got)
	}
	if e, ok := h.Leads(7, deadline); ok {
		t.Fatalf("Leads at the deadline = %d, true; want false", e)
	}
	if _, ok := h.Deadline(7, deadline); ok {
		t.Fatal("Deadline reports a lease at the deadline")
	}
	h.Tick(deadline)
	want := []lease.Change{{Kind: lease.Lost, Shard: 7, Epoch: 1, Reason: lease.ReasonLeaseExpired}}
	if got := h.TakeChanges(); !reflect.DeepEqual(got, want) {
		t.Fatalf("changes at the deadline %+v, want %+v", got, want)
	}

	// The voters still protect the lease a while: the holder stops first.
	for id, v := range w.voters {
		if v.Record(7).Holder != "n1" {
			t.Fatalf("%s: Record(7) = %+v", id, v.Record(7))
		}
	}
	rival := w.newHolder("n2", 1)
	w.lost = map[string]bool{}
	rival.SetDesired(7, true)
	w.exchange(rival, time.Millisecond)
	if _, ok := rival.Leads(7, w.now); ok {
		t.Fatalf("a rival was granted shard 7 at %v, while the voters' sessions of n1 were live", time.Duration(w.now))
	}
}

func TestHolderReleaseEndsLeaseAtOnce(t *testing.T) {
	w := newWorld(t)
	h := w.newHolder("n1", 1)
	w.acquire(h, 7)
	h.TakeChanges()

	w.at(time.Second)
	h.SetDesired(7, false)
	h.Release(7, w.now)
	if e, ok := h.Leads(7, w.now); ok {
		t.Fatalf("Leads after Release = %d, true", e)
	}
	if _, ok := h.Deadline(7, w.now); ok {
		t.Fatal("Deadline reports a lease after Release")
	}
	want := []lease.Change{{Kind: lease.Lost, Shard: 7, Epoch: 1, Reason: lease.ReasonReleased}}
	if got := h.TakeChanges(); !reflect.DeepEqual(got, want) {
		t.Fatalf("changes %+v, want %+v", got, want)
	}

	// The release leaves with the next Tick, before a keep-alive is due.
	reps := w.exchange(h, time.Millisecond)
	if len(reps) != 3 {
		t.Fatalf("the release reached %d voters, want 3", len(reps))
	}
	for id, v := range w.voters {
		if got, want := v.Record(7), released(1, "n1", reps[id].Gen); got != want {
			t.Errorf("%s: Record(7) = %+v, want %+v", id, got, want)
		}
	}
}

func TestHolderTransferEndsLeaseAtOnce(t *testing.T) {
	w := newWorld(t)
	target := w.newHolder("n2", 5)
	targetGens := map[string]uint64{}
	for id, rep := range w.exchange(target, time.Millisecond) {
		targetGens[id] = rep.Gen
	}
	h := w.newHolder("n1", 1)
	w.acquire(h, 7)
	h.TakeChanges()

	if err := h.Transfer(8, "n2", 5, w.now); err == nil {
		t.Fatal("Transfer of a shard not led succeeded")
	}

	w.at(time.Second)
	h.SetDesired(7, false)
	if err := h.Transfer(7, "n2", 5, w.now); err != nil {
		t.Fatal(err)
	}
	if e, ok := h.Leads(7, w.now); ok {
		t.Fatalf("Leads after Transfer = %d, true", e)
	}
	want := []lease.Change{{Kind: lease.Lost, Shard: 7, Epoch: 1, Reason: lease.ReasonHandoff}}
	if got := h.TakeChanges(); !reflect.DeepEqual(got, want) {
		t.Fatalf("changes %+v, want %+v", got, want)
	}

	w.exchange(h, time.Millisecond)
	changes := h.TakeChanges()
	if len(changes) != 1 || changes[0].Kind != lease.Transferred {
		t.Fatalf("changes %+v, want one Transferred", changes)
	}
	c := changes[0]
	if c.Shard != 7 || c.Epoch != 2 || c.To != "n2" || len(c.Gens) < 2 {
		t.Fatalf("Transferred %+v, want shard 7 at epoch 2 to n2 with a majority of gens", c)
	}
	for id, g := range c.Gens {
		if g != targetGens[id] {
			t.Errorf("Gens[%s] = %#x, want the target's gen there, %#x", id, g, targetGens[id])
		}
	}
	for id, v := range w.voters {
		if got, want := v.Record(7), rec(2, "n2", targetGens[id]); got != want {
			t.Errorf("%s: Record(7) = %+v, want %+v", id, got, want)
		}
	}

	// The target leads on its own keep-alives (sent at 0).
	target.AcceptTransfer(7, c.Epoch, c.Gens, w.now)
	if e, ok := target.Leads(7, w.now); !ok || e != 2 {
		t.Fatalf("target: Leads = %d, %v; want 2, true", e, ok)
	}
	if d, ok := target.Deadline(7, w.now); !ok || d != lease.Time(usable) {
		t.Fatalf("target: Deadline = %v, %v; want %v", time.Duration(d), ok, usable)
	}
	if got, want := target.TakeChanges(), []lease.Change{{Kind: lease.Gained, Shard: 7, Epoch: 2}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("target: changes %+v, want %+v", got, want)
	}
}

// TestHolderFailedAcquisitionReleasesPartialGrant: v2 and v3 hold a live
// rival's record, v1 grants the holder. The attempt fails, and the grant
// at v1, which would otherwise block the shard while the holder lives, is
// released. The release rides on the next keep-alive to v1; a backoff
// longer than the keep-alive interval keeps a new attempt from going
// first.
func TestHolderFailedAcquisitionReleasesPartialGrant(t *testing.T) {
	w := newWorld(t)
	for _, id := range []string{"v2", "v3"} {
		rep, _ := w.voters[id].Handle(lease.Request{From: "r", Inc: 1, Seq: 1, Ops: []lease.Op{grant(7, 1)}}, 0)
		if !rep.Results[0].OK() {
			t.Fatalf("%s refused the rival: %+v", id, rep.Results[0])
		}
	}

	cfg := holderConfig("n1", 1)
	cfg.BackoffMin, cfg.BackoffMax = 2*interval, 2*interval
	h := w.newHolderWith(cfg)
	h.SetDesired(7, true)
	v1Granted := false
	for w.now < lease.Time(interval+time.Second) {
		rep := w.exchange(h, time.Millisecond)["v1"]
		for _, res := range rep.Results {
			if res.Op.Kind == lease.OpGrant && res.OK() {
				v1Granted = true
			}
		}
		if e, ok := h.Leads(7, w.now); ok {
			t.Fatalf("leads shard 7 at epoch %d against a live rival holding two voters", e)
		}
		w.now = w.now.Add(100 * time.Millisecond)
	}
	if !v1Granted {
		t.Fatal("v1 never granted the holder: the test did not set up a partial grant")
	}
	if r := w.voters["v1"].Record(7); r.Holder != "n1" || !r.Released {
		t.Fatalf("v1: Record(7) = %+v, want the holder's grant released", r)
	}
	for _, id := range []string{"v2", "v3"} {
		if r := w.voters[id].Record(7); r.Holder != "r" || r.Released {
			t.Fatalf("%s: Record(7) = %+v, want the rival's", id, r)
		}
	}
	for _, c := range h.TakeChanges() {
		if c.Kind == lease.Gained {
			t.Fatalf("change %+v", c)
		}
	}
}

func TestHolderConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		give func(*lease.HolderConfig)
		// wantField is the field the error must name; empty for a valid
		// configuration.
		wantField string
	}{
		{name: "valid", give: func(*lease.HolderConfig) {}},
		{name: "defaults fill what is left zero", give: func(c *lease.HolderConfig) {
			c.MaxClockDrift, c.SafetyMargin, c.KeepAliveInterval = 0, 0, 0
		}},
		{name: "single voter", give: func(c *lease.HolderConfig) { c.Voters = []string{"v1"} }},
		{name: "five voters", give: func(c *lease.HolderConfig) { c.Voters = []string{"a", "b", "c", "d", "e"} }},
		{name: "empty ID", give: func(c *lease.HolderConfig) { c.ID = "" }, wantField: "HolderConfig.ID"},
		{name: "zero incarnation", give: func(c *lease.HolderConfig) { c.Inc = 0 }, wantField: "HolderConfig.Inc"},
		{name: "no voters", give: func(c *lease.HolderConfig) { c.Voters = nil }, wantField: "HolderConfig.Voters"},
		{name: "even number of voters", give: func(c *lease.HolderConfig) { c.Voters = []string{"v1", "v2"} }, wantField: "HolderConfig.Voters"},
		{name: "seven voters", give: func(c *lease.HolderConfig) { c.Voters = []string{"a", "b", "c", "d", "e", "f", "g"} }, wantField: "HolderConfig.Voters"},
		{name: "empty voter ID", give: func(c *lease.HolderConfig) { c.Voters = []string{"v1", "", "v3"} }, wantField: "HolderConfig.Voters[1]"},
		{name: "repeated voter", give: func(c *lease.HolderConfig) { c.Voters = []string{"v1", "v2", "v1"} }, wantField: "HolderConfig.Voters[2]"},
		{name: "zero lease", give: func(c *lease.HolderConfig) { c.LeaseDuration = 0 }, wantField: "HolderConfig.LeaseDuration"},
		{name: "negative lease", give: func(c *lease.HolderConfig) { c.LeaseDuration = -ld }, wantField: "HolderConfig.LeaseDuration"},
		{name: "drift at its bound", give: func(c *lease.HolderConfig) { c.MaxClockDrift = 0.2 }, wantField: "HolderConfig.MaxClockDrift"},
		{name: "negative drift", give: func(c *lease.HolderConfig) { c.MaxClockDrift = -0.01 }, wantField: "HolderConfig.MaxClockDrift"},
		{name: "no Rand", give: func(c *lease.HolderConfig) { c.Rand = nil }, wantField: "HolderConfig.Rand"},
		{name: "backoff bounds inverted", give: func(c *lease.HolderConfig) {
			c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond
		}, wantField: "HolderConfig.BackoffMin"},
		{name: "keep-alive interval over half the usable lease", give: func(c *lease.HolderConfig) {
			c.KeepAliveInterval = usable/2 + 1
		}, wantField: "HolderConfig.KeepAliveInterval"},
		{name: "keep-alive interval of half the usable lease", give: func(c *lease.HolderConfig) {
			c.KeepAliveInterval = usable / 2
		}},
		{name: "safety margin that leaves no usable lease", give: func(c *lease.HolderConfig) {
			c.SafetyMargin = ld
		}, wantField: "SafetyMargin"},
		{
			name:      "negative safety margin",
			give:      func(c *lease.HolderConfig) { c.SafetyMargin = -time.Second },
			wantField: "HolderConfig.SafetyMargin",
		},
		{
			name:      "negative request timeout",
			give:      func(c *lease.HolderConfig) { c.RequestTimeout = -time.Second },
			wantField: "HolderConfig.RequestTimeout",
		},
		{
			name:      "negative keep-alive interval",
			give:      func(c *lease.HolderConfig) { c.KeepAliveInterval = -time.Second },
			wantField: "HolderConfig.KeepAliveInterval",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := holderConfig("n1", 1)
			cfg.Voters = slices.Clone(cfg.Voters)
			tt.give(&cfg)
			before := fmt.Sprintf("%+v", cfg)
			err := cfg.Validate()
			if after := fmt.Sprintf("%+v", cfg); after != before {
				t.Fatalf("Validate modified its receiver: %s → %s", before, after)
			}
			_, newErr := lease.NewHolder(cfg)
			if tt.wantField == "" {
				if err != nil || newErr != nil {
					t.Fatalf("Validate = %v, NewHolder = %v; want both nil", err, newErr)
				}
				return
			}
			if !errors.Is(err, lease.ErrConfig) || !errors.Is(newErr, lease.ErrConfig) {
				t.Fatalf("Validate = %v, NewHolder = %v; want both to wrap ErrConfig", err, newErr)
			}
			if !strings.Contains(err.Error(), tt.wantField) {
				t.Fatalf("Validate = %q, want it to name %s", err, tt.wantField)
			}
			t.Log(err)
		})
	}
}

// TestHolderTransferSurvivesRepliesSentBeforeIt: the target's keep-alives
// crossed the transfer — the voters answered them before they accepted it,
// so their Held lists do not name the shard — and arrive after the
// forwarded transfer. They must not read as the voters having moved on:
// the target keeps leading.
func TestHolderTransferSurvivesRepliesSentBeforeIt(t *testing.T) {
	w := newWorld(t)
	target := w.newHolder("n2", 5)
	w.acquire(target, 3) // so that every keep-alive reply lists a Held record
	target.TakeChanges()
	h := w.newHolder("n1", 1)
	w.acquire(h, 7)
	h.TakeChanges()

	w.at(interval + time.Millisecond) // the target's keep-alives are due
	var early []lease.Reply           // answered before the transfer, delivered after
	for _, env := range target.Tick(w.now) {
		rep, _ := w.voters[env.To].Handle(env.Req, w.now)
		early = append(early, rep)
	}
	if len(early) != len(voterIDs) {
		t.Fatalf("the target sent %d keep-alives, want one per voter", len(early))
	}
	h.SetDesired(7, false)
	if err := h.Transfer(7, "n2", 5, w.now); err != nil {
		t.Fatal(err)
	}
	w.exchange(h, time.Millisecond)
	var c lease.Change
	for _, ch := range h.TakeChanges() {
		if ch.Kind == lease.Transferred {
			c = ch
		}
	}
	if c.Kind != lease.Transferred {
		t.Fatal("no Transferred change")
	}
	target.Expect(7, w.now.Add(time.Second))
	target.AcceptTransfer(7, c.Epoch, c.Gens, w.now)
	for _, rep := range early {
		target.Step(rep, w.now)
	}
	if _, ok := target.Leads(7, w.now); !ok {
		t.Fatalf("target lost shard 7 to keep-alive replies older than the transfer; changes %+v", target.TakeChanges())
	}
	w.at(w.now.Sub(0) + interval)
	target.Tick(w.now)
	for _, ch := range target.TakeChanges() {
		if ch.Kind == lease.Lost {
			t.Fatalf("target lost shard 7: %+v", ch)
		}
	}
}

// TestHolderRegainsARestartedVoter: a transferred lease arrives with the
// votes of the two voters that answered first; the third (c) accepted the
// transfer too but its vote was never forwarded, and then c restarts, so
// its record names the holder's old session there. Asking c for the same
// epoch is refused ("epoch"); the holder must re-grant at a higher epoch,
// or losing another voter later would end a lease two voters could
// protect.
func TestHolderRegainsARestartedVoter(t *testing.T) {
	w := newWorld(t)
	target := w.newHolder("n2", 5)
	w.exchange(target, time.Millisecond)
	src := w.newHolder("n1", 1)
	w.acquire(src, 7)
	src.SetDesired(7, false)
	if err := src.Transfer(7, "n2", 5, w.now); err != nil {
		t.Fatal(err)
	}
	w.exchange(src, time.Millisecond)
	var c lease.Change
	for _, ch := range src.TakeChanges() {
		if ch.Kind == lease.Transferred {
			c = ch
		}
	}
	if c.Kind != lease.Transferred || len(c.Gens) != 2 {
		t.Fatalf("no Transferred change with a majority's gens: %+v", c)
	}
	var third, other string
	for _, id := range voterIDs {
		if _, ok := c.Gens[id]; !ok {
			third = id
		} else {
			other = id
		}
	}
	if r := w.voters[third].Record(7); r.Holder != "n2" || r.Epoch != c.Epoch {
		t.Fatalf("%s's record %+v, want the transfer to n2 at %d", third, r, c.Epoch)
	}
	target.Expect(7, w.now.Add(time.Second))
	target.AcceptTransfer(7, c.Epoch, c.Gens, w.now)
	if _, ok := target.Leads(7, w.now); !ok {
		t.Fatal("target does not lead after the transfer")
	}
	restarted, err := lease.NewVoter(lease.VoterConfig{ID: third, LeaseDuration: ld, Boot: 2, Restarted: true},
		map[uint32]lease.Record{7: w.voters[third].Record(7)}, w.now)
	if err != nil {
		t.Fatal(err)
	}
	w.voters[third] = restarted
	for range 12 { // past the restarted voter's grace period, keeping the lease alive
		w.at(time.Duration(w.now) + interval/2)
		w.exchange(target, time.Millisecond)
	}
	w.lost[other] = true
	for range 2 * int(ld/interval) { // longer than a lease: other's keep-alives run out
		w.at(time.Duration(w.now) + interval/2)
		w.exchange(target, time.Millisecond)
		if _, ok := target.Leads(7, w.now); !ok {
			t.Fatalf("losing %s ended the lease at %v: %s never protected it again", other, time.Duration(w.now), third)
		}
	}
}

// TestHolderHeldListsOutOfOrder: two keep-alives to one voter are in
// flight; the voter handles the later one first — before a transfer to
// this node lands there — and the earlier one after it. The holder adopts
// the transfer from the earlier request's Held list; the later request's
// list, which predates the transfer, must not take the vote back.
func TestHolderHeldListsOutOfOrder(t *testing.T) {
	w := newWorld(t)
	target := w.newHolder("n2", 5)
	w.exchange(target, time.Millisecond)
	src := w.newHolder("n1", 1)
	w.acquire(src, 7)

	w.at(interval + time.Millisecond)
	first := target.Tick(w.now) // keep-alives A
	w.at(2*interval + 2*time.Millisecond)
	second := target.Tick(w.now) // keep-alives B, sent later
	if len(first) != 3 || len(second) != 3 {
		t.Fatalf("keep-alives: %d then %d, want 3 each", len(first), len(second))
	}
	var lateReps []lease.Reply
	for _, env := range second { // handled first, before the transfer
		rep, _ := w.voters[env.To].Handle(env.Req, w.now)
		lateReps = append(lateReps, rep)
	}
	target.Expect(7, w.now.Add(time.Minute))
	src.SetDesired(7, false)
	if err := src.Transfer(7, "n2", 5, w.now); err != nil {
		t.Fatal(err)
	}
	w.exchange(src, time.Millisecond)
	for _, env := range first { // handled after the transfer: Held names n2
		rep, _ := w.voters[env.To].Handle(env.Req, w.now)
		target.Step(rep, w.now)
	}
	if _, ok := target.Leads(7, w.now); !ok {
		t.Fatalf("target does not lead after adopting the transfer from Held lists; changes %+v", target.TakeChanges())
	}
	for _, rep := range lateReps {
		target.Step(rep, w.now)
	}
	if _, ok := target.Leads(7, w.now); !ok {
		t.Fatal("replies handled before the transfer took the lease away")
	}
}

// A handoff's target holds off its own acquisition while it expects the
// transfer; when the source reports that the voters refused it, a second
// Expect at now must end that hold-off, or the shard waits it out unled.
func TestExpectAtNowEndsTheHoldOff(t *testing.T) {
	w := newWorld(t)
	target := w.newHolder("n2", 1)
	target.Expect(7, w.now.Add(time.Minute))
	w.exchange(target, time.Millisecond)
	if _, ok := target.Leads(7, w.now); ok {
		t.Fatal("the target acquired while it expected a transfer")
	}
	target.Expect(7, w.now)
	w.exchange(target, time.Millisecond)
	if _, ok := target.Leads(7, w.now); !ok {
		t.Fatalf("the target did not acquire once its hold-off ended; changes %+v", target.TakeChanges())
	}
}

// A process that led and then hears of a newer incarnation of its NodeID
// whose session is no longer live (that process stopped, or a disk lost
// the incarnation counter's last write) ends every lease and takes an
// incarnation above it, rather than leaving its NodeID out of the cluster
// for good. A newer incarnation that is live supersedes it instead.
func TestLedProcessRaisesAboveADeadIncarnation(t *testing.T) {
	w := newWorld(t)
	h := w.newHolder("n1", 1)
	w.acquire(h, 7)
	h.TakeChanges()
	// A process with incarnation 3 reaches v1 once, then stops; h does not
	// reach v1 meanwhile, and keeps its lease with v2 and v3.
	newer := w.newHolder("n1", 3)
	w.lost["v2"], w.lost["v3"] = true, true
	w.exchange(newer, time.Millisecond)
	w.lost = map[string]bool{"v1": true}
	for range 3 {
		w.at(time.Duration(w.now) + ld/2)
		w.exchange(h, time.Millisecond)
	}
	if _, ok := h.Leads(7, w.now); !ok {
		t.Fatal("h lost its lease while v2 and v3 answered")
	}
	delete(w.lost, "v1")
	w.at(time.Duration(w.now) + interval)
	w.exchange(h, time.Millisecond)
	if h.Superseded() || h.Inc() != 4 {
		t.Fatalf("superseded %v, incarnation %d; want a raise to 4", h.Superseded(), h.Inc())
	}
	if _, ok := h.Leads(7, w.now); ok {
		t.Fatal("h still leads after raising its incarnation")
	}
	want := []lease.Change{{Kind: lease.Lost, Shard: 7, Epoch: 1, Reason: lease.ReasonSuperseded}}
	if got := h.TakeChanges(); !reflect.DeepEqual(got, want) {
		t.Fatalf("changes %+v, want %+v", got, want)
	}
	// The old generation's records protect the ended lease until that
	// generation expires; then the new incarnation leads again.
	w.at(time.Duration(w.now) + ld + time.Millisecond)
	for range 3 {
		w.exchange(h, time.Millisecond)
	}
	if e, ok := h.Leads(7, w.now); !ok || e <= 1 {
		t.Fatalf("Leads(7) = %d, %v after the old generation expired; want an epoch above 1", e, ok)
	}
}

func TestLedProcessStopsForALiveIncarnation(t *testing.T) {
	w := newWorld(t)
	h := w.newHolder("n1", 1)
	w.acquire(h, 7)
	newer := w.newHolder("n1", 3)
	w.exchange(newer, time.Millisecond)
	w.at(time.Duration(w.now) + interval)
	w.exchange(h, time.Millisecond)
	if !h.Superseded() || h.Inc() != 1 {
		t.Fatalf("superseded %v, incarnation %d; want superseded at 1", h.Superseded(), h.Inc())
	}
}

// A holder with more to ask than MaxBatch operations sends them in batches,
// at most MaxInFlight outstanding per voter, paced by the answers; an
// acquisition still waiting in the holder does not time out, and every
// shard is led once the batches are through.
func TestHolderPacesBatches(t *testing.T) {
	w := newWorld(t)
	cfg := holderConfig("n1", 1)
	cfg.MaxBatch, cfg.MaxInFlight = 2, 1
	h := w.newHolderWith(cfg)
	for s := range uint32(7) {
		h.SetDesired(s, true)
	}
	first := h.Tick(w.now)
	if len(first) != 3 {
		t.Fatalf("%d requests, want one per voter", len(first))
	}
	for _, env := range first {
		if len(env.Req.Ops) != 2 {
			t.Fatalf("request to %s carries %d operations, want MaxBatch 2", env.To, len(env.Req.Ops))
		}
	}
	// Unanswered, the window is full: nothing more leaves, not even once
	// the first acquisitions' timeout has passed for the queued ones.
	w.at(time.Duration(w.now) + time.Millisecond)
	if more := h.Tick(w.now); len(more) != 0 {
		t.Fatalf("sent %d more requests with the window full", len(more))
	}
	// A request timeout later, unanswered still: the two attempts sent
	// fail; the five still queued, never sent, do not.
	w.at(time.Duration(w.now) + ld/4 + time.Millisecond) // RequestTimeout's default, LD/4
	next := h.Tick(w.now)                                // the window reopened: the next batch leaves
	if b := h.Backlog(); b.Acquiring != 5 {
		t.Fatalf("backlog %+v after a request timeout: want 5 acquisitions left (the queued ones)", b)
	}
	for _, env := range append(first, next...) {
		rep, _ := w.voters[env.To].Handle(env.Req, w.now)
		h.Step(rep, w.now)
	}
	for range 40 { // past the failed attempts' backoff (at most LD/4)
		w.at(time.Duration(w.now) + 100*time.Millisecond)
		w.exchange(h, time.Millisecond)
	}
	if got := h.Led(w.now); len(got) != 7 {
		t.Fatalf("leads %v after the batches went through, want all 7 shards", got)
	}
	// A transfer goes before queued grants.
	for s := range uint32(7) {
		h.SetDesired(s+100, true)
	}
	h.SetDesired(3, false)
	if err := h.Transfer(3, "n2", 1, w.now); err != nil {
		t.Fatal(err)
	}
	for _, env := range h.Tick(w.now) {
		if op := env.Req.Ops[0]; op.Kind != lease.OpTransfer || op.Shard != 3 {
			t.Fatalf("first operation to %s is %+v, want the transfer of shard 3", env.To, op)
		}
	}
}
