package lease

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"slices"
	"time"
)

// HolderConfig configures a Holder. Durations are on the node's own
// monotonic clock.
type HolderConfig struct {
	// ID is the node's NodeID. Required.
	ID string
	// Inc is this process's incarnation: larger than any earlier process
	// with the same ID. Required, > 0. A start timestamp usually is, but a
	// wall clock can step back: a holder that no voter has granted
	// anything yet takes, once, an incarnation above the one a voter
	// reports on a Stale reply (see Holder.Inc), so a restart after a
	// clock step is not stale for good. Drivers that can should persist a
	// counter instead.
	Inc uint64
	// Voters lists the voter IDs, the same static list on every node: 1, 3
	// or 5 of them.
	Voters []string
	// LeaseDuration (LD) is the voters' session lifetime. Required.
	LeaseDuration time.Duration
	// MaxClockDrift (ρ) bounds any clock's rate error against real time,
	// as a fraction: 0.001 is 1 ms per second. Default 0.001; below 0.2.
	MaxClockDrift float64
	// SafetyMargin is subtracted from every lease on top of the drift
	// bound: the time the application needs to notice the end of a lease.
	// Default LD/20.
	SafetyMargin time.Duration
	// KeepAliveInterval is how often each voter gets a keep-alive. Default
	// LD/4. A leader survives a stall of about LD − KeepAliveInterval.
	KeepAliveInterval time.Duration
	// RequestTimeout is how long an acquisition or transfer waits for
	// replies before it counts the silent voters as refusals. Default LD/4.
	RequestTimeout time.Duration
	// BackoffMin and BackoffMax bound the random wait before retrying a
	// failed acquisition. Defaults LD/20 and LD/4.
	BackoffMin, BackoffMax time.Duration
	// MaxBatch bounds the operations in one request, and MaxInFlight the
	// requests with operations outstanding at one voter: the rest wait in
	// the holder, so that a cold start of any number of shards is paced
	// by how fast each voter answers instead of sending one request the
	// voter cannot answer in time. Transfers and releases leave before
	// grants. Keep-alives without operations are not held back. Defaults
	// 1024 and 2.
	MaxBatch, MaxInFlight int
	// ScanAllBelow is the number of shards under which every Tick visits
	// every shard. Above it, a Tick visits the shards that calls and
	// replies changed, and every shard only every KeepAliveInterval/5:
	// what only time changes (a deadline, a timeout, a backoff) is noticed
	// up to that much later. Default 2048.
	ScanAllBelow int
	// Rand supplies backoff jitter. Required; not shared.
	Rand *rand.Rand
	// Nonce identifies this process among any with the same ID and
	// incarnation (Request.Nonce). Default: 64 bits from crypto/rand, not
	// from Rand, which two processes may seed alike; simulations set it
	// to replay exactly.
	Nonce uint64
	// Mutations deliberately break the protocol, for checker tests only.
	Mutations HolderMutations
}

// HolderMutations are deliberate protocol bugs for checker tests.
type HolderMutations struct {
	// TimerFromReply starts the lease timer when a keep-alive reply
	// arrives instead of when the keep-alive was sent.
	TimerFromReply bool
	// IgnoreDrift leaves clock drift out of the usable lease.
	IgnoreDrift bool
	// NoRelease never releases records the node is not using.
	NoRelease bool
	// AdoptOtherGens treats Held records naming another generation of
	// this NodeID (another process's) as this process's own: it counts or
	// releases them.
	AdoptOtherGens bool
	// KeepVoteAfterRelease keeps counting a voter for the led epoch after
	// releasing a higher epoch of the same shard there.
	KeepVoteAfterRelease bool
	// KeepStaleInc stops at a Stale reply even when no voter has accepted
	// this process yet, instead of taking a higher incarnation.
	KeepStaleInc bool
	// HeldOutOfOrder applies a whole Held list even when a newer one from
	// the same voter was applied already.
	HeldOutOfOrder bool
	// VoteFromOlderReply counts the votes that the results of a reply
	// older than the Held state applied grant.
	VoteFromOlderReply bool
	// NoRegrantForUnbackedVoter leaves a lease on a bare majority when a
	// voter refuses its top-up because it records another grant of the
	// led epoch. Not a safety bug: the voter-loss test shows its cost.
	NoRegrantForUnbackedVoter bool
	// FullHeldOnly always asks for whole Held lists (HeldSince 0), as
	// nodes did before change lists. Not a bug: the simulation compares.
	FullHeldOnly bool
}

func (c HolderConfig) withDefaults() HolderConfig {
	ld := c.LeaseDuration
	if c.MaxClockDrift == 0 {
		c.MaxClockDrift = 0.001
	}
	if c.SafetyMargin == 0 {
		c.SafetyMargin = ld / 20
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = ld / 4
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = ld / 4
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = ld / 20
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = ld / 4
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 1024
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 2
	}
	if c.ScanAllBelow == 0 {
		c.ScanAllBelow = 2048
	}
	return c
}

// Validate reports the first invalid field of c, after defaults, by name.
func (c HolderConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.ID == "":
		return fmt.Errorf("%w: HolderConfig.ID is empty", ErrConfig)
	case c.Inc == 0:
		return fmt.Errorf("%w: HolderConfig.Inc must be positive", ErrConfig)
	case len(c.Voters) != 1 && len(c.Voters) != 3 && len(c.Voters) != 5:
		return fmt.Errorf("%w: HolderConfig.Voters must list 1, 3 or 5 voters, got %d", ErrConfig, len(c.Voters))
	case c.LeaseDuration <= 0:
		return fmt.Errorf("%w: HolderConfig.LeaseDuration must be positive, got %v", ErrConfig, c.LeaseDuration)
	case c.MaxClockDrift < 0 || c.MaxClockDrift >= 0.2:
		return fmt.Errorf("%w: HolderConfig.MaxClockDrift must be in [0, 0.2), got %v", ErrConfig, c.MaxClockDrift)
	case c.Rand == nil:
		return fmt.Errorf("%w: HolderConfig.Rand is nil", ErrConfig)
	case c.SafetyMargin < 0:
		return fmt.Errorf("%w: HolderConfig.SafetyMargin must not be negative, got %v: a negative margin would outlast the voters' sessions", ErrConfig, c.SafetyMargin)
	case c.KeepAliveInterval < 0:
		return fmt.Errorf("%w: HolderConfig.KeepAliveInterval must be positive, got %v", ErrConfig, c.KeepAliveInterval)
	case c.MaxBatch < 0 || c.MaxInFlight < 0:
		return fmt.Errorf("%w: HolderConfig.MaxBatch (%d) and MaxInFlight (%d) must not be negative", ErrConfig, c.MaxBatch, c.MaxInFlight)
	case c.RequestTimeout < 0:
		return fmt.Errorf("%w: HolderConfig.RequestTimeout must be positive, got %v", ErrConfig, c.RequestTimeout)
	case c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("%w: HolderConfig.BackoffMin (%v) and BackoffMax (%v) must satisfy 0 < min ≤ max", ErrConfig, c.BackoffMin, c.BackoffMax)
	}
	seen := map[string]bool{}
	for i, v := range c.Voters {
		if v == "" || seen[v] {
			return fmt.Errorf("%w: HolderConfig.Voters[%d] %q is empty or repeated", ErrConfig, i, v)
		}
		seen[v] = true
	}
	if eff := c.effective(); eff < 2*c.KeepAliveInterval {
		return fmt.Errorf("%w: HolderConfig.KeepAliveInterval %v is too long: the usable lease (LeaseDuration less drift and SafetyMargin) is %v, which must be at least twice the interval",
			ErrConfig, c.KeepAliveInterval, eff)
	}
	return nil
}

// effective is how long after sending a keep-alive the node may count on
// it: LD·(1−ρ)/(1+ρ) − SafetyMargin. The voter keeps the session for LD
// after receiving the keep-alive, on its own clock; receipt comes after the
// send, and with both clocks' rates within ±ρ of real time, LD on the
// voter's clock lasts at least LD/(1+ρ) of real time while this node's
// deadline arrives within LD/(1+ρ) of real time. The margin covers the
// application noticing.
func (c HolderConfig) effective() time.Duration {
	ld := float64(c.LeaseDuration)
	if c.Mutations.IgnoreDrift {
		return c.LeaseDuration - c.SafetyMargin
	}
	return time.Duration(ld*(1-c.MaxClockDrift)/(1+c.MaxClockDrift)) - c.SafetyMargin
}

// Reason says why a node stopped leading a shard.
type Reason uint8

