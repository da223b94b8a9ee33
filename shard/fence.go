package shard

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tenurehq/tenure/lease"
)

// ErrStaleEpoch is matched (with errors.Is) by every error a Fence returns:
// the token's epoch is below the highest the resource has seen for its
// shard, so a newer leader exists and the write must not happen.
var ErrStaleEpoch = errors.New("stale epoch")

// StaleTokenError is the error Fence.Check returns for a refused token. It
// matches ErrStaleEpoch.
type StaleTokenError struct {
	// Shard and Epoch are the refused token's.
	Shard uint32
	Epoch uint64
	// Highest is the highest epoch the fence had accepted for Shard when it
	// refused the token: the epoch of a newer leader, or 0 if Epoch was 0
	// and nothing was accepted yet.
	Highest uint64
}

func (e *StaleTokenError) Error() string {
	if e.Epoch == 0 {
		return fmt.Sprintf("shard %d: epoch 0 means never led and is never accepted (highest %d): %v",
			e.Shard, e.Highest, ErrStaleEpoch)
	}
	return fmt.Sprintf("shard %d: epoch %d is below highest %d: %v", e.Shard, e.Epoch, e.Highest, ErrStaleEpoch)
}

// Is reports whether target is ErrStaleEpoch.
func (e *StaleTokenError) Is(target error) bool { return target == ErrStaleEpoch }

// Fence is the token check of an in-process resource (docs/design.md §3). A leader
// attaches a lease.Token to every side effect; the resource passes it to
// Check before applying the effect and applies it only if Check returns
// nil. Check accepts a token iff its epoch is at least the highest epoch
// accepted so far for the token's shard, and raises that highest epoch in
// the same atomic step.
//
// Why this is enough: epochs of a shard grow with every new leadership, so
// once the new leader's first write has passed the fence, every write of a
// deposed leader carries a lower epoch and is refused — even when that
// leader was paused (GC, SIGSTOP, a full disk) and has not yet noticed that
// its lease ran out. Equal epochs are accepted because one leadership
// writes many times under one token. Epoch 0 is never granted ("never
// led"), so a zero token is always refused: it is a caller that forgot to
// attach its token.
//
// A fence protects only the resource that owns it, and only if every write
// to that resource goes through it. A resource that lives in a database
// keeps the highest epoch in the rows it protects and makes the check and
// the write one conditional statement, so that the database's own
// atomicity plays the role of Check:
//
//	UPDATE accounts SET balance = $3, epoch = $2
//	 WHERE shard = $1 AND epoch <= $2
//
//	INSERT INTO accounts (shard, epoch, balance) VALUES ($1, $2, $3)
//	ON CONFLICT (shard) DO UPDATE
//	   SET epoch = EXCLUDED.epoch, balance = EXCLUDED.balance
//	 WHERE accounts.epoch <= EXCLUDED.epoch
//
// with $1 the token's shard and $2 its epoch. Zero rows affected means a
// newer leader has written: treat it as ErrStaleEpoch. Refuse epoch 0
// before running the statement. See Example_sqlFence.
//
// The zero Fence is ready to use and accepts any nonzero epoch. A Fence is
// safe for concurrent use; it must not be copied after first use. Checks of
// a shard already seen take no lock and do not allocate. Memory grows with
// the number of distinct shards checked and is never given back.
type Fence struct {
	// highest maps a shard (uint32) to its *atomic.Uint64, the highest
	// epoch accepted for it. Entries are never deleted or replaced, so
	// every Check of a shard works on the same counter.
	highest sync.Map
}

// Check accepts t, returning nil, iff t.Epoch is nonzero and at least the
// highest epoch accepted for t.Shard; accepting raises that highest epoch
// to t.Epoch. Otherwise it returns a *StaleTokenError, which matches
// ErrStaleEpoch, and leaves the fence unchanged.
//
// Concurrent checks of one shard behave as if run one at a time in some
// order consistent with their calls and returns: a refusal always names,
// in Highest, an epoch that some Check accepted.
func (f *Fence) Check(t lease.Token) error {
	if t.Epoch == 0 {
		return &StaleTokenError{Shard: t.Shard, Highest: f.Highest(t.Shard)}
	}
	h := f.counter(t.Shard)
	for {
		cur := h.Load()
		if t.Epoch < cur {
			return &StaleTokenError{Shard: t.Shard, Epoch: t.Epoch, Highest: cur}
		}
		// Equal: nothing to raise. Higher: raise it unless another Check
		// changed it since the Load, in which case compare again.
		if t.Epoch == cur || h.CompareAndSwap(cur, t.Epoch) {
			return nil
		}
	}
}

// Highest returns the highest epoch the fence has accepted for shard, or 0
// if it has accepted none.
func (f *Fence) Highest(shard uint32) uint64 {
	if h, ok := f.highest.Load(shard); ok {
		return h.(*atomic.Uint64).Load()
	}
	return 0
}

// counter returns shard's counter, creating it on first use.
func (f *Fence) counter(shard uint32) *atomic.Uint64 {
	if h, ok := f.highest.Load(shard); ok {
		return h.(*atomic.Uint64)
	}
	h, _ := f.highest.LoadOrStore(shard, new(atomic.Uint64))
	return h.(*atomic.Uint64)
}
