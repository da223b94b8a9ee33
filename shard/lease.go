package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// Reason says why this node stopped leading a shard.
type Reason uint8

// The reasons a lease ends, as Handler.Released reports them.
const (
	// ReasonLeaseExpired: keep-alives went unanswered (a partition, voters
	// down) and the lease ran out.
	ReasonLeaseExpired Reason = iota + 1
	// ReasonQuorumLost: voters stopped protecting the lease (they restarted
	// or another node took their record) and it could not be renewed.
	ReasonQuorumLost
	// ReasonRebalance: the shard now belongs to another node and this node
	// gave it up.
	ReasonRebalance
	// ReasonHandoff: the node handed the shard to another node.
	ReasonHandoff
	// ReasonDrain: the node is draining before it stops.
	ReasonDrain
	// ReasonShutdown: the node stopped.
	ReasonShutdown
	// ReasonSuperseded: a newer process with the same NodeID started.
	ReasonSuperseded
)

func (r Reason) String() string {
	switch r {
	case ReasonLeaseExpired:
		return "lease expired"
	case ReasonQuorumLost:
		return "quorum lost"
	case ReasonRebalance:
		return "rebalance"
	case ReasonHandoff:
		return "handoff"
	case ReasonDrain:
		return "drain"
	case ReasonShutdown:
		return "shutdown"
	case ReasonSuperseded:
		return "superseded"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// ErrLeaseEnded is the cause (context.Cause) of a lease context's
// cancellation; errors.As with *LeaseEndedError gives the reason.
var ErrLeaseEnded = errors.New("lease ended")

// LeaseEndedError says why a lease ended. Its Is matches ErrLeaseEnded.
type LeaseEndedError struct {
	Shard  uint32
	Epoch  uint64
	Reason Reason
}

func (e *LeaseEndedError) Error() string {
	return fmt.Sprintf("lease on shard %d (epoch %d) ended: %s", e.Shard, e.Epoch, e.Reason)
}

// Is matches ErrLeaseEnded.
func (e *LeaseEndedError) Is(target error) bool { return target == ErrLeaseEnded }

// Lease is this node's leadership of one shard. Work done for the shard
// runs under Context and attaches Token to every side effect, so that
// resources can fence stale leaders. A Lease is safe for concurrent use.
//
// The lease has a local deadline on this process's monotonic clock: the
// instant it ends unless more keep-alives are answered (docs/design.md §2.4, rule 2).
// Context ends at that deadline by itself — a timer fires there, and
// Context().Err() compares the deadline with the clock on every call — so
// a node whose loop is busy (planning, publishing, a long Plan call) still
// stops its application in time. The node moves the deadline forward as
// the voters answer, and back when a voter stops protecting the lease; a
// context that has ended stays ended. Context also ends before this node
// sends a Transfer or a Release for the shard (rule 1): a handoff, a drain,
// a leave.
//
// What a context cannot stop: work already past its last check. A write
// in flight, or a pause (GC, SIGSTOP, a full disk) between checking
// Context().Err() and sending, can reach a resource after the lease
// ended and another node leads. Only the fence covers those: the resource
// must check Token and refuse epochs below the highest it has seen.
type Lease struct {
	shard uint32
	epoch atomic.Uint64
	// origin is lease.Time 0 of the node's monotonic lease clock.
	origin time.Time
	// deadline is the lease's local deadline, a lease.Time on that clock.
	deadline atomic.Int64
	// full says every voter's vote backs the lease (at the session the
	// voter last reported): its deadline is then the node's quorum
	// deadline, shared, which the node extends in O(1) per reply burst
	// instead of visiting every lease (see until).
	full   atomic.Bool
	shared *atomic.Int64
	ctx    context.Context // a cancelCtx; its cause is a *LeaseEndedError
	cancel context.CancelCauseFunc

	mu    sync.Mutex // orders deadline moves, the timer and the end
	timer *time.Timer
	armed lease.Time // when the timer fires
	// endedFn, when set, is told (under mu) of the shard of a lease that
	// ends, whatever ended it, so that the node looks at those leases only
	// (Node.reconcile).
	endedFn func(uint32)
}

// newLease returns a lease on shard at epoch that ends at deadline on the
// monotonic clock that started at origin, unless setDeadline moves it.
// ended, if not nil, is called with the shard when the lease ends; it must
// not block or call back into the lease. shared, if not nil, is the node's
// quorum deadline (Lease.until).
func newLease(shard uint32, epoch uint64, origin time.Time, deadline lease.Time, ended func(uint32), shared *atomic.Int64) *Lease {
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{shard: shard, origin: origin, ctx: ctx, cancel: cancel, endedFn: ended, shared: shared}
	l.epoch.Store(epoch)
	l.deadline.Store(int64(deadline))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = deadline
	l.timer = time.AfterFunc(deadline.Sub(l.now()), l.fire)
	return l
}

// until returns the lease's deadline: its own, or, while every voter backs
// it, the node's quorum deadline if that is later. (A lease backed by every
// voter lasts exactly while a majority of voters' keep-alives are fresh:
// the quorum deadline. Whatever withdraws a vote clears full before the
// node sets the lease's own, earlier deadline.)
func (l *Lease) until() lease.Time {
	d := lease.Time(l.deadline.Load())
	if l.shared != nil && l.full.Load() {
		d = max(d, lease.Time(l.shared.Load()))
	}
	return d
}

// setFull records whether every voter backs the lease.
func (l *Lease) setFull(full bool) { l.full.Store(full) }

// now reads the node's monotonic lease clock.
func (l *Lease) now() lease.Time { return lease.Time(time.Since(l.origin)) }

// Shard returns the leased shard.
func (l *Lease) Shard() uint32 { return l.shard }

// Epoch returns the lease's current epoch. It only grows: a node that
// renews its lease with the voters (after a voter restart) continues it at
// a higher epoch without a gap.
func (l *Lease) Epoch() uint64 { return l.epoch.Load() }

// Token returns the fencing token to attach to side effects: the shard
// and the current epoch.
func (l *Lease) Token() lease.Token { return lease.Token{Shard: l.shard, Epoch: l.epoch.Load()} }

// Deadline returns the lease's current local deadline: the instant on this
// process's monotonic clock when the lease ends unless more keep-alives are
// answered; no other node can lead the shard before it. The node moves it
// forward while the voters answer. The time carries a monotonic clock
// reading, so time.Until and time.Since measure it correctly in this
// process even if the wall clock steps; its wall-clock fields are the
// node's start time plus monotonic time elapsed, meaningless on another
// machine. Once Context has ended it says nothing more.
func (l *Lease) Deadline() time.Time { return l.origin.Add(time.Duration(l.until())) }

// Context returns the lease's context. It ends when the lease ends — at
// the local deadline at the latest, and before any Transfer or Release of
// the shard leaves this node — and context.Cause then returns a
// *LeaseEndedError. Its Err is exact at the deadline (two atomic loads and
// a monotonic clock reading); Done, and contexts derived from it, end
// when the lease's timer fires there (or when Err or Done is called
// after the deadline, whichever is first). Its Deadline method reports no
// deadline: the lease's deadline moves with every renewal (see
// Lease.Deadline).
func (l *Lease) Context() context.Context { return leaseContext{l} }

// setDeadline moves the lease's deadline to d, forward or back. A lease
// whose current deadline has already passed has ended: it is not revived,
// whatever d says.
func (l *Lease) setDeadline(d lease.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return
	}
	now := l.now()
	if now >= l.until() || now >= d {
		l.endLocked(ReasonLeaseExpired)
		return
	}
	l.deadline.Store(int64(d))
	if d < l.armed {
		// A later deadline needs no reset: the timer finds it when it
		// fires. An earlier one does.
		l.armed = d
		l.timer.Reset(d.Sub(now))
	}
}

// fire runs on the timer: it ends the lease if its deadline has passed,
// and waits for the deadline again if it moved forward.
func (l *Lease) fire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return
	}
	d, now := l.until(), l.now()
	if now >= d {
		l.endLocked(ReasonLeaseExpired)
		return
	}
	l.armed = d
	l.timer.Reset(d.Sub(now))
}