// The reasons a lease ends.
const (
	// ReasonLeaseExpired: keep-alives were not answered in time.
	ReasonLeaseExpired Reason = iota + 1
	// ReasonQuorumLost: voters stopped protecting the lease (they restarted
	// or another node now holds their record) and a re-grant failed.
	ReasonQuorumLost
	// ReasonReleased: the node gave the shard up.
	ReasonReleased
	// ReasonHandoff: the node transferred the shard.
	ReasonHandoff
	// ReasonSuperseded: a newer process with the same NodeID exists.
	ReasonSuperseded
)

func (r Reason) String() string {
	switch r {
	case ReasonLeaseExpired:
		return "lease expired"
	case ReasonQuorumLost:
		return "quorum lost"
	case ReasonReleased:
		return "released"
	case ReasonHandoff:
		return "handoff"
	case ReasonSuperseded:
		return "superseded"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// ChangeKind says what a Change reports.
type ChangeKind uint8

// The kinds of change a Holder reports.
const (
	// Gained: the node leads the shard at Epoch.
	Gained ChangeKind = iota + 1
	// Renewed: the node still leads the shard, now at the higher Epoch.
	Renewed
	// Lost: the node no longer leads the shard; Reason says why.
	Lost
	// Transferred: a majority accepted this node's Transfer; the target
	// leads at Epoch once it receives Gens (voter ID → its generation).
	Transferred
	// TransferFailed: a majority refused the Transfer; the shard's lease
	// had already ended here.
	TransferFailed
)

// Change is one leadership transition for the driver to act on.
type Change struct {
	Kind   ChangeKind
	Shard  uint32
	Epoch  uint64
	Reason Reason
	// To and Gens are set for Transferred.
	To   string
	Gens map[string]uint64
}

// Envelope is a request addressed to a voter.
type Envelope struct {
	To  string
	Req Request
}

// voterState is what the node knows of one voter's session.
type voterState struct {
	gen      uint64 // highest generation this voter has reported
	fresh    Time   // latest send time of a request answered with gen
	hasFresh bool
	lastSent Time
	sentAny  bool
	// heldVer is the HeldVer of the newest Held list applied from the
	// current session (0: none): the voter's record version orders its
	// replies, whatever order they arrive in, and requests echo it so that
	// replies list only the changes after it.
	heldVer uint64
	// needFull asks for a whole Held list (HeldSince 0), from a request
	// sent after fullAfter: a change list showed a led shard's record
	// moved on at a moment that may predate the vote, so it could not
	// withdraw it, and changes alone would not show it again.
	needFull  bool
	fullAfter Time
	// fullAsked is when a whole Held list was last asked for; fullJitter
	// spreads those requests of different nodes and voters over
	// fullHeldEvery/2 more keep-alive intervals, so that nodes started
	// together do not all ask at once.
	fullAsked  Time
	fullJitter int
	// heldAt is the NoticesAt of the newest reply whose Held list was
	// applied, for voters that send no HeldVer.
	heldAt Time
	// noticesAt is the NoticesAt of the last reply processed, echoed in
	// requests so that notices a lost reply carried are sent again.
	noticesAt Time
	// releasesAt is when unacknowledged releases last went to this voter.
	releasesAt Time
	// needAll says the voter's whole list of live sessions is owed: its
	// session for this node changed (it restarted, or forgot this node)
	// and the reply that listed them all was lost or overtaken. Requests
	// then ask for it (NoticesSince 0) until it arrives.
	needAll bool
	// newerDead is the newer incarnation this voter reported on a Stale
	// reply as not live there (0: none).
	newerDead uint64
	// batch is how many operations the next request to this voter may
	// carry: it halves when a request with operations is answered later
	// than RequestTimeout/2 or not within RequestTimeout, and grows by
	// MaxBatch/16 when one is answered within RequestTimeout/4, between
	// minBatch and MaxBatch (additive increase, multiplicative decrease,
	// as TCP paces a sender by its acknowledgements). A voter that
	// cannot keep up thus gets batches it answers in time, and
	// acquisitions do not time out while their grants are being written.
	batch int
}

// minBatch is the fewest operations a request may carry when a voter is
// slow (voterState.batch).
const minBatch = 32

type sentRequest struct {
	voter int
	at    Time
	inc   uint64 // the incarnation it was sent under
	ops   bool   // it carried operations (it counts against MaxInFlight)
	// late says it went unanswered for RequestTimeout: the voter's batch
	// size was halved for it once.
	late bool
}

// attempt is an acquisition in progress.
type attempt struct {
	epoch uint64
	// started is when a grant of it last left; sent says one has (an
	// attempt still waiting in the holder's queue does not time out).
	started Time
	sent    bool
	refused map[int]bool
	// contested is set when a refusal came from a live holder or a
	// restarting voter, rather than from a stale epoch guess.
	contested bool
}

type transfer struct {
	epoch    uint64
	toEpoch  uint64 // the epoch the target leads at
	to       string
	toInc    uint64
	started  Time
	accepted map[int]uint64
	refused  map[int]bool
}

type shardState struct {
	id      uint32
	desired bool
	// votes[e][v] is the generation voter v's record names for this node
	// at epoch e; a lease at e needs a majority of them fresh.
	votes map[uint64]map[int]uint64
	// estab[v] is when v's vote for the led epoch was last confirmed (a
	// reply or forward processed then). Only a request sent after it was
	// handled by v after the confirmation — requests to one voter run
	// concurrently and may be handled in any order — so only its reply's
	// Held list can show that v moved on.
	estab map[int]Time
	led   bool
	epoch uint64 // the led epoch, when led
	// floor is the highest epoch this node gave up (sent a release or a
	// transfer for, or abandoned): it never leads at or below it.
	floor   uint64
	known   uint64 // highest epoch seen in any record
	acq     *attempt
	xfer    *transfer
	nextTry Time
	// expectUntil is the hold-off the last Expect set.
	expectUntil Time
	// blocked names the live holder whose record refused the last attempt;
	// when a voter reports its session expired the node retries at once.
	blocked NodeGen
	regrant bool // a voter of the quorum stopped protecting the lease
	// topUp is when to next ask the voters missing from the led epoch's
	// quorum to grant that same epoch, so that the lease survives the loss
	// of any minority; topDone lists voters whose record is already at or
	// above the epoch (only a re-grant could add them).
	topUp   Time
	topDone map[int]bool
	release map[int]uint64 // voter → epoch of a record naming us to release
	// older lists voters whose record names this node below the led
	// epoch (they missed a re-grant), with that epoch: they are released
	// when the lease ends.
	older map[int]uint64
}

// Holder is one node's side of the lease protocol: keep-alives, grants,
// releases and transfers, and the lease rule that decides, from the node's
// own clock alone, whether it leads a shard right now. Like Voter it does
// no I/O and reads no clock. Not safe for concurrent use.
type Holder struct {
	cfg    HolderConfig
	maj    int
	eff    time.Duration
	voters []voterState
	index  map[string]int
	shards map[uint32]*shardState
	// sorted lists the keys of shards in order; nil once a shard is added
	// (shards are never removed), rebuilt by sortedShards.
	sorted []uint32
	sent   map[uint64]sentRequest
	seq    uint64
	// superseded is set when a voter reports a newer incarnation.
	superseded bool
	// inc is the incarnation sent; raises counts how often it was
	// raised above a voter's (at most once per voter); everLed says this
	// process has led a shard, after which it never raises.
	inc      uint64
	raises   int
	everLed  bool
	mismatch string
	changes  []Change
	notices  []Notice
	queued   map[int][]Op
	// grants[v] holds the grants waiting for voter v, oldest first, from
	// grantHead[v] on: taken from the front, so a batch costs its own
	// size however many wait behind it.
	grants    map[int][]Op
	grantHead map[int]int
	// releasing holds the shards with releases not yet acknowledged; led
	// those whose state says led (Leads still checks the lease rule).
	releasing map[uint32]struct{}
	// awaiting holds the shards with votes that may yet make this node
	// lead them (above the led epoch, or any when not led): a voter that
	// counts again may complete their majority.
	awaiting map[uint32]struct{}
	// shortened and shortenedAll: see TakeShortened.
	shortened    map[uint32]struct{}
	shortenedAll bool
	led          map[uint32]struct{}
	// dirty holds the shards a call or a reply changed since the last
	// Tick; scannedAt is when a Tick last visited every shard, and scanAll
	// asks the next Tick to.
	dirty     map[uint32]struct{}
	scannedAt Time
	scanAll   bool
}

// NewHolder returns a holder that leads nothing.
func NewHolder(cfg HolderConfig) (*Holder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.Voters = slices.Clone(cfg.Voters)
	for cfg.Nonce == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:]) // never fails (crypto/rand's contract)
		cfg.Nonce = binary.LittleEndian.Uint64(b[:])
	}
	h := &Holder{
		cfg:    cfg,
		maj:    len(cfg.Voters)/2 + 1,
		eff:    cfg.effective(),
		voters: make([]voterState, len(cfg.Voters)),
		index:  make(map[string]int),
		shards: make(map[uint32]*shardState),
		sent:   make(map[uint64]sentRequest),
		queued: make(map[int][]Op),
		grants: make(map[int][]Op), grantHead: make(map[int]int),
		inc: cfg.Inc,

		releasing: make(map[uint32]struct{}),
		awaiting:  make(map[uint32]struct{}),
		shortened: make(map[uint32]struct{}),
		led:       make(map[uint32]struct{}),
		dirty:     make(map[uint32]struct{}),
		scanAll:   true,
	}
	for i, v := range cfg.Voters {
		h.index[v] = i
		h.voters[i].batch = cfg.MaxBatch
		f := fnv.New32a()
		f.Write([]byte(cfg.ID + "\x00" + v))
		h.voters[i].fullJitter = int(f.Sum32() % (fullHeldEvery / 2))
	}
	return h, nil
}

