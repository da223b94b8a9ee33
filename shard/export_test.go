package shard

import "time"

// WithWallClock returns cfg with the wall clock a node reads for its
// incarnation replaced by now (tests step it back).
func WithWallClock(cfg Config, now func() time.Time) Config {
	cfg.wallClock = now
	return cfg
}
