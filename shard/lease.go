package shard

import (
	"context"
	"errors"
	"fmt"
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
// runs under Context, which is cancelled the moment the lease ends (within
// one tick of the node's loop, which SafetyMargin covers), and attaches
// Token to every side effect so that resources can fence stale leaders. A
// Lease is safe for concurrent use.
type Lease struct {
	shard    uint32
	epoch    atomic.Uint64
	deadline atomic.Int64 // unix nanoseconds
	ctx      context.Context
	cancel   context.CancelCauseFunc
}

func newLease(shard uint32, epoch uint64) *Lease {
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{shard: shard, ctx: ctx, cancel: cancel}
	l.epoch.Store(epoch)
	return l
}

// Shard returns the leased shard.
func (l *Lease) Shard() uint32 { return l.shard }

// Epoch returns the lease's current epoch. It only grows: a node that
// renews its lease with the voters (after a voter restart) continues it at
// a higher epoch without a gap.
func (l *Lease) Epoch() uint64 { return l.epoch.Load() }

// Token returns the fencing token to attach to side effects: the shard
// and the current epoch.
func (l *Lease) Token() lease.Token { return lease.Token{Shard: l.shard, Epoch: l.epoch.Load()} }

// Deadline returns when the lease ends unless keep-alives keep being
// answered; the node moves it forward every tick while the voters answer.
// No other node can lead the shard before it.
func (l *Lease) Deadline() time.Time { return time.Unix(0, l.deadline.Load()) }

// Context is cancelled when the lease ends; context.Cause then returns a
// *LeaseEndedError.
func (l *Lease) Context() context.Context { return l.ctx }

func (l *Lease) end(r Reason) {
	l.cancel(&LeaseEndedError{Shard: l.shard, Epoch: l.epoch.Load(), Reason: r})
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
