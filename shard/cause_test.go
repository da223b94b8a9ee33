package shard_test

import (
	"context"

	"github.com/tenurehq/tenure/shard"
)

func contextCauseOf(l *shard.Lease) error { return context.Cause(l.Context()) }
