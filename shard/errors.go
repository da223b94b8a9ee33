package shard

import (
	"errors"
	"fmt"
)

// ErrNotLeader is matched (with errors.Is) by the error a node returns for
// work on a shard it does not lead. A *NotLeaderError says which node it
// believes leads instead.
var ErrNotLeader = errors.New("not leader")

// NotLeaderError is the error for work sent to a node that does not lead
// the shard. It carries the leader that node knows, so that the caller
// redirects instead of guessing. It matches ErrNotLeader.
type NotLeaderError struct {
	// Shard is the shard the work was for.
	Shard uint32
	// Leader is the NodeID of the leader the node knows; empty if it knows
	// none (the shard is unled in its view).
	Leader string
	// Addr is the address to send the work to: the leader's, or the desired
	// owner's when the shard is unled. Empty if unknown.
	Addr string
	// Epoch is the known leader's epoch; 0 if none is known. A caller
	// holding a redirect of a higher epoch for the same shard should keep
	// that one.
	Epoch uint64
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		if e.Addr == "" {
			return fmt.Sprintf("shard %d: %v; leader unknown", e.Shard, ErrNotLeader)
		}
		return fmt.Sprintf("shard %d: %v; leader unknown, try %s", e.Shard, ErrNotLeader, e.Addr)
	}
	return fmt.Sprintf("shard %d: %v; leader is %s at epoch %d (%s)", e.Shard, ErrNotLeader, e.Leader, e.Epoch, e.Addr)
}

// Is reports whether target is ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
