package shard_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/tenurehq/tenure/shard"
)

func members(ids ...string) []shard.Member {
	ms := make([]shard.Member, len(ids))
	for i, id := range ids {
		ms[i] = shard.Member{ID: id, Addr: id + ":7000", Weight: 1}
	}
	return ms
}

func numbered(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%d", i)
	}
	return ids
}

// checkComplete fails unless every shard has an owner among ms and no owner
// exceeds the bounded-load cap for load.
func checkComplete(t *testing.T, a *shard.Assignment, p int, load float64) {
	t.Helper()
	eligible := 0
	for _, m := range a.Members() {
		if m.Weight > 0 {
			eligible++
		}
	}
	n := min(eligible, p)
	limit := int(math.Ceil(float64(p/n) * load))
	for s := range p {
		if _, ok := a.Owner(shard.ID(s)); !ok {
			t.Fatalf("shard %d has no owner", s)
		}
	}
	total := 0
	for id, c := range a.Counts() {
		if c > limit {
			t.Errorf("%s owns %d shards, cap is %d", id, c, limit)
		}
		total += c
	}
	if total != p {
		t.Errorf("owners add up to %d shards, want %d", total, p)
	}
}

// Each row is an input on which buraksezer/consistent v0.10.0 panics when
// used directly; Assign must return a complete assignment instead.
func TestAssignInputsThatPanicConsistent(t *testing.T) {
	tests := []struct {
		name    string
		cfg     shard.AssignConfig
		members []shard.Member
	}{
		{"members outnumber shards", shard.AssignConfig{Shards: 5}, members(numbered(12)...)},
		{"one shard many members", shard.AssignConfig{Shards: 1}, members(numbered(3)...)},
		{"load 1.0 with P mod N != 0", shard.AssignConfig{Shards: 271, Load: 1.0}, members(numbered(10)...)},
		{"load 1.0 with P just above N", shard.AssignConfig{Shards: 11, Load: 1.0}, members(numbered(10)...)},
		{"names colliding with replica index", shard.AssignConfig{Shards: 64},
			members("node-1", "node-11", "node-111", "node-1110", "a", "a1", "a11")},
		{"minimum replication factor", shard.AssignConfig{Shards: 97, ReplicationFactor: 2}, members(numbered(7)...)},
		{"P equals N at load 1.0", shard.AssignConfig{Shards: 7, Load: 1.0, ReplicationFactor: 2}, members(numbered(7)...)},
		{"load just above 1", shard.AssignConfig{Shards: 4099, Load: 1.0000001}, members(numbered(13)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := shard.Assign(tt.cfg, tt.members)
			if err != nil {
				t.Fatalf("Assign: %v", err)
			}
			load := tt.cfg.Load
			if load == 0 {
				load = shard.DefaultLoad
			}
			// The cap is computed with the load Assign may have raised;
			// the invariant that matters is completeness.
			checkComplete(t, a, tt.cfg.Shards, max(load, 2))
		})
	}
}

func TestAssignCollidingNamesAreDistinctMembers(t *testing.T) {
	// Without a separator, "node-1" replica 10 and "node-11" replica 0
	// hash the same string and one replaces the other on the ring.
	a, err := shard.Assign(shard.AssignConfig{Shards: 1024, ReplicationFactor: 20},
		members("node-1", "node-11"))
	if err != nil {
		t.Fatal(err)
	}
	counts := a.Counts()
	if counts["node-1"] == 0 || counts["node-11"] == 0 {
		t.Fatalf("both members must own shards, got %v", counts)
	}
}

func TestAssignMoreMembersThanShards(t *testing.T) {
	a, err := shard.Assign(shard.AssignConfig{Shards: 4}, members(numbered(9)...))
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, a, 4, shard.DefaultLoad)
	owners := 0
	for _, c := range a.Counts() {
		if c > 0 {
			owners++
		}
	}
	if owners > 4 {
		t.Fatalf("%d members own shards; only P=4 may enter the ring: %v", owners, a.Counts())
	}
}