// expired ends the lease if its deadline has passed and reports whether
// the lease has ended.
func (l *Lease) expired() bool {
	if l.ctx.Err() != nil {
		return true
	}
	if l.now() < l.until() {
		return false
	}
	l.end(ReasonLeaseExpired)
	return true
}

// end ends the lease for reason r, unless it has ended already, and
// returns the reason it ended for.
func (l *Lease) end(r Reason) Reason {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.endLocked(r)
	return l.reason()
}

func (l *Lease) endLocked(r Reason) {
	if l.ctx.Err() != nil {
		return
	}
	l.timer.Stop()
	l.cancel(&LeaseEndedError{Shard: l.shard, Epoch: l.epoch.Load(), Reason: r})
	if l.endedFn != nil {
		l.endedFn(l.shard)
	}
}

// reason returns why the lease ended, or 0 while it has not.
func (l *Lease) reason() Reason {
	var e *LeaseEndedError
	if errors.As(context.Cause(l.ctx), &e) {
		return e.Reason
	}
	return 0
}

// leaseContext is a Lease's context: its own cancelCtx, with Err and Done
// that also check the lease's deadline against the monotonic clock, so
// that the context never outlives the lease however late the timer or the
// node's loop runs.
type leaseContext struct{ l *Lease }

// Deadline reports none: the lease's deadline moves (see Lease.Deadline).
func (c leaseContext) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done returns a channel closed when the lease ends.
func (c leaseContext) Done() <-chan struct{} {
	c.l.expired()
	return c.l.ctx.Done()
}

