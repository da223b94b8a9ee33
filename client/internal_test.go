package client

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// tableOf returns a table of p shards, every one led.
func tableOf(t testing.TB, version uint64, p int) *shard.Table {
	t.Helper()
	entries := make([]shard.Entry, p)
	for i := range entries {
		id := fmt.Sprintf("node-%d", i%16)
		entries[i] = shard.Entry{Shard: shard.ID(i), State: shard.Led, Epoch: uint64(i + 1), Leader: id, Desired: id, Addr: id + ":7000"}
	}
	tab, err := shard.NewTable(version, entries)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func keys(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "customer/%08d", i) // 17 bytes
	}
	return out
}

// Lookups allocate nothing: they read the table through an atomic pointer
// and index it.
func TestLookupDoesNotAllocate(t *testing.T) {
	c := &Client{}
	if _, ok := c.Lookup([]byte("k")); ok {
		t.Fatal("a lookup answered before any table")
	}
	c.dir.Publish(tableOf(t, 1, 1024))
	ks := keys(64)
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := c.Lookup(ks[i%len(ks)]); !ok {
			t.Fatal("no table")
		}
		i++
	}); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { c.LookupString("customer/00000001") }); n != 0 {
		t.Errorf("LookupString allocates %v times", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	c := &Client{}
	c.dir.Publish(tableOf(b, 1, 1024))
	ks := keys(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.Lookup(ks[i&4095])
	}
}

func BenchmarkLookupParallel(b *testing.B) {
	c := &Client{}
	c.dir.Publish(tableOf(b, 1, 1024))
	ks := keys(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			c.Lookup(ks[i&4095])
		}
	})
}

func TestBackoffGrowsWithinBounds(t *testing.T) {
	c := &Client{
		cfg:  Config{BackoffBase: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond},
		rand: rand.New(rand.NewPCG(1, 2)),
	}
	for _, tt := range []struct {
		n        int
		min, max time.Duration
	}{
		{1, 5 * time.Millisecond, 10 * time.Millisecond},
		{2, 10 * time.Millisecond, 20 * time.Millisecond},
		{4, 40 * time.Millisecond, 80 * time.Millisecond},
		{5, 50 * time.Millisecond, 100 * time.Millisecond},
		{1000, 50 * time.Millisecond, 100 * time.Millisecond},
	} {
		for range 100 {
			if d := c.backoff(tt.n); d < tt.min || d > tt.max {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", tt.n, d, tt.min, tt.max)
			}
		}
	}
}

func ev(version, origin uint64, reset, more bool, es ...shard.Entry) *tenurev1.WatchEvent {
	m := &tenurev1.WatchEvent{Version: version, Origin: origin, Reset_: reset, More: more}
	for _, e := range es {
		m.Changed = append(m.Changed, tenurev1.EntryToPB(e))
	}
	return m
}

// Updates are applied only where they fit: a change to the table it was
// computed from; anything else is a protocol violation that makes the
// client start over.
func TestPendingAppliesOnlyWhatFits(t *testing.T) {
	cur := tableOf(t, 5, 4)
	at := position{version: 5, origin: 9}
	led := shard.Entry{Shard: 2, State: shard.Led, Epoch: 99, Leader: "x"}
	unled := func(s shard.ID) shard.Entry { return shard.Entry{Shard: s} }
	for _, tt := range []struct {
		name   string
		events []*tenurev1.WatchEvent
		cur    *shard.Table
		pos    position
		ok     bool
	}{
		{"change", []*tenurev1.WatchEvent{ev(6, 9, false, false, led)}, cur, at, true},
		{"split reset", []*tenurev1.WatchEvent{ev(7, 3, true, true, unled(0), unled(1)), ev(7, 3, false, false, unled(2), unled(3))}, nil, position{}, true},
		{"change from another origin", []*tenurev1.WatchEvent{ev(6, 8, false, false, led)}, cur, at, false},
		{"change without a table", []*tenurev1.WatchEvent{ev(6, 9, false, false, led)}, nil, position{}, false},
		{"change to an older version", []*tenurev1.WatchEvent{ev(5, 9, false, false, led)}, cur, at, false},
		{"change beyond P", []*tenurev1.WatchEvent{ev(6, 9, false, false, shard.Entry{Shard: 4})}, cur, at, false},
		{"reset with a gap", []*tenurev1.WatchEvent{ev(7, 3, true, false, unled(0), unled(2))}, nil, position{}, false},
		{"reset mid-split", []*tenurev1.WatchEvent{ev(7, 3, true, true, unled(0)), ev(7, 3, true, false, unled(1))}, nil, position{}, false},
		{"version changes mid-split", []*tenurev1.WatchEvent{ev(7, 3, true, true, unled(0)), ev(8, 3, false, false, unled(1))}, nil, position{}, false},
		{"invalid entry", []*tenurev1.WatchEvent{{Version: 7, Reset_: true, Changed: []*tenurev1.ShardEntry{{Shard: 0}}}}, nil, position{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var u pending
			var err error
			done := false
			for _, e := range tt.events {
				if done, err = u.add(e); err != nil {
					break
				}
			}
			if err == nil && !done {
				t.Fatal("update incomplete after its last event")
			}
			var got *shard.Table
			if err == nil {
				got, err = u.apply(tt.cur, tt.pos)
			}
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, errProtocol) {
				t.Fatalf("err = %v, not a protocol violation", err)
			}
			if tt.name == "change" {
				if e, _ := got.Shard(2); e != led || got.Version() != 6 {
					t.Errorf("after the change shard 2 = %+v at version %d", e, got.Version())
				}
				if e, _ := got.Shard(1); e != tt.cur.Entries()[1] {
					t.Errorf("the change touched shard 1: %+v", e)
				}
			}
		})
	}
}

// FuzzWatchEvents feeds arbitrary events, as a faulty or hostile node
// might send them, to the client's update assembly: no panic, and every
// refusal is a protocol violation (which makes the client start over).
func FuzzWatchEvents(f *testing.F) {
	for _, m := range []*tenurev1.WatchEvent{
		ev(6, 9, false, false, shard.Entry{Shard: 2, State: shard.Led, Epoch: 1, Leader: "x"}),
		ev(7, 3, true, false, shard.Entry{Shard: 0}, shard.Entry{Shard: 1}, shard.Entry{Shard: 2}, shard.Entry{Shard: 3}),
		ev(7, 3, true, true, shard.Entry{Shard: 0}),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, b)
	}
	cur := tableOf(f, 5, 4)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var u pending
		for _, raw := range [][]byte{a, b} {
			var m tenurev1.WatchEvent
			if proto.Unmarshal(raw, &m) != nil {
				return
			}
			done, err := u.add(&m)
			if err != nil {
				if !errors.Is(err, errProtocol) {
					t.Fatalf("add: %v is not a protocol violation", err)
				}
				return
			}
			if !done {
				continue
			}
			got, err := u.apply(cur, position{version: 5, origin: 9})
			if err != nil {
				if !errors.Is(err, errProtocol) {
					t.Fatalf("apply: %v is not a protocol violation", err)
				}
				return
			}
			if got.Version() != m.GetVersion() {
				t.Fatalf("applied version %d, event says %d", got.Version(), m.GetVersion())
			}
			return
		}
	})
}
