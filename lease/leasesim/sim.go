package leasesim

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// Faults sets how hostile the simulated world is while faults are on. Rates
// are per message or per write, or per node, voter or process per second.
type Faults struct {
	DelayMin, DelayMax time.Duration // per message, uniform
	LongDelayRate      float64       // fraction of messages held for up to LongDelay
	LongDelay          time.Duration
	DropRate           float64
	DupRate            float64
	PartitionRate      float64 // new partitions per second
	PartitionFor       time.Duration
	OneWayRate         float64 // fraction of partitions that cut one direction only
	// SplitViews makes a two-way partition split the nodes' gossip views
	// as memberlist does: after a random lag of up to Config.GossipLag
	// each node marks the members across the cut down, and after the
	// heal, another lag later, up again. A node then plans a live
	// leader's shards to itself or to a peer on its side, so the lease
	// is contested by the nodes it exists to hold off.
	SplitViews     bool
	CrashRate      float64 // node crashes per node per second
	DownFor        time.Duration
	PauseRate      float64 // node pauses per node per second: no ticks or deliveries, the clock runs
	PauseFor       time.Duration
	BusyRate       float64 // a node's loop falls behind, per node per second: like a pause, shorter
	BusyFor        time.Duration
	VoterCrashRate float64
	TransferRate   float64 // fraction of unwanted leaderships handed off rather than released
	DrainRate      float64 // node drains per node per second
	// TwinRate starts, per node per second, a new process with the same
	// NodeID and a newer incarnation beside the running one (an
	// orchestrator's replacement). Half the twins want nothing for up to
	// TwinSettle, as a starting shard.Node; the rest plan from their first
	// tick. The old process runs on until a voter tells it it is
	// superseded, or crashes; it is never restarted.
	TwinRate   float64
	TwinSettle time.Duration
	// StaleIncRate is the fraction of restarts whose incarnation is lower
	// than the previous process's: its wall clock stepped back.
	StaleIncRate float64
	// FreezeRate freezes processes (nodes and voters), per process per
	// second, for up to FreezeFor: a VM freeze, in which the process
	// neither runs nor its monotonic clock advances.
	FreezeRate float64
	FreezeFor  time.Duration
	// ClockStepRate moves a node's monotonic clock forward, per node per
	// second, by up to ClockStep (a voter's too with Config.BeyondDrift).
	ClockStepRate float64
	ClockStep     time.Duration
	// RateChangeRate draws a process's clock rate anew, per process per
	// second: within ±ρ, or up to WildRate away from 1 with
	// Config.BeyondDrift.
	RateChangeRate float64
	WildRate       float64
	// DiskMin and DiskMax bound a voter's write (fsync) latency, uniform;
	// a reply leaves only once every write queued before it is durable.
	// These apply without faults too.
	DiskMin, DiskMax time.Duration
	// DiskStallRate is the fraction of writes, while faults last, that
	// take up to DiskStall instead.
	DiskStallRate float64
	DiskStall     time.Duration
	// DiskFailRate is the fraction of writes, while faults last, that
	// fail: the voter stops, answers nothing more, and is restarted from
	// its store later.
	DiskFailRate float64
}

// DefaultFaults is a hostile but realistic mix for a 1 s lease.
func DefaultFaults() Faults {
	return Faults{
		DelayMin: time.Millisecond, DelayMax: 20 * time.Millisecond,
		LongDelayRate: 0.01, LongDelay: 1500 * time.Millisecond,
		DropRate: 0.05, DupRate: 0.02,
		PartitionRate: 0.15, PartitionFor: 3 * time.Second, OneWayRate: 0.3,
		SplitViews: true,
		CrashRate:  0.02, DownFor: 3 * time.Second,
		PauseRate: 0.02, PauseFor: 2500 * time.Millisecond,
		BusyRate: 0.1, BusyFor: 300 * time.Millisecond,
		VoterCrashRate: 0.01,
		TransferRate:   0.5,
		DrainRate:      0.02,
		TwinRate:       0.01, TwinSettle: 2 * time.Second,
		StaleIncRate: 0.2,
		FreezeRate:   0.01, FreezeFor: 2500 * time.Millisecond,
		ClockStepRate: 0.01, ClockStep: 2 * time.Second,
		RateChangeRate: 0.05, WildRate: 0.3,
		DiskMin: 100 * time.Microsecond, DiskMax: 10 * time.Millisecond,
		DiskStallRate: 0.01, DiskStall: 300 * time.Millisecond,
		DiskFailRate: 0.002,
	}
}