// Err returns context.Canceled once the lease has ended, nil before: from
// the instant the deadline passes, whatever any goroutine is doing.
func (c leaseContext) Err() error {
	if c.l.expired() {
		return c.l.ctx.Err()
	}
	return nil
}

// Value returns the lease's cancelCtx values: context.Cause finds the
// *LeaseEndedError there.
func (c leaseContext) Value(key any) any { return c.l.ctx.Value(key) }

func (c leaseContext) String() string {
	return fmt.Sprintf("shard.Lease(shard %d).Context", c.l.shard)
}

// Handler is told when this node gains and loses shards. Both methods run
// on one goroutine of the node, in order, never concurrently; they may
// block briefly (the lease itself is kept by another goroutine, and
// Context is cancelled without waiting for Released), but long work belongs
// in the application's own goroutines under Lease.Context.
type Handler interface {
	// Acquired: this node now leads l.Shard().
	Acquired(l *Lease)
	// Released: this node no longer leads l.Shard(); l's context is
	// already cancelled.
	Released(l *Lease, reason Reason)
}

// HandlerFuncs adapts two functions to a Handler; nil ones do nothing.
type HandlerFuncs struct {
	OnAcquired func(*Lease)
	OnReleased func(*Lease, Reason)
}

// Acquired calls OnAcquired.
func (h HandlerFuncs) Acquired(l *Lease) {
	if h.OnAcquired != nil {
		h.OnAcquired(l)
	}
}

// Released calls OnReleased.
func (h HandlerFuncs) Released(l *Lease, r Reason) {
	if h.OnReleased != nil {
		h.OnReleased(l, r)
	}
}

func reasonOf(r lease.Reason) Reason {
	switch r {
	case lease.ReasonLeaseExpired:
		return ReasonLeaseExpired
	case lease.ReasonQuorumLost:
		return ReasonQuorumLost
	case lease.ReasonHandoff:
		return ReasonHandoff
	case lease.ReasonSuperseded:
		return ReasonSuperseded
	}
	return ReasonRebalance
}
