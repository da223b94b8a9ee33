package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenurehq/tenure/examples/ledger/ledgerstore"
	"github.com/tenurehq/tenure/shard"
)

// leaseView is what the ledger reads of a lease; *shard.Lease has it, and
// tests drive the ledger with their own.
type leaseView interface {
	Shard() uint32
	Epoch() uint64
	Deadline() time.Time
	Context() context.Context
}

// store is the part of the ledger store's client the ledger uses.
type store interface {
	Fence(ctx context.Context, req ledgerstore.FenceRequest) (ledgerstore.Result, error)
	Charge(ctx context.Context, req ledgerstore.ChargeRequest) (ledgerstore.Result, error)
}

// config configures a ledger.
type config struct {
	node  string
	store store
	// every is how often a leader charges the next period of its shard.
	every time.Duration
	// hold is how long a quiesced shard stays paused while its lease
	// lasts: a handoff ends the lease within a tick of Quiesce returning,
	// so a lease still live after hold means the handoff failed and the
	// shard is charged again.
	hold time.Duration
	// ignoreLease is the planted bug: keep charging with the old token for
	// zombieFor after the lease ends, and do not stop when the store says
	// a newer leader exists.
	ignoreLease bool
	zombieFor   time.Duration
	log         *slog.Logger
}

// zombieRequestTimeout bounds a request that no lease bounds: a zombie's.
const zombieRequestTimeout = 500 * time.Millisecond

// ledger charges the subscriptions of the shards this node leads: it is
// the node's shard.Handler, shard.Quiescer and io.Closer. Safe for
// concurrent use.
type ledger struct {
	cfg config

	mu      sync.Mutex
	workers map[uint32]*worker // the newest worker of each shard
	running map[*worker]bool   // every worker not yet finished
	closed  bool
	wg      sync.WaitGroup // every worker

	charged, rejected, errors, fences atomic.Uint64
	ticks                             atomic.Uint64 // charge ticks seen by every worker, for tests
}

func newLedger(cfg config) *ledger {
	return &ledger{cfg: cfg, workers: map[uint32]*worker{}, running: map[*worker]bool{}}
}

// Acquired starts charging the shard. It returns at once; the work runs on
// the worker's goroutine under the lease's context.
func (lg *ledger) Acquired(l *shard.Lease) { lg.acquire(l) }

// Released needs nothing: the worker stops when the lease's context ends
// (the daemon logs the transition).
func (lg *ledger) Released(*shard.Lease, shard.Reason) {}

// Quiesce pauses the shard's charging before a handoff: it returns once
// the charge in flight, if any, has finished, so the next leader starts
// exactly where this one stopped.
func (lg *ledger) Quiesce(ctx context.Context, l *shard.Lease) error { return lg.quiesce(ctx, l) }

// Close stops every worker and waits for them. Called once the node has
// stopped.
func (lg *ledger) Close() error {
	lg.mu.Lock()
	lg.closed = true
	for w := range lg.running {
		w.cancel()
	}
	lg.mu.Unlock()
	lg.wg.Wait()
	return nil
}

func (lg *ledger) acquire(l leaseView) {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	if lg.closed {
		return
	}
	w := &worker{lg: lg, l: l, quiesce: make(chan chan struct{}), done: make(chan struct{})}
	if lg.cfg.ignoreLease {
		// The planted bug: the work outlives the lease by zombieFor.
		work, cancel := context.WithCancel(context.Background())
		stop := context.AfterFunc(l.Context(), func() { time.AfterFunc(lg.cfg.zombieFor, cancel) })
		w.work, w.cancel = work, func() { stop(); cancel() }
	} else {
		w.work, w.cancel = context.WithCancel(l.Context())
	}
	if old := lg.workers[l.Shard()]; old != nil {
		// Its lease has ended (a node holds one lease per shard); a
		// zombie may still be running, and is cancelled by its timer.
		old.forget()
	}
	lg.workers[l.Shard()] = w
	lg.running[w] = true
	lg.wg.Add(1)
	go func() {
		defer lg.wg.Done()
		w.run()
		lg.mu.Lock()
		delete(lg.running, w)
		lg.mu.Unlock()
	}()
}

