package lease

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// VoterConfig configures a Voter.
type VoterConfig struct {
	// ID names the voter in replies.
	ID string
	// LeaseDuration (LD) is how long a session stays live after its last
	// keep-alive, on this voter's clock. Every node and voter of a cluster
	// must use the same value.
	LeaseDuration time.Duration
	// Boot is the voter's persisted boot counter, larger on every start.
	// Generations are Boot<<32 | sequence, so no generation is ever reused,
	// not even across restarts.
	Boot uint32
	// Restarted says the voter starts from a store that earlier runs wrote:
	// it then treats every session as live for one LeaseDuration and grants
	// nothing meanwhile, because it has forgotten the sessions that protect
	// the holders named in its records.
	Restarted bool
	// Mutations deliberately break the protocol. Only tests that prove the
	// simulation's checker catches a broken rule set them.
	Mutations VoterMutations
}

// VoterMutations are deliberate protocol bugs for checker tests.
type VoterMutations struct {
	// AcceptEqualEpoch grants an epoch equal to the record's.
	AcceptEqualEpoch bool
	// NoGrace skips the restart grace period.
	NoGrace bool
	// ReleaseIgnoresGen accepts a Release that names the record's epoch
	// and NodeID whatever generation the record names (a twin releases
	// the live process's records).
	ReleaseIgnoresGen bool
}

func (c VoterConfig) validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("%w: VoterConfig.ID is empty", ErrConfig)
	case c.LeaseDuration <= 0:
		return fmt.Errorf("%w: VoterConfig.LeaseDuration must be positive, got %v", ErrConfig, c.LeaseDuration)
	}
	return nil
}

// session is what a voter knows of one node.
type session struct {
	inc      uint64
	nonce    uint64
	gen      uint64
	began    Time // when gen began
	lastSeen Time
	// older holds generations of earlier incarnations with their last
	// keep-alive: a record naming one expires only by time.
	older map[uint64]Time
	// prevKA is when the previous keep-alive arrived, for expiry notices.
	prevKA Time
	// ended lists replaced generations with the time they expired, kept
	// for a while so that every node's next keep-alive can hear of them.
	ended []endedGen
}

type endedGen struct {
	gen uint64
	at  Time
}

// Voter is one voter's protocol state: sessions in memory and one record per
// shard that has ever been granted. It does no I/O and reads no clock: every
// call takes the current time, and Handle returns the records the caller
// must persist before it sends the reply. Not safe for concurrent use.
type Voter struct {
	cfg        VoterConfig
	records    map[uint32]Record
	byHolder   map[string]map[uint32]struct{}
	sessions   map[string]*session
	seq        uint32
	graceUntil Time
	// ver is the record version: it grows with every record change, and
	// starts at Boot<<32 so that no version repeats across restarts.
	// firstVer is where this run began: Held changes are known only after
	// it.
	ver, firstVer uint64
	// logs keeps, per NodeID, the recent changes of the records that
	// named it or name it, so that a keep-alive's Held list carries
	// changes rather than every record (Reply.HeldDelta).
	logs map[string]*heldLog
}

// heldLog is the recent record changes that concern one NodeID, in version
// order. It is trimmed to a bound proportional to the records naming the
// node: a holder that fell further behind gets a whole list instead.
type heldLog struct {
	changes []heldChange
	// floor is the last version trimmed: changes at or below it may be
	// missing.
	floor uint64
}

type heldChange struct {
	ver   uint64
	shard uint32
}

// minHeldLog is the fewest changes a NodeID's log keeps: enough for a
// keep-alive interval of a cold start's acquisitions (a holder sends at
// most a few batches of 1024 operations between keep-alives).
const minHeldLog = 8192

