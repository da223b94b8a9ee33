package shard

import (
	"errors"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// ID is a shard number in [0, P). P is fixed for the life of a cluster.
type ID uint32

// MaxShards is the largest shard count a cluster may use.
const MaxShards = 1 << 20

// MeasuredShards is the largest shard count measured to settle on three
// nodes (every one a voter, 2 shared cores): 32,768 settle in 6.4 s from a
// cold start as three processes and fail over in 2.2 s; 65,536 do not
// settle yet (see docs/design-notes.md, notes 40 and 41). A node started
// with more logs a warning.
const MeasuredShards = 32768

// MaxKeyBytes is the largest key the network services accept. The
// in-process Lookup hashes keys of any length; the limit exists so that a
// remote caller cannot make a node hash megabytes per request.
const MaxKeyBytes = 4096

// ErrUnknownShard is returned for a shard number outside [0, P).
var ErrUnknownShard = errors.New("unknown shard")

// ErrKeyTooLarge is returned for a key longer than MaxKeyBytes.
var ErrKeyTooLarge = errors.New("key too large")

// Of returns the shard of key: xxhash64(key) mod p. Every node and every
// client uses this function, so it must never change for a given p.
// p must be at least 1.
func Of(key []byte, p int) ID {
	return ID(xxhash.Sum64(key) % uint64(p))
}

// OfString is Of for a string key, without converting it to a byte slice.
func OfString(key string, p int) ID {
	return ID(xxhash.Sum64String(key) % uint64(p))
}

// CheckKey returns an error wrapping ErrKeyTooLarge if key is longer than
// MaxKeyBytes. Services call it on keys that come from the network.
func CheckKey(key []byte) error {
	if len(key) > MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), MaxKeyBytes)
	}
	return nil
}

// CheckShard returns an error wrapping ErrUnknownShard unless s is in [0, p).
func CheckShard(s int64, p int) error {
	if s < 0 || s >= int64(p) {
		return fmt.Errorf("%w: %d is outside [0, %d)", ErrUnknownShard, s, p)
	}
	return nil
}
