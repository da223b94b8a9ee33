package scalesim

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/shard"
)

// BenchmarkHolderTick measures one tick of a holder that leads P/N shards
// (65536 shards over 1000, 100 and 10 nodes): what a node's loop pays
// every 10 ms.
func BenchmarkHolderTick(b *testing.B) {
	for _, led := range []int{65, 655, 6554} {
		b.Run(fmt.Sprintf("led=%d", led), func(b *testing.B) {
			h, now := leadingHolder(b, led)
			b.ResetTimer()
			for b.Loop() {
				h.Tick(now)
			}
		})
	}
}

// BenchmarkVoterKeepAlive measures a voter answering a keep-alive from a
// node that holds P/N records, Held list included.
func BenchmarkVoterKeepAlive(b *testing.B) {
	for _, held := range []int{65, 655, 6554} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			v, err := lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: time.Second, Boot: 1}, nil, 0)
			if err != nil {
				b.Fatal(err)
			}
			var ops []lease.Op
			for s := range held {
				ops = append(ops, lease.Op{Kind: lease.OpGrant, Shard: uint32(s), Epoch: 1})
			}
			v.Handle(lease.Request{From: "n1", Inc: 1, Seq: 1, Ops: ops}, 1)
			seq := uint64(1)
			b.ResetTimer()
			for b.Loop() {
				seq++
				rep, _ := v.Handle(lease.Request{From: "n1", Inc: 1, Seq: seq}, lease.Time(seq))
				if len(rep.Held) != held {
					b.Fatalf("held %d records, want %d", len(rep.Held), held)
				}
			}
		})
	}
}

// BenchmarkPlan measures rebalance.Plan over 65536 shards, all led, with
// N members: what every node pays per replan.
func BenchmarkPlan(b *testing.B) {
	const shards = 65536
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			ms := make([]shard.Member, n)
			for i := range ms {
				ms[i] = shard.Member{ID: nodeID(i + 1), Weight: 1}
			}
			cur, _, err := rebalance.Plan(rebalance.Policy{}, shards, make([]string, shards), ms)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := rebalance.Plan(rebalance.Policy{}, shards, cur, ms); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// leadingHolder returns a holder that leads shards 0..led-1 at three
// voters, and the time it does.
func leadingHolder(b *testing.B, led int) (*lease.Holder, lease.Time) {
	ids := []string{"v1", "v2", "v3"}
	h, err := lease.NewHolder(lease.HolderConfig{ID: "n1", Inc: 1, Voters: ids, LeaseDuration: time.Second,
		Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		b.Fatal(err)
	}
	vs := map[string]*lease.Voter{}
	for _, id := range ids {
		if vs[id], err = lease.NewVoter(lease.VoterConfig{ID: id, LeaseDuration: time.Second, Boot: 1}, nil, 0); err != nil {
			b.Fatal(err)
		}
	}
	for s := range led {
		h.SetDesired(uint32(s), true)
	}
	now := lease.Time(0)
	for range 3 {
		for _, env := range h.Tick(now) {
			rep, _ := vs[env.To].Handle(env.Req, now)
			h.Step(rep, now)
		}
		now = now.Add(10 * time.Millisecond)
	}
	if got := len(h.Led(now)); got != led {
		b.Fatalf("the holder leads %d shards, want %d", got, led)
	}
	return h, now
}
