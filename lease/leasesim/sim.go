// Package leasesim runs the lease protocol of package lease on a simulated
// network, from a seed, so that any run replays exactly. Nodes and voters
// have drifting clocks; the network delays, drops, duplicates and reorders
// messages and partitions processes (symmetric and one-way); nodes crash,
// restart and pause for longer than a lease; voters crash and restart from
// their persisted records. A checker runs after every event:
//
//   - never two nodes that each consider themselves leader of one shard at
//     the same simulated instant (each judged by its own clock);
//   - never two nodes leading one (shard, epoch);
//   - the epochs of successive leaders of a shard strictly increase;
//   - once faults stop, every shard is led again within a bound;
//   - once faults stop, a planned move (a handoff, a drain) leaves its
//     shard without a leader for less than a lease: less than a crash
//     failover would.
//
// Handoffs follow DESIGN §4: the source asks the target to prepare (the
// target expects the shard and names the lowest epoch it can lead at),
// then transfers; the forward of the outcome is a message too, so every
// step can be dropped, delayed, duplicated or cut off by a crash. Nodes
// drain — they leave the desired set, hand everything off, stop and come
// back — and, once faults stop, the run drains a node and moves shards by
// plan to measure the gaps of planned moves.
//
// Canonical use:
//
//	res, err := leasesim.Run(leasesim.Config{Seed: 42})
//	if err != nil { ... } // a *Violation names the seed, time and rule
package leasesim

import (
	"container/heap"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/tenurehq/tenure/lease"
)

// Faults sets how hostile the simulated world is while faults are on. Rates
// are per message, or per node/voter per second.
type Faults struct {
	DelayMin, DelayMax time.Duration // per message, uniform
	LongDelayRate      float64       // fraction of messages held for up to LongDelay
	LongDelay          time.Duration
	DropRate           float64
	DupRate            float64
	PartitionRate      float64 // new partitions per second
	PartitionFor       time.Duration
	OneWayRate         float64 // fraction of partitions that cut one direction only
	CrashRate          float64 // node crashes per node per second
	DownFor            time.Duration
	PauseRate          float64 // node pauses per node per second
	PauseFor           time.Duration
	VoterCrashRate     float64
	TransferRate       float64 // fraction of unwanted leaderships handed off rather than released
	DrainRate          float64 // node drains per node per second
}

