package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// fakeSource publishes tables by hand, as a node does.
type fakeSource struct {
	mu      sync.Mutex
	t       *shard.Table
	changed chan struct{}
}

func newFakeSource(t *shard.Table) *fakeSource {
	return &fakeSource{t: t, changed: make(chan struct{})}
}

func (f *fakeSource) Table() *shard.Table {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeSource) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeSource) publish(t *shard.Table) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = t
	close(f.changed)
	f.changed = make(chan struct{})
}

func mustTable(t testing.TB, version uint64, entries []shard.Entry) *shard.Table {
	t.Helper()
	tab, err := shard.NewTable(version, entries)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// apply applies u to a client's copy of the table, as a Watch client does.
func apply(held []shard.Entry, u update) []shard.Entry {
	if u.reset {
		return slices.Clone(u.changed)
	}
	held = slices.Clone(held)
	for _, e := range u.changed {
		held[e.Shard] = e
	}
	return held
}

// The feed's answer to a client at any version — resumable or not, in the
// history or not — brings the client exactly to the current table, and the
// history stays within its bounds. Checked against the tables themselves
// over random sequences of versions, some of which the feed never sees.
func TestFeedBringsEveryClientToTheCurrentTable(t *testing.T) {
	for seed := range uint64(50) {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			const p = 8
			entries := make([]shard.Entry, p)
			for i := range entries {
				entries[i] = shard.Entry{Shard: shard.ID(i), Desired: "a"}
			}
			version := uint64(1)
			first := mustTable(t, version, slices.Clone(entries))
			maxVersions := 1 + r.IntN(5)
			f := newFeed(newFakeSource(first), maxVersions)
			seen := map[uint64][]shard.Entry{version: slices.Clone(entries)}
			for range 40 {
				for range 1 + r.IntN(3) {
					s := r.IntN(p)
					entries[s].Epoch++
					entries[s].State = shard.Led
					entries[s].Leader = fmt.Sprintf("n%d", r.IntN(3))
				}
				version += 1 + uint64(r.IntN(2)) // versions the feed skips
				f.observe(mustTable(t, version, slices.Clone(entries)))
				seen[version] = slices.Clone(entries)

				f.mu.Lock()
				nd, ne := len(f.deltas), f.entries
				f.mu.Unlock()
				if nd > maxVersions || (nd > 1 && ne > 2*p) {
					t.Fatalf("history holds %d versions and %d entries; limits %d and %d", nd, ne, maxVersions, 2*p)
				}

				for from, held := range seen {
					for _, resumable := range []bool{true, false} {
						u, ok, _ := f.since(from, resumable)
						if !ok {
							if !resumable || from != version {
								t.Fatalf("since(%d, %v) at %d: nothing to send", from, resumable, version)
							}
							continue
						}
						if u.version != version {
							t.Fatalf("since(%d) version %d, want %d", from, u.version, version)
						}
						if !resumable && !u.reset {
							t.Fatalf("since(%d) without origin is no reset", from)
						}
						if got := apply(held, u); !slices.Equal(got, entries) {
							t.Fatalf("client at %d (resumable %v) applied %+v and holds\n%+v\nwant\n%+v", from, resumable, u, got, entries)
						}
					}
				}
				// A version this server never published is a reset.
				if u, ok, _ := f.since(version+100, true); !ok || !u.reset {
					t.Fatalf("since(unknown version) = %+v, %v; want a reset", u, ok)
				}
			}
		})
	}
}

// A client that is current gets nothing until the table changes, and the
// wake channel tells it when.
func TestFeedWakesOnChange(t *testing.T) {
	src := newFakeSource(mustTable(t, 1, []shard.Entry{{Shard: 0}}))
	f := newFeed(src, 4)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); f.run(stop) }()
	defer func() { close(stop); <-done }()

	_, ok, wake := f.since(1, true)
	if ok {
		t.Fatal("a current client got an update")
	}
	src.publish(mustTable(t, 2, []shard.Entry{{Shard: 0, State: shard.Led, Epoch: 1, Leader: "a"}}))
	<-wake
	u, ok, _ := f.since(1, true)
	if !ok || u.reset || u.version != 2 || len(u.changed) != 1 || u.changed[0].Leader != "a" {
		t.Fatalf("since(1) = %+v, %v; want the one changed entry at version 2", u, ok)
	}
}

