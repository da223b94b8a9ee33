package shard_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// A node configured with another voter list must never lead: it counts
// majorities over a different set, so it and the cluster could each win
// one. Peers refuse it in gossip, and the voters it shares with the
// cluster refuse its requests, so it cannot gather a majority even alone.
func TestNodeWithAnotherVoterSetIsRefused(t *testing.T) {
	c := shardtest.NewLeaseCluster(t, 3, 3, 16, testLease)
	shardtest.Eventually(t, converge, c.Settled, "every shard led by its desired owner")
	before := c.Leaders()

	// node-1 and node-2 are shared; node-3 is replaced by a voter that
	// exists only in the rogue's list.
	rogueVoters := append([]shard.VoterAddr(nil), c.Voters[:2]...)
	rogueVoters = append(rogueVoters, shard.VoterAddr{ID: "elsewhere", Addr: "127.0.0.1:1"})

	t.Run("joining the cluster", func(t *testing.T) {
		cfg := c.Config("rogue-1")
		cfg.Voters = rogueVoters
		n, err := shard.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop()
		err = n.Start(context.Background())
		if !errors.Is(err, membership.ErrIncompatible) || !strings.Contains(err.Error(), "voter set") {
			t.Fatalf("Start = %v, want a gossip refusal naming the voter set", err)
		}
	})

	t.Run("alone, at the shared voters", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		cfg := c.Config("rogue-2")
		cfg.Voters, cfg.Seeds, cfg.Registerer = rogueVoters, nil, reg
		n, err := shard.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop()
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Alone in its gossip, it wants every shard and asks its voters:
		// both shared voters must have refused it, repeatedly.
		shardtest.Eventually(t, converge, func() bool {
			return voterFailures(t, reg, "node-1") >= 3 && voterFailures(t, reg, "node-2") >= 3
		}, "the shared voters refuse rogue-2's requests")
		if leases := n.Leases(); len(leases) != 0 {
			t.Fatalf("rogue-2 leads %d shards with another voter set", len(leases))
		}
	})

	if after := c.Leaders(); len(after) != len(before) {
		t.Fatalf("the cluster's leadership changed: %d shards led before, %d after", len(before), len(after))
	}
	for s, leaders := range c.Leaders() {
		for id := range leaders {
			if strings.HasPrefix(id, "rogue") {
				t.Errorf("shard %d led by %s", s, id)
			}
		}
	}
}

// voterFailures is tenure_voter_request_failures_total for one voter.
func voterFailures(t *testing.T, reg *prometheus.Registry, voter string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tenure_voter_request_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "voter" && l.GetValue() == voter {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
