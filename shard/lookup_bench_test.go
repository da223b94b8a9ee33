package shard_test

import (
	"fmt"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"

	"github.com/tenurehq/tenure/shard"
)

// The lookup benchmarks compare Tenure's lookup with consistent's own
// LocateKey over the same members, shard count and keys.
const (
	benchShards  = 1024
	benchMembers = 16
	benchKeys    = 1 << 12 // a power of two, so the key index is a mask
)

func benchKeySet() [][]byte {
	keys := make([][]byte, benchKeys)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "subscription/%08d", i)
	}
	return keys
}

func benchMemberSet() []shard.Member {
	members := make([]shard.Member, benchMembers)
	for i := range members {
		members[i] = shard.Member{ID: fmt.Sprintf("node-%d", i), Addr: fmt.Sprintf("10.0.0.%d:7000", i), Weight: 1}
	}
	return members
}

func benchDirectory(b *testing.B) *shard.Directory {
	a, err := shard.Assign(shard.AssignConfig{Shards: benchShards}, benchMemberSet())
	if err != nil {
		b.Fatal(err)
	}
	var d shard.Directory
	d.Publish(shard.TableFromAssignment(1, a))
	return &d
}

type benchMember string

func (m benchMember) String() string { return string(m) }

type benchHasher struct{}

func (benchHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

func benchConsistent() *consistent.Consistent {
	var members []consistent.Member
	for _, m := range benchMemberSet() {
		members = append(members, benchMember(m.ID+"/"))
	}
	return consistent.New(members, consistent.Config{
		Hasher: benchHasher{}, PartitionCount: benchShards,
		ReplicationFactor: shard.DefaultReplicationFactor, Load: shard.DefaultLoad,
	})
}

// sink keeps the compiler from discarding lookups.
var sink string

func BenchmarkLookup(b *testing.B) {
	d, keys := benchDirectory(b), benchKeySet()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sink = d.Lookup(keys[i&(benchKeys-1)]).Addr
		i++
	}
}

func BenchmarkLookupParallel(b *testing.B) {
	d, keys := benchDirectory(b), benchKeySet()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var last string
		i := 0
		for pb.Next() {
			last = d.Lookup(keys[i&(benchKeys-1)]).Addr
			i++
		}
		sink = last
	})
}

func BenchmarkConsistentLocateKey(b *testing.B) {
	c, keys := benchConsistent(), benchKeySet()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sink = c.LocateKey(keys[i&(benchKeys-1)]).String()
		i++
	}
}

func BenchmarkConsistentLocateKeyParallel(b *testing.B) {
	c, keys := benchConsistent(), benchKeySet()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var last string
		i := 0
		for pb.Next() {
			last = c.LocateKey(keys[i&(benchKeys-1)]).String()
			i++
		}
		sink = last
	})
}