// NewVoter returns a voter holding records (which it takes over) at time
// now.
func NewVoter(cfg VoterConfig, records map[uint32]Record, now Time) (*Voter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if records == nil {
		records = make(map[uint32]Record)
	}
	v := &Voter{
		cfg:      cfg,
		records:  records,
		byHolder: make(map[string]map[uint32]struct{}),
		sessions: make(map[string]*session),
		ver:      uint64(cfg.Boot) << 32,
		logs:     make(map[string]*heldLog),
	}
	v.firstVer = v.ver
	for s, r := range records {
		v.index(s, "", r.Holder)
	}
	if cfg.Restarted && !cfg.Mutations.NoGrace {
		v.graceUntil = now.Add(cfg.LeaseDuration)
	}
	return v, nil
}

// ID returns the voter's ID.
func (v *Voter) ID() string { return v.cfg.ID }

// Record returns the voter's record for shard s.
func (v *Voter) Record(s uint32) Record { return v.records[s] }

func (v *Voter) inGrace(now Time) bool { return now < v.graceUntil }

// live reports whether generation g of node n still protects the records
// that name it. During the grace period every generation is live, because
// the voter has forgotten which are.
func (v *Voter) live(n string, g uint64, now Time) bool {
	if v.inGrace(now) {
		return true
	}
	s := v.sessions[n]
	if s == nil {
		return false
	}
	if g == s.gen {
		return now < s.lastSeen.Add(v.cfg.LeaseDuration)
	}
	if seen, ok := s.older[g]; ok {
		return now < seen.Add(v.cfg.LeaseDuration)
	}
	return false
}

func (v *Voter) newGen() uint64 {
	v.seq++
	return uint64(v.cfg.Boot)<<32 | uint64(v.seq)
}

// keepAlive applies the keep-alive every request carries. It reports false
// when the sender's incarnation is older than one already seen.
func (v *Voter) keepAlive(n string, inc, nonce uint64, now Time) (*session, bool) {
	s := v.sessions[n]
	switch {
	case s == nil:
		s = &session{inc: inc, nonce: nonce, gen: v.newGen(), began: now, lastSeen: now, prevKA: now}
		v.sessions[n] = s
		return s, true
	case inc < s.inc || inc == s.inc && nonce < s.nonce:
		return s, false
	case inc > s.inc || nonce > s.nonce:
		// A new process: its predecessor's generation keeps protecting
		// the predecessor's records until it expires by time. (Processes
		// with one incarnation are ordered by nonce: without it two of
		// them would share a session, and every generation check would
		// take one for the other.)
		if end := s.lastSeen.Add(v.cfg.LeaseDuration); now < end {
			if s.older == nil {
				s.older = make(map[uint64]Time)
			}
			s.older[s.gen] = s.lastSeen
		} else {
			s.ended = append(s.ended, endedGen{gen: s.gen, at: end})
		}
		s.inc, s.nonce, s.gen, s.began = inc, nonce, v.newGen(), now
	case now >= s.lastSeen.Add(v.cfg.LeaseDuration):
		// The session expired: whatever named the old generation is no
		// longer protected, so it must not be revived.
		s.ended = append(s.ended, endedGen{gen: s.gen, at: s.lastSeen.Add(v.cfg.LeaseDuration)})
		s.gen, s.began = v.newGen(), now
	}
	s.lastSeen = now
	for g, seen := range s.older {
		if now >= seen.Add(v.cfg.LeaseDuration) {
			delete(s.older, g)
			s.ended = append(s.ended, endedGen{gen: g, at: seen.Add(v.cfg.LeaseDuration)})
		}
	}
	// Every node keeps alive far more often than this, so it has heard of
	// an ended generation long before it is forgotten.
	s.ended = slices.DeleteFunc(s.ended, func(e endedGen) bool { return now.Sub(e.at) > 4*v.cfg.LeaseDuration })
	return s, true
}

