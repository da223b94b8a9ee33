package voterstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/voterstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logWriter sends a store's log lines to the test log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// options returns the Options of voter "v1" of cluster "alpha" in dir.
func options(t testing.TB, dir string) voterstore.Options {
	return voterstore.Options{
		Dir:     dir,
		Cluster: "alpha",
		VoterID: "v1",
		Voters:  []string{"v3", "v1", "v2"},
		Logger:  slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// open opens a store and closes it when the test ends.
func open(t *testing.T, opts voterstore.Options) *voterstore.Store {
	t.Helper()
	s, err := voterstore.Open(opts)
	if err != nil {
		t.Fatalf("Open(Dir %s, Init %v): %v", opts.Dir, opts.Init, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// create initialises a new store in a fresh directory.
func create(t *testing.T) (*voterstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	opts := options(t, dir)
	opts.Init = true
	return open(t, opts), dir
}

// reopen opens the store in dir and returns its records and boot counter,
// closing it again.
func reopen(t *testing.T, dir string) (map[uint32]lease.Record, uint32) {
	t.Helper()
	s, err := voterstore.Open(options(t, dir))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	recs, err := s.Records()
	if err != nil {
		t.Fatalf("Records: %v", err)
	}
	return recs, s.Boot()
}

func mustClose(t *testing.T, s *voterstore.Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// blockCommits makes s's next commit wait until the returned release is
// called; entered receives once that commit has started, which also means
// every record queued before it is in it.
func blockCommits(t *testing.T, s *voterstore.Store) (entered <-chan struct{}, release func()) {
	in := make(chan struct{}, 1)
	gate := make(chan struct{})
	var once sync.Once
	var blocked atomic.Bool
	voterstore.SetCommitHook(s, func() error {
		if blocked.CompareAndSwap(false, true) {
			in <- struct{}{}
			<-gate
		}
		return nil
	})
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // never leave the committer stuck
	return in, release
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func rec(shard uint32, epoch uint64, holder string) lease.ShardRecord {
	return lease.ShardRecord{Shard: shard, Record: lease.Record{Epoch: epoch, Holder: holder, HolderGen: 1<<32 | epoch}}
}

func wantMentions(t *testing.T, err error, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

func TestOpenWithoutInitRefusesMissingStore(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) (dir string)
	}{
		{"empty directory", func(t *testing.T) string { return t.TempDir() }},
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "gone") }},
		{"unfinished init", func(t *testing.T) string {
			// Init creates the file before it writes the metadata.
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, voterstore.FileName), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t)
			path := filepath.Join(dir, voterstore.FileName)
			_, statErr := os.Stat(path)
			existed := statErr == nil

			s, err := voterstore.Open(options(t, dir))
			if !errors.Is(err, voterstore.ErrNoStore) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open = %v, want ErrNoStore", err)
			}
			t.Log(err)
			wantMentions(t, err, "missing at "+path, "majority", "whole cluster")
			if _, err := os.Stat(path); !existed && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Open without Init created %s (stat: %v)", path, err)
			}
		})
	}
}

func TestInitCreatesStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "voter")
	opts := options(t, dir)
	opts.Init = true
	s := open(t, opts)

	if got := s.Boot(); got < 1 || got >= voterstore.MaxFirstBoot {
		t.Errorf("Boot = %d, want one in [1, %d)", got, voterstore.MaxFirstBoot)
	}
	if s.Restarted() {
		t.Error("Restarted = true for a new store")
	}
	if _, err := os.Stat(filepath.Join(dir, voterstore.MarkerFileName)); err != nil {
		t.Errorf("Init left no marker: %v", err)
	}
	if got, want := s.Path(), filepath.Join(dir, voterstore.FileName); got != want {
		t.Errorf("Path = %s, want %s", got, want)
	}
	recs, err := s.Records()
	if err != nil || len(recs) != 0 {
		t.Errorf("Records = %v, %v; want none", recs, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("data directory mode %v, want 0700", perm)
	}
}