// Streams read the history without the feed's lock while the feed keeps
// appending and trimming it: under -race this fails if trimming writes to
// a delta a stream may still be reading (it used to zero them).
func TestFeedTrimsWhileStreamsRead(t *testing.T) {
	const shards = 8
	entries := func(v uint64) []shard.Entry {
		es := make([]shard.Entry, shards)
		for i := range es {
			es[i] = shard.Entry{Shard: shard.ID(i), State: shard.Led, Epoch: v, Leader: fmt.Sprint("n", v%3)}
		}
		return es
	}
	src := newFakeSource(mustTable(t, 1, entries(1)))
	f := newFeed(src, 2) // a short history: every new version trims one
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); f.run(stop) }()
	defer func() { close(stop); <-done }()

	const last = 300
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			held, at := entries(1), uint64(1)
			for at < last {
				u, ok, wake := f.since(at, true)
				if !ok {
					<-wake
					continue
				}
				held, at = apply(held, u), u.version
				if want := entries(at); !slices.Equal(held, want) {
					t.Errorf("client at version %d holds %v, want %v", at, held, want)
					return
				}
			}
		}()
	}
	for v := uint64(2); v <= last; v++ {
		src.publish(mustTable(t, v, entries(v)))
	}
	wg.Wait()
}

// fakeWatchStream records what a Watch handler sends.
type fakeWatchStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*tenurev1.WatchEvent
}

func (s *fakeWatchStream) Context() context.Context { return s.ctx }
func (s *fakeWatchStream) Send(ev *tenurev1.WatchEvent) error {
	s.sent = append(s.sent, ev)
	return nil
}

// A reset larger than one event's limit is split into events linked by
// more, all of one version, the first alone marked reset; together they
// hold the whole table in order.
func TestSendSplitsLargeUpdates(t *testing.T) {
	const p = 2*maxEventEntries + 10
	entries := make([]shard.Entry, p)
	for i := range entries {
		entries[i] = shard.Entry{Shard: shard.ID(i), State: shard.Led, Epoch: 1, Leader: "a"}
	}
	s := &Server{origin: 5}
	for _, tt := range []struct {
		name       string
		give       update
		wantEvents int
	}{
		{"large reset", update{version: 9, reset: true, changed: entries}, 3},
		{"exactly one event", update{version: 9, changed: entries[:maxEventEntries]}, 1},
		{"empty change", update{version: 9}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &fakeWatchStream{ctx: context.Background()}
			if err := s.send(st, tt.give); err != nil {
				t.Fatal(err)
			}
			if len(st.sent) != tt.wantEvents {
				t.Fatalf("sent %d events, want %d", len(st.sent), tt.wantEvents)
			}
			var got []shard.Entry
			for i, ev := range st.sent {
				if ev.GetVersion() != 9 || ev.GetOrigin() != 5 {
					t.Errorf("event %d: version %d origin %d, want 9 and 5", i, ev.GetVersion(), ev.GetOrigin())
				}
				if ev.GetReset_() != (tt.give.reset && i == 0) {
					t.Errorf("event %d: reset = %v", i, ev.GetReset_())
				}
				if ev.GetMore() != (i < len(st.sent)-1) {
					t.Errorf("event %d: more = %v", i, ev.GetMore())
				}
				if len(ev.GetChanged()) > maxEventEntries {
					t.Errorf("event %d holds %d entries, limit %d", i, len(ev.GetChanged()), maxEventEntries)
				}
				for _, m := range ev.GetChanged() {
					e, err := tenurev1.EntryFromPB(m)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, e)
				}
			}
			if !slices.Equal(got, tt.give.changed) {
				t.Errorf("the events hold %d entries, not the %d of the update in order", len(got), len(tt.give.changed))
			}
		})
	}
}
