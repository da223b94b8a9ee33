package check

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Source says where an observation of a node's leadership came from.
type Source int

// The sources of observations.
const (
	// FromWatch: the node's tenure.v1 Watch stream; its events arrive as the
	// node publishes them, so a release seen there ended when it was seen.
	FromWatch Source = iota + 1
	// FromStatus: a poll of the node's /status page.
	FromStatus
	// FromHistory: the node's own list of acquisitions on /status, each
	// stamped with the node's clock.
	FromHistory
)

func (s Source) String() string {
	switch s {
	case FromWatch:
		return "watch"
	case FromStatus:
		return "status"
	case FromHistory:
		return "history"
	}
	return fmt.Sprintf("Source(%d)", int(s))
}

// Kind is the kind of a violation.
type Kind string

// The kinds of violations the Recorder finds. Callers add their own kinds
// (the ledger's audit) with Recorder.Add.
const (
	// DoubleLeader: two nodes claimed the same (shard, epoch).
	DoubleLeader Kind = "double leader"
	// EpochRegressed: a node reported a lower epoch for a shard than it had
	// before, or a shard was acquired at an epoch no higher than an earlier
	// acquisition's.
	EpochRegressed Kind = "epoch regressed"
	// Unavailable: a shard had no leader for longer than the bound while
	// the cluster was expected to be available.
	Unavailable Kind = "leaderless beyond bound"
	// ForbiddenEnd: a lease ended, during a scenario, for a reason the
	// scenario's EndRule forbids on that node.
	ForbiddenEnd Kind = "lease ended for a forbidden reason"
)

// The reasons a node gives for a lease's end, as its /status page and its
// log spell them (shard.Reason's String; a test pins them).
const (
	// ReasonLeaseExpired: keep-alives went unanswered and the lease ran
	// out by the holder's clock.
	ReasonLeaseExpired = "lease expired"
	// ReasonQuorumLost: the voters stopped protecting the lease and it
	// could not be renewed.
	ReasonQuorumLost = "quorum lost"
	// ReasonSuperseded: a newer process with the node's ID started.
	ReasonSuperseded = "superseded"
	// ReasonHandoff: the node handed the shard to another node (a
	// rebalancer's planned move).
	ReasonHandoff = "handoff"
	// ReasonRebalance: the shard belongs to another node now and this one
	// gave it up.
	ReasonRebalance = "rebalance"
	// ReasonDrain: the node handed the shard off while draining to stop.
	ReasonDrain = "drain"
	// ReasonShutdown: the node stopped.
	ReasonShutdown = "shutdown"
)

// Violation is one broken invariant.
type Violation struct {
	At     time.Time // when it happened, or was first seen
	Kind   Kind
	Shard  uint32
	Epoch  uint64
	Nodes  []string
	Detail string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s %s: %s", v.At.Format("15:04:05.000"), v.Kind, v.Detail)
}

// Acquisition is one entry of a node's history: the node started leading
// Shard at Epoch at time At of its own clock. Event is "acquired" or
// "renewed" (a re-grant at a higher epoch while leading).
type Acquisition struct {
	Node  string
	Shard uint32
	Epoch uint64
	At    time.Time
	Event string
}

// Release is one entry of a node's history: the node stopped leading
// Shard at Epoch at time At of its own clock, for Reason (ReasonHandoff,
// ReasonLeaseExpired, ...). Peer is the node a handoff went to, if any.
type Release struct {
	Node   string
	Shard  uint32
	Epoch  uint64
	At     time.Time
	Reason string
	Peer   string
}

// EndRule says which ends of leases a scenario forbids, and on which
// nodes. The zero EndRule forbids nothing and faults nobody.
type EndRule struct {
	// Faulted are the nodes the scenario acts on (pauses, stops, cuts
	// off). The report counts their lease ends apart from the others'.
	Faulted []string
	// Forbidden are reasons, as nodes give them (ReasonLeaseExpired, ...),
	// for which no lease may end on a node other than the faulted ones
	// during the scenario. Each such end is a violation of kind
	// ForbiddenEnd.
	Forbidden []string
	// FaultedToo applies Forbidden to the faulted nodes as well.
	FaultedToo bool
}

