package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/daemon"
	"github.com/tenurehq/tenure/examples/ledger/audit"
	"github.com/tenurehq/tenure/examples/ledger/ledgerstore"
	"github.com/tenurehq/tenure/internal/loopback"
	"github.com/tenurehq/tenure/shard/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeLease is a lease the test ends by hand.
type fakeLease struct {
	shard    uint32
	epoch    atomic.Uint64
	deadline atomic.Int64
	ctx      context.Context
	cancel   context.CancelFunc
}

func newLease(shard uint32, epoch uint64) *fakeLease {
	l := &fakeLease{shard: shard}
	l.epoch.Store(epoch)
	l.deadline.Store(time.Now().Add(time.Hour).UnixNano())
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

func (l *fakeLease) Shard() uint32            { return l.shard }
func (l *fakeLease) Epoch() uint64            { return l.epoch.Load() }
func (l *fakeLease) Deadline() time.Time      { return time.Unix(0, l.deadline.Load()) }
func (l *fakeLease) Context() context.Context { return l.ctx }
func (l *fakeLease) end()                     { l.cancel() }

// inProcess is a ledgerstore.Store behind the ledger's store interface.
// dropReply, when set, decides which charges lose their reply: the store
// applies them, the caller gets an error.
type inProcess struct {
	s         *ledgerstore.Store
	dropReply func(ledgerstore.ChargeRequest) bool
	// block, when set, is called before each charge reaches the store.
	block func(ledgerstore.ChargeRequest)
}

func (p *inProcess) Fence(ctx context.Context, r ledgerstore.FenceRequest) (ledgerstore.Result, error) {
	if err := ctx.Err(); err != nil {
		return ledgerstore.Result{}, err
	}
	return p.s.Fence(r.Shard, r.Epoch, r.Node)
}

func (p *inProcess) Charge(ctx context.Context, r ledgerstore.ChargeRequest) (ledgerstore.Result, error) {
	if p.block != nil {
		p.block(r)
	}
	if err := ctx.Err(); err != nil {
		return ledgerstore.Result{}, err
	}
	res, err := p.s.Charge(r.Shard, r.Epoch, r.Node, r.Period)
	if p.dropReply != nil && p.dropReply(r) {
		return ledgerstore.Result{}, errors.New("reply lost")
	}
	return res, err
}

func testLedger(node string, st store, mod func(*config)) *ledger {
	cfg := config{node: node, store: st, every: time.Millisecond, hold: time.Hour, zombieFor: 200 * time.Millisecond, log: shardtest.Logger()}
	if mod != nil {
		mod(&cfg)
	}
	return newLedger(cfg)
}

// idle reports whether lg has no worker running.
func idle(lg *ledger) bool {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	return len(lg.running) == 0
}

func charged(lg *ledger) uint64 { return lg.charged.Load() }

func closeLedger(t *testing.T, lg *ledger) {
	t.Helper()
	if err := lg.Close(); err != nil {
		t.Error(err)
	}
}

func checkClean(t *testing.T, s *ledgerstore.Store) audit.Report {
	t.Helper()
	rep := s.Audit()
	if !rep.OK || rep.Accepted == 0 {
		t.Errorf("audit: %+v, want clean with charges", rep)
	}
	return rep
}

// TestLeaderFencesThenCharges: a leader fences at its epoch, charges
// periods 1, 2, … and stops when its lease ends.
func TestLeaderFencesThenCharges(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	lg := testLedger("n1", &inProcess{s: s}, nil)
	defer closeLedger(t, lg)
	l := newLease(4, 7)
	lg.acquire(l)
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) >= 5 }, "5 charges")
	if c := lg.counts(); !slices.Equal(c.Leading, []uint32{4}) || c.Node != "n1" {
		t.Errorf("counts = %+v, want leading [4]", c)
	}
	l.end()
	shardtest.Eventually(t, 5*time.Second, func() bool { return idle(lg) }, "the worker to stop at the lease's end")
	log := s.Log(0, 0)
	if log[0].Kind != audit.Fence || log[0].Epoch != 7 || log[0].Node != "n1" {
		t.Errorf("first attempt %+v, want a fence at epoch 7 by n1", log[0])
	}
	for i, a := range log[1:] {
		if a.Kind != audit.Charge || a.Epoch != 7 || a.Period != uint64(i+1) || !a.Accepted {
			t.Fatalf("attempt %d = %+v, want period %d accepted at epoch 7", i+2, a, i+1)
		}
	}
	rep := checkClean(t, s)
	if c := lg.counts(); c.Charged != uint64(rep.Accepted) || c.Fences != 1 || c.Rejected != 0 || c.Errors != 0 || len(c.Leading) != 0 {
		t.Errorf("counts = %+v after the lease, audit accepted %d", c, rep.Accepted)
	}
}

