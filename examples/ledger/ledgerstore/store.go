// Package ledgerstore is the fenced store of the ledger example: it
// records, per shard, which billing periods have been charged, and accepts
// a write only from the shard's current leader — the writer whose token
// (shard, epoch) is at least the highest the store has seen for the
// shard. It is the resource side of Tenure's fencing (docs/design.md §3) made
// concrete: a deposed leader that keeps writing after a pause is refused
// here, whatever it believes.
//
// Two operations, over HTTP/JSON (Handler) or in process (Store):
//
//   - Fence(shard, epoch, node): a new leader raises the shard's fence to
//     its epoch before its first charge and learns the next period to
//     charge, which is where the previous leader stopped. Refused if the
//     epoch is below the fence.
//   - Charge(shard, epoch, node, period): accepted only if the epoch is at
//     least the fence (which it raises) and the period is exactly the next
//     one: no period is charged twice and none is skipped.
//
// Every attempt, accepted or not, goes to an in-memory log that GET /audit
// checks with package audit, which shares no code with the acceptance rule
// here. The store keeps everything in memory: it is the referee of tests
// and demonstrations, not a database, and must not be restarted during a
// run.
package ledgerstore

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tenurehq/tenure/examples/ledger/audit"
	"github.com/tenurehq/tenure/shard"
)

// Reason is why the store refused a write, as it appears on the wire.
type Reason string

// The reasons for a refusal.
const (
	// ReasonStaleEpoch: the epoch is below the shard's fence; a newer
	// leader exists.
	ReasonStaleEpoch Reason = "stale_epoch"
	// ReasonDuplicate: the period was already charged.
	ReasonDuplicate Reason = "duplicate"
	// ReasonGap: the period is beyond the next one; charging it would skip
	// a period.
	ReasonGap Reason = "gap"
)

// ErrDuplicate and ErrGap are matched by a *RejectedError of that reason;
// a stale epoch matches shard.ErrStaleEpoch.
var (
	ErrDuplicate = errors.New("period already charged")
	ErrGap       = errors.New("period skips the next one")
)

// RejectedError is a write the store refused, with the shard's state at
// the time. Its Is matches shard.ErrStaleEpoch, ErrDuplicate or ErrGap by
// Reason.
type RejectedError struct {
	Reason Reason
	Shard  uint32
	// Fence is the shard's fence (the highest epoch accepted) and
	// NextPeriod the period to charge next.
	Fence      uint64
	NextPeriod uint64
	// Message is the store's explanation.
	Message string
}

func (e *RejectedError) Error() string { return e.Message }

// Is matches the sentinel of e's Reason.
func (e *RejectedError) Is(target error) bool {
	switch e.Reason {
	case ReasonStaleEpoch:
		return target == shard.ErrStaleEpoch
	case ReasonDuplicate:
		return target == ErrDuplicate
	case ReasonGap:
		return target == ErrGap
	}
	return false
}

// MaxPeriod is the highest period the store accepts in a request: periods
// come one at a time, and a larger one is a malformed request.
const MaxPeriod = 1 << 53

// Config configures a Store.
type Config struct {
	// UnsafeNoFence turns the fence off, for tests that must show the
	// audit catching a broken store: every fence and charge is accepted
	// without looking at the epoch or the period (the fence and the next
	// period still rise, so that correct leaders carry on). Never in
	// production.
	UnsafeNoFence bool
	// Now is the store's clock for the log's receive times. Default
	// time.Now.
	Now func() time.Time
	// Logger receives a line for every fence raised. Default: discard.
	Logger *slog.Logger
}

// Store is the fenced ledger. Safe for concurrent use; the zero Store is
// not usable: call New.
type Store struct {
	cfg Config

	mu     sync.Mutex
	shards map[uint32]*shardRec
	log    []audit.Attempt
	names  map[string]string // node names, interned: the log holds one copy of each
}

// shardRec is what the store keeps per shard.
type shardRec struct {
	fence uint64 // the highest epoch accepted
	next  uint64 // the period to charge next, from 1
}

// New returns an empty store.
func New(cfg Config) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{cfg: cfg, shards: map[uint32]*shardRec{}, names: map[string]string{}}
}