func (lg *ledger) quiesce(ctx context.Context, l leaseView) error {
	lg.mu.Lock()
	w := lg.workers[l.Shard()]
	lg.mu.Unlock()
	if w == nil || w.l != l {
		return nil
	}
	ack := make(chan struct{})
	select {
	case w.quiesce <- ack: // the worker is between charges
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	<-ack
	return nil
}

// counts is what GET /ledger shows.
type counts struct {
	Node     string   `json:"node"`
	Charged  uint64   `json:"charged"`
	Rejected uint64   `json:"rejected"`
	Errors   uint64   `json:"errors"`
	Fences   uint64   `json:"fences"`
	Leading  []uint32 `json:"leading"`
}

func (lg *ledger) counts() counts {
	c := counts{
		Node: lg.cfg.node, Charged: lg.charged.Load(), Rejected: lg.rejected.Load(),
		Errors: lg.errors.Load(), Fences: lg.fences.Load(), Leading: []uint32{},
	}
	lg.mu.Lock()
	for s, w := range lg.workers {
		if w.l.Context().Err() == nil {
			c.Leading = append(c.Leading, s)
		}
	}
	lg.mu.Unlock()
	slices.Sort(c.Leading)
	return c
}

func (lg *ledger) serveCounts(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(lg.counts())
}

// worker charges one shard for one lease. Only its goroutine touches its
// fields after start, except quiesce, done and cancel.
type worker struct {
	lg      *ledger
	l       leaseView
	work    context.Context // the lease's context, or longer for a zombie
	cancel  context.CancelFunc
	quiesce chan chan struct{}
	done    chan struct{}

	next      uint64 // the period to charge next
	needFence bool   // a charge's outcome is unknown: read the position again
	failing   bool   // the last request failed (logged once per streak)
	stats     struct{ charged, rejected uint64 }
}

// forget is called when a newer lease of the same shard replaces w.
func (w *worker) forget() {
	if !w.lg.cfg.ignoreLease {
		w.cancel()
	}
}

// run fences the store, then charges one period per tick until the work
// ends. The first fence is tried at once, later ones (after a failure) on
// the ticks; a quiesce pauses both.
func (w *worker) run() {
	defer close(w.done)
	defer w.cancel()
	log := w.lg.cfg.log.With("shard", w.l.Shard())
	stopped := func() {
		log.Info("ledger: stopped charging: a newer leader fenced the store", "epoch", w.l.Epoch(), "next_period", w.next, "charged", w.stats.charged)
	}
	w.needFence = true
	if !w.chargeNext(log) {
		stopped()
		return
	}
	t := time.NewTicker(w.lg.cfg.every)
	defer t.Stop()
	var pausedUntil time.Time
	for {
		select {
		case <-w.work.Done():
			log.Info("ledger: stopped charging", "epoch", w.l.Epoch(), "next_period", w.next, "charged", w.stats.charged, "rejected", w.stats.rejected)
			return
		case ack := <-w.quiesce:
			pausedUntil = time.Now().Add(w.lg.cfg.hold)
			log.Debug("ledger: quiesced for a handoff", "epoch", w.l.Epoch(), "next_period", w.next)
			close(ack)
		case <-t.C:
			w.lg.ticks.Add(1)
			if time.Now().Before(pausedUntil) {
				continue
			}
			pausedUntil = time.Time{} // a pause that outlived its hold: the handoff failed
			if !w.chargeNext(log) {
				stopped()
				return
			}
		}
	}
}

// zombie reports whether the lease has ended and the worker runs on (the
// planted bug).
func (w *worker) zombie() bool { return w.lg.cfg.ignoreLease && w.l.Context().Err() != nil }

// requestContext bounds one request by the lease: its context, and its
// deadline, after which another node may lead. ok is false when the
// lease's deadline has passed (it is about to end): skip the request.
func (w *worker) requestContext() (ctx context.Context, cancel context.CancelFunc, ok bool) {
	if w.zombie() {
		ctx, cancel = context.WithTimeout(w.work, zombieRequestTimeout)
		return ctx, cancel, true
	}
	dl := w.l.Deadline()
	if !time.Now().Before(dl) {
		return nil, nil, false
	}
	ctx, cancel = context.WithDeadline(w.work, dl)
	return ctx, cancel, true
}

// fenceOnce makes one fence request. done reports an answer (ok: the
// position is known; !ok: a newer leader exists); !done, try again.
func (w *worker) fenceOnce(log *slog.Logger) (done, ok bool) {
	ctx, cancel, live := w.requestContext()
	if !live {
		return false, false
	}
	defer cancel()
	epoch := w.l.Epoch()
	res, err := w.lg.cfg.store.Fence(ctx, ledgerstore.FenceRequest{Shard: w.l.Shard(), Epoch: epoch, Node: w.lg.cfg.node})
	switch {
	case err == nil:
		w.lg.fences.Add(1)
		w.next, w.needFence, w.failing = res.NextPeriod, false, false
		log.Info("ledger: fenced the store", "epoch", epoch, "next_period", res.NextPeriod)
		return true, true
	case errors.Is(err, shard.ErrStaleEpoch):
		w.lg.rejected.Add(1)
		w.stats.rejected++
		log.Info("ledger: fence refused: a newer leader exists", "epoch", epoch, "err", err)
		return true, false
	}
	w.failed(log, "fence", err)
	return false, false
}

// chargeNext charges the next period, fencing first when the position is
// unknown (a new lease, a lost reply). It returns false when the worker
// must stop: the store has a newer leader's fence.
func (w *worker) chargeNext(log *slog.Logger) bool {
	switch {
	case w.needFence && w.zombie() && w.next == 0:
		return false // the lease ended before its first fence: nothing to go on from
	case w.needFence && !w.zombie():
		done, ok := w.fenceOnce(log)
		if !done || !ok {
			return !done // a failure retries on the next tick
		}
	}
	ctx, cancel, live := w.requestContext()
	if !live {
		return true
	}
	defer cancel()
	period, epoch := w.next, w.l.Epoch()
	_, err := w.lg.cfg.store.Charge(ctx, ledgerstore.ChargeRequest{Shard: w.l.Shard(), Epoch: epoch, Node: w.lg.cfg.node, Period: period})
	var re *ledgerstore.RejectedError
	switch {
	case err == nil:
		w.lg.charged.Add(1)
		w.stats.charged++
		w.next, w.failing = period+1, false
		return true
	case w.zombie():
		// The planted bug: whatever the store says, move on.
		w.next++
		if errors.As(err, &re) {
			w.lg.rejected.Add(1)
			w.stats.rejected++
		} else {
			w.lg.errors.Add(1)
		}
		return true
	case errors.Is(err, shard.ErrStaleEpoch):
		w.lg.rejected.Add(1)
		w.stats.rejected++
		if w.lg.cfg.ignoreLease {
			w.next++
			return true
		}
		return false
	case errors.As(err, &re):
		// Duplicate or gap: this leader's position was off (a reply lost
		// earlier); take the store's.
		w.lg.rejected.Add(1)
		w.stats.rejected++
		log.Info("ledger: charge refused; resuming at the store's next period", "epoch", epoch, "period", period, "reason", re.Reason, "next_period", re.NextPeriod)
		w.next = re.NextPeriod
		return true
	}
	// Lost reply, timeout, store down: whether the charge landed is
	// unknown. Fencing again at the same epoch reads the position.
	w.needFence = true
	w.failed(log, "charge", err)
	return true
}

// failed counts a request that got no answer, logging the first of a
// streak. A request cut short because the work ended is not counted.
func (w *worker) failed(log *slog.Logger, what string, err error) {
	if w.work.Err() != nil {
		return
	}
	w.lg.errors.Add(1)
	if !w.failing {
		log.Warn("ledger: store request failed; retrying", "request", what, "epoch", w.l.Epoch(), "err", err)
	}
	w.failing = true
}