func TestAssignRejectsBadInput(t *testing.T) {
	tests := []struct {
		name    string
		cfg     shard.AssignConfig
		members []shard.Member
		want    string
	}{
		{"zero shards", shard.AssignConfig{}, members("a"), "Shards"},
		{"too many shards", shard.AssignConfig{Shards: shard.MaxShards + 1}, members("a"), "Shards"},
		{"load below one", shard.AssignConfig{Shards: 8, Load: 0.5}, members("a"), "Load"},
		{"load NaN", shard.AssignConfig{Shards: 8, Load: math.NaN()}, members("a"), "Load"},
		{"replication factor one", shard.AssignConfig{Shards: 8, ReplicationFactor: 1}, members("a"), "ReplicationFactor"},
		{"duplicate member", shard.AssignConfig{Shards: 8}, members("a", "b", "a"), `"a" appears twice`},
		{"empty member ID", shard.AssignConfig{Shards: 8}, members("a", ""), "empty ID"},
		{"negative weight", shard.AssignConfig{Shards: 8}, []shard.Member{{ID: "a", Weight: -1}}, "negative weight"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := shard.Assign(tt.cfg, tt.members)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Assign error = %v, want one naming %q", err, tt.want)
			}
		})
	}
}

func TestAssignIsIndependentOfInputOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ms := members(numbered(11)...)
	want, err := shard.Assign(shard.AssignConfig{Shards: 1021}, ms)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		rng.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
		got, err := shard.Assign(shard.AssignConfig{Shards: 1021}, ms)
		if err != nil {
			t.Fatal(err)
		}
		for s := range 1021 {
			g, _ := got.Owner(shard.ID(s))
			w, _ := want.Owner(shard.ID(s))
			if g.ID != w.ID {
				t.Fatalf("shard %d: owner %s after shuffle, %s before", s, g.ID, w.ID)
			}
		}
	}
}

func TestAssignWeightZeroOwnsNothing(t *testing.T) {
	ms := members("a", "b", "voter")
	ms[2].Weight = 0
	a, err := shard.Assign(shard.AssignConfig{Shards: 64}, ms)
	if err != nil {
		t.Fatal(err)
	}
	if c := a.Counts()["voter"]; c != 0 {
		t.Fatalf("weight-0 member owns %d shards", c)
	}
	checkComplete(t, a, 64, shard.DefaultLoad)
}

func TestAssignNoEligibleMembers(t *testing.T) {
	for _, ms := range [][]shard.Member{nil, {{ID: "v", Weight: 0}}} {
		a, err := shard.Assign(shard.AssignConfig{Shards: 16}, ms)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := a.Owner(3); ok {
			t.Fatalf("shard 3 has an owner with members %v", ms)
		}
	}
}

// A property check over random sizes: Assign never fails or panics for
// valid configs, every shard gets an owner, and loads respect the cap.
func TestAssignRandomSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for range 300 {
		p := 1 + rng.IntN(600)
		n := 1 + rng.IntN(40)
		load := []float64{0, 1, 1.01, 1.1, 1.25, 2}[rng.IntN(6)]
		rf := 2 + rng.IntN(30)
		ids := make([]string, n)
		for i := range ids {
			// Short names with shared prefixes maximise separator trouble.
			ids[i] = strings.Repeat("1", 1+rng.IntN(3)) + fmt.Sprint(i)
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		cfg := shard.AssignConfig{Shards: p, Load: load, ReplicationFactor: rf}
		a, err := shard.Assign(cfg, members(ids...))
		if err != nil {
			t.Fatalf("P=%d N=%d load=%v rf=%d: %v", p, len(ids), load, rf, err)
		}
		for s := range p {
			if _, ok := a.Owner(shard.ID(s)); !ok {
				t.Fatalf("P=%d N=%d load=%v rf=%d: shard %d unowned", p, len(ids), load, rf, s)
			}
		}
	}
}

func TestKeyToShard(t *testing.T) {
	// Fixed vectors: the key→shard function is part of the wire contract
	// with clients and must never change.
	tests := []struct {
		key  string
		p    int
		want shard.ID
	}{
		{"", 1, 0},
		{"subscription/42", 1024, shard.Of([]byte("subscription/42"), 1024)},
	}
	for _, tt := range tests {
		if got := shard.OfString(tt.key, tt.p); got != tt.want {
			t.Errorf("OfString(%q, %d) = %d, want %d", tt.key, tt.p, got, tt.want)
		}
	}
	// xxhash64("") = 0xef46db3751d8e999.
	if got, want := shard.OfString("", 1000), shard.ID(0xef46db3751d8e999%1000); got != want {
		t.Errorf(`OfString("", 1000) = %d, want %d`, got, want)
	}
	if err := shard.CheckKey(make([]byte, shard.MaxKeyBytes+1)); !errors.Is(err, shard.ErrKeyTooLarge) {
		t.Errorf("CheckKey(oversize) = %v, want ErrKeyTooLarge", err)
	}
	if err := shard.CheckShard(1024, 1024); !errors.Is(err, shard.ErrUnknownShard) {
		t.Errorf("CheckShard(1024, 1024) = %v, want ErrUnknownShard", err)
	}
}