// forbids reports whether rule forbids a lease of node to end for reason.
func (rule EndRule) forbids(node, reason string) bool {
	return slices.Contains(rule.Forbidden, reason) && (rule.FaultedToo || !slices.Contains(rule.Faulted, node))
}

// Interval is a time during which Node said it led Shard at Epoch, from
// the first observation (Start) to the last one (End). An interval that
// ended with the node becoming unreachable ends at the node's last answer.
type Interval struct {
	Node  string
	Shard uint32
	Epoch uint64
	Start time.Time
	End   time.Time
}

// Recorder holds everything observed about a cluster's leaders and checks
// it. It does no I/O and reads no clock: every observation carries its
// time. Its methods are safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	shards   int
	nodes    map[string]*nodeState
	owner    map[token]string // (shard, epoch) → the first node seen claiming it
	closed   []Interval
	acqs     []Acquisition
	rels     []Release
	viols    []Violation
	reported map[string]bool // violations already recorded, by key
	windows  []window        // availability expectations, in time order
	scens    []scenario
	notes    []string
}

type token struct {
	shard uint32
	epoch uint64
}

// nodeState is what the Recorder knows of one node.
type nodeState struct {
	// version is the table version the claims come from. A new Watch
	// stream resets it (it may be a new incarnation, whose versions start
	// again), so a poll may then apply whatever version it brings.
	version uint64
	// gone: the last poll failed; the claims were closed and the next
	// table at the held version is applied again rather than ignored.
	gone     bool
	open     map[uint32]*Interval // the shards the node leads now, as seen
	maxEpoch map[uint32]uint64    // highest epoch it reported per shard
	seen     map[Acquisition]bool // history entries already recorded
	newest   time.Time            // newest history entry seen
	// released holds, by (shard, epoch, reason), the times of the ends
	// already recorded, to tell a new end from one seen before.
	released map[releaseKey][]time.Time
}

type releaseKey struct {
	shard  uint32
	epoch  uint64
	reason string
}

// sameRelease is how far apart the times of one lease end may lie in two
// sources: the history on /status and the log line stamp it with two
// reads of the node's clock, the log line later, from the node's handler
// goroutine. One lease (shard, epoch) ends again for the same reason only
// after it was granted again and, for an expiry, a lease duration passed
// without renewal: far more than this apart.
const sameRelease = time.Second

type window struct {
	at        time.Time
	available bool
	why       string
}

type scenario struct {
	name       string
	start, end time.Time
	rule       EndRule
}

// NewRecorder returns a Recorder for a cluster of the given shard count.
func NewRecorder(shards int) *Recorder {
	return &Recorder{
		shards:   shards,
		nodes:    make(map[string]*nodeState),
		owner:    make(map[token]string),
		reported: make(map[string]bool),
	}
}

func (r *Recorder) node(id string) *nodeState {
	n := r.nodes[id]
	if n == nil {
		n = &nodeState{
			open:     make(map[uint32]*Interval),
			maxEpoch: make(map[uint32]uint64),
			seen:     make(map[Acquisition]bool),
			released: make(map[releaseKey][]time.Time),
		}
		r.nodes[id] = n
	}
	return n
}

// Table records the shards node says it leads itself (shard → epoch) in
// its table of the given version, observed at time at. reset marks the
// first table of a new Watch stream, which replaces whatever was held;
// otherwise a table older than the one held is ignored, and the same one
// again only confirms that its claims still stood at at.
func (r *Recorder) Table(node string, at time.Time, src Source, version uint64, reset bool, claims map[uint32]uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.node(node)
	// Whatever its age, no claim may name a (shard, epoch) of another node.
	for _, s := range slices.Sorted(maps.Keys(claims)) {
		r.own(node, s, claims[s], at, src)
	}
	switch {
	case reset, version > n.version, version == n.version && n.gone:
	case version == n.version:
		for _, iv := range n.open {
			iv.End = later(iv.End, at)
		}
		return
	default:
		return
	}
	n.version, n.gone = version, false
	for _, s := range slices.Sorted(maps.Keys(n.open)) {
		iv := n.open[s]
		if e, ok := claims[s]; ok && e == iv.Epoch {
			iv.End = later(iv.End, at)
			continue
		}
		// A Watch event arrives as the node publishes it: the lease ended
		// about now. A poll only says it ended since the last sighting.
		if src == FromWatch {
			iv.End = later(iv.End, at)
		}
		r.closed = append(r.closed, *iv)
		delete(n.open, s)
	}
	for _, s := range slices.Sorted(maps.Keys(claims)) {
		e := claims[s]
		r.advance(node, s, e, at, src)
		if n.open[s] == nil {
			n.open[s] = &Interval{Node: node, Shard: s, Epoch: e, Start: at, End: at}
		}
	}
}