// Handle applies req at time now. It returns the reply and the records that
// changed; the caller must persist those before sending the reply (or any
// later reply), since the reply promises them.
func (v *Voter) Handle(req Request, now Time) (Reply, []ShardRecord) {
	rep := Reply{Voter: v.cfg.ID, Seq: req.Seq}
	if req.LeaseDuration != 0 && req.LeaseDuration != v.cfg.LeaseDuration {
		// A node that counts on a longer lease than this voter keeps its
		// session for would outlive its protection; one that counts on a
		// shorter one is safe but disagrees with the cluster. Neither
		// gets a session: the operator must make them agree.
		rep.Mismatch = fmt.Sprintf("lease duration %v, voter %s uses %v", req.LeaseDuration, v.cfg.ID, v.cfg.LeaseDuration)
		return rep, nil
	}
	fresh := v.sessions[req.From] == nil
	s, ok := v.keepAlive(req.From, req.Inc, req.Nonce, now)
	rep.Inc = s.inc
	if !ok {
		rep.Stale = true
		rep.IncLive = now < s.lastSeen.Add(v.cfg.LeaseDuration)
		return rep, nil
	}
	rep.Gen = s.gen
	since := s.prevKA
	if req.NoticesSince != 0 && req.NoticesSince <= now {
		// The sender says which notices it has processed: repeat
		// whatever a lost reply carried.
		since = min(since, req.NoticesSince)
	}
	rep.Expired, rep.Started = v.changesSince(req.From, since, now)
	if req.NoticesSince == 0 || fresh {
		// The sender has heard nothing from this voter (its first request,
		// or this voter restarted and forgot it): changes alone would not
		// tell it who is alive, so list every live session. A member is
		// eligible for shards only on such positive news.
		rep.Started, rep.AllStarted = v.liveSessions(req.From, now), true
	}
	rep.NoticesAt = now
	s.prevKA = now

	var dirty []ShardRecord
	for _, op := range req.Ops {
		res := Result{Op: op}
		rec := v.records[op.Shard]
		if op.Epoch >= LastEpoch || op.ToEpoch >= LastEpoch {
			// Epochs near the end of uint64 are never recorded, so every
			// record can be followed by another leadership (a transfer
			// adds one, a holder's jump is bounded by MaxEpochJump).
			res.Refusal, res.Record = RefusedEpoch, rec
			rep.Results = append(rep.Results, res)
			continue
		}
		switch op.Kind {
		case OpGrant:
			res.Refusal = v.checkGrant(op, rec, req.From, s.gen, now)
			if res.OK() {
				rec = Record{Epoch: op.Epoch, Holder: req.From, HolderGen: s.gen}
				res.Gen = s.gen
			}
		case OpRelease:
			res.Refusal = v.checkRelease(op, rec, req.From, s.gen, now)
			if res.OK() {
				rec.Released = true
			}
		case OpTransfer:
			res.Refusal, res.Gen = v.checkTransfer(op, rec, req.From, s.gen, now)
			if res.OK() {
				rec = Record{Epoch: op.TransferEpoch(), Holder: op.To, HolderGen: res.Gen}
			}
		default:
			res.Refusal = RefusedEpoch
		}
		if res.OK() {
			if old := v.records[op.Shard]; old != rec {
				v.index(op.Shard, old.Holder, rec.Holder)
				v.records[op.Shard] = rec
				v.ver++
				v.logChange(old.Holder, op.Shard)
				if rec.Holder != old.Holder {
					v.logChange(rec.Holder, op.Shard)
				}
				dirty = append(dirty, ShardRecord{Shard: op.Shard, Record: rec})
			}
		}
		res.Record = rec
		rep.Results = append(rep.Results, res)
	}
	rep.HeldVer = v.ver
	if since := req.HeldSince; since != 0 && !fresh && since >= v.heldFloor(req.From) && since <= v.ver {
		rep.HeldDelta, rep.HeldSince = true, since
		rep.Held = v.heldChanges(req.From, since)
		return rep, dirty
	}
	for sh := range v.byHolder[req.From] {
		if r := v.records[sh]; !r.Released {
			rep.Held = append(rep.Held, ShardRecord{Shard: sh, Record: r})
		}
	}
	slices.SortFunc(rep.Held, func(a, b ShardRecord) int { return cmp.Compare(a.Shard, b.Shard) })
	return rep, dirty
}