// Result is the shard's state after an accepted write.
type Result struct {
	Fence      uint64 `json:"fence"`
	NextPeriod uint64 `json:"next_period"`
}

// Fence raises the shard's fence to epoch and returns the next period to
// charge. It refuses, with a *RejectedError matching shard.ErrStaleEpoch,
// an epoch below the fence: a newer leader has fenced. Fencing again at
// the current epoch is accepted and changes nothing, so a leader may
// re-read its position after a lost reply.
func (s *Store) Fence(shardID uint32, epoch uint64, node string) (Result, error) {
	at := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rec(shardID)
	a := audit.Attempt{Time: at, Kind: audit.Fence, Shard: shardID, Epoch: epoch, Node: s.intern(node)}
	if epoch < r.fence && !s.cfg.UnsafeNoFence {
		return s.reject(a, r, ReasonStaleEpoch, "shard %d: epoch %d is below the fence %d: a newer leader has fenced this shard", shardID, epoch, r.fence)
	}
	if epoch > r.fence {
		s.cfg.Logger.Info("fence raised", "shard", shardID, "epoch", epoch, "from", r.fence, "node", node, "next_period", r.next)
	}
	r.fence = max(r.fence, epoch)
	s.accept(a)
	return Result{Fence: r.fence, NextPeriod: r.next}, nil
}

// Charge records the charge of period for the shard. It accepts iff epoch
// is at least the fence (raising the fence to it) and period is the next
// one; otherwise it returns a *RejectedError whose Reason is
// ReasonStaleEpoch, ReasonDuplicate or ReasonGap, and changes nothing.
func (s *Store) Charge(shardID uint32, epoch uint64, node string, period uint64) (Result, error) {
	at := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rec(shardID)
	a := audit.Attempt{Time: at, Kind: audit.Charge, Shard: shardID, Epoch: epoch, Node: s.intern(node), Period: period}
	if !s.cfg.UnsafeNoFence {
		switch {
		case epoch < r.fence:
			return s.reject(a, r, ReasonStaleEpoch, "shard %d: epoch %d is below the fence %d: a newer leader has fenced this shard", shardID, epoch, r.fence)
		case period < r.next:
			return s.reject(a, r, ReasonDuplicate, "shard %d: period %d is already charged; the next is %d", shardID, period, r.next)
		case period > r.next:
			return s.reject(a, r, ReasonGap, "shard %d: period %d would skip period %d", shardID, period, r.next)
		}
	}
	r.fence = max(r.fence, epoch)
	r.next = max(r.next, period+1)
	s.accept(a)
	return Result{Fence: r.fence, NextPeriod: r.next}, nil
}

func (s *Store) rec(shardID uint32) *shardRec {
	r := s.shards[shardID]
	if r == nil {
		r = &shardRec{next: 1}
		s.shards[shardID] = r
	}
	return r
}

// intern returns the store's copy of a node name. Called with s.mu held.
func (s *Store) intern(node string) string {
	if n, ok := s.names[node]; ok {
		return n
	}
	s.names[node] = node
	return node
}

func (s *Store) accept(a audit.Attempt) {
	a.Seq, a.Accepted = uint64(len(s.log)+1), true
	s.log = append(s.log, a)
}

func (s *Store) reject(a audit.Attempt, r *shardRec, reason Reason, format string, args ...any) (Result, error) {
	a.Seq, a.Reason = uint64(len(s.log)+1), string(reason)
	s.log = append(s.log, a)
	return Result{}, &RejectedError{Reason: reason, Shard: a.Shard, Fence: r.fence, NextPeriod: r.next, Message: fmt.Sprintf(format, args...)}
}

// Log returns a copy of the attempts with Seq above after, at most limit
// of them (0: all), in order.
func (s *Store) Log(after uint64, limit int) []audit.Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	if after >= uint64(len(s.log)) {
		return []audit.Attempt{}
	}
	out := s.log[after:]
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return slices.Clone(out)
}

// Audit checks the whole log with audit.Check.
func (s *Store) Audit() audit.Report {
	s.mu.Lock()
	// The log is only appended to: the attempts up to its current length
	// never change, so checking a slice of them needs no copy or lock.
	log := s.log[:len(s.log):len(s.log)]
	s.mu.Unlock()
	return audit.Check(log)
}