// Config describes one simulated run. Zero fields take defaults.
type Config struct {
	Seed   uint64
	Nodes  int // default 5
	Voters int // default 3
	Shards int // default 16
	// LeaseDuration is LD; default 1 s.
	LeaseDuration time.Duration
	// MaxClockDrift is ρ; every clock runs at a rate in [1−ρ, 1+ρ].
	// Default 0.01.
	MaxClockDrift float64
	// SafetyMargin is the holders' margin; negative means 0.
	SafetyMargin time.Duration
	// ExtremeDrift puts clocks at the ends of ±ρ: nodes slow and voters
	// fast, the worst case for the lease rule (a node's lease lasts
	// longest in real time while voters forget it soonest).
	ExtremeDrift bool
	// BeyondDrift lets clocks break the drift bound while faults last:
	// rates up to Faults.WildRate away from 1, and voters' clocks stepping
	// forward. docs/design.md §2.5 promises no safety then, so the checker enforces
	// only one holder per (shard, epoch), which rests on majorities alone,
	// and liveness: once faults stop (and clocks are back within ±ρ) every
	// shard is led again. The overlaps it sees are counted in
	// Result.Overlaps.
	BeyondDrift bool
	// FaultsFor is how long faults are injected; then the network heals,
	// crashed processes restart, and the run goes on for Settle. Defaults
	// 20 s and 8 s.
	FaultsFor, Settle time.Duration
	// GossipLag bounds how late each node learns of a crash, a restart,
	// a partition or its heal. Default 500 ms.
	GossipLag time.Duration
	// Tick is the nodes' tick interval; default 10 ms.
	Tick   time.Duration
	Faults *Faults // default DefaultFaults()
	// MaxBatch and MaxInFlight set the holders' HolderConfig fields of
	// those names (0: the default): small values make every node's
	// requests queue, as a large cold start does.
	MaxBatch, MaxInFlight int
	// ScanAllBelow sets the holders' HolderConfig field (0: the default);
	// 1 makes every Tick visit only the shards that changed, and every
	// shard only periodically, as holders of many shards do.
	ScanAllBelow int
	VoterMu      lease.VoterMutations
	NodeMu       lease.HolderMutations
	// ForgetOnRestart makes restarted voters lose their records: a
	// deliberately broken store, for checker tests.
	ForgetOnRestart bool
	// ReuseGens makes restarted voters keep their boot counter, so that
	// generations repeat: a deliberately broken store, for checker tests.
	ReuseGens bool
	// ReplyBeforeSync makes voters send each reply as soon as they handle
	// the request, before its records are durable: a deliberately broken
	// voter driver, for checker tests. A write that then fails, or a
	// crash before it completes, takes back what the reply promised.
	ReplyBeforeSync bool
	// StopDrainEarly makes a draining node stop as soon as it leads
	// nothing, before the voters answered its transfers: a deliberately
	// broken drain, for checker tests.
	StopDrainEarly bool
	// LoopEndsLeases makes the checker judge a node's leadership as the
	// node's loop last reported it (Gained until the loop takes a Lost
	// change) instead of by Holder.Leads at the node's clock: an
	// application lease context cancelled by the loop rather than by a
	// timer at the deadline, a deliberately broken driver for checker
	// tests. A busy loop or a pause then outlives the lease.
	LoopEndsLeases bool
	// Unfenced makes the checker hold a frozen node's stale lease against
	// it as if no fence existed: for checker tests that show freezes
	// produce paused leaders (see the package doc).
	Unfenced bool
	// Script, if set, runs instead of random faults: directed scenarios.
	// The script decides which node wants which shard (Want); nothing is
	// released or transferred unless it says so.
	Script func(*Sim)
	// Trace, if set, receives a line per notable event.
	Trace func(string)
}

func (c Config) withDefaults() Config {
	if c.Nodes == 0 {
		c.Nodes = 5
	}
	if c.Voters == 0 {
		c.Voters = 3
	}
	if c.Shards == 0 {
		c.Shards = 16
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = time.Second
	}
	if c.MaxClockDrift == 0 {
		c.MaxClockDrift = 0.01
	}
	if c.FaultsFor == 0 {
		c.FaultsFor = 20 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 8 * time.Second
	}
	if c.GossipLag == 0 {
		c.GossipLag = 500 * time.Millisecond
	}
	if c.Tick == 0 {
		c.Tick = 10 * time.Millisecond
	}
	if c.Faults == nil {
		f := DefaultFaults()
		c.Faults = &f
	}
	return c
}

// Violation is a broken invariant, with what is needed to replay it.
type Violation struct {
	Seed uint64
	At   time.Duration
	Rule string
	What string
}

func (v *Violation) Error() string {
	return fmt.Sprintf("seed %d at %v: %s: %s", v.Seed, v.At, v.Rule, v.What)
}