// StreamDown records that node's Watch stream ended. The claims stay
// until a poll says otherwise (a draining node closes its streams but
// still answers polls), but the next table is applied whatever its
// version, since the node may have restarted.
func (r *Recorder) StreamDown(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.node(node).version = 0
}

// Unreachable records that a poll of node failed at time at: it may have
// crashed, paused or been cut off, so each of its claims ends at its last
// sighting.
func (r *Recorder) Unreachable(node string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.node(node)
	n.gone = true
	for _, s := range slices.Sorted(maps.Keys(n.open)) {
		r.closed = append(r.closed, *n.open[s])
		delete(n.open, s)
	}
}

// History records node's list of acquisitions as its /status page showed
// it at time at. full says the list was at the node's capacity, so that
// older entries may have been dropped; if even the oldest entry is newer
// than anything seen before, some were missed, and a note says so.
func (r *Recorder) History(node string, at time.Time, acqs []Acquisition, full bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.node(node)
	var oldest, newest time.Time
	for _, a := range acqs {
		a.Node = node
		if oldest.IsZero() || a.At.Before(oldest) {
			oldest = a.At
		}
		newest = later(newest, a.At)
		if n.seen[a] {
			continue
		}
		n.seen[a] = true
		r.acqs = append(r.acqs, a)
		r.own(node, a.Shard, a.Epoch, a.At, FromHistory)
	}
	if full && !n.newest.IsZero() && oldest.After(n.newest) {
		r.notes = append(r.notes, fmt.Sprintf("%s: the history of %s may have lost entries between %s and %s (more transitions than it keeps between two polls)",
			at.Format("15:04:05.000"), node, n.newest.Format("15:04:05.000"), oldest.Format("15:04:05.000")))
	}
	n.newest = later(n.newest, newest)
}

// Releases records ends of node's leases, from its /status history or
// its log: both may show one end, and a history shows it at every poll
// until it drops off, so an end within sameRelease of one recorded with
// the same shard, epoch and reason is that one again.
func (r *Recorder) Releases(node string, rels []Release) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.node(node)
	for _, x := range rels {
		x.Node = node
		k := releaseKey{x.Shard, x.Epoch, x.Reason}
		if slices.ContainsFunc(n.released[k], func(t time.Time) bool { return x.At.Sub(t).Abs() <= sameRelease }) {
			continue
		}
		n.released[k] = append(n.released[k], x.At)
		r.rels = append(r.rels, x)
	}
}

// own checks that (s, e) belongs to no other node than node.
func (r *Recorder) own(node string, s uint32, e uint64, at time.Time, src Source) {
	t := token{s, e}
	if prev, ok := r.owner[t]; !ok {
		r.owner[t] = node
	} else if prev != node {
		nodes := []string{prev, node}
		slices.Sort(nodes)
		r.add(Violation{At: at, Kind: DoubleLeader, Shard: s, Epoch: e, Nodes: nodes,
			Detail: fmt.Sprintf("shard %d epoch %d claimed by %s and by %s (seen in %s)", s, e, prev, node, src)})
	}
}

// advance checks that node, in its tables taken in order, never reports a
// lower epoch for s than before.
func (r *Recorder) advance(node string, s uint32, e uint64, at time.Time, src Source) {
	n := r.node(node)
	if m := n.maxEpoch[s]; e < m {
		r.add(Violation{At: at, Kind: EpochRegressed, Shard: s, Epoch: e, Nodes: []string{node},
			Detail: fmt.Sprintf("%s reported shard %d at epoch %d after epoch %d (seen in %s)", node, s, e, m, src)})
		return
	}
	n.maxEpoch[s] = e
}

