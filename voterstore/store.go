package voterstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tenurehq/tenure/lease"
)

const (
	// FileName is the store's file name inside Options.Dir.
	FileName = "voter.db"

	// DefaultOpenTimeout is Options.OpenTimeout when it is zero.
	DefaultOpenTimeout = time.Second

	// formatVersion is the layout of the meta and records buckets. Open
	// refuses a store of any other version.
	formatVersion = 1
)

var (
	bucketMeta    = []byte("meta")
	bucketRecords = []byte("records")

	keyFormat  = []byte("format")
	keyCluster = []byte("cluster")
	keyVoter   = []byte("voter")
	keyVoters  = []byte("voters") // the voter set: sorted IDs, NUL-separated; absent in stores made before it
	keyBoot    = []byte("boot")
)

// reinitAdvice tells an operator when re-initialising a voter is safe. It
// is part of the errors for a missing store and for Init over an existing
// one, which is where an operator decides.
const reinitAdvice = "re-initialising with Init is safe only after copying the highest record of every shard " +
	"from a majority of the other voters, or when re-initialising the whole cluster, " +
	"because a voter that forgot its records could grant an epoch twice"

// Options configures Open. Open works on a copy and never modifies the
// caller's value.
type Options struct {
	// Dir is the data directory; the store is Dir/voter.db. Required. With
	// Init, Open creates Dir (mode 0700) if it does not exist.
	Dir string

	// Cluster is the cluster's name, recorded at Init. Open refuses a store
	// recorded for another cluster with ErrWrongCluster, so that a data
	// directory copied to the wrong host cannot vote. Required.
	Cluster string

	// VoterID is this voter's ID, recorded at Init. Open refuses a store
	// recorded for another voter with ErrWrongVoter. Required.
	VoterID string

	// Voters is the cluster's voter set, the IDs of every voter, VoterID
	// included, in any order. It is recorded at Init, or at the first Open
	// that gives it for a store that has none, and Open refuses a store
	// recorded with another set (ErrWrongVoterSet): old and new voter sets
	// can have disjoint majorities, so a set changes only through a
	// reconfiguration, never by restarting with a new list. Nil checks and
	// records nothing.
	Voters []string

	// Init creates a new store, like formatting storage. It is required on
	// the voter's very first start, and to re-initialise a voter whose store
	// was lost. Without it a missing store is an error (ErrNoStore), because
	// a voter that forgot its records could grant an epoch twice; with it an
	// existing store is an error (ErrExists), so that no store is wiped by
	// accident. Re-initialising therefore means deleting Dir/voter.db first.
	Init bool

	// OpenTimeout is how long Open waits for the file lock when another
	// process holds it, before it fails with ErrLocked. Zero means
	// DefaultOpenTimeout (1s); negative is invalid. A longer timeout rides
	// out a slow shutdown of the previous process, a shorter one reports a
	// second voter on the same directory sooner.
	OpenTimeout time.Duration

	// Logger receives the store's events (open, init, commits at debug
	// level). Nil discards them.
	Logger *slog.Logger

	// OnCommit, if set, is called by the committer after each successful
	// commit with the number of records written and the commit's duration
	// (the bbolt transaction, fsync included): the disk's share of a
	// voter's reply time. It must return quickly; it runs before the
	// batch's waiters are released.
	OnCommit func(records int, took time.Duration)
}

func (o Options) validate() error {
	switch {
	case o.Dir == "":
		return errors.New("voterstore: Options.Dir is empty")
	case o.Cluster == "":
		return errors.New("voterstore: Options.Cluster is empty")
	case o.VoterID == "":
		return errors.New("voterstore: Options.VoterID is empty")
	case o.Voters != nil && !slices.Contains(o.Voters, o.VoterID):
		return fmt.Errorf("voterstore: Options.Voters %q does not include VoterID %q", o.Voters, o.VoterID)
	case slices.ContainsFunc(o.Voters, func(id string) bool { return id == "" || strings.ContainsRune(id, 0) }):
		return fmt.Errorf("voterstore: Options.Voters %q holds an empty ID or one with a NUL byte", o.Voters)
	case o.OpenTimeout < 0:
		return fmt.Errorf("voterstore: Options.OpenTimeout is negative (%v)", o.OpenTimeout)
	}
	return nil
}

