package voter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/tenurehq/tenure/lease"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
	"github.com/tenurehq/tenure/voterstore"
)

// store is what a Server needs of its *voterstore.Store once it is open.
type store interface {
	Enqueue(recs []lease.ShardRecord) error
	Barrier(ctx context.Context) error
	Close() error
}

// Server drives one lease.Voter: it owns the voter's clock, its store and
// its gRPC service. Its methods are safe for concurrent use. Every Server
// that Open returns must be closed.
type Server struct {
	voterv1.UnimplementedVoterServer

	cfg       Config
	voterSet  uint64 // lease.VoterSetID(cfg.Voters); 0 without Voters
	restarted bool
	log       *slog.Logger

	// mu serialises the voter, and with it the order in which records
	// reach the store's queue.
	mu    sync.Mutex
	voter *lease.Voter
	// durable is the voter's record version (lease.Voter.Ver) up to which
	// every record is known to be on disk: a store barrier returned after
	// the request handled at that version queued its records. Guarded by
	// mu.
	durable uint64
	store   store
	failed  error // the first store failure; never cleared
	closed  bool

	closeOnce sync.Once
	closeErr  error

	// warnMu guards warned: the lease duration each refused sender was
	// last warned about, so that a misconfigured node costs one WARN line,
	// not one per keep-alive.
	warnMu sync.Mutex
	warned map[string]time.Duration

	// beforeLock, set only by tests, runs as a call is about to wait for mu.
	beforeLock func()

	// waiting counts the calls waiting for mu; above maxWaiting a call is
	// refused at once (ErrOverloaded) instead of joining a queue whose
	// wait outlasts its caller. shed counts those refused since the last
	// warning, at shedAt (unix nanoseconds).
	waiting    atomic.Int64
	maxWaiting int64
	shed       atomic.Int64
	shedAt     atomic.Int64
}

// MaxWaiting is how many calls may wait for a voter at once. Each holds
// at most one request (a node sends at most lease.HolderConfig.MaxBatch
// operations in one); a voter that has this many waiting is late by far
// more than any caller's deadline.
const MaxWaiting = 256

// shedLogEvery spaces the warnings about shed calls.
const shedLogEvery = 10 * time.Second

// maxWarned bounds Server.warned. When it is full it is cleared, and the
// senders still misconfigured are warned about once more.
const maxWarned = 1024

// Open validates cfg, opens the store in cfg.Dir (creating it if cfg.Init
// is set), loads its records and starts the voter on them. Every voter,
// including one whose store Init just created, starts in its grace period:
// it grants nothing for one LeaseDuration (see below). Open logs whether
// the store is new.
//
// Open fails with an error wrapping ErrConfig for an invalid cfg, and with
// the store's errors (voterstore.ErrNoStore, ErrExists, ErrReinit,
// ErrWrongCluster, ErrWrongVoter, ErrWrongVoterSet, ErrLocked, ErrCorrupt)
// otherwise.
func Open(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	st, err := voterstore.Open(voterstore.Options{
		Dir:      cfg.Dir,
		Cluster:  cfg.Cluster,
		VoterID:  cfg.ID,
		Voters:   cfg.Voters,
		Init:     cfg.Init,
		Logger:   cfg.Logger,
		OnCommit: cfg.OnCommit,
	})
	if errors.Is(err, voterstore.ErrNoStore) {
		return nil, fmt.Errorf("voter: voter %q has no store in %s and will not vote without its records; "+
			"if the data directory moved, point Config.Dir at it, and set Config.Init only as follows: %w",
			cfg.ID, cfg.Dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("voter: voter %q: %w", cfg.ID, err)
	}
	recs, err := st.Records()
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("voter: voter %q: load records: %w", cfg.ID, err)
	}

	// The grace period starts now, after the store was opened, so it ends
	// at least one LeaseDuration after the previous process stopped
	// renewing sessions: every session it forgot has expired by then.
	//
	// A store that Init has just created gets the grace period too. This
	// process cannot tell a cluster's first start from a voter whose store
	// was lost and re-initialised: an earlier process under this voter ID
	// may have answered keep-alives until a moment ago, and the holders it
	// answered count on it until their own deadlines, at most one
	// LeaseDuration later. Granting a rival before then could give a shard
	// two leaders. The grace period costs one LeaseDuration at the very
	// first start of a cluster, when nobody leads anything yet.
	now := lease.Time(cfg.Clock())
	v, err := lease.NewVoter(lease.VoterConfig{
		ID:            cfg.ID,
		LeaseDuration: cfg.LeaseDuration,
		Boot:          st.Boot(),
		Restarted:     true,
	}, recs, now)
	if err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("voter: voter %q: %w", cfg.ID, err)
	}

	s := &Server{
		cfg:       cfg,
		voterSet:  lease.VoterSetID(cfg.Voters),
		restarted: st.Restarted(),
		log:       cfg.Logger.With("voter", cfg.ID, "cluster", cfg.Cluster),
		voter:     v,
		durable:   v.Ver(), // the records it was loaded with
		store:     st,

		maxWaiting: MaxWaiting,
	}
	if s.restarted {
		s.log.Info("voter restarted from its store: in grace period, granting nothing until every session it forgot has expired",
			"boot", st.Boot(), "records", len(recs), "grace", cfg.LeaseDuration)
	} else {
		// The store has warned that it is a new voter identity.
		s.log.Info("voter started from a new store: in grace period, granting nothing until "+
			"every session an earlier process under this ID may have answered has expired",
			"boot", st.Boot(), "grace", cfg.LeaseDuration)
	}
	return s, nil
}

