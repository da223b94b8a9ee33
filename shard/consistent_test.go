package shard_test

import (
	"fmt"
	"testing"

	"github.com/buraksezer/consistent"
)

// These rows feed buraksezer/consistent directly with the inputs Assign
// guards against, and expect it to misbehave. If an upgrade fixes one, the
// row fails and the guard in Assign can be reconsidered.
func TestConsistentMisbehavesOnRawInputs(t *testing.T) {
	names := func(ids ...string) []consistent.Member {
		var ms []consistent.Member
		for _, id := range ids {
			ms = append(ms, benchMember(id))
		}
		return ms
	}
	numbered := func(n int) []consistent.Member {
		var ms []consistent.Member
		for i := range n {
			ms = append(ms, benchMember(fmt.Sprintf("node-%d", i)))
		}
		return ms
	}
	tests := []struct {
		name    string
		members []consistent.Member
		cfg     consistent.Config
	}{
		{"members outnumber shards", numbered(12), consistent.Config{PartitionCount: 5, ReplicationFactor: 20, Load: 1.25}},
		{"load 1.0 with P mod N != 0", numbered(10), consistent.Config{PartitionCount: 271, ReplicationFactor: 20, Load: 1.0}},
		{"replication factor 1", numbered(7), consistent.Config{PartitionCount: 7, ReplicationFactor: 1, Load: 1.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Hasher = benchHasher{}
			defer func() {
				if recover() == nil {
					t.Fatal("consistent.New did not panic")
				}
			}()
			consistent.New(tt.members, tt.cfg)
		})
	}
	t.Run("colliding names", func(t *testing.T) {
		// "node-1" replica 10 and "node-11" replica 0 hash the same
		// string, so the ring holds fewer points than members × factor
		// and Remove of the overwritten member dereferences nil.
		c := consistent.New(names("node-1", "node-11"), consistent.Config{
			Hasher: benchHasher{}, PartitionCount: 64, ReplicationFactor: 20, Load: 1.25,
		})
		defer func() {
			if recover() == nil {
				t.Fatal("Remove after a name collision did not panic")
			}
		}()
		c.Remove("node-11")
		c.Remove("node-1")
		c.LocateKey([]byte("k"))
	})
}