// ID returns the node's ID.
func (h *Holder) ID() string { return h.cfg.ID }

// Inc returns the incarnation this process sends. It starts at
// HolderConfig.Inc and grows when a voter answers Stale naming a higher
// incarnation of this NodeID while this process has never led anything:
// the process takes one above it instead of stopping. Voters may know
// different incarnations (some missed the newest, and one of those may
// have granted this process a partial acquisition), so it may grow again
// on another voter's higher report, but at most once per voter: two live
// processes with one NodeID cannot outbid each other for ever. Such a
// process leads nothing, and records of its old generation protect
// nothing, so the only question is which of two processes with one NodeID
// runs on; the one that has led something stops (the other way round, a
// process whose clock stepped back would be stale for good). The driver
// must advertise the new incarnation wherever it advertised the old one
// (handoff targets are named by it).
func (h *Holder) Inc() uint64 { return h.inc }

// Mismatch returns the last configuration disagreement a voter reported
// (a different LeaseDuration), or "" if none: the voter ignored the
// request, so this node cannot lead until the operator fixes it.
func (h *Holder) Mismatch() string { return h.mismatch }

func (h *Holder) shard(s uint32) *shardState {
	st := h.shards[s]
	if st == nil {
		st = &shardState{id: s, votes: make(map[uint64]map[int]uint64), estab: make(map[int]Time)}
		h.shards[s] = st
		h.sorted = nil
	}
	return st
}

// SetDesired sets whether this node should lead shard s: only desired
// shards are acquired. Undesired shards the node leads stay led until the
// caller releases or transfers them.
func (h *Holder) SetDesired(s uint32, desired bool) {
	if desired {
		if st := h.shard(s); !st.desired {
			st.desired = true
			h.touch(s)
		}
	} else if st := h.shards[s]; st != nil && st.desired {
		st.desired = false
		if !st.led && st.acq == nil && st.xfer == nil {
			// Records adopted as votes while the node wanted s (a Held
			// list showed them) are given back now: a change list shows
			// a record once, and would not show them again.
			for e, vs := range st.votes {
				for v := range vs {
					h.queueRelease(st, v, e)
				}
				delete(st.votes, e)
			}
		}
		h.touch(s)
	}
}

// touch marks shard s for the next Tick, which otherwise visits every
// shard only every scanEvery once there are many (ScanAllBelow).
func (h *Holder) touch(s uint32) {
	h.dirty[s] = struct{}{}
}

// scanEvery is how often a Tick visits every shard once there are many:
// what only time changes (a lease ending at its deadline, a timeout, a
// backoff over, a top-up due) is noticed that much later; what a call or a
// reply changes is visited at the next Tick.
func (h *Holder) scanEvery() time.Duration { return h.cfg.KeepAliveInterval / 5 }

// counts reports whether voter v still protects st's lease at epoch e: it
// has a vote for e naming v's current generation, and a keep-alive answered
// with that generation was sent less than the usable lease ago.
func (h *Holder) counts(st *shardState, e uint64, v int, now Time) bool {
	g, ok := st.votes[e][v]
	vs := &h.voters[v]
	return ok && g == vs.gen && vs.hasFresh && now.Sub(vs.fresh) < h.eff
}

func (h *Holder) valid(st *shardState, e uint64, now Time) bool {
	if h.superseded {
		return false
	}
	votes := st.votes[e]
	if len(votes) < h.maj {
		return false
	}
	n := 0
	for v, g := range votes {
		if vs := &h.voters[v]; g == vs.gen && vs.hasFresh && now.Sub(vs.fresh) < h.eff {
			n++
		}
	}
	return n >= h.maj
}

// Leads reports whether this node leads shard s at time now, and at which
// epoch. It is the lease rule itself: a pure function of the node's state
// and clock, true only while a majority of voters provably refuse anyone
// else.
func (h *Holder) Leads(s uint32, now Time) (uint64, bool) {
	st := h.shards[s]
	if st == nil || !st.led || !h.valid(st, st.epoch, now) {
		return 0, false
	}
	return st.epoch, true
}

// Deadline returns when the lease on s ends unless more keep-alives are
// answered: the time the driver must cancel the application's work by. ok
// is false if s is not led.
func (h *Holder) Deadline(s uint32, now Time) (Time, bool) {
	st := h.shards[s]
	if st == nil || !st.led || h.superseded {
		return 0, false
	}
	var buf [5]Time // at most 5 voters
	ends := buf[:0]
	for v, g := range st.votes[st.epoch] {
		if vs := &h.voters[v]; g == vs.gen && vs.hasFresh && now.Sub(vs.fresh) < h.eff {
			ends = append(ends, vs.fresh.Add(h.eff))
		}
	}
	if len(ends) < h.maj {
		return 0, false
	}
	slices.Sort(ends)
	// The lease lasts while maj voters count: until the maj-th latest
	// deadline passes.
	return ends[len(ends)-h.maj], true
}

// QuorumDeadline returns when a lease backed by every voter (FullQuorum)
// ends unless more keep-alives are answered: the latest instant a majority
// of voters still count. ok is false when fewer than a majority count now.
func (h *Holder) QuorumDeadline(now Time) (Time, bool) {
	if h.superseded {
		return 0, false
	}
	var buf [8]Time
	ends := buf[:0]
	for v := range h.voters {
		if vs := &h.voters[v]; vs.hasFresh && now.Sub(vs.fresh) < h.eff {
			ends = append(ends, vs.fresh.Add(h.eff))
		}
	}
	if len(ends) < h.maj {
		return 0, false
	}
	slices.Sort(ends)
	return ends[len(ends)-h.maj], true
}

// FullQuorum reports whether every voter backs the lease on s, at the
// session it last reported: the lease's Deadline is then QuorumDeadline.
// Whatever withdraws one of those votes reports s in TakeShortened, and a
// voter's new session reports every shard.
func (h *Holder) FullQuorum(s uint32) bool {
	st := h.shards[s]
	if st == nil || !st.led || h.superseded {
		return false
	}
	votes := st.votes[st.epoch]
	if len(votes) < len(h.voters) {
		return false
	}
	for v, g := range votes {
		if g != h.voters[v].gen {
			return false
		}
	}
	return true
}

// EachLed calls fn for every shard this node leads at now, with its epoch,
// in no particular order: Led without the sorting and allocation, for
// callers that visit every led shard often.
func (h *Holder) EachLed(now Time, fn func(s uint32, epoch uint64)) {
	if h.superseded {
		return
	}
	var counts [8]bool
	for v := range h.voters {
		vs := &h.voters[v]
		counts[v] = vs.hasFresh && now.Sub(vs.fresh) < h.eff
	}
	for s := range h.led {
		st := h.shards[s]
		if st == nil || !st.led {
			continue
		}
		n := 0
		for v, g := range st.votes[st.epoch] {
			if v < len(counts) && counts[v] && g == h.voters[v].gen {
				n++
			}
		}
		if n >= h.maj {
			fn(s, st.epoch)
		}
	}
}