// Register registers the voterv1.Voter service on g. Call it before
// g.Serve.
func (s *Server) Register(g *grpc.Server) {
	voterv1.RegisterVoterServer(g, s)
}

// Call is the voterv1.Voter RPC: it applies one request to the voter and
// replies once every record the reply depends on is durable. Errors are
// gRPC statuses; see statusError for the codes.
func (s *Server) Call(ctx context.Context, m *voterv1.CallRequest) (*voterv1.CallReply, error) {
	rep, err := s.call(ctx, m)
	if err != nil {
		return nil, statusError(err)
	}
	return voterv1.ReplyToPB(s.cfg.Cluster, rep), nil
}

func (s *Server) call(ctx context.Context, m *voterv1.CallRequest) (lease.Reply, error) {
	cluster, req, err := voterv1.RequestFromPB(m)
	if err != nil {
		return lease.Reply{}, fmt.Errorf("voter %q: %w", s.cfg.ID, err)
	}
	if cluster != s.cfg.Cluster {
		return lease.Reply{}, fmt.Errorf("voter %q of cluster %q refuses node %q of cluster %q: %w",
			s.cfg.ID, s.cfg.Cluster, req.From, cluster, ErrWrongCluster)
	}
	if theirs := m.GetVoterSet(); theirs != 0 && s.voterSet != 0 && theirs != s.voterSet {
		return lease.Reply{}, fmt.Errorf("voter %q refuses node %q: it is configured with voter set %016x, this voter with %016x (voters %q): %w",
			s.cfg.ID, req.From, theirs, s.voterSet, s.cfg.Voters, ErrWrongVoterSet)
	}
	if theirs := req.LeaseDuration; theirs != 0 && theirs != s.cfg.LeaseDuration {
		// Refused before the voter sees it, so the node gets no session
		// here. A node whose lease is longer than the sessions this voter
		// keeps would still count on a voter that has let it go; a
		// shorter one is safe but means the configurations disagree.
		err := fmt.Errorf("voter %q refuses node %q: its lease duration is %v, this voter's %v; "+
			"every node and voter of a cluster must use the same: %w",
			s.cfg.ID, req.From, theirs, s.cfg.LeaseDuration, ErrWrongLeaseDuration)
		s.warnOnce(req.From, theirs, err)
		return lease.Reply{}, err
	}
	if err := ctx.Err(); err != nil {
		// The caller is gone and will never see a reply: leave the
		// voter's state alone rather than change it for nobody.
		return lease.Reply{}, fmt.Errorf("voter %q: request from %q abandoned: %w", s.cfg.ID, req.From, err)
	}

	if n := s.waiting.Add(1); n > s.maxWaiting {
		s.waiting.Add(-1)
		s.shedOne(n - 1)
		return lease.Reply{}, fmt.Errorf("voter %q: %d calls already wait for it (at most %d); request from %q shed: %w",
			s.cfg.ID, n-1, s.maxWaiting, req.From, ErrOverloaded)
	}
	if s.beforeLock != nil {
		s.beforeLock()
	}
	s.mu.Lock()
	s.waiting.Add(-1)
	if err := s.refusing(); err != nil {
		s.mu.Unlock()
		return lease.Reply{}, err
	}
	if err := ctx.Err(); err != nil {
		// Checked again with the lock held: under load the wait for it
		// can outlast the caller's deadline, and handling the request
		// then only delays those still waiting.
		s.mu.Unlock()
		return lease.Reply{}, fmt.Errorf("voter %q: request from %q abandoned while it waited for the voter: %w", s.cfg.ID, req.From, err)
	}
	// The clock is read under the lock so that the voter sees time in the
	// order it handles requests. Read outside, a request stamped earlier
	// could be handled later and move a session's lastSeen backwards,
	// ending the holder's protection before the holder's own deadline.
	rep, dirty := s.voter.Handle(req, lease.Time(s.cfg.Clock()))
	ver := s.voter.Ver()
	// A keep-alive without operations whose Held list reveals no record
	// change newer than what is on disk need not wait for the store: its
	// session news live in memory, and a restarted voter forgets them
	// anyway. Keep-alives thus never queue behind the commits of other
	// nodes' batches (or this node's), and leases do not expire because a
	// voter is busy writing grants.
	quick := len(req.Ops) == 0 && len(dirty) == 0 && s.voter.LastChange(req.From) <= s.durable
	st := s.store
	// Queueing under the same lock puts the records on disk in the order
	// the voter wrote them. Saved outside it, two requests' records for
	// one shard could reach the queue in either order, and an older
	// record could overwrite a newer one that a reply already promised.
	err = st.Enqueue(dirty)
	if err != nil {
		s.fail(err)
	}
	s.mu.Unlock()
	if err != nil {
		return lease.Reply{}, fmt.Errorf("voter %q: %w: %w", s.cfg.ID, ErrStopped, err)
	}

	if quick {
		return rep, nil
	}
	// The reply leaves only once everything it depends on is durable: its
	// own records, and those of earlier requests whose saves may still be
	// in flight, since a rejection or a Held list can reveal them. Barrier
	// waits for everything queued before it, so it is called for every
	// other request, including those that changed nothing.
	if err := st.Barrier(ctx); err != nil {
		switch {
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			// The records stay queued and may still become durable; the
			// caller, who left, treats the request as neither applied nor
			// lost. Nothing is wrong with the store.
			return lease.Reply{}, fmt.Errorf("voter %q: %w", s.cfg.ID, err)
		case errors.Is(err, voterstore.ErrClosed):
			// Close committed what was queued; only the reply is lost.
			return lease.Reply{}, fmt.Errorf("voter %q: %w: %w", s.cfg.ID, ErrClosed, err)
		}
		s.mu.Lock()
		s.fail(err)
		s.mu.Unlock()
		return lease.Reply{}, fmt.Errorf("voter %q: %w: %w", s.cfg.ID, ErrStopped, err)
	}
	// Everything queued up to this request's version is on disk.
	s.mu.Lock()
	s.durable = max(s.durable, ver)
	s.mu.Unlock()
	return rep, nil
}

