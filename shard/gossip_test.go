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
	best := c.best(1024)
	if got := best[1]; got.node != "b" || got.epoch != 7 || got.addr != "b:1" {
		t.Fatalf("shard 1: %+v, want b at 7", got)
	}
	a.unlead(1, 5)
	for _, m := range a.flush() {
		c.NotifyMsg(m)
	}
	if got := c.best(1024)[1]; got.node != "b" {
		t.Fatalf("after a's late loss, shard 1: %+v", got)
	}
	b.unlead(2, 3)
	c.MergeRemoteState(b.LocalState()) // the full set replaces b's claims
	if c.best(1024)[2].node != "" {
		t.Fatal("shard 2 still claimed after b's full state dropped it")
	}
	c.forget("b")
	if got := c.best(1024)[1]; got.node != "" {
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

// A lost unlead delta must not leave a stale claim behind: while peers
// believed the sender led the shard, none would acquire it. The refresh
// repairs it.
func TestLeaderGossipRefreshDropsClaimsWhoseReleaseWasLost(t *testing.T) {
	a, c := newLeaderGossip("a", "a:1"), newLeaderGossip("c", "c:1")
	for s := range uint32(200) {
		a.lead(s, 10)
	}
	for _, m := range a.flush() {
		c.NotifyMsg(m)
	}
	a.unlead(7, 10)
	a.unlead(150, 10)
	a.unlead(199, 10)
	a.flush() // lost on the way
	if got := c.best(1024)[150]; got.node != "a" {
		t.Fatalf("setup: shard 150 = %+v", got)
	}
	c.takeDirty()
	for _, m := range a.refresh() {
		c.NotifyMsg(m)
	}
	best := c.best(1024)
	for _, s := range []uint32{7, 150, 199} {
		if got := best[s]; got.node != "" {
			t.Errorf("shard %d still claimed by %+v after the refresh", s, got)
		}
	}
	claimed := 0
	for _, r := range best {
		if r.node != "" {
			claimed++
		}
	}
	if claimed != 197 {
		t.Errorf("%d shards claimed after the refresh, want 197", claimed)
	}
	if !c.takeDirty() {
		t.Error("the repair did not mark the claims dirty")
	}

	// A node that leads nothing says so, and a claim newer than the
	// refresh (a delta that overtook it) stays.
	b := newLeaderGossip("b", "b:1")
	b.lead(303, 4)
	for _, m := range b.flush() {
		c.NotifyMsg(m)
	}
	b.unlead(303, 4)
	b.flush() // lost
	stale := b.refresh()
	b.lead(305, 9)
	for _, m := range b.flush() {
		c.NotifyMsg(m)
	}
	c.NotifyMsg(encodeRange("b", "b:1", 0, rangeEnd, []claim{{shard: 305, epoch: 2, led: true}})) // older than the delta
	if got := c.best(1024)[305]; got.node != "b" || got.epoch != 9 {
		t.Errorf("shard 305 = %+v, want b at 9: an older range message lowered a newer claim", got)
	}
	for _, m := range stale {
		c.NotifyMsg(m)
	}
	if got := c.best(1024)[303]; got.node != "" {
		t.Errorf("shard 303 still claimed by %+v after b's empty refresh", got)
	}
}

func TestRangeMessagesCoverEveryShard(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 1000} {
		var cs []claim
		for i := range n {
			cs = append(cs, claim{shard: uint32(i * 3), epoch: uint64(i + 1), led: true})
		}
		next, total := uint64(0), 0
		for _, m := range rangeClaims("n", "n:1", cs) {
			if len(m) > 1200 {
				t.Fatalf("%d claims: message of %d bytes", n, len(m))
			}
			node, addr, lo, hi, got, err := decodeRange(m)
			if err != nil || node != "n" || addr != "n:1" {
				t.Fatalf("%d claims: decode: %q %q %v", n, node, addr, err)
			}
			if lo != next {
				t.Fatalf("%d claims: a range starts at %d, want %d", n, lo, next)
			}
			next, total = hi, total+len(got)
		}
		if next != rangeEnd || total != n {
			t.Errorf("%d claims: ranges end at %d with %d claims, want %d and %d", n, next, total, rangeEnd, n)
		}
	}
}

func FuzzDecodeRange(f *testing.F) {
	f.Add(encodeRange("n", "a:1", 0, rangeEnd, []claim{{shard: 3, epoch: 9, led: true}}))
	f.Add(encodeRange("n", "a:1", 5, 6, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		node, addr, lo, hi, cs, err := decodeRange(b)
		if err != nil {
			return
		}
		again := encodeRange(node, addr, lo, hi, cs)
		n2, a2, lo2, hi2, cs2, err := decodeRange(again)
		if err != nil || n2 != node || a2 != addr || lo2 != lo || hi2 != hi || !slices.Equal(cs, cs2) {
			t.Fatalf("re-decode differs: %v", err)
		}
	})
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