// TestNewLeaderContinues: the next leader starts where the previous one
// stopped, on another node.
func TestNewLeaderContinues(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	n1, n2 := testLedger("n1", &inProcess{s: s}, nil), testLedger("n2", &inProcess{s: s}, nil)
	defer closeLedger(t, n1)
	defer closeLedger(t, n2)
	l1 := newLease(0, 1)
	n1.acquire(l1)
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(n1) >= 3 }, "n1 charges")
	l1.end()
	shardtest.Eventually(t, 5*time.Second, func() bool { return idle(n1) }, "n1 stops")
	n2.acquire(newLease(0, 2))
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(n2) >= 3 }, "n2 charges")
	rep := checkClean(t, s)
	if rep.MaxPeriodSum != uint64(rep.Accepted) || rep.Rejected != 0 {
		t.Errorf("audit %+v: want no refusal and every period once", rep)
	}
}

// TestDeposedLeaderStops: a leader that has not noticed its lease ended
// (a pause) is refused by the store once the next leader fenced, and
// stops.
func TestDeposedLeaderStops(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	n1, n2 := testLedger("n1", &inProcess{s: s}, nil), testLedger("n2", &inProcess{s: s}, nil)
	defer closeLedger(t, n1)
	defer closeLedger(t, n2)
	n1.acquire(newLease(0, 1)) // never ended: n1 still believes it leads
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(n1) >= 3 }, "n1 charges")
	n2.acquire(newLease(0, 2))
	shardtest.Eventually(t, 5*time.Second, func() bool { return idle(n1) }, "n1 stops after a refusal")
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(n2) >= 3 }, "n2 charges")
	rep := checkClean(t, s)
	if n1.rejected.Load() != 1 || rep.StaleRejected != 1 {
		t.Errorf("n1 refused %d times, audit %+v: want one stale refusal", n1.rejected.Load(), rep)
	}
}

// TestLostReplyResyncs: a charge whose reply is lost may have landed; the
// leader fences again at its epoch to read the position, and neither
// repeats nor skips the period.
func TestLostReplyResyncs(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	var dropped atomic.Bool
	st := &inProcess{s: s, dropReply: func(r ledgerstore.ChargeRequest) bool {
		return r.Period == 3 && dropped.CompareAndSwap(false, true)
	}}
	lg := testLedger("n1", st, nil)
	defer closeLedger(t, lg)
	lg.acquire(newLease(0, 1))
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) >= 6 }, "charges past the lost reply")
	closeLedger(t, lg)
	rep := checkClean(t, s)
	if c := lg.counts(); c.Errors != 1 || c.Fences != 2 || c.Rejected != 0 || rep.Rejected != 0 {
		t.Errorf("counts %+v, audit %+v: want one error, a second fence and no refusal", c, rep)
	}
}