func TestBootCountsOpens(t *testing.T) {
	s, dir := create(t)
	first := s.Boot()
	if s.Restarted() {
		t.Fatalf("new store: Restarted %v, want false", s.Restarted())
	}
	mustClose(t, s)
	for want := first + 1; want <= first+3; want++ {
		s := open(t, options(t, dir))
		if s.Boot() != want || !s.Restarted() {
			t.Errorf("open %d: Boot %d Restarted %v, want %d true", want-first+1, s.Boot(), s.Restarted(), want)
		}
		mustClose(t, s)
	}
}

// A store re-initialised after a loss must not start from the boot counter
// its predecessor started from: holders may still hold generations of the
// old store's boots (Boot<<32 | sequence).
func TestInitDrawsTheFirstBootAtRandom(t *testing.T) {
	const stores = 8
	seen := make(map[uint32]bool)
	for range stores {
		s, dir := create(t)
		boot := s.Boot()
		mustClose(t, s)
		// Lose the store and its marker, as with a lost volume, and
		// initialise again in the same directory.
		for _, f := range []string{voterstore.FileName, voterstore.MarkerFileName} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		opts := options(t, dir)
		opts.Init = true
		again := open(t, opts)
		t.Logf("first boot %d, after re-init %d", boot, again.Boot())
		seen[boot], seen[again.Boot()] = true, true
		mustClose(t, again)
	}
	// 16 draws from [1, 2^31) all differ except with probability below
	// 10^-7.
	if len(seen) != 2*stores {
		t.Errorf("%d distinct first boots in %d stores, want all distinct", len(seen), 2*stores)
	}
}