// Result summarises a run that broke no invariant.
type Result struct {
	Leaderships int           // leadership starts
	Messages    int           // messages sent
	MaxUnled    time.Duration // longest a shard went without a leader after faults stopped
	// Handoffs counts transfers forwarded; MaxHandoffGap is the longest a
	// shard went without a leader in a planned move after faults stopped.
	Handoffs      int
	PlannedMoves  int
	MaxHandoffGap time.Duration
	// Contests counts the times a node set out to acquire a shard that
	// another node led at that moment.
	Contests int
	// Twins counts processes started beside a live one with its NodeID;
	// Superseded, processes that learned of a newer one and stopped.
	Twins, Superseded int
	// Freezes counts process freezes; FencedOverlaps, the instants at
	// which a node that had been frozen still led by its own clock next to
	// a newer epoch's leader (the fence's case, see the package doc).
	Freezes, FencedOverlaps int
	// DiskFailures counts voter writes that failed (the voter stopped).
	DiskFailures int
	// Overlaps counts instants with two leaders that BeyondDrift excused.
	Overlaps int
	// HeldChanges and HeldWhole count the replies delivered with a list of
	// the record changes since the node's last one, and with every record
	// naming it.
	HeldChanges, HeldWhole int
}

type node struct {
	id   string
	inc  uint64 // the process's incarnation (the holder may raise it), kept after a crash
	life uint64 // starts of this process slot; events carry the life they are for
	h    *lease.Holder
	clk  clock
	up   bool
	// zombie: a twin replaced this process. It runs until a voter says so
	// or it crashes, and is never restarted.
	zombie     bool
	superseded bool          // it heard so
	pausedT    time.Duration // neither ticks nor receives until after this global time
	deferred   []*event
	// freezes lists the spans in which the process's clock stood still,
	// oldest first (overlapping freezes merged).
	freezes []freeze
	view    map[string]bool               // NodeIDs this node believes up
	news    map[string]map[string]session // NodeID → voter → latest notice
	was     []uint64                      // per shard, the epoch the checker last saw it lead at, 0 for none
	elig    []bool                        // scratch: eligibility of each member (Sim.eligibility)
	loopLed map[uint32]uint64             // shards the loop last heard it leads (LoopEndsLeases)
	// answered holds when each voter last answered this process with a
	// session (global time), reset at every start.
	answered map[string]time.Duration
	// leases caches, per shard, what Holder.Leads and Deadline said after
	// the holder last handled anything (stale says it has since): until
	// then a lease can only end, at its deadline on the node's clock.
	leases  []cachedLease
	ledBuf  []uint32 // scratch for Sim.led
	stale   bool
	prot    []protCache     // per shard, the checker's last verdict on its protection
	wants   map[uint32]bool // scripted desires, kept across restarts
	desire  []bool          // what the node last told its holder, per shard
	contest []bool          // contesting another's leadership now, per shard
	quietT  time.Duration   // wants nothing before this global time (a settling twin)
	// preparing holds handoffs this node started: the target asked to
	// prepare, the reply not yet in.
	preparing map[uint32]prep
	// expect holds shards this node prepared for, until when (global
	// time): it wants them whatever its own view says, as shard.Node does.
	expect   map[uint32]time.Duration
	draining bool
	// pref holds planned owners this node has heard of (shard → NodeID),
	// prefV their versions.
	pref  map[uint32]string
	prefV map[uint32]int
}

// session is a node's latest news of another node's session at one voter.
type session struct {
	gen     uint64
	expired bool
}

type prep struct {
	to    string
	epoch uint64
	at    time.Duration
}

type voter struct {
	id        string
	v         *lease.Voter
	clk       clock
	up        bool
	life      uint64
	boot      uint32
	persisted map[uint32]lease.Record
	// diskFree is when the writes queued so far are durable.
	diskFree time.Duration
	failNext bool          // the next write fails (scripts)
	diskSlow time.Duration // added to every write (scripts)
	pausedT  time.Duration
	deferred []*event
	// What the checker knows of the voter's sessions, from the requests
	// it handled: per generation, its clock reading at the last
	// keep-alive in this life (seen), and the node processes it gave the
	// generation to in any life (owners, as procKeys); and the end of its
	// restart grace period, if it has one.
	seen       map[uint64]lease.Time
	owners     map[uint64][]uint64
	grace      bool
	graceUntil lease.Time
}

type eventKind uint8

const (
	evTick eventKind = iota + 1
	evToVoter
	evToNode
	evForward
	evFault
	evPrepare  // source → target: get ready for shard
	evPrepared // target → source: ready, with the lowest epoch it can lead at
	evAborted  // source → target: the voters refused the transfer, acquire now
	evWrite    // a voter's write completes
	evReplyOut // a voter's reply leaves, its writes durable
	evResume   // a frozen voter runs again
)