// Store is one voter's durable state. Its methods are safe for concurrent
// use. A Store owns one goroutine, the committer, which Close stops and
// waits for; every Store that Open returns must be closed.
//
// Writes go through a queue: Save and Enqueue append records to the batch
// that the committer writes next, in one bbolt transaction with one fsync,
// while the previous batch is being committed. Under load every commit thus
// carries the records of all the requests that arrived during the previous
// one, and a lone save costs one commit without any added delay (bbolt's
// DB.Batch would wait up to its MaxBatchDelay first).
type Store struct {
	db        *bolt.DB
	path      string
	boot      uint32
	restarted bool
	log       *slog.Logger
	onCommit  func(records int, took time.Duration)

	wake    chan struct{} // capacity 1: a batch was queued, or Close was called
	stopped chan struct{} // closed when the committer has exited

	closeOnce sync.Once
	closeErr  error

	commits atomic.Uint64 // committed batches

	mu         sync.Mutex
	queued     *batch       // records waiting for the next commit; nil if none
	committing *batch       // the batch being committed; nil if none
	failed     error        // cause of the first failed commit; never cleared
	closed     bool         // Close was called: no more records are queued
	commitHook func() error // tests only: runs before each commit and may fail it
}

// batch is the records of one commit and the outcome that its savers wait
// for.
type batch struct {
	recs []lease.ShardRecord
	done chan struct{} // closed once err is set
	err  error
}

// Open opens the store in opts.Dir, creating it if opts.Init is set, and
// increments and fsyncs the boot counter before it returns. It fails with
// ErrNoStore, ErrExists, ErrWrongCluster, ErrWrongVoter, ErrWrongVoterSet or ErrLocked as
// described on Options; a refused store is left exactly as it was.
func Open(opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = DefaultOpenTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(opts.Dir, FileName)
	if opts.Init {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("voterstore: cannot create data directory %s: %w", opts.Dir, err)
		}
	}

	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  opts.OpenTimeout,
		OpenFile: openFile(opts.Init),
	})
	if err != nil {
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, fmt.Errorf("voterstore: %s is held by another process (waited %v): %w", path, opts.OpenTimeout, ErrLocked)
		case !opts.Init && errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("voterstore: voter store missing at %s; %s: %w", path, reinitAdvice, ErrNoStore)
		case opts.Init && errors.Is(err, fs.ErrExist):
			return nil, fmt.Errorf("voterstore: %s already exists and Init never overwrites a store; open it without Init, or delete it first, but %s: %w", path, reinitAdvice, ErrExists)
		case opts.Init:
			return nil, fmt.Errorf("voterstore: cannot create a store in directory %s: %w", opts.Dir, err)
		}
		return nil, fmt.Errorf("voterstore: open %s: %w", path, err)
	}

	var boot uint32
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		if opts.Init {
			boot, err = initMeta(tx, opts)
		} else {
			boot, err = nextBoot(tx, path, opts)
		}
		return err
	})
	if err == nil && opts.Init {
		// bbolt fsyncs the file but not its directory entry; without this a
		// power cut could lose the new file, and the next Open would then
		// report ErrNoStore for a voter that may already have voted.
		if err = syncDir(opts.Dir); err != nil {
			err = fmt.Errorf("voterstore: sync directory %s: %w", opts.Dir, err)
		}
	}
	if err != nil {
		_ = db.Close()
		if opts.Init {
			// This Open created the file and nothing has voted from it:
			// removing it lets the operator simply retry.
			_ = os.Remove(path)
		}
		return nil, err
	}

	s := &Store{
		db:        db,
		path:      path,
		boot:      boot,
		restarted: !opts.Init,
		log:       log,
		onCommit:  opts.OnCommit,
		wake:      make(chan struct{}, 1),
		stopped:   make(chan struct{}),
	}
	go s.run()
	if opts.Init {
		log.Info("voter store initialised", "path", path, "cluster", opts.Cluster, "voter", opts.VoterID)
	}
	log.Info("voter store opened", "path", path, "boot", boot, "restarted", s.restarted)
	return s, nil
}

