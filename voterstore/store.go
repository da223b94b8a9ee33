package voterstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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

	// MarkerFileName is the marker's file name inside Options.Dir. Init
	// writes it next to the store, and every Open writes it if it is
	// missing; it says, outside the bbolt file, that this directory held a
	// voter's store, so that Init can tell a store that was lost or deleted
	// from a directory that never had one (ErrReinit). It is plain text for
	// the operator; Open reads only whether it exists.
	MarkerFileName = "voter.db.created"

	// MaxFirstBoot bounds the boot counter of a new store, drawn at random
	// from [1, MaxFirstBoot) (see Store.Boot). It leaves at least 2^31
	// later Opens before the counter runs out.
	MaxFirstBoot = 1 << 31

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
	// accident. Re-initialising therefore means deleting Dir/voter.db first,
	// and then either deleting the marker Dir/voter.db.created too or
	// setting Reinit: Init refuses a directory whose marker says it held a
	// store before (ErrReinit). Every Init logs a warning: a new store is a
	// new voter identity, with none of the cluster's records.
	Init bool

	// Reinit lets Init create a store in a directory whose marker says it
	// held one before (see MarkerFileName and ErrReinit). It is the
	// operator's statement that the voter's records were copied from a
	// majority of the other voters, or that the whole cluster is being
	// re-initialised. Without Init it does nothing.
	Reinit bool

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
// ErrNoStore, ErrExists, ErrReinit, ErrWrongCluster, ErrWrongVoter,
// ErrWrongVoterSet or ErrLocked as described on Options, and with ErrCorrupt,
// naming the file, for a store it cannot read; a refused store is left
// exactly as it was.
//
// bbolt panics on some damaged files instead of returning an error; Open
// and Records turn such a panic into ErrCorrupt. If the panic happens while
// bbolt opens the file, Open closes the file (releasing its lock) but the
// file's memory mapping stays until the process exits.
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
	marker := filepath.Join(opts.Dir, MarkerFileName)
	if opts.Init {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("voterstore: cannot create data directory %s: %w", opts.Dir, err)
		}
		if err := checkMarker(path, marker, opts.Reinit); err != nil {
			return nil, err
		}
	}

	db, err := openBolt(path, opts)
	if err != nil {
		switch {
		case errors.Is(err, ErrCorrupt):
			return nil, err
		case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch):
			return nil, corruptError(path, err)
		case errors.Is(err, bolterrors.ErrTimeout):
			return nil, fmt.Errorf("voterstore: %s is held by another process (waited %v): %w", path, opts.OpenTimeout, ErrLocked)
		case !opts.Init && errors.Is(err, fs.ErrNotExist):
			lost := ""
			if text, ok := readMarker(marker); ok {
				lost = fmt.Sprintf(" although %s says it held one (%s): the store was lost or deleted", marker, text)
			}
			return nil, fmt.Errorf("voterstore: voter store missing at %s%s; %s: %w", path, lost, reinitAdvice, ErrNoStore)
		case opts.Init && errors.Is(err, fs.ErrExist):
			return nil, fmt.Errorf("voterstore: %s already exists and Init never overwrites a store; open it without Init, "+
				"or delete it and its marker %s first, but %s: %w", path, marker, reinitAdvice, ErrExists)
		case opts.Init:
			return nil, fmt.Errorf("voterstore: cannot create a store in directory %s: %w", opts.Dir, err)
		}
		return nil, fmt.Errorf("voterstore: open %s: %w", path, err)
	}

	var boot uint32
	err = recoverCorrupt(path, func() error {
		return db.Update(func(tx *bolt.Tx) error {
			var err error
			if opts.Init {
				boot, err = initMeta(tx, opts, rand.Reader)
			} else {
				boot, err = nextBoot(tx, path, opts)
			}
			return err
		})
	})
	if err == nil && opts.Init {
		err = writeMarker(marker, opts, boot)
	}
	if err == nil && opts.Init {
		// bbolt fsyncs the file but not its directory entry; without this a
		// power cut could lose the new file (or its marker), and the next
		// Open would then report ErrNoStore for a voter that may already
		// have voted.
		if err = syncDir(opts.Dir); err != nil {
			err = fmt.Errorf("voterstore: sync directory %s: %w", opts.Dir, err)
		}
	}
	if err != nil {
		_ = db.Close()
		if opts.Init {
			// This Open created the file and nothing has voted from it:
			// removing it lets the operator simply retry. A marker this
			// Open wrote goes too, or the retry would be refused.
			_ = os.Remove(path)
			if !opts.Reinit {
				_ = os.Remove(marker)
			}
		}
		return nil, err
	}
	if !opts.Init {
		// A store created before markers existed gets one now. Without it
		// Init could not tell, should this store be lost, that the
		// directory held one; failing to write it loses only that.
		if _, ok := readMarker(marker); !ok {
			if err := writeMarker(marker, opts, boot); err != nil {
				log.Warn("voter store has no marker and writing one failed; Init will not recognise this directory if the store is lost",
					"path", path, "err", err)
			} else if err := syncDir(opts.Dir); err != nil {
				log.Warn("voter store marker written but its directory did not sync", "path", marker, "err", err)
			}
		}
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
		log.Warn("voter store created: this is a NEW voter identity with none of the cluster's records; "+reinitAdvice,
			"path", path, "cluster", opts.Cluster, "voter", opts.VoterID, "boot", boot, "reinit", opts.Reinit)
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

// openBolt opens the bbolt file at path, turning a panic of bbolt's into
// ErrCorrupt. bbolt takes its file lock and reads the freelist inside Open,
// and panics on some damaged pages; the file it opened is then closed here,
// which releases the lock.
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	var f *os.File
	open := openFile(opts.Init)
	defer func() {
		if r := recover(); r != nil {
			if f != nil {
				_ = f.Close()
			}
			db, err = nil, corruptError(path, r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.OpenTimeout,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			var err error
			f, err = open(name, flag, perm)
			return f, err
		},
	})
}