func TestFirstBootRange(t *testing.T) {
	tests := []struct {
		name string
		give []byte // the random bytes, big-endian words
		want uint32
	}{
		{name: "zero is drawn again", give: []byte{0, 0, 0, 0, 0, 0, 0, 5}, want: 5},
		{name: "only the top bit set is zero too", give: []byte{0x80, 0, 0, 0, 0, 0, 0, 1}, want: 1},
		{name: "the top bit is dropped", give: []byte{0xff, 0xff, 0xff, 0xff}, want: voterstore.MaxFirstBoot - 1},
		{name: "smallest", give: []byte{0, 0, 0, 1}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := voterstore.FirstBoot(bytes.NewReader(tt.give))
			if err != nil || got != tt.want {
				t.Errorf("FirstBoot = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
	if _, err := voterstore.FirstBoot(bytes.NewReader(nil)); err == nil {
		t.Error("FirstBoot of an empty source succeeded")
	}
}

func TestRecordsSurviveReopen(t *testing.T) {
	give := []lease.ShardRecord{
		{Shard: 0, Record: lease.Record{Epoch: 1, Holder: "node-a", HolderGen: 1<<32 | 7}},
		{Shard: 1, Record: lease.Record{Epoch: 9, Holder: "node-b", HolderGen: 3, Released: true}},
		{Shard: 2, Record: lease.Record{Epoch: 4, Holder: "", HolderGen: 0}},
		{Shard: 3, Record: lease.Record{Epoch: 5, Holder: "", Released: true}},
		{Shard: 4, Record: lease.Record{Epoch: math.MaxUint64, Holder: "nœud-ü", HolderGen: math.MaxUint64}},
		{Shard: 5, Record: lease.Record{Epoch: 2, Holder: strings.Repeat("h", 1000), HolderGen: 1 << 40}},
		{Shard: math.MaxUint32, Record: lease.Record{Epoch: 3, Holder: "last"}},
	}
	want := make(map[uint32]lease.Record)
	for _, r := range give {
		want[r.Shard] = r.Record
	}

	s, dir := create(t)
	if err := s.Save(t.Context(), give); err != nil {
		t.Fatalf("Save: %v", err)
	}
	got, err := s.Records()
	if err != nil {
		t.Fatalf("Records: %v", err)
	}
	if !maps.Equal(got, want) {
		t.Errorf("Records before reopen = %v, want %v", got, want)
	}
	mustClose(t, s)

	got, _ = reopen(t, dir)
	if !maps.Equal(got, want) {
		t.Errorf("Records after reopen = %v, want %v", got, want)
	}
}

func TestSaveKeepsLastRecordOfShard(t *testing.T) {
	s, dir := create(t)
	ctx := t.Context()
	steps := [][]lease.ShardRecord{
		{rec(3, 1, "a")},
		{rec(3, 2, "b"), rec(4, 1, "a")},
		// Two records of one shard in one call: the later wins.
		{rec(4, 2, "c"), rec(4, 3, "d")},
	}
	for _, recs := range steps {
		if err := s.Save(ctx, recs); err != nil {
			t.Fatalf("Save(%v): %v", recs, err)
		}
	}
	released := rec(3, 2, "b")
	released.Released = true
	if err := s.Save(ctx, []lease.ShardRecord{released}); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)

	got, _ := reopen(t, dir)
	want := map[uint32]lease.Record{3: released.Record, 4: rec(4, 3, "d").Record}
	if !maps.Equal(got, want) {
		t.Errorf("Records = %v, want %v", got, want)
	}
}

func TestOnCommitReportsEachCommit(t *testing.T) {
	dir := t.TempDir()
	opts := options(t, dir)
	opts.Init = true
	var mu sync.Mutex
	var got []int
	opts.OnCommit = func(records int, took time.Duration) {
		if took <= 0 {
			t.Errorf("OnCommit took %v, want > 0", took)
		}
		mu.Lock()
		got = append(got, records)
		mu.Unlock()
	}
	s := open(t, opts)
	ctx := t.Context()
	if err := s.Save(ctx, []lease.ShardRecord{rec(1, 1, "a"), rec(2, 1, "a")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, []lease.ShardRecord{rec(1, 2, "b")}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Save returns once its commit is durable, and OnCommit runs before
	// the commit's waiters are released: both commits are reported.
	if want := []int{2, 1}; !slices.Equal(got, want) {
		t.Errorf("OnCommit records = %v, want %v", got, want)
	}
}

func TestConcurrentSavesAreDurable(t *testing.T) {
	const savers = 50
	s, dir := create(t)
	want := make(map[uint32]lease.Record)
	errs := make(chan error, savers)
	var wg sync.WaitGroup
	for i := range uint32(savers) {
		r := rec(i, uint64(i)+1, fmt.Sprintf("node-%d", i))
		want[r.Shard] = r.Record
		wg.Go(func() { errs <- s.Save(t.Context(), []lease.ShardRecord{r}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Save: %v", err)
		}
	}
	t.Logf("%d saves took %d commits", savers, voterstore.Commits(s))
	mustClose(t, s)

	got, _ := reopen(t, dir)
	if !maps.Equal(got, want) {
		t.Errorf("after reopen: %d records, want %d; got %v", len(got), len(want), got)
	}
}

func TestSavesDuringCommitShareTheNext(t *testing.T) {
	const savers = 50
	s, _ := create(t)
	entered, release := blockCommits(t, s)

	errs := make(chan error, savers)
	save := func(i uint32) { errs <- s.Save(t.Context(), []lease.ShardRecord{rec(i, 1, "n")}) }
	go save(0)
	<-entered
	for i := uint32(1); i < savers; i++ {
		go save(i)
	}
	waitFor(t, "saves to queue", func() bool { return voterstore.Queued(s) == savers-1 })
	release()
	for range savers {
		if err := <-errs; err != nil {
			t.Errorf("Save: %v", err)
		}
	}
	if got := voterstore.Commits(s); got != 2 {
		t.Errorf("%d saves took %d commits, want 2: one in flight, one for all that queued behind it", savers, got)
	}
}

func TestBarrier(t *testing.T) {
	t.Run("nothing pending", func(t *testing.T) {
		s, _ := create(t)
		if err := s.Barrier(t.Context()); err != nil {
			t.Errorf("Barrier = %v", err)
		}
	})

	t.Run("covers enqueued records", func(t *testing.T) {
		s, _ := create(t)
		want := make(map[uint32]lease.Record)
		for i := range uint32(10) {
			r := rec(i, 1, "n")
			want[i] = r.Record
			if err := s.Enqueue([]lease.ShardRecord{r}); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
		}
		if err := s.Barrier(t.Context()); err != nil {
			t.Fatalf("Barrier: %v", err)
		}
		got, err := s.Records()
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("Records after Barrier = %v, %v; want %v", got, err, want)
		}
	})

	t.Run("waits for the commit in flight and the queue", func(t *testing.T) {
		s, _ := create(t)
		entered, release := blockCommits(t, s)
		if err := s.Enqueue([]lease.ShardRecord{rec(1, 1, "a")}); err != nil {
			t.Fatal(err)
		}
		<-entered
		if err := s.Enqueue([]lease.ShardRecord{rec(2, 1, "b")}); err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Barrier(ctx) }()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Barrier with blocked commit = %v, want context.Canceled", err)
		}

		release()
		if err := s.Barrier(t.Context()); err != nil {
			t.Fatalf("Barrier: %v", err)
		}
		got, err := s.Records()
		if err != nil || len(got) != 2 {
			t.Errorf("Records after Barrier = %v, %v; want shards 1 and 2", got, err)
		}
	})
}

func TestSaveContext(t *testing.T) {
	t.Run("done before the save", func(t *testing.T) {
		s, _ := create(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := s.Save(ctx, []lease.ShardRecord{rec(1, 1, "a")}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Save = %v, want context.Canceled", err)
		}
		if err := s.Barrier(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Records(); err != nil || len(got) != 0 {
			t.Errorf("Records = %v, %v; a save refused before it started wrote something", got, err)
		}
	})

	t.Run("done while waiting", func(t *testing.T) {
		s, _ := create(t)
		entered, release := blockCommits(t, s)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Save(ctx, []lease.ShardRecord{rec(1, 1, "a")}) }()
		<-entered
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Save = %v, want context.Canceled", err)
		}
		// The records stay queued: a cancelled Save is neither saved nor lost.
		release()
		if err := s.Barrier(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Records(); err != nil || len(got) != 1 {
			t.Errorf("Records = %v, %v; want the cancelled save's record", got, err)
		}
	})
}

func TestOpenRefusesStore(t *testing.T) {
	tests := []struct {
		name string
		// hold keeps the first store open during the second Open.
		hold     bool
		change   func(*voterstore.Options)
		want     error
		mentions []string
	}{
		{
			name:     "wrong cluster",
			change:   func(o *voterstore.Options) { o.Cluster = "beta" },
			want:     voterstore.ErrWrongCluster,
			mentions: []string{`cluster "alpha", not "beta"`},
		},
		{
			name:     "wrong voter",
			change:   func(o *voterstore.Options) { o.VoterID = "v2" },
			want:     voterstore.ErrWrongVoter,
			mentions: []string{`voter "v1", not "v2"`},
		},
		{
			name:     "wrong voter set",
			change:   func(o *voterstore.Options) { o.Voters = []string{"v1", "v4", "v5"} },
			want:     voterstore.ErrWrongVoterSet,
			mentions: []string{`voters ["v1" "v2" "v3"], not ["v1" "v4" "v5"]`, "reconfiguration"},
		},
		{
			name:     "init over existing store",
			change:   func(o *voterstore.Options) { o.Init = true },
			want:     voterstore.ErrExists,
			mentions: []string{"already exists", "delete it and its marker", "majority"},
		},
		{
			name:     "locked by another open store",
			hold:     true,
			change:   func(o *voterstore.Options) { o.OpenTimeout = 50 * time.Millisecond },
			want:     voterstore.ErrLocked,
			mentions: []string{"held by another process"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, dir := create(t)
			firstBoot := first.Boot()
			saved := rec(7, 3, "node-a")
			if err := first.Save(t.Context(), []lease.ShardRecord{saved}); err != nil {
				t.Fatal(err)
			}
			if !tt.hold {
				mustClose(t, first)
			}

			opts := options(t, dir)
			tt.change(&opts)
			s, err := voterstore.Open(opts)
			if !errors.Is(err, tt.want) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
			t.Log(err)
			wantMentions(t, err, append(tt.mentions, filepath.Join(dir, voterstore.FileName))...)
			mustClose(t, first)

			// A refused Open leaves the store as it was: same records, and
			// the boot counter moved only for the Open below.
			recs, boot := reopen(t, dir)
			if boot != firstBoot+1 {
				t.Errorf("Boot after a refused Open = %d, want %d", boot, firstBoot+1)
			}
			if want := map[uint32]lease.Record{7: saved.Record}; !maps.Equal(recs, want) {
				t.Errorf("Records = %v, want %v", recs, want)
			}
		})
	}
}

func TestInitReportsUnusableDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := options(t, filepath.Join(file, "data"))
	opts.Init = true
	s, err := voterstore.Open(opts)
	if err == nil {
		s.Close()
		t.Fatal("Open with Init under a regular file succeeded")
	}
	t.Log(err)
	wantMentions(t, err, "data directory "+opts.Dir)
}

func TestOptionsAreValidated(t *testing.T) {
	tests := []struct {
		name   string
		change func(*voterstore.Options)
		field  string
	}{
		{"no dir", func(o *voterstore.Options) { o.Dir = "" }, "Options.Dir"},
		{"no cluster", func(o *voterstore.Options) { o.Cluster = "" }, "Options.Cluster"},
		{"no voter", func(o *voterstore.Options) { o.VoterID = "" }, "Options.VoterID"},
		{"negative timeout", func(o *voterstore.Options) { o.OpenTimeout = -time.Second }, "Options.OpenTimeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := options(t, t.TempDir())
			opts.Init = true
			tt.change(&opts)
			s, err := voterstore.Open(opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			wantMentions(t, err, tt.field)
		})
	}
}

func TestClose(t *testing.T) {
	s, _ := create(t)
	boot := s.Boot()
	mustClose(t, s)
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}

	ctx := t.Context()
	one := []lease.ShardRecord{rec(1, 1, "a")}
	for name, err := range map[string]error{
		"Save":    s.Save(ctx, one),
		"Enqueue": s.Enqueue(one),
		"Barrier": s.Barrier(ctx),
	} {
		if !errors.Is(err, voterstore.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if _, err := s.Records(); !errors.Is(err, voterstore.ErrClosed) {
		t.Errorf("Records after Close = %v, want ErrClosed", err)
	}
	if err := s.Save(ctx, nil); err != nil {
		t.Errorf("empty Save after Close = %v, want nil", err)
	}
	if s.Boot() != boot {
		t.Errorf("Boot after Close = %d, want %d", s.Boot(), boot)
	}
}

func TestCloseWaitsForQueuedSaves(t *testing.T) {
	s, dir := create(t)
	entered, release := blockCommits(t, s)
	saved := make(chan error, 1)
	go func() { saved <- s.Save(t.Context(), []lease.ShardRecord{rec(1, 1, "a")}) }()
	<-entered
	if err := s.Enqueue([]lease.ShardRecord{rec(2, 1, "b")}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	release()
	if err := <-saved; err != nil {
		t.Errorf("Save across Close = %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close = %v", err)
	}
	if got, _ := reopen(t, dir); len(got) != 2 {
		t.Errorf("after reopen: %v, want shards 1 and 2", got)
	}
}

func TestFailedCommitIsSticky(t *testing.T) {
	errDisk := errors.New("disk on fire")
	s, dir := create(t)
	var calls atomic.Int32
	voterstore.SetCommitHook(s, func() error {
		if calls.Add(1) == 1 {
			return errDisk
		}
		return nil
	})
	ctx := t.Context()
	if err := s.Save(ctx, []lease.ShardRecord{rec(1, 1, "a")}); !errors.Is(err, errDisk) {
		t.Fatalf("Save = %v, want the commit's error", err)
	}
	if err := s.Save(ctx, []lease.ShardRecord{rec(2, 1, "b")}); !errors.Is(err, errDisk) {
		t.Errorf("Save after a failed commit = %v, want the commit's error", err)
	}
	if err := s.Enqueue([]lease.ShardRecord{rec(3, 1, "c")}); !errors.Is(err, errDisk) {
		t.Errorf("Enqueue after a failed commit = %v, want the commit's error", err)
	}
	if err := s.Barrier(ctx); !errors.Is(err, errDisk) {
		t.Errorf("Barrier after a failed commit = %v, want the commit's error", err)
	}
	mustClose(t, s)
	if got, _ := reopen(t, dir); len(got) != 0 {
		t.Errorf("after reopen: %v, want no records", got)
	}
}

func TestRecordsRejectsCorruptValues(t *testing.T) {
	good := voterstore.EncodeRecord(lease.Record{Epoch: 1, Holder: "ab", HolderGen: 2})
	tests := []struct {
		name    string
		key     []byte
		value   []byte
		mention string
	}{
		{"empty value", []byte{0, 0, 0, 7}, []byte{}, "shard 7"},
		{"unknown version", []byte{0, 0, 0, 7}, append([]byte{9}, good[1:]...), "shard 7: record version 9"},
		{"truncated epoch", []byte{0, 0, 0, 7}, []byte{1, 0x80}, "shard 7: malformed epoch"},
		{"released flag out of range", []byte{0, 0, 0, 7}, []byte{1, 1, 2, 5, 0}, "shard 7: released flag 5"},
		{"holder cut short", []byte{0, 0, 0, 7}, good[:len(good)-1], "shard 7: holder length 2 but 1 bytes follow"},
		{"trailing bytes", []byte{0, 0, 1, 0}, append(append([]byte{}, good...), 'x'), "shard 256"},
		{"short key", []byte{7}, good, "record key 07"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := create(t)
			if err := s.Save(t.Context(), []lease.ShardRecord{rec(1, 1, "a")}); err != nil {
				t.Fatal(err)
			}
			mustClose(t, s)

			db, err := bolt.Open(filepath.Join(dir, voterstore.FileName), 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("records")).Put(tt.key, tt.value) })
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}

			s = open(t, options(t, dir))
			_, err = s.Records()
			if !errors.Is(err, voterstore.ErrCorrupt) {
				t.Fatalf("Records = %v, want ErrCorrupt", err)
			}
			t.Log(err)
			wantMentions(t, err, tt.mention)
		})
	}
}

// The voter set is recorded at Init; a store made before sets were
// recorded takes the first set it is opened with and holds to it; opening
// without a set checks nothing.
func TestVoterSetRecorded(t *testing.T) {
	first, dir := create(t) // records v1, v2, v3 (options)
	mustClose(t, first)
	reopened := func(voters []string) error {
		opts := options(t, dir)
		opts.Voters = voters
		s, err := voterstore.Open(opts)
		if err == nil {
			mustClose(t, s)
		}
		return err
	}
	for _, tt := range []struct {
		name   string
		voters []string
		want   error
	}{
		{"same set, another order", []string{"v2", "v3", "v1"}, nil},
		{"no set given", nil, nil},
		{"a voter added", []string{"v1", "v2", "v3", "v4", "v5"}, voterstore.ErrWrongVoterSet},
		{"a voter removed", []string{"v1", "v2"}, voterstore.ErrWrongVoterSet},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := reopened(tt.voters); !errors.Is(err, tt.want) {
				t.Fatalf("Open with voters %q = %v, want %v", tt.voters, err, tt.want)
			}
		})
	}

	t.Run("store without a recorded set", func(t *testing.T) {
		dir := t.TempDir()
		opts := options(t, dir)
		opts.Init, opts.Voters = true, nil
		mustClose(t, open(t, opts))
		opts.Init, opts.Voters = false, []string{"v1", "v2", "v3"}
		mustClose(t, open(t, opts)) // records the set
		opts.Voters = []string{"v1", "v8", "v9"}
		if s, err := voterstore.Open(opts); !errors.Is(err, voterstore.ErrWrongVoterSet) {
			if s != nil {
				mustClose(t, s)
			}
			t.Fatalf("Open with another set after one was recorded = %v, want ErrWrongVoterSet", err)
		}
	})
}

func TestOptionsVotersValidated(t *testing.T) {
	for _, tt := range []struct {
		name   string
		voters []string
		want   string
	}{
		{"without this voter", []string{"v2", "v3"}, `does not include VoterID "v1"`},
		{"empty ID", []string{"v1", ""}, "empty ID"},
		{"NUL in an ID", []string{"v1", "v\x002"}, "NUL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := options(t, t.TempDir())
			opts.Init, opts.Voters = true, tt.voters
			s, err := voterstore.Open(opts)
			if err == nil {
				mustClose(t, s)
				t.Fatal("Open accepted the options")
			}
			wantMentions(t, err, "Options.Voters", tt.want)
		})
	}
}
