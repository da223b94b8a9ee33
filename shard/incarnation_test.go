package shard_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// gossipIncarnation returns the incarnation node from advertises for
// member id, or 0.
func gossipIncarnation(from *shard.Node, id string) uint64 {
	for _, m := range from.Members() {
		if m.NodeID == id {
			return m.Incarnation
		}
	}
	return 0
}

// A node restarted after its wall clock stepped back an hour still takes
// an incarnation above its last one — from its data directory, or, without
// one, from the voters' Stale reply — advertises it in gossip, leads again
// and receives handoffs (which name their target by the incarnation gossip
// shows).
func TestRestartAfterWallClockStepsBack(t *testing.T) {
	tests := []struct {
		name    string
		dataDir bool
	}{
		{name: "with a data directory", dataDir: true},
		{name: "without one", dataDir: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var back atomic.Bool
			dir := t.TempDir()
			c := shardtest.NewLeaseCluster(t, 0, 3, 16, testLease)
			c.Configure = func(cfg *shard.Config) {
				cfg.Planner = rebalance.Policy{}
				if cfg.NodeID != "node-4" {
					return
				}
				if tt.dataDir {
					cfg.DataDir = dir
				}
				*cfg = shard.WithWallClock(*cfg, func() time.Time {
					if back.Load() {
						return time.Now().Add(-time.Hour)
					}
					return time.Now()
				})
			}
			for i := 1; i <= 4; i++ {
				c.Add(fmt.Sprintf("node-%d", i))
			}
			shardtest.Eventually(t, converge, func() bool {
				return len(c.Node("node-4").Leases()) > 0 && c.AllLedOnceBy(c.IDs()...)
			}, "node-4 leads its share")
			n1 := c.Node("node-1")
			before := gossipIncarnation(n1, "node-4")
			if before == 0 {
				t.Fatal("node-1 sees no incarnation for node-4")
			}

			c.Crash("node-4")
			back.Store(true)
			n4 := c.Restart("node-4")
			shardtest.Eventually(t, converge, func() bool {
				return gossipIncarnation(n1, "node-4") == before+1
			}, "node-1 sees node-4 at incarnation %d (one above its last), sees %d", before+1, gossipIncarnation(n1, "node-4"))
			if tt.dataDir {
				b, err := os.ReadFile(filepath.Join(dir, shard.IncarnationFile))
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.TrimSpace(string(b)); got != strconv.FormatUint(before+1, 10) {
					t.Fatalf("%s holds %s, want %d", shard.IncarnationFile, got, before+1)
				}
			}
			shardtest.Eventually(t, converge, func() bool {
				return len(n4.Leases()) > 0 && c.AllLedOnceBy(c.IDs()...)
			}, "the restarted node-4 leads again")
			s := firstShard(n1)
			shardtest.Eventually(t, converge, func() bool {
				err := n1.Transfer(context.Background(), s, "node-4")
				if err != nil && !errors.Is(err, shard.ErrUnknownNode) {
					t.Fatalf("Transfer to the restarted node-4: %v", err)
				}
				return err == nil
			}, "node-1 hands shard %d to the restarted node-4", s)
		})
	}
}