// TestStoreDown: requests without an answer are counted and retried; the
// leader charges once the store answers.
func TestStoreDown(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	var down atomic.Bool
	down.Store(true)
	st := &inProcess{s: s, dropReply: func(ledgerstore.ChargeRequest) bool { return false }}
	lg := testLedger("n1", failingFences{st, &down}, nil)
	defer closeLedger(t, lg)
	lg.acquire(newLease(0, 1))
	shardtest.Eventually(t, 5*time.Second, func() bool { return lg.errors.Load() >= 3 }, "failed fences")
	if charged(lg) != 0 {
		t.Fatal("charged without a fence")
	}
	down.Store(false)
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) >= 3 }, "charges once the store is back")
	checkClean(t, s)
}

// failingFences fails every fence while down is set.
type failingFences struct {
	*inProcess
	down *atomic.Bool
}

func (f failingFences) Fence(ctx context.Context, r ledgerstore.FenceRequest) (ledgerstore.Result, error) {
	if f.down.Load() {
		return ledgerstore.Result{}, errors.New("connection refused")
	}
	return f.inProcess.Fence(ctx, r)
}

// slowCharge holds one charge, the next after hold is set, until release
// is closed, and notes when it has reached the store.
type slowCharge struct {
	*inProcess
	hold    atomic.Bool
	started chan struct{}
	release chan struct{}
	note    func(string)
}

func (c *slowCharge) Charge(ctx context.Context, r ledgerstore.ChargeRequest) (ledgerstore.Result, error) {
	if !c.hold.CompareAndSwap(true, false) {
		return c.inProcess.Charge(ctx, r)
	}
	c.started <- struct{}{}
	<-c.release
	res, err := c.inProcess.Charge(ctx, r)
	c.note("charge finished")
	return res, err
}

// TestQuiesce: Quiesce returns only after the charge in flight reached
// the store, nothing is charged while paused, and a pause that outlives
// its hold with the lease still live (the handoff failed) resumes.
func TestQuiesce(t *testing.T) {
	tests := []struct {
		name       string
		hold       time.Duration
		wantResume bool
	}{
		{name: "paused for the handoff", hold: time.Hour},
		{name: "resumed after a failed handoff", hold: 50 * time.Millisecond, wantResume: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ledgerstore.New(ledgerstore.Config{})
			var mu sync.Mutex
			var events []string
			note := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
			st := &slowCharge{inProcess: &inProcess{s: s}, started: make(chan struct{}), release: make(chan struct{}), note: note}
			lg := testLedger("n1", st, func(c *config) { c.hold = tt.hold })
			defer closeLedger(t, lg)
			l := newLease(0, 1)
			lg.acquire(l)
			shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) >= 2 }, "charges")
			st.hold.Store(true)
			<-st.started
			quiesced := make(chan error, 1)
			go func() {
				err := lg.quiesce(context.Background(), l)
				note("quiesced")
				quiesced <- err
			}()
			close(st.release)
			if err := <-quiesced; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			if !slices.Equal(events, []string{"charge finished", "quiesced"}) {
				t.Errorf("events %q: Quiesce returned before the charge in flight finished", events)
			}
			mu.Unlock()
			at, ticks := charged(lg), lg.ticks.Load()
			if tt.wantResume {
				shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) > at+2 }, "charging to resume after the hold")
			} else {
				shardtest.Eventually(t, 5*time.Second, func() bool { return lg.ticks.Load() >= ticks+10 }, "10 ticks while paused")
				if got := charged(lg); got != at {
					t.Errorf("charged %d periods while paused", got-at)
				}
			}
			l.end()
			checkClean(t, s)
		})
	}
}

// TestQuiesceOtherLease: Quiesce of a lease the ledger does not run (an
// older one of the shard) returns at once and pauses nothing.
func TestQuiesceOtherLease(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	lg := testLedger("n1", &inProcess{s: s}, nil)
	defer closeLedger(t, lg)
	lg.acquire(newLease(0, 2))
	if err := lg.quiesce(context.Background(), newLease(0, 1)); err != nil {
		t.Fatal(err)
	}
	at := charged(lg)
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) > at+2 }, "charging to go on")
}