// DefaultFaults is a hostile but realistic mix for a 1 s lease.
func DefaultFaults() Faults {
	return Faults{
		DelayMin: time.Millisecond, DelayMax: 20 * time.Millisecond,
		LongDelayRate: 0.01, LongDelay: 1500 * time.Millisecond,
		DropRate: 0.05, DupRate: 0.02,
		PartitionRate: 0.15, PartitionFor: 3 * time.Second, OneWayRate: 0.3,
		CrashRate: 0.02, DownFor: 3 * time.Second,
		PauseRate: 0.02, PauseFor: 2500 * time.Millisecond,
		VoterCrashRate: 0.01,
		TransferRate:   0.5,
		DrainRate:      0.02,
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
	// FaultsFor is how long faults are injected; then the network heals,
	// crashed processes restart, and the run goes on for Settle. Defaults
	// 20 s and 8 s.
	FaultsFor, Settle time.Duration
	// GossipLag bounds how late each node learns of a crash or restart.
	// Default 500 ms.
	GossipLag time.Duration
	// Tick is the nodes' tick interval; default 10 ms.
	Tick    time.Duration
	Faults  *Faults // default DefaultFaults()
	VoterMu lease.VoterMutations
	NodeMu  lease.HolderMutations
	// ForgetOnRestart makes restarted voters lose their records: a
	// deliberately broken store, for checker tests.
	ForgetOnRestart bool
	// ReuseGens makes restarted voters keep their boot counter, so that
	// generations repeat: a deliberately broken store, for checker tests.
	ReuseGens bool
	// StopDrainEarly makes a draining node stop as soon as it leads
	// nothing, before the voters answered its transfers: a deliberately
	// broken drain, for checker tests.
	StopDrainEarly bool
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
}

type clock struct{ rate, offset float64 }

func (c clock) at(t time.Duration) lease.Time { return lease.Time(c.offset + c.rate*float64(t)) }

type node struct {
	id       string
	inc      uint64
	h        *lease.Holder
	clk      clock
	up       bool
	pausedT  time.Duration // paused until this global time
	deferred []*event
	view     map[string]bool // nodes this node believes up
	was      map[uint32]uint64
	wants    map[uint32]bool // scripted desires, kept across restarts
	// preparing holds handoffs this node started: the target asked to
	// prepare, the reply not yet in.
	preparing map[uint32]prep
	// expect holds shards this node prepared for, until when (global
	// time): it wants them whatever its own view says, as shard.Node does.
	expect   map[uint32]time.Duration
	draining bool
	// pref holds planned owners this node has heard of (shard → node),
	// prefV their versions.
	pref  map[uint32]int
	prefV map[uint32]int
}

type prep struct {
	to    int
	epoch uint64
	at    time.Duration
}

type voter struct {
	id        string
	v         *lease.Voter
	clk       clock
	up        bool
	boot      uint32
	persisted map[uint32]lease.Record
}

type eventKind uint8

const (
	evTick eventKind = iota + 1
	evToVoter
	evToNode
	evForward
	evView
	evFault
	evPrepare  // source → target: get ready for shard
	evPrepared // target → source: ready, with the lowest epoch it can lead at
)

type event struct {
	at    time.Duration
	seq   uint64
	kind  eventKind
	node  int
	voter int
	req   lease.Request
	rep   lease.Reply
	fwd   lease.Change
	inc   uint64 // recipient incarnation for messages to nodes
	fn    func()
	// prepare and prepared messages
	shard    uint32
	from     int
	epoch    uint64 // the source's epoch; for evPrepared, the minimum
	fromInc  uint64
	minEpoch uint64
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

// Sim is one simulated world. Scripts drive it through its methods.
type Sim struct {
	cfg    Config
	rng    *rand.Rand
	now    time.Duration
	q      queue
	seq    uint64
	nodes  []*node
	voters []*voter
	// cut[a][b] drops traffic from process a to b; processes are nodes
	// 0..N-1 then voters N..N+V-1.
	cut     map[[2]int]bool
	slow    map[[2]int]time.Duration
	faults  bool
	err     *Violation
	res     Result
	holders map[[2]uint64]string // (shard, epoch) → node that led it
	top     map[uint32]uint64    // highest epoch led per shard
	hist    map[uint32][]string  // leadership starts per shard, "n1@3"
	unled   map[uint32]time.Duration
	moving  map[uint32]time.Duration // planned moves under way since
	plans   int                      // Plan calls so far
	// plannedFrom is when the cluster has recovered from the faults and
	// planned moves must be short; 0 while faults last.
	plannedFrom time.Duration
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
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(cfg.Seed, 0x7e4e)),
		cut:     make(map[[2]int]bool),
		slow:    make(map[[2]int]time.Duration),
		holders: make(map[[2]uint64]string),
		top:     make(map[uint32]uint64),
		hist:    make(map[uint32][]string),
		unled:   make(map[uint32]time.Duration),
		moving:  make(map[uint32]time.Duration),
	}
	for i := range cfg.Voters {
		vt := &voter{id: fmt.Sprintf("v%d", i+1), clk: s.newClock(false), boot: 1, persisted: map[uint32]lease.Record{}}
		s.voters = append(s.voters, vt)
		if err := s.startVoter(i, false); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Nodes {
		n := &node{id: fmt.Sprintf("n%d", i+1), clk: s.newClock(true), view: map[string]bool{}, was: map[uint32]uint64{},
			wants: map[uint32]bool{}, preparing: map[uint32]prep{}, expect: map[uint32]time.Duration{}, pref: map[uint32]int{}, prefV: map[uint32]int{}}
		s.nodes = append(s.nodes, n)
	}
	for i := range s.nodes {
		if err := s.startNode(i); err != nil {
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

func (s *Sim) newClock(isNode bool) clock {
	rho := s.cfg.MaxClockDrift
	rate := 1 - rho + 2*rho*s.rng.Float64()
	if s.cfg.ExtremeDrift {
		rate = 1 + rho
		if isNode {
			rate = 1 - rho
		}
	}
	return clock{rate: rate, offset: float64(s.rng.Int64N(int64(time.Hour)))}
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

func (s *Sim) startNode(i int) error {
	n := s.nodes[i]
	n.inc++
	margin := s.cfg.SafetyMargin
	if margin < 0 {
		margin = time.Nanosecond // 0 means default in HolderConfig
	}
	h, err := lease.NewHolder(lease.HolderConfig{
		ID: n.id, Inc: n.inc, Voters: s.voterIDs(),
		LeaseDuration: s.cfg.LeaseDuration, MaxClockDrift: s.cfg.MaxClockDrift, SafetyMargin: margin,
		Rand:      rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())),
		Mutations: s.cfg.NodeMu,
	})
	if err != nil {
		return err
	}
	n.h, n.up, n.pausedT, n.deferred = h, true, 0, nil
	n.draining = false
	n.view[n.id] = true
	clear(n.was)
	clear(n.preparing)
	clear(n.expect)
	s.refreshDesired(i)
	s.schedule(&event{at: s.now + time.Duration(s.rng.Int64N(int64(s.cfg.Tick))), kind: evTick, node: i, inc: n.inc})
	s.trace("%s starts, incarnation %d", n.id, n.inc)
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
	v, err := lease.NewVoter(lease.VoterConfig{
		ID: vt.id, LeaseDuration: s.cfg.LeaseDuration, Boot: vt.boot, Restarted: restarted, Mutations: s.cfg.VoterMu,
	}, recs, vt.clk.at(s.now))
	if err != nil {
		return err
	}
	vt.v, vt.up = v, true
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
		if !n.up || n.inc != e.inc {
			return
		}
		s.schedule(&event{at: s.now + s.cfg.Tick, kind: evTick, node: e.node, inc: e.inc})
		if s.paused(e.node) {
			return
		}
		s.tickNode(e.node)
	case evToVoter:
		vt := s.voters[e.voter]
		if !vt.up {
			return
		}
		rep, dirty := vt.v.Handle(e.req, vt.clk.at(s.now))
		if s.cfg.Trace != nil {
			for _, r := range rep.Results {
				s.trace("%s: %s %s shard %d epoch %d: %s (record %d %s)", vt.id, e.req.From, r.Op.Kind, r.Op.Shard, r.Op.Epoch, r.Refusal, r.Record.Epoch, r.Record.Holder)
			}
		}
		// Persist before the reply leaves: both happen in this event.
		for _, r := range dirty {
			vt.persisted[r.Shard] = r.Record
		}
		s.send(len(s.nodes)+e.voter, e.node, &event{kind: evToNode, node: e.node, rep: rep, inc: e.inc})
	case evToNode, evForward, evPrepare, evPrepared:
		n := s.nodes[e.node]
		if !n.up || n.inc != e.inc {
			return
		}
		if s.paused(e.node) {
			n.deferred = append(n.deferred, e)
			return
		}
		s.deliver(e.node, e)
	}
}

func (s *Sim) paused(i int) bool { return s.now < s.nodes[i].pausedT }

func (s *Sim) deliver(i int, e *event) {
	n := s.nodes[i]
	now := n.clk.at(s.now)
	switch e.kind {
	case evForward:
		n.h.AcceptTransfer(e.fwd.Shard, e.fwd.Epoch, e.fwd.Gens, now)
	case evPrepare:
		// The target expects the shard for the handoff's timeout and
		// names the lowest epoch it can lead it at. A draining node
		// refuses (it does not answer).
		if !n.draining {
			n.expect[e.shard] = s.now + handoffTimeout
			n.h.Expect(e.shard, now.Add(handoffTimeout))
			s.send(i, e.from, &event{kind: evPrepared, node: e.from, inc: e.fromInc, shard: e.shard, from: i, epoch: e.epoch, minEpoch: n.h.MinTransferEpoch(e.shard)})
		}
	case evPrepared:
		p, ok := n.preparing[e.shard]
		if !ok || p.to != e.from || p.epoch != e.epoch {
			break
		}
		delete(n.preparing, e.shard)
		if ep, led := n.h.Leads(e.shard, now); !led || ep != e.epoch || s.desired(i, e.shard) != e.from {
			break
		}
		to := s.nodes[e.from]
		n.h.SetDesired(e.shard, false)
		if err := n.h.TransferAt(e.shard, to.id, to.inc, e.minEpoch, now); err == nil {
			s.trace("%s transfers shard %d to %s (at least epoch %d)", n.id, e.shard, to.id, e.minEpoch)
		}
	default:
		n.h.Step(e.rep, now)
	}
	s.drainChanges(i)
}

func (s *Sim) tickNode(i int) {
	n := s.nodes[i]
	if len(n.deferred) > 0 {
		d := n.deferred
		n.deferred = nil
		for _, e := range d {
			s.deliver(i, e)
		}
	}
	now := n.clk.at(s.now)
	// Shards this node leads but no longer wants go to their desired
	// owner, by handoff (prepare, then transfer) or release. A draining
	// node, and every node once faults stop, always hands off.
	led := n.h.Led(now)
	for _, sh := range led {
		if s.cfg.Script != nil {
			break
		}
		owner := s.desired(i, sh)
		if owner == i {
			continue
		}
		if p, ok := n.preparing[sh]; ok {
			if s.now-p.at < prepareTimeout {
				continue // waiting for the target
			}
			delete(n.preparing, sh)
		}
		handoff := n.draining || !s.faults || s.rng.Float64() < s.cfg.Faults.TransferRate
		if handoff && owner >= 0 {
			e, _ := n.h.Leads(sh, now)
			n.preparing[sh] = prep{to: owner, epoch: e, at: s.now}
			s.trace("%s asks %s to prepare for shard %d", n.id, s.nodes[owner].id, sh)
			s.send(i, owner, &event{kind: evPrepare, node: owner, inc: s.nodes[owner].inc, shard: sh, from: i, epoch: e, fromInc: n.inc})
		} else if owner >= 0 || n.draining {
			n.h.Release(sh, now)
			s.trace("%s releases shard %d", n.id, sh)
		}
	}
	busy := len(n.preparing) > 0 || len(n.h.Transferring()) > 0
	if n.draining && len(led) == 0 && (!busy || s.cfg.StopDrainEarly) && s.cfg.Script == nil {
		// Drained: leave, and come back a little later.
		s.trace("%s drained", n.id)
		s.Crash(i)
		s.At(s.now+time.Second, func() { s.Restart(i) })
		return
	}
	for _, env := range n.h.Tick(now) {
		v := slices.Index(s.voterIDs(), env.To)
		s.send(i, len(s.nodes)+v, &event{kind: evToVoter, voter: v, node: i, req: env.Req, inc: n.inc})
	}
	s.drainChanges(i)
}

func (s *Sim) drainChanges(i int) {
	n := s.nodes[i]
	for _, c := range n.h.TakeChanges() {
		s.trace("%s %s shard %d epoch %d %s", n.id, kindName(c.Kind), c.Shard, c.Epoch, reasonName(c))
		if c.Kind == lease.Transferred {
			to := slices.IndexFunc(s.nodes, func(m *node) bool { return m.id == c.To && m.up })
			if to < 0 {
				to = slices.IndexFunc(s.nodes, func(m *node) bool { return m.id == c.To })
			}
			s.res.Handoffs++
			s.send(i, to, &event{kind: evForward, node: to, fwd: c, inc: s.nodes[to].inc})
		}
		if c.Kind == lease.Lost && c.Reason == lease.ReasonHandoff && s.plannedFrom > 0 && s.now >= s.plannedFrom {
			if _, ok := s.moving[c.Shard]; !ok {
				s.moving[c.Shard] = s.now
				s.res.PlannedMoves++
			}
		}
	}
	n.h.TakeNotices()
}

func kindName(k lease.ChangeKind) string {
	return [...]string{"?", "gains", "renews", "loses", "transferred", "transfer failed"}[k]
}

func reasonName(c lease.Change) string {
	if c.Kind == lease.Lost {
		return "(" + c.Reason.String() + ")"
	}
	return ""
}

// desired returns the desired owner of shard sh in node i's view: a
// planned owner it heard of, if up in its view, else the highest
// rendezvous hash among the nodes it believes up.
func (s *Sim) desired(i int, sh uint32) int {
	if j, ok := s.nodes[i].pref[sh]; ok && s.nodes[i].view[s.nodes[j].id] {
		return j
	}
	best, bestH := -1, uint64(0)
	for j, m := range s.nodes {
		if !s.nodes[i].view[m.id] {
			continue
		}
		h := xxhash.Sum64String(fmt.Sprintf("%d/%s", sh, m.id))
		if best < 0 || h > bestH {
			best, bestH = j, h
		}
	}
	return best
}

func (s *Sim) refreshDesired(i int) {
	n := s.nodes[i]
	if n.h == nil {
		return
	}
	if s.cfg.Script != nil {
		for sh, want := range n.wants {
			n.h.SetDesired(sh, want)
		}
		return
	}
	for sh := range s.cfg.Shards {
		until, expected := n.expect[uint32(sh)]
		n.h.SetDesired(uint32(sh), s.desired(i, uint32(sh)) == i || expected && s.now < until)
	}
}

// learn tells every other node, after a random gossip lag, that node j is
// up or down.
func (s *Sim) learn(j int, up bool) {
	id := s.nodes[j].id
	for i := range s.nodes {
		if i == j {
			continue
		}
		lag := time.Duration(s.rng.Int64N(int64(s.cfg.GossipLag) + 1))
		s.At(s.now+lag, func() {
			s.nodes[i].view[id] = up
			s.refreshDesired(i)
		})
	}
}

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
	s.trace("%s drains", n.id)
	s.learn(i, false)
}

// Plan makes node j the planned owner of shard sh; nodes learn it after
// their gossip lag.
func (s *Sim) Plan(sh uint32, j int) {
	s.plans++
	version := s.plans
	for i := range s.nodes {
		lag := time.Duration(s.rng.Int64N(int64(s.cfg.GossipLag) + 1))
		s.At(s.now+lag, func() {
			// Plans spread like gossip: the newest wins whatever order
			// they arrive in.
			n := s.nodes[i]
			if version > n.prefV[sh] {
				n.pref[sh], n.prefV[sh] = j, version
				s.refreshDesired(i)
			}
		})
	}
}

// Crash stops node i; peers learn of it after their gossip lag.
func (s *Sim) Crash(i int) {
	n := s.nodes[i]
	if !n.up {
		return
	}
	n.up, n.h, n.deferred = false, nil, nil
	n.draining = false
	s.trace("%s crashes", n.id)
	s.learn(i, false)
}

// Restart starts a new incarnation of node i.
func (s *Sim) Restart(i int) {
	if s.nodes[i].up {
		return
	}
	if err := s.startNode(i); err != nil {
		s.fail("restart", err.Error())
	}
	s.learn(i, true)
}

// Want sets whether node i wants shard sh (scripts only).
func (s *Sim) Want(i int, sh uint32, want bool) {
	n := s.nodes[i]
	n.wants[sh] = want
	if n.h != nil {
		n.h.SetDesired(sh, want)
	}
}

// Transfer makes node i hand shard sh to node j now (scripts only). It
// reports whether i led sh.
func (s *Sim) Transfer(i int, sh uint32, j int) bool {
	n, to := s.nodes[i], s.nodes[j]
	if n.h == nil {
		return false
	}
	s.Want(i, sh, false)
	err := n.h.Transfer(sh, to.id, to.inc, n.clk.at(s.now))
	s.trace("%s transfers shard %d to %s: %v", n.id, sh, to.id, err)
	s.drainChanges(i)
	return err == nil
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
// replacement before the old process is dead. It returns the twin's index.
func (s *Sim) Twin(i int) int {
	old := s.nodes[i]
	n := &node{id: old.id, inc: old.inc, clk: s.newClock(true), view: maps.Clone(old.view),
		was: map[uint32]uint64{}, wants: maps.Clone(old.wants)}
	s.nodes = append(s.nodes, n)
	j := len(s.nodes) - 1
	if err := s.startNode(j); err != nil {
		s.fail("twin", err.Error())
	}
	return j
}

// Pause freezes node i for d: it neither ticks nor receives until then.
func (s *Sim) Pause(i int, d time.Duration) {
	s.nodes[i].pausedT = max(s.nodes[i].pausedT, s.now+d)
	s.trace("%s pauses for %v", s.nodes[i].id, d)
}

// CrashVoter stops voter i; RestartVoter starts it from its store.
func (s *Sim) CrashVoter(i int) {
	if s.voters[i].up {
		s.voters[i].up = false
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

// Cut drops traffic from process a to process b (nodes are 0..N-1, voters
// N..N+V-1); Heal restores every link.
func (s *Sim) Cut(a, b int) { s.cut[[2]int{a, b}] = true }
func (s *Sim) Heal()        { clear(s.cut) }

// Isolate cuts process p off in both directions.
func (s *Sim) Isolate(p int) {
	for q := range len(s.nodes) + len(s.voters) {
		if q != p {
			s.Cut(p, q)
			s.Cut(q, p)
		}
	}
}

// Voter returns the process number of voter i, for Cut and Isolate.
func (s *Sim) Voter(i int) int { return len(s.nodes) + i }

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

// Now returns the simulated global time.
func (s *Sim) Now() time.Duration { return s.now }

// Holder returns node i's current lease state, nil while it is down.
func (s *Sim) Holder(i int) *lease.Holder { return s.nodes[i].h }

// LocalNow returns node i's clock reading.
func (s *Sim) LocalNow(i int) lease.Time { return s.nodes[i].clk.at(s.now) }

// VoterState returns voter i's protocol state.
func (s *Sim) VoterState(i int) *lease.Voter { return s.voters[i].v }

// Leader returns the node leading shard sh now and its epoch, or −1.
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

func (s *Sim) injectFaults() {
	f := s.cfg.Faults
	dt := 0.1 // seconds per fault step
	procs := len(s.nodes) + len(s.voters)
	if s.rng.Float64() < f.PartitionRate*dt {
		var side []int
		for p := range procs {
			if s.rng.IntN(3) == 0 {
				side = append(side, p)
			}
		}
		oneWay := s.rng.Float64() < f.OneWayRate
		var cuts [][2]int
		for _, a := range side {
			for b := range procs {
				if !slices.Contains(side, b) {
					cuts = append(cuts, [2]int{a, b})
					if !oneWay {
						cuts = append(cuts, [2]int{b, a})
					}
				}
			}
		}
		for _, c := range cuts {
			s.cut[c] = true
		}
		s.trace("partition %v (one-way %v)", side, oneWay)
		s.At(s.now+time.Duration(s.rng.Int64N(int64(f.PartitionFor)+1)), func() {
			for _, c := range cuts {
				delete(s.cut, c)
			}
		})
	}
	for i, n := range s.nodes {
		switch r := s.rng.Float64(); {
		case n.up && r < f.CrashRate*dt:
			s.Crash(i)
			s.At(s.now+time.Duration(s.rng.Int64N(int64(f.DownFor)+1)), func() { s.Restart(i) })
		case n.up && r < (f.CrashRate+f.PauseRate)*dt:
			s.Pause(i, time.Duration(s.rng.Int64N(int64(f.PauseFor)+1)))
		case n.up && r < (f.CrashRate+f.PauseRate+f.DrainRate)*dt:
			s.Drain(i)
		}
	}
	for i, v := range s.voters {
		if v.up && s.rng.Float64() < f.VoterCrashRate*dt {
			s.CrashVoter(i)
			s.At(s.now+time.Duration(s.rng.Int64N(int64(f.DownFor)+1)), func() { s.RestartVoter(i) })
		}
	}
}

// calm ends the fault phase: links heal and everything down comes back.
func (s *Sim) calm() {
	s.faults = false
	s.Heal()
	for i := range s.nodes {
		s.Restart(i)
		s.nodes[i].pausedT = min(s.nodes[i].pausedT, s.now)
	}
	for i := range s.voters {
		s.RestartVoter(i)
	}
	s.trace("faults stop")
	// Planned moves on a calm cluster, once it has settled: a drain, then
	// shards moved by plan.
	at := s.now + s.LiveBound()/2
	s.plannedFrom = at
	s.At(at, func() { s.Drain(s.rng.IntN(len(s.nodes))) })
	for k := range 4 {
		s.At(at+2*time.Second+time.Duration(k)*300*time.Millisecond, func() {
			s.Plan(uint32(s.rng.IntN(s.cfg.Shards)), s.rng.IntN(len(s.nodes)))
		})
	}
}

// Handoff timing of the simulated nodes.
const (
	handoffTimeout = time.Second
	prepareTimeout = 300 * time.Millisecond
)

func (s *Sim) fail(rule, what string) {
	if s.err == nil {
		s.err = &Violation{Seed: s.cfg.Seed, At: s.now, Rule: rule, What: what}
	}
}

// check runs the safety invariants at the current instant.
func (s *Sim) check() {
	for sh := range uint32(s.cfg.Shards) {
		var leaders []string
		for _, n := range s.nodes {
			if !n.up || n.h == nil {
				continue
			}
			e, ok := n.h.Leads(sh, n.clk.at(s.now))
			if !ok {
				delete(n.was, sh)
				continue
			}
			who := n.id
			if n.inc > 1 {
				who = fmt.Sprintf("%s#%d", n.id, n.inc)
			}
			leaders = append(leaders, fmt.Sprintf("%s@%d", who, e))
			if prev, ok := n.was[sh]; ok && prev == e {
				continue
			}
			n.was[sh] = e
			s.res.Leaderships++
			key := [2]uint64{uint64(sh), e}
			if h, ok := s.holders[key]; ok && h != who {
				s.fail("one holder per (shard, epoch)", fmt.Sprintf("shard %d epoch %d led by %s and earlier by %s", sh, e, who, h))
			}
			if e < s.top[sh] || (e == s.top[sh] && s.holders[key] != who) {
				s.fail("epochs increase", fmt.Sprintf("%s leads shard %d at epoch %d after epoch %d", who, sh, e, s.top[sh]))
			}
			s.holders[key] = who
			s.hist[sh] = append(s.hist[sh], fmt.Sprintf("%s@%d", who, e))
			s.trace("checker: %s leads shard %d at epoch %d", who, sh, e)
			s.top[sh] = max(s.top[sh], e)
		}
		if len(leaders) > 1 {
			s.fail("one leader at a time", fmt.Sprintf("shard %d: %s", sh, strings.Join(leaders, ", ")))
		}
		if since, ok := s.moving[sh]; ok {
			gap := s.now - since
			if len(leaders) > 0 {
				s.res.MaxHandoffGap = max(s.res.MaxHandoffGap, gap)
				delete(s.moving, sh)
			} else if gap >= s.cfg.LeaseDuration {
				s.fail("planned moves are short", fmt.Sprintf("shard %d without a leader for %v in a planned move (a crash failover takes at least %v)", sh, gap, s.cfg.LeaseDuration))
			}
		}
		if !s.faults && s.cfg.Script == nil {
			if len(leaders) == 0 {
				if _, ok := s.unled[sh]; !ok {
					s.unled[sh] = s.now
				}
			} else if since, ok := s.unled[sh]; ok {
				s.res.MaxUnled = max(s.res.MaxUnled, s.now-since)
				delete(s.unled, sh)
			}
		}
	}
}

// LiveBound is how long after faults stop every shard must be led again:
// held leases run out (LD), gossip views converge, voters finish their
// grace period (LD), and acquisitions get through their backoff.
func (s *Sim) LiveBound() time.Duration {
	ld := s.cfg.LeaseDuration
	return 3*ld + s.cfg.GossipLag + s.cfg.Faults.LongDelay + time.Second
}

func (s *Sim) checkLive(end time.Duration) {
	if s.cfg.Script != nil {
		return
	}
	bound := s.LiveBound()
	for sh := range uint32(s.cfg.Shards) {
		if l, _ := s.Leader(sh); l < 0 {
			s.fail("led again after faults stop", fmt.Sprintf("shard %d has no leader %v after faults stopped (bound %v)", sh, end-s.cfg.FaultsFor, bound))
		}
		if since, ok := s.unled[sh]; ok {
			s.res.MaxUnled = max(s.res.MaxUnled, end-since)
		}
	}
	if s.res.MaxUnled > bound {
		s.fail("led again after faults stop", fmt.Sprintf("a shard went %v without a leader after faults stopped (bound %v)", s.res.MaxUnled, bound))
	}
}