// Ver returns the voter's record version: the HeldVer of a reply sent now.
func (v *Voter) Ver() uint64 { return v.ver }

// LastChange returns the version of the newest record change concerning
// node n that a Held list could show: a reply whose Held list reveals
// nothing newer than what is durable needs no wait for the store (its
// session news live in memory only). A change list or whole list names a
// record naming n only if that record's latest change concerning n is at
// or below this version; changes that moved a record away from n are
// logged for n too.
func (v *Voter) LastChange(n string) uint64 {
	l := v.logs[n]
	if l == nil {
		return v.firstVer
	}
	if k := len(l.changes); k > 0 {
		return l.changes[k-1].ver
	}
	return l.floor
}

// logChange notes that shard s's record, which names or named node n,
// changed at the current version.
func (v *Voter) logChange(n string, s uint32) {
	if n == "" {
		return
	}
	l := v.logs[n]
	if l == nil {
		l = &heldLog{floor: v.firstVer}
		v.logs[n] = l
	}
	l.changes = append(l.changes, heldChange{ver: v.ver, shard: s})
	if limit := max(minHeldLog, 2*len(v.byHolder[n])); len(l.changes) > limit {
		half := len(l.changes) / 2
		l.floor = l.changes[half-1].ver
		l.changes = append(l.changes[:0], l.changes[half:]...)
	}
}

// heldFloor returns the oldest version after which every change of the
// records concerning node n is known.
func (v *Voter) heldFloor(n string) uint64 {
	if l := v.logs[n]; l != nil {
		return l.floor
	}
	return v.firstVer
}

// heldChanges returns the current record of every shard whose record
// concerning node n changed after version since, in shard order.
func (v *Voter) heldChanges(n string, since uint64) []ShardRecord {
	l := v.logs[n]
	if l == nil {
		return nil
	}
	i, _ := slices.BinarySearchFunc(l.changes, since+1, func(c heldChange, ver uint64) int { return cmp.Compare(c.ver, ver) })
	if i == len(l.changes) {
		return nil
	}
	shards := make([]uint32, 0, len(l.changes)-i)
	for _, c := range l.changes[i:] {
		shards = append(shards, c.shard)
	}
	slices.Sort(shards)
	shards = slices.Compact(shards)
	held := make([]ShardRecord, len(shards))
	for j, sh := range shards {
		held[j] = ShardRecord{Shard: sh, Record: v.records[sh]}
	}
	return held
}

// checkGrant applies the grant rule: accept iff not in grace, the epoch is
// above the record's, and the record is released, or its holder's
// generation is no longer live, or it already names the sender's current
// generation.
func (v *Voter) checkGrant(op Op, rec Record, from string, gen uint64, now Time) Refusal {
	if v.inGrace(now) {
		return RefusedGrace
	}
	if op.Epoch <= rec.Epoch && !(v.cfg.Mutations.AcceptEqualEpoch && op.Epoch == rec.Epoch) {
		return RefusedEpoch
	}
	if rec.Released || rec.Holder == "" || !v.live(rec.Holder, rec.HolderGen, now) ||
		(rec.Holder == from && rec.HolderGen == gen) {
		return Accepted
	}
	return RefusedHeld
}

// LastEpoch is the first epoch a voter never records: far beyond any real
// history (epochs grow by one per leadership), and MaxEpochJump below the
// end of uint64 so that nothing recorded lacks a successor.
const LastEpoch = math.MaxUint64 - MaxEpochJump

// checkRelease applies the release rule: accept iff the record is the
// sender's at that epoch and names the sender's current generation, or the
// generation it names is no longer live. A record is keyed by NodeID, and
// two processes can share one (a replacement started beside the process it
// replaces): without the generation check the new process would release
// the records that still protect the old one's leases, and a rival would be
// granted while the old one leads by its own clock. A generation that is no
// longer live protects nobody, so releasing its record is harmless; a
// holder releases its own records from an expired session that way.
func (v *Voter) checkRelease(op Op, rec Record, from string, gen uint64, now Time) Refusal {
	if rec.Epoch != op.Epoch || rec.Holder != from {
		return RefusedEpoch
	}
	if rec.HolderGen != gen && !v.cfg.Mutations.ReleaseIgnoresGen && v.live(rec.Holder, rec.HolderGen, now) {
		return RefusedHeld
	}
	return Accepted
}