// TestEpochRenewedMidLease: a lease continued at a higher epoch (after a
// voter restart) writes with the new one.
func TestEpochRenewedMidLease(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	lg := testLedger("n1", &inProcess{s: s}, nil)
	defer closeLedger(t, lg)
	l := newLease(0, 3)
	lg.acquire(l)
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) >= 2 }, "charges at epoch 3")
	l.epoch.Store(5)
	at := charged(lg)
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) >= at+2 }, "charges at epoch 5")
	l.end()
	log := s.Log(0, 0)
	if last := log[len(log)-1]; last.Epoch != 5 {
		t.Errorf("last attempt %+v, want epoch 5", last)
	}
	checkClean(t, s)
}

// TestPastDeadlineSendsNothing: once the lease's deadline has passed,
// another node may lead: the ledger sends nothing, even before the
// lease's context ends.
func TestPastDeadlineSendsNothing(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	lg := testLedger("n1", &inProcess{s: s}, nil)
	defer closeLedger(t, lg)
	l := newLease(0, 1)
	l.deadline.Store(time.Now().Add(-time.Millisecond).UnixNano())
	lg.acquire(l)
	shardtest.Eventually(t, 5*time.Second, func() bool { return lg.ticks.Load() >= 10 }, "10 ticks")
	if n := len(s.Log(0, 0)); n != 0 || lg.errors.Load() != 0 {
		t.Errorf("%d attempts and %d errors past the deadline, want none", n, lg.errors.Load())
	}
}

// TestZombie: with the planted bug, a node keeps charging with its old
// token after its lease ended. A fenced store refuses every such charge;
// a store without the fence accepts them, and the audit reports it.
func TestZombie(t *testing.T) {
	tests := []struct {
		name   string
		unsafe bool
	}{
		{name: "fenced store refuses the zombie"},
		{name: "unfenced store lets the zombie through", unsafe: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ledgerstore.New(ledgerstore.Config{UnsafeNoFence: tt.unsafe})
			zombie := testLedger("n1", &inProcess{s: s}, func(c *config) { c.ignoreLease = true; c.zombieFor = 300 * time.Millisecond })
			next := testLedger("n2", &inProcess{s: s}, nil)
			defer closeLedger(t, zombie)
			defer closeLedger(t, next)
			l1 := newLease(0, 1)
			zombie.acquire(l1)
			shardtest.Eventually(t, 5*time.Second, func() bool { return charged(zombie) >= 3 }, "n1 charges")
			l1.end()
			next.acquire(newLease(0, 2))
			shardtest.Eventually(t, 5*time.Second, func() bool { return idle(zombie) }, "the zombie to give up after zombieFor")
			if c := zombie.counts(); len(c.Leading) != 0 {
				t.Errorf("the zombie reports leading %v", c.Leading)
			}
			rep := s.Audit()
			if tt.unsafe {
				if rep.OK || rep.StaleAccepted == 0 {
					t.Errorf("audit %+v: want stale writes accepted", rep)
				}
				return
			}
			if !rep.OK || rep.StaleRejected == 0 || zombie.rejected.Load() == 0 {
				t.Errorf("audit %+v, zombie refused %d times: want a clean audit with the zombie refused", rep, zombie.rejected.Load())
			}
		})
	}
}

// TestCloseStopsEveryWorker: Close cancels every worker, zombies
// included, and waits for them; later acquisitions start nothing.
func TestCloseStopsEveryWorker(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	lg := testLedger("n1", &inProcess{s: s}, func(c *config) { c.ignoreLease = true; c.zombieFor = time.Hour })
	for sh := range uint32(3) {
		lg.acquire(newLease(sh, 1))
	}
	old := newLease(0, 1)
	lg.acquire(old)
	old.end() // a zombie for an hour
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) >= 6 }, "charges")
	closeLedger(t, lg)
	if !idle(lg) {
		t.Fatal("workers still running after Close")
	}
	lg.acquire(newLease(9, 1))
	if !idle(lg) {
		t.Error("a worker started after Close")
	}
}