// Led returns the shards this node leads at now, sorted.
func (h *Holder) Led(now Time) []uint32 {
	var out []uint32
	for s := range h.led {
		if _, ok := h.Leads(s, now); ok {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// TakeChanges returns the transitions since the last call.
func (h *Holder) TakeChanges() []Change {
	c := h.changes
	h.changes = nil
	return c
}

// Notice is a voter's news about another node's session: it expired (the
// node's leases are provably over at that voter) or began. A Notice with
// Reset set names no node: forget which sessions Voter reported live; the
// notices after it list every session live there now.
type Notice struct {
	Voter   string
	Node    string
	Gen     uint64
	Expired bool
	Reset   bool
}

// TakeNotices returns the session notices voters sent since the last call.
func (h *Holder) TakeNotices() []Notice {
	n := h.notices
	h.notices = nil
	return n
}

// Release gives up shard s: the lease ends now, before the request leaves.
func (h *Holder) Release(s uint32, now Time) {
	st := h.shards[s]
	if st == nil {
		return
	}
	h.endLease(st, s, ReasonReleased, now)
	h.abandon(st, now)
	h.flushReleases(s, st)
	h.touch(s)
}

// flushReleases queues st's pending releases to go out with the next Tick
// instead of the next keep-alive.
func (h *Holder) flushReleases(s uint32, st *shardState) {
	for _, v := range slices.Sorted(maps.Keys(st.release)) {
		e := st.release[v]
		h.queued[v] = append(h.queued[v], Op{Kind: OpRelease, Shard: s, Epoch: e})
	}
}

// abandon stops any acquisition of st and releases, at every voter, every
// epoch it asked for. It raises the floor so the node never leads them.
func (h *Holder) abandon(st *shardState, now Time) {
	top := st.floor
	for e := range st.votes {
		top = max(top, e)
	}
	if st.acq != nil {
		top = max(top, st.acq.epoch)
		st.acq = nil
	}
	if st.led {
		top = max(top, st.epoch)
	}
	if top > st.floor {
		st.floor = top
	}
	for e, vs := range st.votes {
		for v := range vs {
			h.queueRelease(st, v, e)
		}
		delete(st.votes, e)
	}
	h.releaseOlder(st)
}

// releaseOlder queues the release of the records below the led epoch that
// voters which missed a re-grant still hold for this node.
func (h *Holder) releaseOlder(st *shardState) {
	for v, e := range st.older {
		h.queueRelease(st, v, e)
	}
	clear(st.older)
}

// queueRelease schedules a release of epoch e at voter v. Releasing gives
// e up for good (rule 1 of the lease rule): the floor rises so that no
// later vote for e — a transfer forwarded late, a delayed grant reply —
// can make this node lead at it while the voters already name someone
// else.
func (h *Holder) queueRelease(st *shardState, v int, e uint64) {
	st.floor = max(st.floor, e)
	if st.led && e >= st.epoch && !h.cfg.Mutations.KeepVoteAfterRelease {
		// A voter keeps one record per shard. If it holds e ≥ the led
		// epoch for this node, that record is the one protecting the
		// lease there, and the release unprotects it: the voter stops
		// counting the moment the release is queued, before it leaves
		// (lease rule 1, per voter).
		if _, ok := st.votes[st.epoch][v]; ok {
			h.dropLedVote(st, v)
		}
	}
	if h.cfg.Mutations.NoRelease {
		return
	}
	if st.release == nil {
		st.release = make(map[int]uint64)
	}
	st.release[v] = max(st.release[v], e)
	h.releasing[st.id] = struct{}{}
}

func (h *Holder) endLease(st *shardState, s uint32, r Reason, now Time) {
	if !st.led {
		return
	}
	st.led = false
	delete(h.led, s)
	h.changes = append(h.changes, Change{Kind: Lost, Shard: s, Epoch: st.epoch, Reason: r})
}

// Transfer hands shard s to node to (incarnation toInc) in one voter round.
// The lease ends now, before the request leaves; Transferred or
// TransferFailed reports the outcome. It returns an error if s is not led,
// and one wrapping ErrRegranting while a re-grant of s above the led epoch
// is in flight (the lease goes on; try again shortly). Call
// SetDesired(s, false) first: a node that still wants s acquires it again
// once the transfer is over.
func (h *Holder) Transfer(s uint32, to string, toInc uint64, now Time) error {
	return h.TransferAt(s, to, toInc, 0, now)
}

// TransferAt is Transfer with the epoch the target leads at: at least
// toEpoch (the target's MinTransferEpoch) and at least the led epoch + 1.
func (h *Holder) TransferAt(s uint32, to string, toInc, toEpoch uint64, now Time) error {
	e, ok := h.Leads(s, now)
	if !ok {
		return fmt.Errorf("transfer of shard %d: not leader", s)
	}
	if toEpoch > e && toEpoch-e > MaxEpochJump {
		// The target names its floor; one this far above the led epoch
		// is a corrupt or hostile message, and honouring it could run
		// the shard's epochs to their end.
		return fmt.Errorf("transfer of shard %d: target's lowest epoch %d is more than %d above the led epoch %d", s, toEpoch, uint64(MaxEpochJump), e)
	}
	st := h.shards[s]
	if st.acq != nil {
		// A re-grant above e is in flight: voters that grant it would
		// refuse a Transfer of e. It settles within RequestTimeout.
		return fmt.Errorf("transfer of shard %d at epoch %d: %w at epoch %d", s, e, ErrRegranting, st.acq.epoch)
	}
	h.endLease(st, s, ReasonHandoff, now)
	// The transfer gives e up at every voter; partial grants above e that
	// a failed re-grant kept are released (their voters refuse the
	// Transfer of e, the others suffice), and the floor keeps the node
	// from ever leading either.
	for ep, vs := range st.votes {
		if ep > e {
			for v := range vs {
				h.queueRelease(st, v, ep)
			}
		}
		st.floor = max(st.floor, ep)
		delete(st.votes, ep)
	}
	h.releaseOlder(st)
	op := Op{Kind: OpTransfer, Shard: s, Epoch: e, To: to, ToInc: toInc}
	if toEpoch > e+1 {
		op.ToEpoch = toEpoch // else the default, e+1; a ToEpoch ≤ Epoch is malformed
	}
	st.xfer = &transfer{epoch: e, toEpoch: op.TransferEpoch(), to: to, toInc: toInc, started: now,
		accepted: make(map[int]uint64), refused: make(map[int]bool)}
	for v := range h.voters {
		h.queued[v] = append(h.queued[v], op)
	}
	h.touch(s)
	return nil
}

// Expect marks s desired but starts no acquisition of it before until: the
// node is the target of a handoff in progress, and the source's Transfer
// (forwarded through AcceptTransfer, or found in a voter's Held records)
// is what should make it lead. Records naming it are adopted meanwhile. If
// the handoff never completes — the source died mid-way — the node
// acquires s itself from until on, as docs/design.md §4 asks. A later
// Expect with an earlier until shortens the hold-off an Expect set (not a
// backoff after failed attempts): Expect(s, now) when the source reports
// that the voters refused its Transfer, so the shard is led by nobody.
func (h *Holder) Expect(s uint32, until Time) {
	st := h.shard(s)
	st.desired = true
	h.touch(s)
	if st.acq == nil {
		switch {
		case until > st.nextTry:
			st.nextTry = until
		case st.expectUntil != 0 && st.nextTry == st.expectUntil:
			st.nextTry = until
		}
	}
	st.expectUntil = until
}

// MaxEpochJump bounds how far above the led epoch a transfer's target may
// ask to lead (TransferAt's toEpoch). Epochs grow by one per leadership;
// 2^32 leaves room for any real history and keeps the end of uint64 out of
// reach.
const MaxEpochJump = 1 << 32

// Transferring returns the shards whose Transfer awaits the voters'
// answer, sorted: a node must not stop before they are answered, or the
// target learns of them only from its voters' Held records.
func (h *Holder) Transferring() []uint32 {
	var out []uint32
	for _, s := range h.sortedShards() {
		if h.shards[s].xfer != nil {
			out = append(out, s)
		}
	}
	return out
}

// MinTransferEpoch is the lowest epoch at which this node can be handed
// shard s: above every epoch it gave up there (its floor). A source passes
// it to TransferAt, so that a target that once lost a race for s can still
// receive it.
func (h *Holder) MinTransferEpoch(s uint32) uint64 {
	if st := h.shards[s]; st != nil {
		return st.floor + 1
	}
	return 1
}

// AcceptTransfer records a transfer of s to this node at epoch, forwarded
// by the source with the generation each accepting voter named. The node
// leads once a majority of those generations are its current ones with
// fresh keep-alives of its own.
func (h *Holder) AcceptTransfer(s uint32, epoch uint64, gens map[string]uint64, now Time) {
	st := h.shard(s)
	h.touch(s)
	if epoch <= st.floor {
		return
	}
	for id, g := range gens {
		if v, ok := h.index[id]; ok {
			h.vote(st, epoch, v, g)
			// Replies to requests sent before now may predate the
			// transfer at that voter: their Held lists do not show it,
			// and must not be read as the voter having moved on.
			st.estab[v] = now
		}
	}
	h.promote(s, st, now)
	if st.led && st.epoch == epoch {
		// The forward names the majority that answered first; ask the
		// other voters now rather than at the next top-up, so that losing
		// one voter soon after the handoff does not end the lease.
		st.topUp = now
	}
}

func (h *Holder) vote(st *shardState, e uint64, v int, g uint64) {
	if !st.led || e > st.epoch {
		h.awaiting[st.id] = struct{}{}
	}
	if old, ok := st.votes[e][v]; ok && old != g && st.led && e == st.epoch {
		h.shortened[st.id] = struct{}{}
	}
	if st.votes[e] == nil {
		st.votes[e] = make(map[int]uint64)
	}
	st.votes[e][v] = g
	st.known = max(st.known, e)
}

// promote makes the node lead s at the highest epoch above the floor and
// the current lease that a majority of fresh voters back.
func (h *Holder) promote(s uint32, st *shardState, now Time) {
	var epochs []uint64
	for e := range st.votes {
		if e > st.floor && (!st.led || e > st.epoch) {
			epochs = append(epochs, e)
		}
	}
	slices.Sort(epochs)
	for i := len(epochs) - 1; i >= 0; i-- {
		e := epochs[i]
		if !h.valid(st, e, now) {
			continue
		}
		h.shortened[s] = struct{}{}
		kind := Gained
		if st.led && h.valid(st, st.epoch, now) {
			kind = Renewed
		} else if st.led {
			// The old lease lapsed before the new one was granted.
			h.endLease(st, s, ReasonLeaseExpired, now)
		}
		st.led, st.epoch, st.regrant = true, e, false
		h.led[s] = struct{}{}
		h.everLed = true
		// A backoff or an Expect hold-off belongs to acquiring; a re-grant
		// of what the node now leads must not wait for it.
		st.nextTry = now
		st.topUp, st.topDone = now.Add(h.cfg.KeepAliveInterval), nil
		if st.acq != nil && st.acq.epoch <= e {
			st.acq = nil
		}
		// Lower epochs are over: release the records that still name
		// them (they would otherwise block nobody but confuse tools).
		for old, vs := range st.votes {
			if old < e {
				for v := range vs {
					if st.older == nil {
						st.older = make(map[int]uint64)
					}
					st.older[v] = max(st.older[v], old)
				}
				delete(st.votes, old)
			}
		}
		h.changes = append(h.changes, Change{Kind: kind, Shard: s, Epoch: e})
		return
	}
}

// Tick advances time: it ends leases that ran out, starts and times out
// acquisitions, and returns the requests to send now. Each voter gets at
// most one request, carrying its keep-alive and every queued operation.
func (h *Holder) Tick(now Time) []Envelope {
	if h.superseded {
		return nil
	}
	if h.scanAll || len(h.shards) < h.cfg.ScanAllBelow || now.Sub(h.scannedAt) >= h.scanEvery() {
		for _, s := range h.sortedShards() {
			h.tickShard(s, h.shards[s], now)
		}
		h.scanAll, h.scannedAt = false, now
	} else {
		for _, s := range slices.Sorted(maps.Keys(h.dirty)) {
			if st := h.shards[s]; st != nil {
				h.tickShard(s, st, now)
			}
		}
	}
	clear(h.dirty)
	// Forget requests that can no longer matter: a reply to them would
	// carry a keep-alive older than any lease.
	for seq, r := range h.sent {
		if now.Sub(r.at) > 2*h.cfg.LeaseDuration {
			delete(h.sent, seq)
		}
	}
	inflight := make([]int, len(h.voters))
	for seq, r := range h.sent {
		switch {
		case !r.ops:
		case now.Sub(r.at) < h.inFlightFor():
			inflight[r.voter]++
		case !r.late:
			r.late = true
			h.sent[seq] = r
			h.slower(r.voter)
		}
	}
	var out []Envelope
	for v := range h.voters {
		vs := &h.voters[v]
		var ops []Op
		if inflight[v] < h.cfg.MaxInFlight {
			ops = h.takeBatch(v, now)
		}
		if len(ops) == 0 && vs.sentAny && now.Sub(vs.lastSent) < h.cfg.KeepAliveInterval {
			continue
		}
		h.seq++
		h.sent[h.seq] = sentRequest{voter: v, at: now, inc: h.inc, ops: len(ops) > 0}
		vs.lastSent, vs.sentAny = now, true
		since := vs.noticesAt
		if vs.needAll {
			since = 0 // the voter then lists every live session
		}
		heldSince := vs.heldVer
		if vs.needFull || h.cfg.Mutations.FullHeldOnly || now.Sub(vs.fullAsked) >= time.Duration(fullHeldEvery+vs.fullJitter)*h.cfg.KeepAliveInterval {
			// The voter then lists every record naming this node. Now and
			// then, whatever the changes said: a record this node lost
			// track of (a bug, or a case no rule foresaw) is released
			// within fullHeldEvery keep-alives rather than block the
			// shard for as long as this process lives.
			heldSince, vs.fullAsked = 0, now
		}
		out = append(out, Envelope{To: h.cfg.Voters[v], Req: Request{From: h.cfg.ID, Inc: h.inc, Nonce: h.cfg.Nonce, Seq: h.seq, Ops: ops, NoticesSince: since, LeaseDuration: h.cfg.LeaseDuration, HeldSince: heldSince}})
	}
	return out
}

// slower halves the batch size of voter v, which answers too late.
func (h *Holder) slower(v int) {
	vs := &h.voters[v]
	vs.batch = max(min(minBatch, h.cfg.MaxBatch), vs.batch/2)
}

// paced adjusts the batch size of voter v to a request with operations
// answered rtt after it left.
func (h *Holder) paced(v int, rtt time.Duration) {
	switch vs := &h.voters[v]; {
	case rtt > h.cfg.RequestTimeout/2:
		h.slower(v)
	case rtt < h.cfg.RequestTimeout/4:
		vs.batch = min(h.cfg.MaxBatch, vs.batch+max(1, h.cfg.MaxBatch/16))
	}
}

// inFlightFor is how long a request with operations counts against
// MaxInFlight without an answer (it may have been lost): RequestTimeout,
// after which the acquisitions it carried fail anyway. A voter slower than
// that gets at most MaxInFlight batches per RequestTimeout.
func (h *Holder) inFlightFor() time.Duration { return h.cfg.RequestTimeout }

// takeBatch takes up to MaxBatch operations queued for voter v, transfers
// and releases first, and drops grants nothing waits for any more (an
// acquisition that failed or was abandoned while they waited). Releases
// not yet acknowledged go again, at most once per RequestTimeout, with
// whatever room is left. It marks the acquisitions and transfers it sends
// as started now: their timeout runs from their send, not from their
// queueing.
func (h *Holder) takeBatch(v int, now Time) []Op {
	limit := h.voters[v].batch
	q := h.queued[v]
	n := min(len(q), limit)
	ops := slices.Clone(q[:n])
	h.queued[v] = slices.Delete(q, 0, n)
	g, head := h.grants[v], h.grantHead[v]
	for ; head < len(g) && len(ops) < limit; head++ {
		op := g[head]
		if st := h.shards[op.Shard]; st == nil || st.acq != nil && st.acq.epoch == op.Epoch || st.led && st.epoch == op.Epoch {
			ops = append(ops, op)
		}
	}
	if head >= len(g)/2 {
		g = slices.Delete(g, 0, head)
		head = 0
	}
	h.grants[v], h.grantHead[v] = g, head
	vs := &h.voters[v]
	few := len(h.releasing) <= limit/4
	if len(ops) < limit && len(h.releasing) > 0 && (few || now.Sub(vs.releasesAt) >= h.cfg.RequestTimeout) {
		vs.releasesAt = now
		queued := map[uint32]bool{}
		for _, op := range ops {
			if op.Kind == OpRelease {
				queued[op.Shard] = true
			}
		}
		for _, s := range slices.Sorted(maps.Keys(h.releasing)) {
			if len(ops) >= limit {
				break
			}
			if e, ok := h.shards[s].release[v]; ok && !queued[s] {
				ops = append(ops, Op{Kind: OpRelease, Shard: s, Epoch: e})
			}
		}
	}
	for _, op := range ops {
		st := h.shards[op.Shard]
		if st == nil {
			continue
		}
		switch {
		case op.Kind == OpGrant && st.acq != nil && st.acq.epoch == op.Epoch:
			st.acq.started, st.acq.sent = now, true
		case op.Kind == OpTransfer && st.xfer != nil:
			st.xfer.started = now
		}
	}
	return ops
}

// sortedShards returns the shards the holder knows, in order. Callers must
// not modify the slice; a shard added while they range over it is not in it.
func (h *Holder) sortedShards() []uint32 {
	if h.sorted == nil {
		h.sorted = make([]uint32, 0, len(h.shards))
		for s := range h.shards {
			h.sorted = append(h.sorted, s)
		}
		slices.Sort(h.sorted)
	}
	return h.sorted
}

func (h *Holder) tickShard(s uint32, st *shardState, now Time) {
	if st.led && !h.valid(st, st.epoch, now) {
		reason := ReasonLeaseExpired
		if st.regrant {
			reason = ReasonQuorumLost
		}
		h.endLease(st, s, reason, now)
		// Whatever partial state remains must be given back or re-won.
		h.abandon(st, now)
		st.nextTry = now.Add(h.backoff())
	}
	if a := st.acq; a != nil && a.sent && now.Sub(a.started) >= h.cfg.RequestTimeout {
		h.failAcquisition(st, now)
	}
	if x := st.xfer; x != nil && now.Sub(x.started) >= h.cfg.RequestTimeout {
		// Transfers are idempotent: ask the silent voters again.
		x.started = now
		for v := range h.voters {
			if _, ok := x.accepted[v]; !ok && !x.refused[v] {
				h.queued[v] = append(h.queued[v], Op{Kind: OpTransfer, Shard: s, Epoch: x.epoch, To: x.to, ToInc: x.toInc, ToEpoch: x.toEpoch})
			}
		}
	}
	if st.led && !st.regrant && now >= st.topUp {
		h.topUpQuorum(s, st, now)
	}
	wants := st.desired && !st.led && st.xfer == nil
	if st.led && st.regrant {
		wants = true
	}
	if wants && st.acq == nil && now >= st.nextTry {
		e := max(st.known, st.floor, st.epoch) + 1
		st.acq = &attempt{epoch: e, started: now, refused: make(map[int]bool)}
		for v := range h.voters {
			h.grants[v] = append(h.grants[v], Op{Kind: OpGrant, Shard: s, Epoch: e})
		}
	}
}

// topUpQuorum asks every reachable voter that does not yet protect the led
// epoch to grant that same epoch. A lease granted by a bare majority (a
// voter was still releasing an old holder's record, say) would otherwise
// end at the loss of any one of them. Granting the same epoch later is
// safe: a voter accepts it only above its own record, so no other node can
// hold it there.
func (h *Holder) topUpQuorum(s uint32, st *shardState, now Time) {
	st.topUp = now.Add(h.cfg.KeepAliveInterval)
	for v := range h.voters {
		if st.topDone[v] || h.counts(st, st.epoch, v, now) {
			continue
		}
		if vs := &h.voters[v]; !vs.hasFresh || now.Sub(vs.fresh) >= h.eff {
			continue // unreachable now; it would only refuse or time out
		}
		h.grants[v] = append(h.grants[v], Op{Kind: OpGrant, Shard: s, Epoch: st.epoch})
	}
}

// failAcquisition gives an acquisition up: partial grants would block the
// shard for as long as this node lives, so they are released, and the next
// try waits a random backoff so that competing candidates spread out.
func (h *Holder) failAcquisition(st *shardState, now Time) {
	a := st.acq
	st.acq = nil
	if st.led && !h.cfg.Mutations.KeepVoteAfterRelease {
		// A failed re-grant keeps its partial grants: each names this
		// node's live session above the led epoch, so it protects the
		// lease at its voter as the record it replaced did (one record
		// per shard: releasing it would leave that voter protecting
		// nothing). They are released with everything else when the
		// lease ends, and the next re-grant asks above them.
		st.nextTry = now.Add(h.backoff())
		st.regrant = true
		return
	}
	if len(st.votes[a.epoch]) > 0 {
		// Partial grants: release them and never lead at this epoch. (An
		// attempt nobody accepted gave nothing up, so the next one may ask
		// for the same epoch again instead of driving epochs up.)
		st.floor = max(st.floor, a.epoch)
		for v := range st.votes[a.epoch] {
			h.queueRelease(st, v, a.epoch)
		}
		delete(st.votes, a.epoch)
	}
	st.nextTry = now.Add(h.backoff())
	if st.led {
		// A failed re-grant: keep leading on the old epoch while it lasts.
		st.regrant = true
	} else if !st.desired {
		// Nobody wants the shard here any more: give back whatever an
		// earlier attempt won late (an acceptance that arrived after
		// that attempt had failed on refusals), and rise above this one
		// so that a late acceptance of it is released too. A change list
		// would not show those records again.
		st.floor = max(st.floor, a.epoch)
		h.abandon(st, now)
	}
}

func (h *Holder) backoff() time.Duration {
	lo, hi := h.cfg.BackoffMin, h.cfg.BackoffMax
	return lo + time.Duration(h.cfg.Rand.Int64N(int64(hi-lo)+1))
}

// Step applies a voter's reply received at now.
func (h *Holder) Step(rep Reply, now Time) {
	req, ok := h.sent[rep.Seq]
	v, known := h.index[rep.Voter]
	if !ok || !known || req.voter != v {
		return // a duplicate, or a reply to a request forgotten long ago
	}
	delete(h.sent, rep.Seq)
	if req.ops && !req.late {
		h.paced(v, now.Sub(req.at))
	}
	if rep.Mismatch != "" {
		h.mismatch = rep.Mismatch
		return
	}
	if rep.Stale {
		if req.inc < h.inc {
			// Sent before the raise: whatever it was refused for, the
			// incarnation it carried is no longer this process's.
			return
		}
		if h.raises < len(h.voters) && rep.Inc >= h.inc && !h.cfg.Mutations.KeepStaleInc {
			// Take an incarnation above the voter's rather than stop
			// (Reply.Inc and Reply.IncLive say why). A process that led
			// does so only if the newer one cannot be leading: it is not
			// live at a majority of voters. One voter's view is not
			// enough (a live newer process may just not have reached
			// it lately); until a majority says so, wait.
			switch {
			case !h.everLed:
				h.raise(rep.Inc+1, now)
				return
			case !rep.IncLive:
				h.voters[v].newerDead = max(h.voters[v].newerDead, rep.Inc)
				if inc, ok := h.newerDeadAtMajority(now); ok {
					h.raise(inc+1, now)
				}
				return
			}
		}
		h.supersede(now)
		return
	}
	vs := &h.voters[v]
	sentAt := req.at
	if h.cfg.Mutations.TimerFromReply {
		sentAt = now
	}
	counted := vs.hasFresh && now.Sub(vs.fresh) < h.eff
	switch {
	case rep.Gen > vs.gen:
		vs.gen, vs.fresh, vs.hasFresh = rep.Gen, sentAt, true
		vs.needAll = true // until the reply listing every session is applied
		// A new session, perhaps of a restarted voter whose clock began
		// anew: its readings order this session's replies only.
		vs.noticesAt, vs.heldAt = rep.NoticesAt, rep.NoticesAt
		vs.heldVer = 0 // the next Held list must be whole
		// A new session: whatever the voter's records said of the old
		// generation no longer protects this node there.
		h.scanAll = true
		h.shortenedAll = true
		for _, st := range h.shards {
			if st.led {
				if g, ok := st.votes[st.epoch][v]; ok && g != rep.Gen {
					st.regrant = true
				}
			}
		}
	case rep.Gen == vs.gen && (!vs.hasFresh || sentAt > vs.fresh):
		vs.fresh, vs.hasFresh = sentAt, true
	}
	current := rep.Gen == vs.gen
	if current && rep.NoticesAt > vs.noticesAt {
		vs.noticesAt = rep.NoticesAt
	}
	if rep.AllStarted && current && rep.NoticesAt == vs.noticesAt {
		// The newest list this voter sent, and a complete one: a session
		// it reported live before and does not list is gone (the voter
		// restarted, or forgot this node and with it what it was told).
		h.notices = append(h.notices, Notice{Voter: rep.Voter, Reset: true})
		vs.needAll = false
	}
	for _, x := range rep.Expired {
		h.notices = append(h.notices, Notice{Voter: rep.Voter, Node: x.Node, Gen: x.Gen, Expired: true})
	}
	if current {
		// News of live sessions only from this node's current session at
		// the voter: a late reply of the voter's previous run (a request
		// in flight when it restarted) would re-add a session the
		// restarted voter no longer has, after the Reset that dropped it,
		// and that voter would never mention it again. (Expiries are
		// final, whenever they arrive.)
		for _, x := range rep.Started {
			h.notices = append(h.notices, Notice{Voter: rep.Voter, Node: x.Node, Gen: x.Gen})
		}
	}
	for _, x := range rep.Expired {
		for s, st := range h.shards {
			if st.blocked == x && st.acq == nil {
				st.nextTry, st.blocked = now, NodeGen{}
				h.touch(s)
			}
		}
	}
	touched := map[uint32]bool{}
	if current && !counted && vs.hasFresh && now.Sub(vs.fresh) < h.eff {
		// The voter counts again: its votes may now make a majority for
		// shards that no reply of this round lists (a change list lists
		// only what changed).
		for s := range h.awaiting {
			touched[s] = true
		}
	}
	// A reply older than the Held state applied adds no votes: that state
	// already shows every record the reply's grants wrote (each change
	// of a record naming this node is in some list applied since), as the
	// voter has it now, and a record that moved on since would not be
	// listed again to withdraw the vote.
	behind := current && rep.HeldVer != 0 && rep.HeldVer < vs.heldVer && !h.cfg.Mutations.VoteFromOlderReply
	for _, res := range rep.Results {
		h.applyResult(v, rep.Seq, res, current, behind, now)
		touched[res.Op.Shard] = true
	}
	if current {
		switch h.heldOrder(vs, rep, req.at) {
		case heldApply:
			h.applyHeld(v, req.at, now, rep.Held)
		case heldApplyChanges:
			h.applyHeldChanges(v, req.at, now, rep.Held)
		}
		if vs.heldVer == rep.HeldVer || rep.HeldVer == 0 && vs.heldAt == rep.NoticesAt {
			for _, r := range rep.Held {
				touched[r.Shard] = true
			}
		}
	}
	for s := range touched {
		if st := h.shards[s]; st != nil {
			h.promote(s, st, now)
			h.touch(s)
			if !h.hasVotesAbove(st) {
				delete(h.awaiting, s)
			}
		}
	}
}

// hasVotesAbove reports whether st has votes for an epoch above the one it
// leads (any epoch, when it leads none): votes that may yet make it lead.
func (h *Holder) hasVotesAbove(st *shardState) bool {
	for e, vs := range st.votes {
		if len(vs) > 0 && (!st.led || e > st.epoch) {
			return true
		}
	}
	return false
}

func (h *Holder) applyResult(v int, seq uint64, res Result, current, behind bool, now Time) {
	s := res.Op.Shard
	st := h.shard(s)
	rec := res.Record
	st.known = max(st.known, rec.Epoch)
	other := rec.Holder != h.cfg.ID || (current && rec.HolderGen != h.voters[v].gen)
	if other && rec.Holder != "" && st.led && rec.Epoch >= st.epoch {
		// The voter's record names someone else — another node, or
		// another process (generation) of this NodeID — at our epoch or
		// above: it no longer protects this node's lease (if it ever
		// did). A record below our epoch is older than what gave us the
		// vote (replies overtake each other), so it says nothing about it.
		if _, ok := st.votes[st.epoch][v]; ok {
			h.dropLedVote(st, v)
		}
	}
	switch res.Op.Kind {
	case OpGrant:
		a := st.acq
		if res.OK() {
			switch {
			case current && res.Op.Epoch > st.floor && behind:
				// The Held state applied decided this record.
			case current && res.Op.Epoch > st.floor:
				h.vote(st, res.Op.Epoch, v, res.Gen)
				st.estab[v] = now
			default:
				h.queueRelease(st, v, res.Op.Epoch)
			}
			return
		}
		if res.Refusal == RefusedHeld {
			st.blocked = NodeGen{Node: rec.Holder, Gen: rec.HolderGen}
		}
		if st.led && res.Op.Epoch == st.epoch && res.Refusal == RefusedEpoch && current && !behind {
			// A top-up (or a grant of the led epoch) the voter refused:
			// its record is at this epoch or above. It is not asked again.
			if st.topDone == nil {
				st.topDone = make(map[int]bool)
			}
			st.topDone[v] = true
			switch {
			case rec.Holder == h.cfg.ID && rec.Epoch == st.epoch && !rec.Released && rec.HolderGen == h.voters[v].gen:
				// The voter already records this lease for this session
				// (a transfer reached it after the forward left): that is
				// the vote the top-up asked for.
				h.vote(st, st.epoch, v, rec.HolderGen)
				st.estab[v] = max(st.estab[v], now)
			case !h.cfg.Mutations.NoRegrantForUnbackedVoter:
				// The voter can never back this epoch: it records another
				// node's grant of it (a rival's failed acquisition), a
				// released one, a higher one, or this lease for an older
				// session of this node (it restarted since). Only a grant
				// at a higher epoch brings it in; without one the lease
				// rests on a bare majority, and losing any voter of it
				// ends the lease although a majority is still reachable.
				st.regrant = true
			}
		}
		if a != nil && a.epoch == res.Op.Epoch {
			a.refused[v] = true
			if res.Refusal != RefusedEpoch {
				a.contested = true
			}
			if len(a.refused) > len(h.voters)-h.maj {
				h.failAcquisition(st, now)
				if !a.contested {
					// Only the epoch was stale: nobody competes, so
					// retry at once above the epoch just learned.
					st.nextTry = now
				}
			}
		}
	case OpRelease:
		if res.OK() || rec.Epoch != res.Op.Epoch || rec.Holder != h.cfg.ID || rec.Released {
			if st.release[v] == res.Op.Epoch {
				delete(st.release, v)
				if len(st.release) == 0 {
					delete(h.releasing, s)
				}
			}
		}
		if !res.OK() && current && rec.Holder == h.cfg.ID && rec.HolderGen == h.voters[v].gen && !rec.Released &&
			rec.Epoch != res.Op.Epoch && rec.Epoch <= st.floor && !(st.led && rec.Epoch >= st.epoch) {
			// The voter holds another epoch of ours than the one released
			// (a voter keeps one record per shard), one this node gave
			// up too: release that one.
			h.queueRelease(st, v, rec.Epoch)
			st.release[v] = rec.Epoch
		}
	case OpTransfer:
		x := st.xfer
		if x == nil || x.epoch != res.Op.Epoch || x.to != res.Op.To {
			return
		}
		if res.OK() || (rec.Epoch == x.toEpoch && rec.Holder == x.to) {
			x.accepted[v] = rec.HolderGen
		} else {
			x.refused[v] = true
		}
		switch {
		case len(x.accepted) >= h.maj:
			gens := make(map[string]uint64, len(x.accepted))
			for i, g := range x.accepted {
				gens[h.cfg.Voters[i]] = g
			}
			h.changes = append(h.changes, Change{Kind: Transferred, Shard: s, Epoch: x.toEpoch, To: x.to, Gens: gens})
			st.xfer = nil
			h.releaseUntransferred(st, x)
		case len(x.refused) > len(h.voters)-h.maj:
			h.changes = append(h.changes, Change{Kind: TransferFailed, Shard: s, Epoch: x.epoch, To: x.to})
			st.xfer = nil
			st.nextTry = now.Add(h.backoff())
			h.releaseUntransferred(st, x)
		}
	}
}

// fullHeldEvery is how many keep-alive intervals (at least) pass between
// requests for a whole Held list when change lists would do: a backstop,
// not part of any rule (every change that names this node is reconciled
// as it comes). At 65,536 shards on 3 nodes a whole list is about 21,800
// records, so it is asked for rarely.
const fullHeldEvery = 64

// heldUse says what to do with a reply's Held list.
type heldUse int

const (
	heldOlder        heldUse = iota // older than the state applied: skip it
	heldApply                       // a whole list: apply it
	heldApplyChanges                // a change list that follows the state applied
)

// heldOrder decides whether the Held list of rep, a reply of the voter's
// current session for this node to a request sent at sentAt, is newer than
// the one applied, and records it as applied. Replies to concurrent
// requests overtake each other: a list older than one already applied
// would re-add votes the newer one withdrew. The voter's record version
// orders its lists; a voter that sends none is ordered by its clock.
func (h *Holder) heldOrder(vs *voterState, rep Reply, sentAt Time) heldUse {
	switch {
	case h.cfg.Mutations.HeldOutOfOrder && !rep.HeldDelta:
		vs.heldVer = max(vs.heldVer, rep.HeldVer)
		return heldApply
	case rep.HeldVer == 0:
		if rep.NoticesAt < vs.heldAt {
			return heldOlder
		}
		vs.heldAt = rep.NoticesAt
		return heldApply
	case !rep.HeldDelta:
		if rep.HeldVer < vs.heldVer {
			return heldOlder
		}
		vs.heldVer = rep.HeldVer
		if vs.needFull && sentAt > vs.fullAfter {
			vs.needFull = false
		}
		return heldApply
	case rep.HeldSince > vs.heldVer || rep.HeldVer < vs.heldVer:
		// Changes after a state this node never applied (it asked
		// before its session changed), or older than what it applied.
		return heldOlder
	default:
		vs.heldVer = rep.HeldVer
		return heldApplyChanges
	}
}

// releaseUntransferred queues the release of the transferred epoch at the
// voters that did not accept the transfer: their record still names this
// node, which no longer leads by it, and would refuse every other node
// while this process lives. (One that accepts the transfer meanwhile
// refuses the release: its record names the target.)
func (h *Holder) releaseUntransferred(st *shardState, x *transfer) {
	for v := range h.voters {
		if _, ok := x.accepted[v]; !ok {
			h.queueRelease(st, v, x.epoch)
		}
	}
}

// applyHeld reconciles the whole list of records a voter says name this
// node with what the node is doing: records it is not using are released,
// records of a desired shard above the floor count as votes (a transfer
// whose forward was lost, or an acquisition whose reply was), and a led
// shard missing from the list has been taken over at that voter.
func (h *Holder) applyHeld(v int, sentAt, now Time, held []ShardRecord) {
	names := make(map[uint32]bool, len(held))
	for _, r := range held {
		if h.names(v, r.Record) {
			names[r.Shard] = true
			h.applyHeldRecord(v, r, now)
		}
	}
	for s, st := range h.shards {
		if st.led && !names[s] {
			h.withdraw(v, s, st, sentAt)
		}
	}
}

// applyHeldChanges applies a voter's list of the records concerning this
// node that changed since the last list applied: each naming this node is
// reconciled as applyHeld does, and a led shard whose record no longer
// names it has been taken over at that voter. Shards not listed did not
// change there.
func (h *Holder) applyHeldChanges(v int, sentAt, now Time, held []ShardRecord) {
	for _, r := range held {
		if h.names(v, r.Record) {
			h.applyHeldRecord(v, r, now)
			continue
		}
		if st := h.shards[r.Shard]; st != nil && st.led && !h.withdraw(v, r.Shard, st, sentAt) {
			// The vote was confirmed after the request left: the change
			// may predate it or not. A whole list from a later request
			// decides.
			h.voters[v].needFull, h.voters[v].fullAfter = true, now
		}
	}
}

// names reports whether record r at voter v protects this process: it
// names this node and this process's generation there, and is not
// released. Held lists records by NodeID. One naming another generation
// belongs to another process with this NodeID (a predecessor or a twin),
// or to an expired session of this one, which protects nothing: it is no
// vote, and this process must not release it (the voter would refuse while
// that generation is live; releasing it would end a live process's
// protection).
func (h *Holder) names(v int, r Record) bool {
	return !r.Released && r.Holder == h.cfg.ID && (r.HolderGen == h.voters[v].gen || h.cfg.Mutations.AdoptOtherGens)
}

// applyHeldRecord reconciles one record that names this process at voter v.
func (h *Holder) applyHeldRecord(v int, r ShardRecord, now Time) {
	st := h.shard(r.Shard)
	st.known = max(st.known, r.Epoch)
	switch {
	case st.led && r.Epoch == st.epoch:
		h.vote(st, r.Epoch, v, r.HolderGen)
		st.estab[v] = max(st.estab[v], now)
	case st.led && r.Epoch < st.epoch:
		// An older epoch of ours that this voter missed the re-grant
		// of; it protects us all the same, and is released when the
		// lease ends.
		if st.older == nil {
			st.older = make(map[int]uint64)
		}
		st.older[v] = max(st.older[v], r.Epoch)
	case st.acq != nil && r.Epoch == st.acq.epoch:
		h.vote(st, r.Epoch, v, r.HolderGen)
	case (st.desired || st.led) && r.Epoch > st.floor && st.xfer == nil:
		// A record this node may lead by, or, above a led epoch, a
		// re-grant's partial grant kept while leading (§2.4): it
		// protects the lease whether or not the node still wants the
		// shard, and releasing it would end the lease.
		h.vote(st, r.Epoch, v, r.HolderGen)
		st.estab[v] = max(st.estab[v], now)
	default:
		h.queueRelease(st, v, r.Epoch)
	}
}

// withdraw removes voter v's vote for led shard s, which v's Held list,
// answering a request sent at sentAt, shows no longer names this process.
// Only a request sent after the vote was last confirmed was handled by v
// after the confirmation (requests to one voter run concurrently and may
// be handled in any order), so only then does the list show that v moved
// on. It reports false when the vote stays for that reason.
func (h *Holder) withdraw(v int, s uint32, st *shardState, sentAt Time) bool {
	if _, ok := st.votes[st.epoch][v]; !ok {
		return true
	}
	if sentAt <= st.estab[v] {
		return false
	}
	h.dropLedVote(st, v)
	h.touch(s)
	return true
}

// dropLedVote withdraws voter v's vote for the led epoch of st: the lease
// may end sooner, and the node re-grants while it lasts.
func (h *Holder) dropLedVote(st *shardState, v int) {
	delete(st.votes[st.epoch], v)
	st.regrant = true
	h.shortened[st.id] = struct{}{}
}

// TakeShortened returns the led shards whose Deadline may have moved
// earlier since the last call (a vote withdrawn, a lease moved to another
// epoch), or all=true when any may have (a voter's session changed, the
// holder was superseded). Deadlines otherwise only move later, as replies
// arrive: a driver may refresh those less often, but must apply these at
// once.
func (h *Holder) TakeShortened() (shards []uint32, all bool) {
	all = h.shortenedAll
	if !all {
		shards = slices.Collect(maps.Keys(h.shortened))
	}
	clear(h.shortened)
	h.shortenedAll = false
	return shards, all
}

// newerDeadAtMajority reports whether a newer incarnation of this node
// cannot be live at a majority of voters, and the highest one reported: a
// voter either reported it not live there, or answers this process (its
// session for this NodeID is this one's). If so, it leads nothing.
func (h *Holder) newerDeadAtMajority(now Time) (uint64, bool) {
	n, top := 0, uint64(0)
	for v := range h.voters {
		vs := &h.voters[v]
		switch {
		case vs.newerDead != 0:
			n++
			top = max(top, vs.newerDead)
		case vs.hasFresh && now.Sub(vs.fresh) < h.eff:
			n++
		}
	}
	return top, n >= h.maj
}

// raise makes this process incarnation inc, above one a voter reported:
// its own was read from a clock that stepped back, or a disk lost the
// counter's last write. A process that led ends every lease first, as a
// process that restarts does, and gives up every epoch it held: its old
// generation's records keep protecting those leases at the voters until
// that generation expires there, and the new incarnation acquires above
// them. Everything sent so far went out under the old incarnation and is
// refused or about to be; the next Tick sends again.
func (h *Holder) raise(inc uint64, now Time) {
	h.inc = inc
	h.raises++
	h.scanAll = true
	h.shortenedAll = true
	for i := range h.voters {
		h.voters[i].sentAny, h.voters[i].newerDead = false, 0
	}
	for _, s := range h.sortedShards() {
		st := h.shards[s]
		h.endLease(st, s, ReasonSuperseded, now)
		if st.xfer != nil {
			// Its answers would come to the old incarnation and be
			// ignored: report it failed, so that the target acquires.
			h.changes = append(h.changes, Change{Kind: TransferFailed, Shard: s, Epoch: st.xfer.epoch, To: st.xfer.to})
			st.xfer = nil
		}
		if st.acq != nil {
			st.floor = max(st.floor, st.acq.epoch)
			st.acq = nil
		}
		for e := range st.votes {
			// The old generation's records are not the new one's to
			// release; they end with that generation.
			st.floor = max(st.floor, e)
		}
		// Nor does it lead at any epoch it has seen: a late reply to an
		// old request (a grant of a re-grant that failed before) must not
		// make the new incarnation lead by the old generation's records.
		st.floor = max(st.floor, st.known)
		clear(st.votes)
		clear(st.estab)
		st.regrant, st.topDone, st.nextTry = false, nil, now
	}
}

// supersede stops everything: a newer incarnation of this node exists.
func (h *Holder) supersede(now Time) {
	if h.superseded {
		return
	}
	h.superseded = true
	h.shortenedAll = true
	for _, s := range h.sortedShards() {
		st := h.shards[s]
		if st.led {
			st.led = false
			delete(h.led, s)
			h.changes = append(h.changes, Change{Kind: Lost, Shard: s, Epoch: st.epoch, Reason: ReasonSuperseded})
		}
	}
}

// Backlog is what a holder has yet to do, for operators: operations
// queued behind MaxBatch and MaxInFlight (summed over voters),
// acquisitions and transfers under way, and shards with releases not yet
// acknowledged.
type Backlog struct {
	Queued, Acquiring, Transferring, Releasing int
}

// Backlog returns the holder's backlog. It visits every shard.
func (h *Holder) Backlog() Backlog {
	b := Backlog{Releasing: len(h.releasing)}
	for _, q := range h.queued {
		b.Queued += len(q)
	}
	for v, g := range h.grants {
		b.Queued += len(g) - h.grantHead[v]
	}
	for _, st := range h.shards {
		if st.acq != nil {
			b.Acquiring++
		}
		if st.xfer != nil {
			b.Transferring++
		}
	}
	return b
}

// Superseded reports whether a voter has seen a newer incarnation of this
// node; the holder then leads nothing and sends nothing.
func (h *Holder) Superseded() bool { return h.superseded }