// openFile is how bbolt opens the file. Without Init it must not create a
// missing store (bbolt would, and initialise it empty); with Init it must
// not open an existing one. Deciding in the open call itself, rather than
// checking for the file first, leaves no window for the file to appear or
// vanish in between.
func openFile(init bool) func(string, int, os.FileMode) (*os.File, error) {
	return func(name string, flag int, perm os.FileMode) (*os.File, error) {
		if init {
			flag |= os.O_CREATE | os.O_EXCL
		} else {
			flag &^= os.O_CREATE
		}
		return os.OpenFile(name, flag, perm)
	}
}

// initMeta writes a new store's metadata and creates its records bucket.
// Both happen in one transaction, so a store either has metadata or never
// held records.
func initMeta(tx *bolt.Tx, opts Options) (uint32, error) {
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return 0, fmt.Errorf("voterstore: create meta bucket: %w", err)
	}
	if _, err := tx.CreateBucket(bucketRecords); err != nil {
		return 0, fmt.Errorf("voterstore: create records bucket: %w", err)
	}
	const boot = 1
	for _, kv := range [...]struct{ k, v []byte }{
		{keyFormat, []byte{formatVersion}},
		{keyCluster, []byte(opts.Cluster)},
		{keyVoter, []byte(opts.VoterID)},
		{keyBoot, binary.BigEndian.AppendUint32(nil, boot)},
	} {
		if err := meta.Put(kv.k, kv.v); err != nil {
			return 0, fmt.Errorf("voterstore: write %s: %w", kv.k, err)
		}
	}
	if opts.Voters != nil {
		if err := meta.Put(keyVoters, encodeVoters(opts.Voters)); err != nil {
			return 0, fmt.Errorf("voterstore: write voter set: %w", err)
		}
	}
	return boot, nil
}

// encodeVoters is the recorded form of a voter set: its IDs sorted,
// NUL-separated (Options.validate refuses IDs with a NUL byte).
func encodeVoters(ids []string) []byte {
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	return []byte(strings.Join(sorted, "\x00"))
}

func decodeVoters(b []byte) []string { return strings.Split(string(b), "\x00") }

// nextBoot checks an existing store's metadata against opts and increments
// its boot counter. It writes nothing unless every check passes.
func nextBoot(tx *bolt.Tx, path string, opts Options) (uint32, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, fmt.Errorf("voterstore: voter store missing at %s: the file has no voter metadata, "+
			"so its initialisation never finished; delete it, but %s: %w", path, reinitAdvice, ErrNoStore)
	}
	if v := meta.Get(keyFormat); len(v) != 1 {
		return 0, fmt.Errorf("voterstore: %s: format version is %d bytes long: %w", path, len(v), ErrCorrupt)
	} else if v[0] != formatVersion {
		return 0, fmt.Errorf("voterstore: %s has format version %d; this build reads version %d", path, v[0], formatVersion)
	}
	if got := string(meta.Get(keyCluster)); got != opts.Cluster {
		return 0, fmt.Errorf("voterstore: %s belongs to cluster %q, not %q: %w", path, got, opts.Cluster, ErrWrongCluster)
	}
	if got := string(meta.Get(keyVoter)); got != opts.VoterID {
		return 0, fmt.Errorf("voterstore: %s belongs to voter %q, not %q: %w", path, got, opts.VoterID, ErrWrongVoter)
	}
	if opts.Voters != nil {
		if got := meta.Get(keyVoters); got == nil {
			// A store made before the set was recorded: record it now.
			if err := meta.Put(keyVoters, encodeVoters(opts.Voters)); err != nil {
				return 0, fmt.Errorf("voterstore: %s: write voter set: %w", path, err)
			}
		} else if want := encodeVoters(opts.Voters); !bytes.Equal(got, want) {
			return 0, fmt.Errorf("voterstore: %s was recorded with voters %q, not %q; a voter set changes only "+
				"through a reconfiguration that copies the voters' records, never by restarting with a new list: %w",
				path, decodeVoters(got), decodeVoters(want), ErrWrongVoterSet)
		}
	}
	if tx.Bucket(bucketRecords) == nil {
		return 0, fmt.Errorf("voterstore: %s has no records bucket: %w", path, ErrCorrupt)
	}
	v := meta.Get(keyBoot)
	if len(v) != 4 {
		return 0, fmt.Errorf("voterstore: %s: boot counter is %d bytes long: %w", path, len(v), ErrCorrupt)
	}
	prev := binary.BigEndian.Uint32(v)
	if prev == math.MaxUint32 {
		// Generations are Boot<<32 | sequence: wrapping would reuse them.
		return 0, fmt.Errorf("voterstore: %s: boot counter exhausted at %d; the voter must be re-initialised", path, prev)
	}
	boot := prev + 1
	if err := meta.Put(keyBoot, binary.BigEndian.AppendUint32(nil, boot)); err != nil {
		return 0, fmt.Errorf("voterstore: %s: write boot counter: %w", path, err)
	}
	return boot, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Path returns the store file's path.
