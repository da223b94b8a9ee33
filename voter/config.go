package voter

import (
	"fmt"
	"log/slog"
	"slices"
	"time"

	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
)

// Config configures a Server. Open works on a copy, fills defaults in it and
// never modifies the caller's value.
type Config struct {
	// ID is the voter's ID, the NodeID of the node that runs it. Replies
	// carry it and the store records it at Init, so a data directory copied
	// to another voter refuses to open. Required, at most
	// voterv1.MaxStringLen bytes.
	ID string

	// Cluster is the cluster's name. The voter refuses requests of any other
	// cluster (codes.FailedPrecondition), and the store records it at Init.
	// Required, at most voterv1.MaxStringLen bytes.
	Cluster string

	// Voters is the IDs of every voter of the cluster, this one included,
	// the same set on every node and voter. The store records it and Open
	// refuses a different set (voterstore.ErrWrongVoterSet), and the voter
	// refuses requests from nodes configured with another set
	// (codes.FailedPrecondition, ErrWrongVoterSet): nodes that count
	// majorities over different sets could both lead a shard. Changing the
	// set needs a reconfiguration protocol, not a restart with a new list.
	// Optional: nil checks nothing (a store opened without it keeps what
	// it recorded).
	Voters []string

	// Dir is the data directory; the store lives in Dir/voter.db. Required.
	Dir string

	// Init creates the store, like formatting storage: set it on the
	// voter's first start, and to re-initialise a voter that lost its store,
	// which is safe only after it has copied the highest record of every
	// shard from a majority of the other voters, or when the whole cluster
	// is re-initialised. Open refuses a missing store without Init and an
	// existing one with it, and Init refuses a directory whose marker says
	// it held a store before (voterstore.ErrReinit). A new store still
	// starts in its grace period (see Open). See voterstore.Options.Init.
	Init bool

	// LeaseDuration (LD) is how long a node's session stays live after its
	// last keep-alive, on this voter's clock, and how long the voter grants
	// nothing after Open. Every node and voter of a cluster must use the
	// same value: the voter refuses a request that names another
	// (codes.FailedPrecondition, ErrWrongLeaseDuration). Required,
	// positive.
	LeaseDuration time.Duration

	// Logger receives the voter's events: its start, whether it is in its
	// grace period, a store failure and its close. Default: discard.
	Logger *slog.Logger

	// Clock returns monotonic time since an arbitrary origin. It must never
	// go backwards and must run at real time within the cluster's
	// MaxClockDrift. It may be called concurrently. Default: time elapsed
	// since Open, read from Go's monotonic clock. Tests inject a fake.
	Clock func() time.Duration

	// OnCommit, if set, is called after each commit of the voter's store
	// with the records written and the commit's duration, fsync included
	// (see voterstore.Options.OnCommit). Nodes export it as a metric.
	OnCommit func(records int, took time.Duration)
}

// withDefaults returns a copy of c with zero fields filled.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		// time.Since reads the monotonic clock reading that time.Now
		// embeds, so wall-clock steps do not move it.
		start := time.Now()
		c.Clock = func() time.Duration { return time.Since(start) }
	}
	return c
}

// Validate reports the first invalid field of c, by name. Every error it
// returns wraps ErrConfig.
func (c Config) Validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("voter: Config.ID is empty: %w", ErrConfig)
	case len(c.ID) > voterv1.MaxStringLen:
		return fmt.Errorf("voter: Config.ID is %d bytes, limit %d: %w", len(c.ID), voterv1.MaxStringLen, ErrConfig)
	case c.Cluster == "":
		return fmt.Errorf("voter: Config.Cluster is empty: %w", ErrConfig)
	case len(c.Cluster) > voterv1.MaxStringLen:
		return fmt.Errorf("voter: Config.Cluster is %d bytes, limit %d: %w", len(c.Cluster), voterv1.MaxStringLen, ErrConfig)
	case c.Voters != nil && !slices.Contains(c.Voters, c.ID):
		return fmt.Errorf("voter: Config.Voters %q does not include this voter's ID %q: %w", c.Voters, c.ID, ErrConfig)
	case c.Dir == "":
		return fmt.Errorf("voter: Config.Dir is empty: %w", ErrConfig)
	case c.LeaseDuration <= 0:
		return fmt.Errorf("voter: Config.LeaseDuration must be positive, got %v: %w", c.LeaseDuration, ErrConfig)
	}
	return nil
}