// recoverCorrupt runs f, which reads or writes the store at path, and
// turns a panic of bbolt's into ErrCorrupt. bbolt's Update and View roll
// their transaction back as the panic passes, so the file stays usable
// for Close.
func recoverCorrupt(path string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corruptError(path, r)
		}
	}()
	return f()
}

// corruptError reports the store file at path as unreadable; cause is
// bbolt's error or the value it panicked with.
func corruptError(path string, cause any) error {
	return fmt.Errorf("voterstore: %s is damaged (bbolt: %v); treat the voter as one that lost its store: %s: %w",
		path, cause, reinitAdvice, ErrCorrupt)
}

// checkMarker refuses Init when the marker says the directory held a store
// but the store file is gone, unless reinit. With the store file present it
// leaves the decision to Open, which refuses with ErrExists.
func checkMarker(path, marker string, reinit bool) error {
	text, ok := readMarker(marker)
	if !ok || reinit {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	return fmt.Errorf("voterstore: %s is missing, but %s says this directory held a voter store (%s): "+
		"the store was lost or deleted, and a new one would be a NEW voter identity with none of the cluster's records; "+
		"%s; if that is what you are doing, delete %s (or set Options.Reinit) and initialise again: %w",
		path, marker, text, reinitAdvice, marker, ErrReinit)
}

// readMarker returns the first line of the marker file and whether it
// exists. A marker that exists but cannot be read still counts.
func readMarker(marker string) (string, bool) {
	f, err := os.Open(marker)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	if err != nil {
		return fmt.Sprintf("unreadable: %v", err), true
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 512))
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSuffix(strings.TrimSpace(line), "."), true
}