func (s *Store) Path() string { return s.path }

// Boot returns the boot counter: 1 after Init, and one more on every later
// Open. It was fsynced before Open returned, so no two Opens of a store
// return the same value. Safe for concurrent use, also after Close.
func (s *Store) Boot() uint32 { return s.boot }

// Restarted reports whether the store existed before this Open, that is,
// whether Open was called without Init. A restarted voter has forgotten its
// sessions and must wait out a grace period before it grants (see
// lease.VoterConfig.Restarted). Safe for concurrent use, also after Close.
func (s *Store) Restarted() bool { return s.restarted }

// Records returns every durable record, keyed by shard. Records of saves
// that have not completed yet may or may not be included. It fails with
// ErrCorrupt, naming the shard, if a stored value cannot be decoded, and
// with ErrClosed after Close. Safe for concurrent use with every other
// method; the caller owns the returned map.
func (s *Store) Records() (map[uint32]lease.Record, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, s.errClosed()
	}
	recs := make(map[uint32]lease.Record)
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
			if len(k) != 4 {
				return fmt.Errorf("voterstore: %s: record key %x is not a 4-byte shard: %w", s.path, k, ErrCorrupt)
			}
			shard := binary.BigEndian.Uint32(k)
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("voterstore: %s: record of shard %d: %w", s.path, shard, err)
			}
			recs[shard] = r
			return nil
		})
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		// Close won the race with the check above.
		return nil, s.errClosed()
	}
	if err != nil {
		return nil, err
	}
	return recs, nil
}

// Save writes recs and returns nil once they are durable (committed and
// fsynced). Concurrent Saves share one commit. Records are applied in the
// order Save and Enqueue are called, so for one shard the later call wins;
// len(recs) == 0 returns nil at once.
//
// Because calls are ordered by when they start, two Saves of one shard
// that overlap in time have no defined winner, and an older record could
// overwrite a newer one. A driver that runs lease.Voter.Handle from several
// goroutines must therefore queue each request's records with Enqueue
// while it still serialises the voter, and then wait with Barrier.
//
// If ctx is done first, Save returns ctx.Err() wrapped; the records stay
// queued and may still become durable, so the caller must treat them as
// neither saved nor lost (and send no reply that promises them). After
// Close Save returns ErrClosed; after a failed commit it fails too. Safe
// for concurrent use.
func (s *Store) Save(ctx context.Context, recs []lease.ShardRecord) error {
	if len(recs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("voterstore: %s: save not started: %w", s.path, err)
	}
	b, err := s.enqueue(recs)
	if err != nil {
		return err
	}
	return s.wait(ctx, b)
}

// Enqueue queues recs for the next commit, in call order, and returns
// without waiting for it; a later Barrier waits until they are durable.
// It never blocks on I/O, so a driver may call it while it holds the lock
// that serialises its voter, which is what orders the records of one shard
// on disk as the voter ordered them. It fails with ErrClosed after Close,
// and after a failed commit; len(recs) == 0 returns nil at once. Safe for
// concurrent use.
func (s *Store) Enqueue(recs []lease.ShardRecord) error {
	if len(recs) == 0 {
		return nil
	}
	_, err := s.enqueue(recs)
	return err
}

