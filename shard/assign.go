package shard

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Member is a node as the assignment sees it: an active member that may own
// shards.
type Member struct {
	// ID is the node's stable NodeID. IDs must be distinct and non-empty.
	ID string
	// Addr is the address clients use to reach the node (its gRPC address).
	Addr string
	// Zone is the failure domain the node runs in. Recorded, not yet used
	// for placement.
	Zone string
	// Weight is the node's relative capacity. A member with Weight 0 owns
	// no shards (a dedicated voter, for example). Other weights are
	// recorded; placement proportional to weight comes with the rebalancer.
	Weight int
}

// AssignConfig controls the desired assignment. The zero value is not valid:
// set Shards, and leave the rest zero for defaults.
type AssignConfig struct {
	// Shards is P, the number of shards. Required, 1..MaxShards.
	Shards int
	// Load is the bounded-load factor: no member owns more than
	// ceil(Load × P/N) shards. Higher values move fewer shards when members
	// change but balance less tightly. Default 1.25; must be ≥ 1. When the
	// value cannot fit P shards on N members (Load 1.0 with P mod N ≠ 0),
	// Assign raises it to the smallest value that fits.
	Load float64
	// ReplicationFactor is the number of points each member has on the hash
	// ring. More points balance better and cost more to compute. Default 20;
	// must be ≥ 2 (with 1, the ring walk can miss the only member with room).
	ReplicationFactor int
}

// DefaultLoad and DefaultReplicationFactor are the AssignConfig defaults.
const (
	DefaultLoad              = 1.25
	DefaultReplicationFactor = 20
)

// withDefaults returns c with zero fields set to their defaults.
func (c AssignConfig) withDefaults() AssignConfig {
	if c.Load == 0 {
		c.Load = DefaultLoad
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	return c
}

// Validate reports the first field of c (after defaults) that is out of range.
func (c AssignConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Shards < 1 || c.Shards > MaxShards:
		return fmt.Errorf("shard: AssignConfig.Shards must be in [1, %d], got %d", MaxShards, c.Shards)
	case math.IsNaN(c.Load) || math.IsInf(c.Load, 0) || c.Load < 1:
		return fmt.Errorf("shard: AssignConfig.Load must be a finite number ≥ 1, got %v", c.Load)
	case c.ReplicationFactor < 2 || c.ReplicationFactor > 1024:
		return fmt.Errorf("shard: AssignConfig.ReplicationFactor must be in [2, 1024], got %d", c.ReplicationFactor)
	}
	return nil
}

// Assignment is the desired owner of every shard: a pure function of the
// config and the member set, so every node with the same view computes the
// same Assignment. It is immutable.
type Assignment struct {
	members []Member // sorted by ID; the owners index into it
	owners  []int32  // owners[s] is the index of s's owner, or -1
}

// Shards returns P.
func (a *Assignment) Shards() int { return len(a.owners) }

// Members returns the members the assignment was computed over, sorted by
// ID, including those that own no shard: a copy, since one Assignment may
// be shared by every caller of Assign with the same inputs.
func (a *Assignment) Members() []Member { return slices.Clone(a.members) }

// Owner returns the desired owner of s; ok is false when s has none (no
// eligible member) or s is out of range.
func (a *Assignment) Owner(s ID) (m Member, ok bool) {
	if int(s) >= len(a.owners) || a.owners[s] < 0 {
		return Member{}, false
	}
	return a.members[a.owners[s]], true
}

// Counts returns the number of shards each member owns, by ID. Members that
// own nothing are present with 0.
func (a *Assignment) Counts() map[string]int {
	counts := make(map[string]int, len(a.members))
	for _, m := range a.members {
		counts[m.ID] = 0
	}
	for _, o := range a.owners {
		if o >= 0 {
			counts[a.members[o].ID]++
		}
	}
	return counts
}

// ringMember is a member as buraksezer/consistent sees it. consistent places
// replica i of a member at hash(String() + decimal(i)), so the names
// "node-1"+"10" and "node-11"+"0" collide: the second silently replaces the
// first on the ring and a later Remove dereferences nil. Appending a
// non-digit separator makes the split unambiguous — everything after the
// last '/' is the replica index — so distinct IDs never collide.
type ringMember struct {
	name string // ID + "/"
	idx  int32  // index into Assignment.members
}

func (m ringMember) String() string { return m.name }

type xxhasher struct{}