// warnOnce logs err at WARN level the first time sender is refused for
// lease duration ld. Safe for concurrent use.
func (s *Server) warnOnce(sender string, ld time.Duration, err error) {
	s.warnMu.Lock()
	if prev, ok := s.warned[sender]; ok && prev == ld {
		s.warnMu.Unlock()
		return
	}
	if s.warned == nil || len(s.warned) >= maxWarned {
		s.warned = make(map[string]time.Duration)
	}
	s.warned[sender] = ld
	s.warnMu.Unlock()
	s.log.Warn("voter refuses a node configured with another lease duration; it gets no session here until the configurations agree",
		"node", sender, "node_lease_duration", ld, "lease_duration", s.cfg.LeaseDuration, "err", err)
}

// shedOne counts a call refused because waiting calls were already at
// the bound, and warns at most once per shedLogEvery with the numbers.
func (s *Server) shedOne(waiting int64) {
	s.shed.Add(1)
	now := time.Now().UnixNano()
	last := s.shedAt.Load()
	if last != 0 && now-last < int64(shedLogEvery) || !s.shedAt.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("voter shedding load: calls refused because too many already wait for it",
		"shed", s.shed.Swap(0), "waiting", waiting, "max_waiting", s.maxWaiting)
}

// refusing returns why the voter answers nothing, or nil. s.mu must be
// held.
func (s *Server) refusing() error {
	switch {
	case s.closed:
		return fmt.Errorf("voter %q: %w", s.cfg.ID, ErrClosed)
	case s.failed != nil:
		return fmt.Errorf("voter %q: %w: %w", s.cfg.ID, ErrStopped, s.failed)
	}
	return nil
}

// fail stops the voter after a store failure. The voter's memory now holds
// records that may never reach the disk, so any later reply could promise
// or reveal one of them; only a restart from the store, with its grace
// period, makes memory and disk agree again. s.mu must be held.
func (s *Server) fail(err error) {
	if s.failed != nil || s.closed {
		return
	}
	s.failed = err
	s.log.Error("voter stopped: its store failed, so it answers no request until it is restarted from its store", "err", err)
}

// Record returns the voter's record for shard, as the voter holds it in
// memory: it may not be durable yet. A record is not leadership; tools
// must never present it as a leader. Safe for concurrent use, also after
// Close.
func (s *Server) Record(shard uint32) lease.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.voter.Record(shard)
}

// Restarted reports whether the voter started from an existing store
// rather than one Init created. Either way it began with a grace period of
// one LeaseDuration.
func (s *Server) Restarted() bool { return s.restarted }

// Close stops the voter and closes its store once the records already
// queued are committed. A call that arrives during or after Close fails
// with codes.Unavailable, and so does one that handled its request but had
// not yet started waiting for the store; one already waiting finishes with
// the outcome of the commit it waits for. Stop (or GracefulStop) the
// grpc.Server first so that no call is cut short. Close is idempotent:
// later and concurrent calls wait for the first one and return its result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if err := s.store.Close(); err != nil {
			s.closeErr = fmt.Errorf("voter: voter %q: %w", s.cfg.ID, err)
		}
		s.log.Info("voter closed")
	})
	return s.closeErr
}
