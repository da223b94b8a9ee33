package shard

import (
	"slices"
	"testing"
)

func TestLeaderGossipHighestEpochWins(t *testing.T) {
	a, b := newLeaderGossip("a", "a:1"), newLeaderGossip("b", "b:1")
	c := newLeaderGossip("c", "c:1")
	a.lead(1, 5)
	b.lead(1, 7) // b took shard 1 over; a's news of losing it is late
	b.lead(2, 3)
	for _, m := range a.flush() {
		c.NotifyMsg(m)
	}
	for _, m := range b.flush() {
		c.NotifyMsg(m)
	}
	best := c.best()
	if got := best[1]; got.node != "b" || got.epoch != 7 || got.addr != "b:1" {
		t.Fatalf("shard 1: %+v, want b at 7", got)
	}
	a.unlead(1, 5)
	for _, m := range a.flush() {
		c.NotifyMsg(m)
	}
	if got := c.best()[1]; got.node != "b" {
		t.Fatalf("after a's late loss, shard 1: %+v", got)
	}
	b.unlead(2, 3)
	c.MergeRemoteState(b.LocalState()) // the full set replaces b's claims
	if _, ok := c.best()[2]; ok {
		t.Fatal("shard 2 still claimed after b's full state dropped it")
	}
	c.forget("b")
	if got, ok := c.best()[1]; ok {
		t.Fatalf("claims of a forgotten node remain: %+v", got)
	}
	if !c.takeDirty() || c.takeDirty() {
		t.Fatal("dirty flag not set once")
	}
}

func TestLeaderGossipMessagesFitOnePacket(t *testing.T) {
	g := newLeaderGossip("a-node-with-a-long-name-0123456789012345678901234567890123", "some.host.example:65535")
	for s := range uint32(1000) {
		g.lead(s, 1<<40+uint64(s))
	}
	msgs := g.flush()
	total := 0
	for _, m := range msgs {
		if len(m) > 1200 {
			t.Fatalf("message of %d bytes", len(m))
		}
		_, _, _, cs, err := decodeClaims(m)
		if err != nil {
			t.Fatal(err)
		}
		total += len(cs)
	}
	if total != 1000 {
		t.Fatalf("%d claims decoded, want 1000", total)
	}
}

func FuzzDecodeClaims(f *testing.F) {
	f.Add(encodeClaims(kindDelta, "n", "a:1", []claim{{shard: 3, epoch: 9, led: true}}))
	f.Add([]byte{1, 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, node, addr, cs, err := decodeClaims(b)
		if err != nil {
			return
		}
		again := encodeClaims(kind, node, addr, cs)
		k2, n2, a2, cs2, err := decodeClaims(again)
		if err != nil || k2 != kind || n2 != node || a2 != addr || !slices.Equal(cs, cs2) {
			t.Fatalf("re-decode differs: %v", err)
		}
	})
}