func (xxhasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// Assign computes the desired assignment of cfg.Shards shards over members
// with consistent hashing and bounded loads (buraksezer/consistent, xxhash).
//
// consistent panics on several inputs; Assign shapes its inputs so that it
// cannot: members are sorted and deduplicated (a duplicate ID is an error),
// IDs get a separator (see ringMember), ReplicationFactor is at least 2,
// Load is raised to the smallest value that fits P shards on N members, and
// when eligible members outnumber shards only P of them — the first P in
// xxhash order of their IDs — enter the ring; the others own nothing until
// members leave. With no eligible member every shard is without an owner.
func Assign(cfg AssignConfig, members []Member) (*Assignment, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	for i, m := range sorted {
		if m.ID == "" {
			return nil, fmt.Errorf("shard: member %d has an empty ID", i)
		}
		if m.Weight < 0 {
			return nil, fmt.Errorf("shard: member %q has negative weight %d", m.ID, m.Weight)
		}
		if i > 0 && sorted[i-1].ID == m.ID {
			return nil, fmt.Errorf("shard: member ID %q appears twice", m.ID)
		}
	}
	key := assignKey(cfg, sorted)
	if a := assignments.get(key); a != nil {
		return a, nil
	}
	a, err := assign(cfg, sorted)
	if err == nil {
		assignments.put(key, a)
	}
	return a, err
}

// assign is Assign on checked members, sorted by ID.
func assign(cfg AssignConfig, sorted []Member) (*Assignment, error) {
	a := &Assignment{members: sorted, owners: make([]int32, cfg.Shards)}
	for s := range a.owners {
		a.owners[s] = -1
	}

	var ring []consistent.Member
	for i, m := range sorted {
		if m.Weight > 0 {
			ring = append(ring, ringMember{name: m.ID + "/", idx: int32(i)})
		}
	}
	if len(ring) == 0 {
		return a, nil
	}
	if len(ring) > cfg.Shards {
		// Keep the first P by hash, not by name, so that a naming scheme
		// does not decide which members stand idle.
		slices.SortFunc(ring, func(x, y consistent.Member) int {
			return cmp.Compare(xxhash.Sum64String(x.String()), xxhash.Sum64String(y.String()))
		})
		ring = ring[:cfg.Shards]
	}
	c, err := buildRing(ring, consistent.Config{
		Hasher:            xxhasher{},
		PartitionCount:    cfg.Shards,
		ReplicationFactor: cfg.ReplicationFactor,
		Load:              fittingLoad(cfg.Shards, len(ring), cfg.Load),
	})
	if err != nil {
		return nil, err
	}
	for s := range a.owners {
		m, ok := c.GetPartitionOwner(s).(ringMember)
		if !ok {
			return nil, fmt.Errorf("shard: consistent hashing left shard %d without an owner", s)
		}
		a.owners[s] = m.idx
	}
	return a, nil
}

// assignments keeps the latest Assignments, which are immutable, by their
// inputs. A node replans on every change of leader, with the same members
// nearly every time, and building the ring is most of a plan's cost
// (consistent sorts P × ReplicationFactor points); nodes of one process
// (tests, benchmarks) share it.
var assignments = &assignCache{}

// assignCacheSize is how many Assignments assignments keeps.
const assignCacheSize = 4

type assignCache struct {
	mu      sync.Mutex
	entries []assignEntry // most recently used first
}

type assignEntry struct {
	key string
	a   *Assignment
}

func (c *assignCache) get(key string) *Assignment {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.entries {
		if e.key == key {
			copy(c.entries[1:i+1], c.entries[:i])
			c.entries[0] = e
			return e.a
		}
	}
	return nil
}

func (c *assignCache) put(key string, a *Assignment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) < assignCacheSize {
		c.entries = append(c.entries, assignEntry{})
	}
	copy(c.entries[1:], c.entries[:len(c.entries)-1])
	c.entries[0] = assignEntry{key: key, a: a}
}

// assignKey is everything an Assignment depends on: the config and every
// field of every member, sorted by ID.
func assignKey(cfg AssignConfig, sorted []Member) string {
	b := fmt.Appendf(nil, "%d/%v/%d", cfg.Shards, cfg.Load, cfg.ReplicationFactor)
	for _, m := range sorted {
		b = fmt.Appendf(b, "\x00%q %q %q %d", m.ID, m.Addr, m.Zone, m.Weight)
	}
	return string(b)
}

// buildRing runs consistent.New. Assign's input checks make a panic
// impossible; if one happens anyway it becomes an error rather than taking
// the node down, because consistent keeps no state we reuse.
func buildRing(ring []consistent.Member, cfg consistent.Config) (c *consistent.Consistent, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("shard: consistent hashing of %d shards over %d members (load %v) failed: %v",
				cfg.PartitionCount, len(ring), cfg.Load, r)
		}
	}()
	return consistent.New(ring, cfg), nil
}

// fittingLoad returns the smallest load ≥ want with which consistent can
// place p shards on n members (1 ≤ n ≤ p). consistent caps each member at
// ceil(float64(p/n) × load) — note the integer division — and panics when
// the caps add up to less than p. The computation below repeats
// consistent's own arithmetic so that float rounding cannot disagree.
func fittingLoad(p, n int, want float64) float64 {
	q := float64(uint64(p) / uint64(n))
	need := float64((p + n - 1) / n)
	load := want
	if math.Ceil(q*load) >= need {
		return load
	}
	load = need / q
	for math.Ceil(q*load) < need {
		load = math.Nextafter(load, math.Inf(1))
	}
	return load
}
