package shardtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tenurehq/tenure/shard"
)

// Recorder watches the leases of every node of a cluster through their
// Handlers, as an application would, and checks the promise that matters
// to one: whenever a node is told it leads a shard, every other lease on
// that shard has already ended (its context is cancelled). It also
// measures the gap of every change of leader — from the moment the old
// lease ended to the moment the new leader was told — by the reason the
// old one ended. Safe for concurrent use.
type Recorder struct {
	mu         sync.Mutex
	live       map[uint32]map[string]*shard.Lease
	ended      map[uint32]ending // the latest end of a lease on each shard
	top        map[uint32]uint64 // the highest epoch acquired on each shard
	gaps       map[shard.Reason][]time.Duration
	released   map[shard.Reason]int
	violations []string
}

type ending struct {
	node   string
	epoch  uint64
	at     time.Time
	reason shard.Reason
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{
		live: make(map[uint32]map[string]*shard.Lease), ended: make(map[uint32]ending), top: make(map[uint32]uint64),
		gaps:     make(map[shard.Reason][]time.Duration),
		released: make(map[shard.Reason]int),
	}
}

// For returns the Handler to give node id.
func (r *Recorder) For(id string) shard.Handler { return recorded{r: r, id: id} }

type recorded struct {
	r  *Recorder
	id string
}

func (h recorded) Acquired(l *shard.Lease) {
	r, now := h.r, time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := l.Shard()
	measured := false
	for other, ol := range r.live[s] {
		if other == h.id {
			continue
		}
		if ol.Context().Err() == nil {
			r.violations = append(r.violations, fmt.Sprintf("shard %d: %s told it leads at epoch %d while %s still leads at epoch %d",
				s, h.id, l.Epoch(), other, ol.Epoch()))
			continue
		}
		if _, ok := r.ended[s]; !ok && ol.Epoch() < l.Epoch() {
			// The old lease ended, but its end has not been recorded yet
			// (the callback runs on its own goroutine): a gap of nearly 0.
			var le *shard.LeaseEndedError
			reason := shard.ReasonShutdown
			if errors.As(context.Cause(ol.Context()), &le) {
				reason = le.Reason
			}
			r.gaps[reason] = append(r.gaps[reason], 0)
			delete(r.live[s], other)
			measured = true
		}
	}
	if e, ok := r.ended[s]; ok && e.epoch < l.Epoch() && !measured {
		r.gaps[e.reason] = append(r.gaps[e.reason], now.Sub(e.at))
	}
	delete(r.ended, s)
	r.top[s] = max(r.top[s], l.Epoch())
	if r.live[s] == nil {
		r.live[s] = make(map[string]*shard.Lease)
	}
	r.live[s][h.id] = l
	id := h.id
	context.AfterFunc(l.Context(), func() {
		at := time.Now()
		var le *shard.LeaseEndedError
		reason := shard.ReasonShutdown
		if errors.As(context.Cause(l.Context()), &le) {
			reason = le.Reason
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.live[s][id] == l {
			delete(r.live[s], id)
		}
		r.released[reason]++
		if l.Epoch() < r.top[s] {
			return // a newer lease began already; its gap was measured
		}
		if e, ok := r.ended[s]; !ok || e.epoch <= l.Epoch() {
			r.ended[s] = ending{node: id, epoch: l.Epoch(), at: at, reason: reason}
		}
	})
}

func (h recorded) Released(*shard.Lease, shard.Reason) {}

// ResetGaps forgets the gaps and counts measured so far (not the leases
// it follows), to measure from now on.
func (r *Recorder) ResetGaps() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.gaps)
	clear(r.released)
}

// Violations returns every breach of the one-leader promise seen so far.
func (r *Recorder) Violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.violations)
}

// Gaps returns the gaps measured after leases that ended for reason,
// sorted.
func (r *Recorder) Gaps(reason shard.Reason) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.gaps[reason])
	slices.Sort(out)
	return out
}

// Released returns how many leases ended for reason.
func (r *Recorder) Released(reason shard.Reason) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.released[reason]
}
