package shard

import (
	"fmt"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// State is a shard's leadership state in a Table.
type State uint8

// The states of a shard.
const (
	// Unled: no node holds a lease this node knows of. Addr points at the
	// desired owner, which is where leadership will appear.
	Unled State = iota
	// Led: Leader holds a lease at Epoch.
	Led
	// Moving: Leader is handing the shard off to another node.
	Moving
)

func (s State) String() string {
	switch s {
	case Unled:
		return "unled"
	case Led:
		return "led"
	case Moving:
		return "moving"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Entry is what a node knows about one shard.
type Entry struct {
	// Shard is the shard number.
	Shard ID
	// State says whether Leader holds the shard.
	State State
	// Epoch is the leader's epoch, the fencing token; 0 if never led.
	Epoch uint64
	// Leader is the NodeID of the leader, empty when unled.
	Leader string
	// Desired is the NodeID of the desired owner under the current
	// assignment, empty when no member may own shards.
	Desired string
	// Addr is the address to send work for the shard to: the leader's, or
	// the desired owner's when unled (a hint, not a leadership claim).
	Addr string
}

// Table is an immutable snapshot of every shard's Entry. Any number of
// goroutines may read a Table at once; nobody writes it after NewTable.
type Table struct {
	entries []Entry
	p       uint64
	version uint64
}

// NewTable returns a table of entries, which must hold shards 0..len-1 in
// order, stamped with version. The table keeps entries; the caller must not
// modify them afterwards.
func NewTable(version uint64, entries []Entry) (*Table, error) {
	if len(entries) == 0 || len(entries) > MaxShards {
		return nil, fmt.Errorf("shard: a table needs 1..%d entries, got %d", MaxShards, len(entries))
	}
	for i, e := range entries {
		if int(e.Shard) != i {
			return nil, fmt.Errorf("shard: table entry %d holds shard %d", i, e.Shard)
		}
	}
	return &Table{entries: entries, p: uint64(len(entries)), version: version}, nil
}

// TableFromAssignment returns a table in which every shard is unled and
// points at its desired owner in a.
func TableFromAssignment(version uint64, a *Assignment) *Table {
	entries := make([]Entry, a.Shards())
	for s := range entries {
		entries[s] = Entry{Shard: ID(s)}
		if m, ok := a.Owner(ID(s)); ok {
			entries[s].Desired = m.ID
			entries[s].Addr = m.Addr
		}
	}
	return &Table{entries: entries, p: uint64(len(entries)), version: version}
}

// Lookup returns the entry of key's shard. It is one hash and one index: no
// lock, no allocation.
func (t *Table) Lookup(key []byte) Entry {
	return t.entries[xxhash.Sum64(key)%t.p]
}

// LookupString is Lookup for a string key.
func (t *Table) LookupString(key string) Entry {
	return t.entries[xxhash.Sum64String(key)%t.p]
}

// Shard returns the entry of s, or an error wrapping ErrUnknownShard.
func (t *Table) Shard(s int64) (Entry, error) {
	if err := CheckShard(s, int(t.p)); err != nil {
		return Entry{}, err
	}
	return t.entries[s], nil
}

// Shards returns P.
func (t *Table) Shards() int { return int(t.p) }

// Version orders the tables one node publishes: a later table has a larger
// version. Versions of different nodes are not comparable.
func (t *Table) Version() uint64 { return t.version }

// Entries returns a copy of every entry, in shard order.
func (t *Table) Entries() []Entry { return append([]Entry(nil), t.entries...) }

// DesiredCounts returns the number of shards each node is the desired owner
// of, by NodeID.
func (t *Table) DesiredCounts() map[string]int {
	counts := make(map[string]int)
	for _, e := range t.entries {
		if e.Desired != "" {
			counts[e.Desired]++
		}
	}
	return counts
}

// SameAssignment reports whether t and u have the same P and the same
// desired owner for every shard. Leaders are not compared: nodes learn of
// them at different moments.
func (t *Table) SameAssignment(u *Table) bool {
	if t.p != u.p {
		return false
	}
	for i := range t.entries {
		if t.entries[i].Desired != u.entries[i].Desired {
			return false
		}
	}
	return true
}

// Directory publishes the current Table. Readers never block: Lookup loads
// the table through an atomic pointer, and Publish swaps in a new one. Safe
// for concurrent use; the zero value holds no table.
type Directory struct {
	cur atomic.Pointer[Table]
}

// Publish makes t the current table.
func (d *Directory) Publish(t *Table) { d.cur.Store(t) }

// Current returns the current table, or nil before the first Publish.
func (d *Directory) Current() *Table { return d.cur.Load() }

// Lookup returns the entry of key's shard in the current table. It must not
// be called before the first Publish.
func (d *Directory) Lookup(key []byte) Entry { return d.cur.Load().Lookup(key) }

// LookupString is Lookup for a string key.
func (d *Directory) LookupString(key string) Entry { return d.cur.Load().LookupString(key) }