// checkTransfer applies the transfer rule: accept iff the record is the
// sender's at that epoch under its current generation (another live
// process with the same NodeID must not hand off what protects this one),
// and the target has a live session of the given incarnation. It returns
// the target's generation.
func (v *Voter) checkTransfer(op Op, rec Record, from string, gen uint64, now Time) (Refusal, uint64) {
	if rec.Epoch != op.Epoch || rec.Holder != from {
		return RefusedEpoch, 0
	}
	if rec.HolderGen != gen {
		return RefusedHeld, 0
	}
	t := v.sessions[op.To]
	if t == nil || t.inc != op.ToInc || now >= t.lastSeen.Add(v.cfg.LeaseDuration) {
		return RefusedTarget, 0
	}
	return Accepted, t.gen
}

// changesSince lists the sessions of other nodes whose current or older
// generations expired in (since, now], and those that began in it.
func (v *Voter) changesSince(self string, since, now Time) (expired, started []NodeGen) {
	ld := v.cfg.LeaseDuration
	for n, s := range v.sessions {
		if n == self {
			continue
		}
		if at := s.lastSeen.Add(ld); at > since && at <= now {
			expired = append(expired, NodeGen{Node: n, Gen: s.gen})
		}
		for g, seen := range s.older {
			if at := seen.Add(ld); at > since && at <= now {
				expired = append(expired, NodeGen{Node: n, Gen: g})
			}
		}
		for _, e := range s.ended {
			if e.at > since && e.at <= now {
				expired = append(expired, NodeGen{Node: n, Gen: e.gen})
			}
		}
		if s.began > since && s.began <= now {
			started = append(started, NodeGen{Node: n, Gen: s.gen})
		}
	}
	// A restarted voter forgot every session. When its grace period ends,
	// the holders it has records of but no session for lose its
	// protection: for them that is an expiry too.
	if v.graceUntil > since && v.graceUntil <= now {
		for holder := range v.byHolder {
			if _, ok := v.sessions[holder]; !ok && holder != self {
				// Boot<<32 is below every generation of this run and above
				// every one of earlier runs: the news orders correctly.
				expired = append(expired, NodeGen{Node: holder, Gen: uint64(v.cfg.Boot) << 32})
			}
		}
	}
	byNodeGen := func(a, b NodeGen) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return cmp.Compare(a.Gen, b.Gen)
	}
	slices.SortFunc(expired, byNodeGen)
	slices.SortFunc(started, byNodeGen)
	return expired, started
}

// liveSessions lists the current generation of every other node whose
// session is live now.
func (v *Voter) liveSessions(self string, now Time) []NodeGen {
	var out []NodeGen
	for n, s := range v.sessions {
		if n != self && now < s.lastSeen.Add(v.cfg.LeaseDuration) {
			out = append(out, NodeGen{Node: n, Gen: s.gen})
		}
	}
	slices.SortFunc(out, func(a, b NodeGen) int { return strings.Compare(a.Node, b.Node) })
	return out
}

func (v *Voter) index(s uint32, oldHolder, newHolder string) {
	if oldHolder == newHolder {
		return
	}
	if oldHolder != "" {
		delete(v.byHolder[oldHolder], s)
		if len(v.byHolder[oldHolder]) == 0 {
			delete(v.byHolder, oldHolder)
		}
	}
	if newHolder != "" {
		if v.byHolder[newHolder] == nil {
			v.byHolder[newHolder] = make(map[uint32]struct{})
		}
		v.byHolder[newHolder][s] = struct{}{}
	}
}