type event struct {
	at    time.Duration
	seq   uint64
	kind  eventKind
	node  int    // node process
	life  uint64 // the life of the node process the event is for
	voter int
	vlife uint64 // the life of the voter process the event is for
	req   lease.Request
	rep   lease.Reply
	fwd   lease.Change
	recs  []lease.ShardRecord
	fn    func()
	// prepare and prepared messages
	shard    uint32
	from     int
	fromLife uint64
	epoch    uint64 // the source's epoch
	minEpoch uint64 // prepared: the lowest epoch the target can lead at
	toInc    uint64 // prepared: the target's incarnation
}

type queue []*event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *queue) Pop() any     { old := *q; e := old[len(old)-1]; *q = old[:len(old)-1]; return e }

// voterBase is voter 0's process number. Node processes are numbered from
// 0 in the order they start (a restart keeps its number, a twin takes the
// next), so voters sit far above them: numbers a script holds never change
// meaning.
const voterBase = 1 << 16

// Sim is one simulated world. Scripts drive it through its methods.
type Sim struct {
	cfg    Config
	rng    *rand.Rand
	now    time.Duration
	q      queue
	seq    uint64
	nodes  []*node
	voters []*voter
	// primary maps each NodeID to its newest process; incs to the highest
	// incarnation any of its processes used.
	primary map[string]int
	incs    map[string]uint64
	// cut[a][b] drops traffic from process a to b (see voterBase).
	cut     map[[2]int]bool
	slow    map[[2]int]time.Duration
	faults  bool
	err     *Violation
	res     Result
	holders map[[2]uint64]string // (shard, epoch) → process that led it
	top     map[uint32]uint64    // highest epoch led per shard
	hist    map[uint32][]string  // leadership starts per shard, "n1@3"
	unled   map[uint32]time.Duration
	moving  map[uint32]time.Duration // planned moves under way since
	plans   int                      // Plan calls so far
	// plannedFrom is when the cluster has recovered from the faults and
	// planned moves must be short; 0 while faults last.
	plannedFrom time.Duration
	ids         []string            // every NodeID, in order of first start
	idIdx       map[string]int      // NodeID → its index in ids
	hashes      map[string][]uint64 // NodeID → rendezvous hash per shard
	voterIdx    map[string]int
	leads       []leading    // the checker's scratch
	owns        []lease.Time // each node's clock reading, for the checker
	ends        []time.Duration
	// shardVer counts changes of each shard's records at the voters, and
	// protVer changes of the voters themselves (starts, stops, clocks):
	// a verdict on a lease's protection stands until either moves or
	// a generation it rests on expires.
	shardVer []uint64
	protVer  uint64
}

// Run simulates cfg and returns the first violation as a *Violation.
func Run(cfg Config) (Result, error) {
	s, err := New(cfg)
	if err != nil {
		return Result{}, err
	}
	return s.Run()
}

// New builds the world of cfg without running it.
func New(cfg Config) (*Sim, error) {
	cfg = cfg.withDefaults()
	s := &Sim{
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x7e4e)),
		primary:  make(map[string]int),
		incs:     make(map[string]uint64),
		cut:      make(map[[2]int]bool),
		slow:     make(map[[2]int]time.Duration),
		holders:  make(map[[2]uint64]string),
		top:      make(map[uint32]uint64),
		hist:     make(map[uint32][]string),
		unled:    make(map[uint32]time.Duration),
		moving:   make(map[uint32]time.Duration),
		hashes:   make(map[string][]uint64),
		voterIdx: make(map[string]int),
		idIdx:    make(map[string]int),
		shardVer: make([]uint64, cfg.Shards),
	}
	for i := range cfg.Voters {
		vt := &voter{id: fmt.Sprintf("v%d", i+1), boot: 1, persisted: map[uint32]lease.Record{}, owners: map[uint64][]uint64{}}
		s.voters = append(s.voters, vt)
		s.voterIdx[vt.id] = i
		if err := s.startVoter(i, false); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Nodes {
		s.nodes = append(s.nodes, s.newNode(fmt.Sprintf("n%d", i+1)))
	}
	for i := range s.nodes {
		if err := s.startNode(i, s.incs[s.nodes[i].id]+1); err != nil {
			return nil, err
		}
		for _, m := range s.nodes {
			m.view[s.nodes[i].id] = true
		}
	}
	for i := range s.nodes {
		s.refreshDesired(i)
	}
	return s, nil
}

