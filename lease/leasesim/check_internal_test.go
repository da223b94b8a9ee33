package leasesim

import (
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// The frozen-leader excuse covers only as much as the clock stood still:
// a lease counts as fenced once a clock that had run through the freezes
// since the keep-alives it rests on would read past its deadline.
func TestFencedIsBoundedByTheFreeze(t *testing.T) {
	tests := []struct {
		name     string
		freezeAt time.Duration // global time; the clock reads the same until the freeze
		freeze   time.Duration
		at       time.Duration // when the overlap is judged, after the deadline by a running clock
		fenced   bool
	}{
		{"1µs freeze, 100 ms before a running clock's deadline", 1100 * time.Millisecond, time.Microsecond, -100 * time.Millisecond, false},
		{"1µs freeze, 0.5 µs before a running clock's deadline", 1100 * time.Millisecond, time.Microsecond, -500 * time.Nanosecond, false},
		{"1µs freeze, 0.5 µs after a running clock's deadline", 1100 * time.Millisecond, time.Microsecond, 500 * time.Nanosecond, true},
		{"2 s freeze, before a running clock's deadline", 1100 * time.Millisecond, 2 * time.Second, -10 * time.Millisecond, false},
		{"2 s freeze, past a running clock's deadline", 1100 * time.Millisecond, 2 * time.Second, 50 * time.Millisecond, true},
		{"2 s freeze, under way, past a running clock's deadline", 500*time.Millisecond + time.Second, 2 * time.Second, 50 * time.Millisecond, true},
		{"2 s freeze before the keep-alive was sent", 500 * time.Millisecond, 2 * time.Second, 50 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{Seed: 1, Nodes: 1, Voters: 3, Shards: 1, Script: func(*Sim) {}})
			if err != nil {
				t.Fatal(err)
			}
			n := s.nodes[0]
			n.clk = clock{rate: 1}
			sent := time.Second // the reading the lease's keep-alives were sent at
			if tt.freezeAt < sent {
				sent += tt.freeze // sent after the freeze: the clock lost tt.freeze
			}
			deadline := lease.Time(sent + s.usable())
			n.leases = []cachedLease{{ok: true, e: 1, until: deadline}}
			s.now = tt.freezeAt
			s.Freeze(0, tt.freeze)
			// A clock that never stood still reads the global time.
			s.now = time.Duration(deadline) + tt.at
			if tt.freezeAt >= time.Second {
				s.now = time.Duration(deadline) - (sent - time.Second) + tt.at
			}
			if got := n.clk.at(s.now); got >= deadline {
				t.Fatalf("setup: the node's own clock reads %v, past its deadline %v", got, deadline)
			}
			if got := s.fenced(leading{n: n, e: 1}, 0); got != tt.fenced {
				t.Fatalf("fenced = %v at %v (node clock %v, deadline %v), want %v", got, s.now, n.clk.at(s.now), deadline, tt.fenced)
			}
		})
	}
}
