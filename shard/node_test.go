package shard_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const converge = 20 * time.Second

func TestClusterConvergesToIdenticalTables(t *testing.T) {
	c := shardtest.NewCluster(t, 5, 1024)
	c.WaitAgree(converge, c.IDs()...)
	tab := c.Node("node-1").Table()
	counts := tab.DesiredCounts()
	for _, id := range c.IDs() {
		// Bounded load 1.25 over 5 nodes: at most ceil(204 × 1.25) each.
		if counts[id] == 0 || counts[id] > 255 {
			t.Errorf("%s owns %d of 1024 shards", id, counts[id])
		}
	}
	for s := range 1024 {
		e, err := tab.Shard(int64(s))
		if err != nil || e.Desired == "" || e.Addr != e.Desired+".test:7000" || e.State != shard.Unled {
			t.Fatalf("shard %d: %+v, %v", s, e, err)
		}
	}
	if e := c.Node("node-3").LookupString("subscription/42"); e.Shard != shard.OfString("subscription/42", 1024) {
		t.Fatalf("Lookup put the key in shard %d, want %d", e.Shard, shard.OfString("subscription/42", 1024))
	}
}

func TestCrashRemovesNodeFromEveryTable(t *testing.T) {
	c := shardtest.NewCluster(t, 5, 256)
	c.WaitAgree(converge, c.IDs()...)
	c.Crash("node-4")
	c.WaitAgree(converge, c.IDs()...)
}

func TestLeaveRemovesNodeFromEveryTable(t *testing.T) {
	c := shardtest.NewCluster(t, 5, 256)
	c.WaitAgree(converge, c.IDs()...)
	began := time.Now()
	c.Leave("node-2")
	c.WaitAgree(converge, c.IDs()...)
	t.Logf("graceful leave reflected in every table after %v", time.Since(began))
}

func TestPartitionHeals(t *testing.T) {
	c := shardtest.NewCluster(t, 5, 256)
	all := c.IDs()
	c.WaitAgree(converge, all...)
	major, minor := []string{"node-1", "node-2", "node-3"}, []string{"node-4", "node-5"}
	c.Net.Partition(major, minor)
	// Each side drops the other and assigns every shard among its own.
	c.WaitAgree(converge, major...)
	c.WaitAgree(converge, minor...)
	// The partition lasts beyond memberlist's gossip to the dead (1 s in
	// the Local profile), after which memberlist alone never merges the
	// sides again: only the rejoin loop can.
	holdFault(2 * time.Second)
	c.Net.Heal()
	began := time.Now()
	c.WaitAgree(converge, all...)
	t.Logf("partition healed: all nodes agree again %v after the network healed", time.Since(began))
}

func TestOneWayPartitionHeals(t *testing.T) {
	c := shardtest.NewCluster(t, 3, 128)
	all := c.IDs()
	c.WaitAgree(converge, all...)
	c.Net.Block("node-3", "node-1")
	c.Net.Block("node-3", "node-2")
	shardtest.Eventually(t, converge, func() bool { return !c.Agree(all, all) }, "the one-way cut changes some view")
	holdFault(2 * time.Second)
	c.Net.Heal()
	c.WaitAgree(converge, all...)
}

// holdFault keeps a fault in place for d. It is part of the scenario (how
// long the network stays cut), not a wait for a result.
func holdFault(d time.Duration) { <-time.After(d) }

func TestJoinWithOtherShardCountIsRefused(t *testing.T) {
	c := shardtest.NewCluster(t, 2, 64)
	c.WaitAgree(converge, c.IDs()...)
	cfg := c.Config("odd")
	cfg.Shards = 128
	n, err := shard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	err = n.Start(context.Background())
	if !errors.Is(err, membership.ErrIncompatible) || !strings.Contains(err.Error(), "shards is 64 there, 128 here") {
		t.Fatalf("Start = %v, want a refusal naming the shard counts", err)
	}
	c.Add("node-3")
	c.WaitAgree(converge, c.IDs()...)
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  shard.Config
		want string
	}{
		{"no node ID", shard.Config{Shards: 8}, "NodeID"},
		{"no shards", shard.Config{NodeID: "a"}, "Shards"},
		{"bad load", shard.Config{NodeID: "a", Shards: 8, Load: 0.9}, "Load"},
		{"bad gossip address", shard.Config{NodeID: "a", Shards: 8, GossipAddr: "nowhere"}, "BindAddr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := shard.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// Lookups run lock-free against whatever table is current while membership
// changes underneath; the race detector checks the publication.
func TestLookupWhileMembershipChanges(t *testing.T) {
	c := shardtest.NewCluster(t, 3, 512)
	c.WaitAgree(converge, c.IDs()...)
	n := c.Node("node-1")
	var stop atomic.Bool
	var wg sync.WaitGroup
	var lookups atomic.Int64
	for range 2 {
		wg.Go(func() {
			key := []byte("k0000")
			for i := 0; !stop.Load(); i++ {
				key[4] = byte('0' + i%10)
				if e := n.Lookup(key); int(e.Shard) >= 512 {
					t.Errorf("shard %d out of range", e.Shard)
					return
				}
				lookups.Add(1)
			}
		})
	}
	changed := n.Changed()
	c.Add("node-4")
	c.Crash("node-2")
	c.WaitAgree(converge, c.IDs()...)
	stop.Store(true)
	wg.Wait()
	select {
	case <-changed:
	default:
		t.Fatal("the table never changed")
	}
	if lookups.Load() == 0 {
		t.Fatal("no lookups ran")
	}
}