// TestServeCounts: GET /ledger shows the node's counts and the shards it
// charges.
func TestServeCounts(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	lg := testLedger("n7", &inProcess{s: s}, nil)
	defer closeLedger(t, lg)
	l2, l1 := newLease(2, 1), newLease(1, 1)
	lg.acquire(l2)
	lg.acquire(l1)
	shardtest.Eventually(t, 5*time.Second, func() bool { return charged(lg) >= 2 }, "charges")
	rec := httptest.NewRecorder()
	lg.serveCounts(rec, httptest.NewRequest("GET", "/ledger", nil))
	var c counts
	if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil {
		t.Fatal(err)
	}
	if c.Node != "n7" || c.Charged < 2 || !slices.Equal(c.Leading, []uint32{1, 2}) || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("/ledger = %s", rec.Body.String())
	}
	for _, k := range []string{`"node"`, `"charged"`, `"rejected"`, `"errors"`, `"leading"`} {
		if !strings.Contains(rec.Body.String(), k) {
			t.Errorf("/ledger lacks %s", k)
		}
	}
}

// TestFlags: the ledger's own flags are checked before the node starts,
// with the usage exit code and the flag's name.
func TestFlags(t *testing.T) {
	grpcAddr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"-node-id", "x", "-shards", "4", "-voters", "n1=" + grpcAddr, "-grpc-addr", "127.0.0.1:0",
		"-grpc-advertise", "127.0.0.1:1", "-gossip-addr", "127.0.0.1:0", "-http-addr", ""}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "store missing", args: base, want: "-store is required"},
		{name: "store not a URL", args: append(slices.Clone(base), "-store", "store:8080"), want: "-store: store URL"},
		{name: "store from the environment, malformed", args: base, env: map[string]string{"TENURE_STORE": "ftp://x"}, want: `-store: store URL "ftp://x"`},
		{name: "charge-every zero", args: append(slices.Clone(base), "-store", "http://s:1", "-charge-every", "0s"), want: "-charge-every must be in"},
		{name: "charge-every from the environment, not a duration", args: base, env: map[string]string{"TENURE_STORE": "http://s:1", "TENURE_CHARGE_EVERY": "often"}, want: "TENURE_CHARGE_EVERY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr strings.Builder
			code := daemon.Run(app(), daemon.Process{
				Args: tt.args, Stdout: io.Discard, Stderr: &stderr, Signals: make(chan os.Signal),
				LookupEnv: func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok },
			})
			if code != 2 || !strings.Contains(stderr.String(), tt.want) || !strings.Contains(stderr.String(), "ledger: ") {
				t.Errorf("exit %d, want 2 with %q; stderr:\n%s", code, tt.want, stderr.String())
			}
		})
	}
}

// TestQuiesceWhileFencing: a leader still trying to fence (the store is
// unreachable) quiesces at once and stops trying while paused.
func TestQuiesceWhileFencing(t *testing.T) {
	s := ledgerstore.New(ledgerstore.Config{})
	var down atomic.Bool
	down.Store(true)
	lg := testLedger("n1", failingFences{&inProcess{s: s}, &down}, nil)
	defer closeLedger(t, lg)
	l := newLease(0, 1)
	lg.acquire(l)
	shardtest.Eventually(t, 5*time.Second, func() bool { return lg.errors.Load() >= 2 }, "failed fences")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := lg.quiesce(ctx, l); err != nil {
		t.Fatalf("quiesce while fencing: %v", err)
	}
	errs, ticks := lg.errors.Load(), lg.ticks.Load()
	shardtest.Eventually(t, 5*time.Second, func() bool { return lg.ticks.Load() >= ticks+10 }, "10 ticks while paused")
	if got := lg.errors.Load(); got != errs {
		t.Errorf("%d fence attempts while paused", got-errs)
	}
}