func (s *Sim) newNode(id string) *node {
	if !slices.Contains(s.ids, id) {
		s.idIdx[id] = len(s.ids)
		s.ids = append(s.ids, id)
	}
	return &node{id: id, view: map[string]bool{}, news: map[string]map[string]session{}, was: make([]uint64, s.cfg.Shards), loopLed: map[uint32]uint64{}, answered: map[string]time.Duration{},
		wants: map[uint32]bool{}, preparing: map[uint32]prep{}, expect: map[uint32]time.Duration{},
		pref: map[uint32]string{}, prefV: map[uint32]int{}}
}

// newClock returns a clock with a random origin and a rate within ±ρ (at
// the extreme that suits the worst case with ExtremeDrift).
func (s *Sim) newClock(isNode bool) clock {
	return clock{rate: s.driftRate(isNode), v0: float64(s.rng.Int64N(int64(time.Hour))), t0: s.now}
}

func (s *Sim) driftRate(isNode bool) float64 {
	rho := s.cfg.MaxClockDrift
	rate := 1 - rho + 2*rho*s.rng.Float64()
	if s.cfg.ExtremeDrift {
		rate = 1 + rho
		if isNode {
			rate = 1 - rho
		}
	}
	return rate
}

func (s *Sim) trace(format string, args ...any) {
	if s.cfg.Trace != nil {
		s.cfg.Trace(fmt.Sprintf("%9v ", s.now.Round(time.Microsecond)) + fmt.Sprintf(format, args...))
	}
}

func (s *Sim) voterIDs() []string {
	var ids []string
	for _, v := range s.voters {
		ids = append(ids, v.id)
	}
	return ids
}

// margin is the SafetyMargin the holders get.
func (s *Sim) margin() time.Duration {
	if s.cfg.SafetyMargin < 0 {
		return time.Nanosecond // 0 means default in HolderConfig
	}
	return s.cfg.SafetyMargin
}

// startNode starts a new process in node slot i with incarnation inc; it
// becomes its NodeID's newest process.
func (s *Sim) startNode(i int, inc uint64) error {
	n := s.nodes[i]
	h, err := lease.NewHolder(lease.HolderConfig{
		ID: n.id, Inc: inc, Voters: s.voterIDs(),
		LeaseDuration: s.cfg.LeaseDuration, MaxClockDrift: s.cfg.MaxClockDrift, SafetyMargin: s.margin(),
		Rand:     rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())),
		Nonce:    s.rng.Uint64() | 1, // from the seed, so that runs replay
		MaxBatch: s.cfg.MaxBatch, MaxInFlight: s.cfg.MaxInFlight,
		Mutations: s.cfg.NodeMu,
	})
	if err != nil {
		return err
	}
	n.life, n.inc = n.life+1, inc
	n.clk = s.newClock(true)
	n.h, n.up, n.pausedT, n.deferred, n.stale = h, true, 0, nil, true
	n.freezes, n.zombie, n.superseded, n.draining = nil, false, false, false
	n.prot = make([]protCache, s.cfg.Shards)
	n.view[n.id] = true
	clear(n.was)
	n.elig = nil
	clear(n.loopLed)
	clear(n.answered)
	clear(n.preparing)
	clear(n.expect)
	clear(n.news)
	clear(n.desire)
	clear(n.contest)
	s.primary[n.id] = i
	s.incs[n.id] = max(s.incs[n.id], inc)
	s.refreshDesired(i)
	s.schedule(&event{at: s.now + time.Duration(s.rng.Int64N(int64(s.cfg.Tick))), kind: evTick, node: i, life: n.life})
	s.trace("%s starts, incarnation %d (process %d)", n.id, inc, i)
	return nil
}

func (s *Sim) startVoter(i int, restarted bool) error {
	vt := s.voters[i]
	if restarted {
		if !s.cfg.ReuseGens {
			vt.boot++
		}
		if s.cfg.ForgetOnRestart {
			vt.persisted = map[uint32]lease.Record{}
		}
	}
	recs := make(map[uint32]lease.Record, len(vt.persisted))
	for k, r := range vt.persisted {
		recs[k] = r
	}
	// A new process reads a new monotonic clock: its origin is arbitrary.
	vt.clk = s.newClock(false)
	v, err := lease.NewVoter(lease.VoterConfig{
		ID: vt.id, LeaseDuration: s.cfg.LeaseDuration, Boot: vt.boot, Restarted: restarted, Mutations: s.cfg.VoterMu,
	}, recs, vt.clk.at(s.now))
	if err != nil {
		return err
	}
	vt.life++
	vt.v, vt.up, vt.diskFree, vt.pausedT, vt.deferred, vt.failNext = v, true, s.now, 0, nil, false
	vt.seen = make(map[uint64]lease.Time)
	vt.grace = restarted && !s.cfg.VoterMu.NoGrace
	vt.graceUntil = vt.clk.at(s.now).Add(s.cfg.LeaseDuration)
	s.protVer++
	s.trace("%s starts, boot %d", vt.id, vt.boot)
	return nil
}

