package shard

import (
	"fmt"
	"slices"
	"testing"
)

// TestAssignCacheAnswersAsComputed checks that Assign's cache hands out
// what a fresh computation gives, keeps members apart by every field, and
// forgets the oldest entries first.
func TestAssignCacheAnswersAsComputed(t *testing.T) {
	cfg := AssignConfig{Shards: 256}.withDefaults()
	ms := func(n int, addr string) []Member {
		out := make([]Member, n)
		for i := range out {
			out[i] = Member{ID: fmt.Sprintf("n%02d", i), Addr: addr, Weight: 1}
		}
		return out
	}
	for round := range 2 { // the second round answers from the cache
		for n := 1; n <= assignCacheSize+2; n++ {
			got, err := Assign(cfg, ms(n, "a"))
			if err != nil {
				t.Fatal(err)
			}
			want, err := assign(cfg, ms(n, "a"))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.owners, want.owners) || !slices.Equal(got.members, want.members) {
				t.Fatalf("round %d, %d members: the cached assignment differs from a fresh one", round, n)
			}
		}
	}
	a, _ := Assign(cfg, ms(3, "a"))
	if b, _ := Assign(cfg, ms(3, "a")); b != a {
		t.Error("the same inputs twice in a row computed the assignment again")
	}
	if b, _ := Assign(cfg, ms(3, "b")); b == a || b.members[0].Addr != "b" {
		t.Error("members that differ only in Addr got the cached assignment")
	}
	heavier := ms(3, "a")
	heavier[1].Weight = 2
	if b, _ := Assign(cfg, heavier); b == a {
		t.Error("members that differ only in Weight got the cached assignment")
	}
	if b, _ := Assign(AssignConfig{Shards: 256, Load: 1.5}, ms(3, "a")); b == a {
		t.Error("another Load got the cached assignment")
	}
	for n := 10; n < 10+assignCacheSize; n++ {
		if _, err := Assign(cfg, ms(n, "a")); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := Assign(cfg, ms(3, "a")); b == a {
		t.Errorf("the cache kept more than %d assignments", assignCacheSize)
	}
}