func (s *Store) enqueue(recs []lease.ShardRecord) (*batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, s.errClosed()
	}
	if s.failed != nil {
		return nil, s.errFailed(s.failed)
	}
	b := s.queued
	if b == nil {
		b = &batch{done: make(chan struct{})}
		s.queued = b
		select {
		case s.wake <- struct{}{}:
		default: // the committer is already due to look
		}
	}
	b.recs = append(b.recs, recs...)
	return b, nil
}

// Barrier returns nil once every Save and Enqueue called before Barrier is
// durable, and at once if none is pending. A voter calls it before it sends
// a reply, rejections included, that could reveal records of requests whose
// saves have not completed. It returns the error of a failed commit among
// those it waited for (or of any earlier one), ctx.Err() wrapped if ctx is
// done first, and ErrClosed after Close. Safe for concurrent use.
func (s *Store) Barrier(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.errClosed()
	}
	// Batches commit in order, so the newest one covers everything queued
	// before it.
	b := s.queued
	if b == nil {
		b = s.committing
	}
	failed := s.failed
	s.mu.Unlock()
	if b != nil {
		return s.wait(ctx, b)
	}
	if failed != nil {
		return s.errFailed(failed)
	}
	return nil
}

func (s *Store) wait(ctx context.Context, b *batch) error {
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		select {
		case <-b.done: // prefer a known outcome
			return b.err
		default:
		}
		return fmt.Errorf("voterstore: %s: stopped waiting for a commit: %w", s.path, ctx.Err())
	}
}

// Close stops accepting saves, waits until every queued record has been
// committed (or has failed), stops the committer and closes the file.
// Saves blocked in Save get their outcome as usual. Close is idempotent:
// later and concurrent calls wait for the first one and return its result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
		<-s.stopped
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("voterstore: close %s: %w", s.path, err)
		}
		s.log.Info("voter store closed", "path", s.path, "commits", s.commits.Load())
	})
	return s.closeErr
}

// run is the committer: it commits queued batches one at a time until Close
// has been called and the queue is empty.
func (s *Store) run() {
	defer close(s.stopped)
	for {
		s.mu.Lock()
		b := s.queued
		s.queued = nil
		s.committing = b
		closed, failed, hook := s.closed, s.failed, s.commitHook
		s.mu.Unlock()
		if b == nil {
			if closed {
				return
			}
			<-s.wake
			continue
		}

		var err error
		if failed != nil {
			err = s.errFailed(failed)
		} else if cause := s.commit(b.recs, hook); cause != nil {
			failed = cause
			err = fmt.Errorf("voterstore: commit to %s: %w", s.path, cause)
		}

		s.mu.Lock()
		// A failed commit, fsync included, leaves the voter's memory ahead
		// of its disk, and after a failed fsync the kernel may have dropped
		// the dirty pages while reporting later fsyncs as successful. No
		// later commit can be trusted to cover this one, so the store stays
		// failed until the voter restarts from what is on disk.
		s.failed = failed
		s.committing = nil
		s.mu.Unlock()
		b.err = err
		close(b.done)
	}
}

// commit writes recs, in order, in one transaction; bbolt fsyncs it before
// Update returns.
func (s *Store) commit(recs []lease.ShardRecord, hook func() error) error {
	if hook != nil {
		if err := hook(); err != nil {
			return err
		}
	}
	start := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		bkt := tx.Bucket(bucketRecords)
		for _, r := range recs {
			// bbolt keeps the value slice until the commit: each Put gets
			// its own.
			if err := bkt.Put(shardKey(r.Shard), appendRecord(nil, r.Record)); err != nil {
				return fmt.Errorf("write shard %d: %w", r.Shard, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	took := time.Since(start)
	s.commits.Add(1)
	if s.onCommit != nil {
		s.onCommit(len(recs), took)
	}
	s.log.Debug("voter store commit", "records", len(recs), "took", took)
	return nil
}

func (s *Store) errClosed() error {
	return fmt.Errorf("voterstore: %s: %w", s.path, ErrClosed)
}

func (s *Store) errFailed(cause error) error {
	return fmt.Errorf("voterstore: %s refuses saves after a failed commit; restart the voter from its store: %w", s.path, cause)
}