func (s *Sim) schedule(e *event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

// send puts a message on the network from process a to process b.
func (s *Sim) send(a, b int, e *event) {
	s.res.Messages++
	f := s.cfg.Faults
	if s.cut[[2]int{a, b}] {
		return
	}
	copies := 1
	if s.faults {
		if s.rng.Float64() < f.DropRate {
			return
		}
		if s.rng.Float64() < f.DupRate {
			copies = 2
		}
	}
	for c := range copies {
		d := f.DelayMin + time.Duration(s.rng.Int64N(int64(f.DelayMax-f.DelayMin)+1))
		if s.faults && s.rng.Float64() < f.LongDelayRate {
			d = time.Duration(s.rng.Int64N(int64(f.LongDelay) + 1))
		}
		m := *e
		if c > 0 {
			m.seq = 0
		}
		m.at = s.now + d + s.slow[[2]int{a, b}]
		s.schedule(&m)
	}
}

// Run executes the scenario and returns the first violation.
func (s *Sim) Run() (Result, error) {
	end := s.cfg.FaultsFor + s.cfg.Settle
	if s.cfg.Script != nil {
		s.cfg.Script(s)
	} else {
		s.faults = true
		s.schedule(&event{at: 100 * time.Millisecond, kind: evFault})
		s.At(s.cfg.FaultsFor, s.calm)
	}
	s.RunUntil(end)
	if s.err != nil {
		return s.res, s.err
	}
	s.checkLive(end)
	if s.err != nil {
		return s.res, s.err
	}
	return s.res, nil
}

// At schedules fn at global time t.
func (s *Sim) At(t time.Duration, fn func()) {
	s.schedule(&event{at: t, kind: evFault, fn: fn})
}

// RunUntil processes events up to time t, stopping at the first violation.
func (s *Sim) RunUntil(t time.Duration) {
	for s.q.Len() > 0 && s.err == nil {
		e := s.q[0]
		if e.at > t {
			break
		}
		heap.Pop(&s.q)
		s.now = e.at
		s.handle(e)
		s.check()
	}
	if s.now < t {
		s.now = t
	}
}

func (s *Sim) handle(e *event) {
	switch e.kind {
	case evFault:
		if e.fn != nil {
			e.fn()
		} else if s.faults {
			s.injectFaults()
			s.schedule(&event{at: s.now + 100*time.Millisecond, kind: evFault})
		}
	case evTick:
		n := s.nodes[e.node]
		if !n.up || n.life != e.life {
			return
		}
		s.schedule(&event{at: s.now + s.cfg.Tick, kind: evTick, node: e.node, life: e.life})
		if s.paused(e.node) {
			return
		}
		s.tickNode(e.node)
	case evToVoter, evReplyOut, evResume:
		s.handleVoter(e)
	case evWrite:
		s.written(e)
	case evToNode, evForward, evPrepare, evPrepared, evAborted:
		n := s.nodes[e.node]
		if !n.up || n.life != e.life {
			return
		}
		if s.paused(e.node) {
			n.deferred = append(n.deferred, e)
			return
		}
		s.deliver(e.node, e)
	}
}

func (s *Sim) paused(i int) bool { return s.now <= s.nodes[i].pausedT }

func (s *Sim) fail(rule, what string) {
	if s.err == nil {
		s.err = &Violation{Seed: s.cfg.Seed, At: s.now, Rule: rule, What: what}
	}
}

// Handoff timing of the simulated nodes.
const (
	handoffTimeout = time.Second
	prepareTimeout = 300 * time.Millisecond
	regrantWait    = 10 * time.Millisecond // shard's wait for a re-grant to settle before a transfer
)

// ---- The script API ----

// Drain makes node i leave the desired set (peers learn it after their
// gossip lag), hand every shard off, stop, and start again a second later.
func (s *Sim) Drain(i int) {
	n := s.nodes[i]
	if !n.up || n.draining {
		return
	}
	n.draining = true
	n.view[n.id] = false
	s.refreshDesired(i)
	s.trace("%s drains", n.label())
	s.learn(n.id)
}

// Plan makes node j the planned owner of shard sh; nodes learn it after
// their gossip lag.
func (s *Sim) Plan(sh uint32, j int) {
	s.plans++
	version := s.plans
	owner := s.nodes[j].id
	for i := range s.nodes {
		lag := time.Duration(s.rng.Int64N(int64(s.cfg.GossipLag) + 1))
		s.At(s.now+lag, func() {
			// Plans spread like gossip: the newest wins whatever order
			// they arrive in.
			n := s.nodes[i]
			if version > n.prefV[sh] {
				n.pref[sh], n.prefV[sh] = owner, version
				s.refreshDesired(i)
			}
		})
	}
}

// Crash stops node process i; peers learn of it after their gossip lag.
func (s *Sim) Crash(i int) {
	n := s.nodes[i]
	if !n.up {
		return
	}
	n.up, n.h, n.deferred = false, nil, nil
	n.draining = false
	s.trace("%s crashes (process %d)", n.label(), i)
	s.learn(n.id)
}

// Restart starts a new process in node slot i, with an incarnation above
// every earlier one of its NodeID. It becomes the NodeID's newest process.
func (s *Sim) Restart(i int) {
	s.RestartWith(i, s.incs[s.nodes[i].id]+1)
}

// RestartWith is Restart with incarnation inc, which may be lower than an
// earlier process's: a restart after the wall clock stepped back.
func (s *Sim) RestartWith(i int, inc uint64) {
	if s.nodes[i].up {
		return
	}
	if err := s.startNode(i, inc); err != nil {
		s.fail("restart", err.Error())
	}
	s.learn(s.nodes[i].id)
}

// Want sets whether node process i wants shard sh (scripts only).
func (s *Sim) Want(i int, sh uint32, want bool) {
	n := s.nodes[i]
	n.wants[sh] = want
	if n.h != nil {
		s.setDesired(n, sh, want)
	}
}

// Transfer makes node i hand shard sh to node j now (scripts only). It
// reports whether i led sh.
func (s *Sim) Transfer(i int, sh uint32, j int) bool {
	return s.TransferErr(i, sh, j) == nil
}

// TransferErr is Transfer returning the holder's error.
func (s *Sim) TransferErr(i int, sh uint32, j int) error {
	n, to := s.nodes[i], s.nodes[j]
	if n.h == nil {
		return fmt.Errorf("%s is down", n.label())
	}
	s.Want(i, sh, false)
	err := n.h.Transfer(sh, to.id, to.inc, n.clk.at(s.now))
	s.trace("%s transfers shard %d to %s: %v", n.label(), sh, to.id, err)
	s.drainChanges(i)
	return err
}

// Release makes node i give shard sh up now (scripts only).
func (s *Sim) Release(i int, sh uint32) {
	if n := s.nodes[i]; n.h != nil {
		s.Want(i, sh, false)
		n.h.Release(sh, n.clk.at(s.now))
		s.drainChanges(i)
	}
}

// Slow adds d to every message from process a to process b sent from now
// on; d = 0 removes it.
func (s *Sim) Slow(a, b int, d time.Duration) {
	if d == 0 {
		delete(s.slow, [2]int{a, b})
	} else {
		s.slow[[2]int{a, b}] = d
	}
}

// Twin starts a second process with node i's ID and a newer incarnation
// while the first keeps running, as when an orchestrator starts a
// replacement before the old process is dead. It returns the twin's
// process number; every other process keeps its number. The twin wants
// what node i wanted (scripts change that with Want).
func (s *Sim) Twin(i int) int {
	old := s.nodes[i]
	n := s.newNode(old.id)
	for k, v := range old.view {
		n.view[k] = v
	}
	for k, v := range old.wants {
		n.wants[k] = v
	}
	s.nodes = append(s.nodes, n)
	j := len(s.nodes) - 1
	if old.up {
		old.zombie = true
	}
	if err := s.startNode(j, s.incs[old.id]+1); err != nil {
		s.fail("twin", err.Error())
	}
	s.res.Twins++
	return j
}

// Pause stops node i for d: it neither ticks nor receives until then, but
// its clock runs (a GC pause, SIGSTOP, a busy loop).
func (s *Sim) Pause(i int, d time.Duration) {
	s.nodes[i].pausedT = max(s.nodes[i].pausedT, s.now+d)
	s.trace("%s pauses for %v", s.nodes[i].id, d)
}

// Freeze freezes process p (a node process, or Voter(i)) for d: it
// neither runs nor does its monotonic clock advance, as in a VM freeze.
// It resumes just after its clock does.
func (s *Sim) Freeze(p int, d time.Duration) {
	s.res.Freezes++
	if p >= voterBase {
		vt := s.voters[p-voterBase]
		if !vt.up {
			return
		}
		vt.clk.freeze(s.now, d)
		s.protVer++
		vt.pausedT = max(vt.pausedT, s.now+d+time.Microsecond)
		s.schedule(&event{at: vt.pausedT, kind: evResume, voter: p - voterBase, life: vt.life})
		s.trace("%s freezes for %v", vt.id, d)
		return
	}
	n := s.nodes[p]
	if !n.up {
		return
	}
	at := n.clk.freeze(s.now, d)
	if k := len(n.freezes) - 1; k >= 0 && n.freezes[k].to >= s.now {
		n.freezes[k].to = max(n.freezes[k].to, s.now+d)
	} else {
		n.freezes = append(n.freezes, freeze{at: at, from: s.now, to: s.now + d, rate: n.clk.rate})
	}
	n.pausedT = max(n.pausedT, s.now+d+time.Microsecond)
	s.trace("%s freezes for %v (process %d)", n.label(), d, p)
}

// StepClock moves process p's clock forward by d.
func (s *Sim) StepClock(p int, d time.Duration) {
	if c := s.clockOf(p); c != nil {
		s.protVer++
		c.step(s.now, d)
		s.trace("process %d's clock steps %v forward", p, d)
	}
}

// SetClockRate makes process p's clock run at rate from now on.
func (s *Sim) SetClockRate(p int, rate float64) {
	if c := s.clockOf(p); c != nil {
		s.protVer++
		c.setRate(s.now, rate)
		s.trace("process %d's clock runs at %.4f", p, rate)
	}
}

func (s *Sim) clockOf(p int) *clock {
	if p >= voterBase {
		return &s.voters[p-voterBase].clk
	}
	return &s.nodes[p].clk
}

// CrashVoter stops voter i; RestartVoter starts it from its store. Writes
// still in flight when it crashes are lost, with the replies that waited
// for them.
func (s *Sim) CrashVoter(i int) {
	if s.voters[i].up {
		s.voters[i].up = false
		s.protVer++
		s.trace("%s crashes", s.voters[i].id)
	}
}

func (s *Sim) RestartVoter(i int) {
	if !s.voters[i].up {
		if err := s.startVoter(i, true); err != nil {
			s.fail("voter restart", err.Error())
		}
	}
}

// FailDisk makes voter i's next write fail: the voter stops, as
// package voter's Server does, until RestartVoter.
func (s *Sim) FailDisk(i int) { s.voters[i].failNext = true }

// SlowDisk adds d to every write of voter i from now on.
func (s *Sim) SlowDisk(i int, d time.Duration) { s.voters[i].diskSlow = d }

// Cut drops traffic from process a to process b (node processes are
// numbered from 0, voters are Voter(i)); Heal restores every link.
func (s *Sim) Cut(a, b int) { s.cut[[2]int{a, b}] = true }
func (s *Sim) Heal()        { clear(s.cut) }

// Isolate cuts process p off in both directions.
func (s *Sim) Isolate(p int) {
	for _, q := range s.procs() {
		if q != p {
			s.Cut(p, q)
			s.Cut(q, p)
		}
	}
}

// procs lists every process number: node processes, then voters.
func (s *Sim) procs() []int {
	out := make([]int, 0, len(s.nodes)+len(s.voters))
	for i := range s.nodes {
		out = append(out, i)
	}
	for i := range s.voters {
		out = append(out, voterBase+i)
	}
	return out
}

// Voter returns the process number of voter i, for Cut, Slow, Isolate and
// Freeze. It never changes, however many node processes start.
func (s *Sim) Voter(i int) int { return voterBase + i }

// History returns the leadership starts of shard sh so far, oldest first,
// as "node@epoch" ("node#inc@epoch" for a later incarnation).
func (s *Sim) History(sh uint32) []string { return slices.Clone(s.hist[sh]) }

// Err returns the first violation so far, or nil.
func (s *Sim) Err() error {
	if s.err == nil {
		return nil
	}
	return s.err
}

// Result returns the run's summary so far.
func (s *Sim) Result() Result { return s.res }

// Now returns the simulated global time.
func (s *Sim) Now() time.Duration { return s.now }

// Holder returns node process i's lease state, nil while it is down. A
// script may change it: the checker asks it afresh at the next instant.
func (s *Sim) Holder(i int) *lease.Holder {
	s.nodes[i].stale = true
	return s.nodes[i].h
}

// LocalNow returns node process i's clock reading.
func (s *Sim) LocalNow(i int) lease.Time { return s.nodes[i].clk.at(s.now) }

// VoterState returns voter i's protocol state.
func (s *Sim) VoterState(i int) *lease.Voter { return s.voters[i].v }

// Persisted returns voter i's durable record of shard sh.
func (s *Sim) Persisted(i int, sh uint32) lease.Record { return s.voters[i].persisted[sh] }

// VoterUp reports whether voter i is running.
func (s *Sim) VoterUp(i int) bool { return s.voters[i].up }

// Leader returns the node process leading shard sh now (by its own clock)
// and its epoch, or −1.
func (s *Sim) Leader(sh uint32) (int, uint64) {
	for i, n := range s.nodes {
		if n.up && n.h != nil {
			if e, ok := n.h.Leads(sh, n.clk.at(s.now)); ok {
				return i, e
			}
		}
	}
	return -1, 0
}