// add records v unless the same violation was recorded before.
func (r *Recorder) add(v Violation) {
	key := fmt.Sprintf("%s/%d/%d/%v", v.Kind, v.Shard, v.Epoch, v.Nodes)
	if v.Kind == Unavailable || v.Nodes == nil {
		key += "/" + v.At.String() + "/" + v.Detail
	}
	if r.reported[key] {
		return
	}
	r.reported[key] = true
	r.viols = append(r.viols, v)
}

// Add records a violation found elsewhere (an audit of the application's
// store, say).
func (r *Recorder) Add(v Violation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(v)
}

// Expect says from time at whether every shard is expected to have a
// leader within the bound: true while a majority of voters and at least
// one eligible node are connected, false while they are not (leases run
// out by design). A gap that began before an expectation became true
// counts from that moment: service must return within the bound of it.
func (r *Recorder) Expect(at time.Time, available bool, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.windows = append(r.windows, window{at: at, available: available, why: why})
}

// Begin starts a named scenario at time at; End ends the current one.
// Scenarios only group the report: the checks run all the time.
func (r *Recorder) Begin(at time.Time, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endScenario(at)
	r.scens = append(r.scens, scenario{name: name, start: at})
}

// Rule sets the EndRule of the current scenario, replacing any before;
// without a current scenario it does nothing. The rule judges every end
// whose time, by the node's clock, falls in the scenario, whenever it is
// recorded.
func (r *Recorder) Rule(rule EndRule) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := len(r.scens) - 1
	if k < 0 || !r.scens[k].end.IsZero() {
		return
	}
	r.scens[k].rule = EndRule{Faulted: slices.Clone(rule.Faulted), Forbidden: slices.Clone(rule.Forbidden), FaultedToo: rule.FaultedToo}
}

// End ends the current scenario at time at.
func (r *Recorder) End(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endScenario(at)
}

func (r *Recorder) endScenario(at time.Time) {
	if k := len(r.scens) - 1; k >= 0 && r.scens[k].end.IsZero() {
		r.scens[k].end = at
	}
}

// Leads returns, per node, the shards it leads as last seen, with their
// epochs. Nodes whose last poll failed lead nothing.
func (r *Recorder) Leads() map[string]map[uint32]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]map[uint32]uint64, len(r.nodes))
	for id, n := range r.nodes {
		m := make(map[uint32]uint64, len(n.open))
		for s, iv := range n.open {
			m[s] = iv.Epoch
		}
		out[id] = m
	}
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func byStart(a, b Interval) int {
	return cmp.Or(a.Start.Compare(b.Start), a.End.Compare(b.End))
}

// LogReleases returns the ends of leases in a node's log: its lines of
// slog's text format with msg=transition and event=released, as tenured
// writes them (daemon's transitionLog):
//
//	time=2026-12-07T18:39:41.280Z level=INFO msg=transition event=released shard=13 epoch=33 reason=drain to=n4
//
// Other lines are skipped. A node that stops logs its last ends after the
// last poll of its /status could have seen them; Recorder.Releases takes
// both and counts an end seen in each once.
func LogReleases(log string) ([]Release, error) {
	var out []Release
	for i, line := range strings.Split(log, "\n") {
		kv := logfmt(line)
		if kv["msg"] != "transition" || kv["event"] != "released" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, kv["time"])
		if err != nil {
			return out, fmt.Errorf("check: log line %d: time: %w", i+1, err)
		}
		s, err := strconv.ParseUint(kv["shard"], 10, 32)
		if err != nil {
			return out, fmt.Errorf("check: log line %d: shard: %w", i+1, err)
		}
		e, err := strconv.ParseUint(kv["epoch"], 10, 64)
		if err != nil {
			return out, fmt.Errorf("check: log line %d: epoch: %w", i+1, err)
		}
		out = append(out, Release{Shard: uint32(s), Epoch: e, At: at, Reason: kv["reason"], Peer: kv["to"]})
	}
	return out, nil
}

// logfmt returns the keys and values of a line of slog's text format:
// key=value pairs apart by spaces, a value quoted when it holds a space,
// a quote or an equals sign. It stops at the first pair it cannot read.
func logfmt(line string) map[string]string {
	kv := map[string]string{}
	for {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \"") {
			return kv
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return kv
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		kv[k] = v
		line = rest
	}
}