// writeMarker writes the marker file: to a temporary file first, fsynced,
// then renamed over any older marker, so that a crash leaves either the old
// marker or the new one. The caller syncs the directory.
func writeMarker(marker string, opts Options, boot uint32) error {
	text := fmt.Sprintf("Tenure voter %q of cluster %q keeps its store here, %s; created or first seen at boot %d, %s.\n"+
		"If %s is missing, the voter lost its records: it must not vote again until they are restored.\n",
		opts.VoterID, opts.Cluster, FileName, boot, time.Now().UTC().Format(time.RFC3339), FileName)
	f, err := os.CreateTemp(filepath.Dir(marker), "."+MarkerFileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("voterstore: write marker %s: %w", marker, err)
	}
	tmp := f.Name()
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, marker)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("voterstore: write marker %s: %w", marker, err)
	}
	return nil
}

// firstBoot draws a new store's boot counter from r: uniform in
// [1, MaxFirstBoot). See Store.Boot for why it is random.
func firstBoot(r io.Reader) (uint32, error) {
	var b [4]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("voterstore: draw the first boot counter: %w", err)
		}
		if boot := binary.BigEndian.Uint32(b[:]) & (MaxFirstBoot - 1); boot != 0 {
			return boot, nil
		}
	}
}

// initMeta writes a new store's metadata and creates its records bucket.
// Both happen in one transaction, so a store either has metadata or never
// held records. The boot counter starts at a random value drawn from rand.
func initMeta(tx *bolt.Tx, opts Options, rand io.Reader) (uint32, error) {
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return 0, fmt.Errorf("voterstore: create meta bucket: %w", err)
	}
	if _, err := tx.CreateBucket(bucketRecords); err != nil {
		return 0, fmt.Errorf("voterstore: create records bucket: %w", err)
	}
	boot, err := firstBoot(rand)
	if err != nil {
		return 0, err
	}
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

// Boot returns the boot counter: a random value in [1, MaxFirstBoot) after
// Init, and one more on every later Open. It was fsynced before Open
// returned, so no two Opens of a store return the same value. Safe for
// concurrent use, also after Close.
//
// The first value is random so that a store re-initialised after a loss
// does not repeat the boots, and with them the session generations
// (Boot<<32 | sequence), of the store it replaces, which holders may still
// hold: a holder that sees a generation it knows counts the voter's old
// protection as current. A store whose Opens used the boots [b, b+k)
// overlaps a new store that will open k' times only if the new store's
// first boot falls in (b−k', b+k): probability at most
// (k+k'−1)/(MaxFirstBoot−1), under 10^-5 for ten thousand Opens of each,
// and a generation repeats only if, within a shared boot, the same
// sequence number is issued too.
func (s *Store) Boot() uint32 { return s.boot }

// Restarted reports whether the store existed before this Open, that is,
// whether Open was called without Init. A restarted voter has forgotten its
// sessions and must wait out a grace period before it grants (see
// lease.VoterConfig.Restarted). Safe for concurrent use, also after Close.
func (s *Store) Restarted() bool { return s.restarted }

// Records returns every durable record, keyed by shard. Records of saves
// that have not completed yet may or may not be included. It fails with
// ErrCorrupt, naming the shard, if a stored value cannot be decoded, or
// naming the file if bbolt cannot read it, and with ErrClosed after Close. Safe for concurrent use with every other
// method; the caller owns the returned map.
func (s *Store) Records() (map[uint32]lease.Record, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, s.errClosed()
	}
	recs := make(map[uint32]lease.Record)
	err := recoverCorrupt(s.path, func() error {
		return s.db.View(func(tx *bolt.Tx) error {
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
	// A damaged page can make bbolt panic here, in the committer: the
	// commit then fails like any other, and the store with it.
	err := recoverCorrupt(s.path, func() error {
		return s.db.Update(func(tx *bolt.Tx) error {
			bkt := tx.Bucket(bucketRecords)
			for _, r := range recs {
				// bbolt keeps the value slice until the commit: each Put
				// gets its own.
				if err := bkt.Put(shardKey(r.Shard), appendRecord(nil, r.Record)); err != nil {
					return fmt.Errorf("write shard %d: %w", r.Shard, err)
				}
			}
			return nil
		})
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
