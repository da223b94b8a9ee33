// Package membership tells each Tenure node who is alive and what every
// node is, through gossip (hashicorp/memberlist).
//
// It adds what memberlist leaves to its users: typed node metadata with a
// boot ID and a size check; refusal of peers from another cluster, shard
// count or protocol version, with an error that names the mismatch; events
// delivered in order to one consumer without ever blocking memberlist;
// periodic rejoins so that a healed partition merges again; and fast
// reclaim of a name restarted at a new address.
//
// Canonical use:
//
//	m, err := membership.Start(membership.Config{NodeID: "node-1", Shards: 1024, Seeds: seeds})
//	if err != nil { ... }
//	defer m.Stop()
//	for ev := range m.Events() { ... } // closed by Stop
package membership

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member is a live node as this node sees it.
type Member struct {
	Meta
	// Addr is the node's gossip host:port.
	Addr string
}

// EventType says what happened to a member.
type EventType uint8

// The event types.
const (
	// Joined: a node became alive in this node's view.
	Joined EventType = iota + 1
	// Updated: a node's metadata changed (state, boot ID, address).
	Updated
	// Left: a node left gracefully.
	Left
	// Failed: a node was declared dead by failure detection.
	Failed
)

func (t EventType) String() string {
	switch t {
	case Joined:
		return "joined"
	case Updated:
		return "updated"
	case Left:
		return "left"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one change of membership.
type Event struct {
	Type   EventType
	Member Member
}

// ErrIncompatible is matched (with errors.Is) by every *IncompatibleError.
var ErrIncompatible = errors.New("incompatible node")

// ErrStopped is returned by calls made after Stop.
var ErrStopped = errors.New("membership stopped")

// IncompatibleError says why a peer was refused.
type IncompatibleError struct {
	// Node is the refused peer's name.
	Node string
	// Field is what differs: "cluster", "shards", "protocol", "node ID" or
	// "metadata" (unreadable).
	Field string
	// Theirs and Ours are the two values.
	Theirs, Ours string
}

func (e *IncompatibleError) Error() string {
	return fmt.Sprintf("incompatible node %s: %s is %s there, %s here", e.Node, e.Field, e.Theirs, e.Ours)
}

// Is matches ErrIncompatible.
func (e *IncompatibleError) Is(target error) bool { return target == ErrIncompatible }

// Membership is this node's gossip membership. Its methods are safe for
// concurrent use. Stop releases it.
type Membership struct {
	cfg Config
	ml  *memberlist.Memberlist

	metaMu sync.Mutex // serialises SetState
	local  atomic.Pointer[Meta]
	wire   atomic.Pointer[[]byte] // encoded local meta, read by memberlist

	mu       sync.Mutex
	addr     string // advertised gossip host:port; set once after Create
	pending  []Event
	view     map[string]Member   // live members, by NodeID, kept from the callbacks
	lost     map[string]lostPeer // failed peers to rejoin, by name
	refusal  error               // latest peer refused at join
	joined   bool                // reached a seed at least once, or has none
	stopping bool
	// reannounce is set when a peer still holds this node's name at another
	// address: a restart at a new address. Until then the rejoin loop
	// re-broadcasts this node's alive message, because peers refuse it as a
	// conflict until they have declared the old address dead.
	reannounce time.Time

	wake   chan struct{} // cap 1: pending has events
	events chan Event
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

type lostPeer struct {
	addr  string
	since time.Time
}

// Start creates the node's memberlist, tries the seeds once and starts the
// event and rejoin goroutines. It returns an *IncompatibleError if a seed's
// cluster refuses this node or is refused by it; unreachable seeds are not
// an error (they are retried every RejoinInterval, see WaitJoined).
func Start(cfg Config) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	bootID := cfg.BootID
	if bootID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("membership: boot ID: %w", err)
		}
		bootID = hex.EncodeToString(b[:])
	}
	local := cfg.meta(bootID)
	wire, err := local.Encode()
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	m := &Membership{
		cfg:    cfg,
		view:   make(map[string]Member),
		lost:   make(map[string]lostPeer),
		wake:   make(chan struct{}, 1),
		events: make(chan Event),
		stop:   make(chan struct{}),
	}
	m.local.Store(&local)
	m.wire.Store(&wire)

	mc, err := cfg.memberlistConfig()
	if err != nil {
		return nil, err
	}
	d := &delegate{m: m}
	mc.Delegate, mc.Events, mc.Alive, mc.Merge = d, d, d, d
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: start gossip on %s: %w", cfg.BindAddr, err)
	}
	m.ml = ml
	ln := ml.LocalNode()
	m.mu.Lock()
	m.addr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	m.mu.Unlock()

	m.wg.Add(2)
	go m.pump()
	go m.rejoinLoop()

	seeds := m.otherSeeds()
	if len(seeds) == 0 {
		m.setJoined()
		return m, nil
	}
	if err := m.join(seeds); err != nil {
		var inc *IncompatibleError
		if errors.As(err, &inc) {
			m.Stop()
			return nil, fmt.Errorf("membership: join refused: %w", err)
		}
		cfg.Logger.Warn("no seed reachable yet; retrying", "seeds", seeds, "err", err)
	}
	return m, nil
}

// join runs memberlist's Join and returns nil if any address answered, an
// *IncompatibleError if a peer was refused during the attempt, or the join
// error.
func (m *Membership) join(addrs []string) error {
	m.mu.Lock()
	m.refusal = nil
	m.mu.Unlock()
	n, err := m.ml.Join(addrs)
	m.mu.Lock()
	refusal := m.refusal
	m.mu.Unlock()
	switch {
	case n > 0:
		m.setJoined()
		return nil
	case refusal != nil:
		return refusal
	}
	return err
}

func (m *Membership) setJoined() {
	m.mu.Lock()
	m.joined = true
	m.mu.Unlock()
}

// Joined reports whether the node has reached a seed at least once (always
// true for a node configured without other seeds).
func (m *Membership) Joined() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.joined
}

// WaitJoined blocks until Joined or ctx ends, and returns ctx's error then.
func (m *Membership) WaitJoined(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !m.Joined() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("membership: no seed reachable (%v): %w", m.cfg.Seeds, ctx.Err())
		case <-m.stop:
			return ErrStopped
		case <-t.C:
		}
	}
	return nil
}

// otherSeeds returns the configured seeds other than this node's address.
func (m *Membership) otherSeeds() []string {
	self := m.Addr()
	var out []string
	for _, s := range m.cfg.Seeds {
		if s != self {
			out = append(out, s)
		}
	}
	return out
}

// MaxMessageBytes is the largest message SendToAll accepts: it must fit one
// gossip packet with room for memberlist's framing.
const MaxMessageBytes = 1200

// SendToAll sends msg to every live peer's Gossip.NotifyMsg, best effort
// (one UDP packet each, no retry): state sent this way must also travel in
// LocalState, which push/pull repairs. Unlike memberlist's broadcasts,
// which go out one packet per gossip round and so take seconds to drain a
// burst, this costs one packet per peer now. It returns an error for a
// message over MaxMessageBytes. Safe for concurrent use.
func (m *Membership) SendToAll(msg []byte) error {
	if len(msg) > MaxMessageBytes {
		return fmt.Errorf("membership: message of %d bytes, limit %d", len(msg), MaxMessageBytes)
	}
	self := m.Local().NodeID
	for _, peer := range m.Members() {
		if peer.NodeID == self {
			continue
		}
		host, port, err := splitHostPort(peer.Addr)
		if err != nil {
			continue
		}
		// A Node built from the view's copy: memberlist's own Node values
		// change under its lock.
		node := &memberlist.Node{Name: peer.NodeID, Addr: net.ParseIP(host), Port: uint16(port)}
		if err := m.ml.SendBestEffort(node, msg); err != nil {
			m.cfg.Logger.Debug("send to peer", "peer", peer.NodeID, "err", err)
		}
	}
	return nil
}

// Addr returns the gossip host:port peers use to reach this node.
func (m *Membership) Addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addr
}

// Local returns the metadata this node advertises.
func (m *Membership) Local() Meta { return *m.local.Load() }

// Members returns the live members (this node included) sorted by NodeID.
// The view is kept from memberlist's callbacks, which copy each node under
// memberlist's lock: memberlist's own Members() hands out nodes it goes on
// mutating, which races with any reader.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.view))
	for _, mem := range m.view {
		out = append(out, mem)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

// Events returns the channel of membership changes, in the order memberlist
// reported them. There is one channel per Membership: give it one consumer.
// Events wait in memory until read, so the consumer must keep reading; the
// channel is closed by Stop.
func (m *Membership) Events() <-chan Event { return m.events }

// SetState advertises a new lifecycle state and waits until the update has
// been broadcast to a peer or ctx ends (the update still spreads then).
func (m *Membership) SetState(ctx context.Context, s State) error {
	if s < Joining || s > Leaving {
		return fmt.Errorf("membership: unknown state %d", s)
	}
	return m.update(ctx, "state "+s.String(), func(meta *Meta) (bool, error) {
		meta.State = s
		return true, nil
	})
}

// SetIncarnation advertises a new incarnation for this process and waits
// like SetState. Incarnations order the processes that run under one
// NodeID, so they only grow: a lower one than advertised is refused, and
// the same one changes nothing. A process raises its incarnation when the
// voters know a higher one than it started with (its wall clock stepped
// back): peers name handoff targets by the incarnation they see here.
func (m *Membership) SetIncarnation(ctx context.Context, inc uint64) error {
	return m.update(ctx, fmt.Sprintf("incarnation %d", inc), func(meta *Meta) (bool, error) {
		switch {
		case inc < meta.Incarnation:
			return false, fmt.Errorf("membership: incarnation %d is below the advertised %d: incarnations only grow", inc, meta.Incarnation)
		case inc == meta.Incarnation:
			return false, nil
		}
		meta.Incarnation = inc
		return true, nil
	})
}

// update changes the local metadata with change and, if it changed
// anything, broadcasts it: what names the change in errors.
func (m *Membership) update(ctx context.Context, what string, change func(*Meta) (bool, error)) error {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	if m.isStopping() {
		return ErrStopped
	}
	meta := *m.local.Load()
	if changed, err := change(&meta); err != nil || !changed {
		return err
	}
	wire, err := meta.Encode()
	if err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	m.local.Store(&meta)
	m.wire.Store(&wire)
	if err := m.ml.UpdateNode(timeoutOf(ctx)); err != nil {
		return fmt.Errorf("membership: broadcast %s: %w", what, err)
	}
	return nil
}

// Leave tells the cluster this node is leaving, and waits until a peer has
// heard it or ctx ends. It first advertises the Leaving state, then sends
// memberlist's leave: peers that heard both report Left, the others (rare)
// Failed. Either way they drop the node at once. Stop must still be called.
func (m *Membership) Leave(ctx context.Context) error {
	if err := m.SetState(ctx, Leaving); err != nil {
		return err
	}
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	if m.isStopping() {
		return ErrStopped
	}
	if err := m.ml.Leave(timeoutOf(ctx)); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Stop shuts gossip down without leaving (peers see a failure unless Leave
// came first), stops the goroutines, closes Events and waits. It is
// idempotent.
func (m *Membership) Stop() {
	m.once.Do(func() {
		m.metaMu.Lock()
		m.mu.Lock()
		m.stopping = true
		m.mu.Unlock()
		m.metaMu.Unlock()
		close(m.stop)
		if err := m.ml.Shutdown(); err != nil {
			m.cfg.Logger.Warn("gossip shutdown", "err", err)
		}
		m.wg.Wait()
	})
}

func (m *Membership) isStopping() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stopping
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return 5 * time.Second
}

// enqueue records an event for the pump. It runs inside memberlist's
// callbacks, under memberlist's locks: it must not block or call memberlist.
func (m *Membership) enqueue(ev Event) {
	m.mu.Lock()
	switch ev.Type {
	case Failed:
		delete(m.view, ev.Member.NodeID)
		m.lost[ev.Member.NodeID] = lostPeer{addr: ev.Member.Addr, since: time.Now()}
	case Left:
		delete(m.view, ev.Member.NodeID)
		delete(m.lost, ev.Member.NodeID)
	default:
		m.view[ev.Member.NodeID] = ev.Member
		delete(m.lost, ev.Member.NodeID)
	}
	m.pending = append(m.pending, ev)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// pump moves queued events to the Events channel in order.
func (m *Membership) pump() {
	defer m.wg.Done()
	defer close(m.events)
	for {
		m.mu.Lock()
		batch := m.pending
		m.pending = nil
		m.mu.Unlock()
		for _, ev := range batch {
			select {
			case m.events <- ev:
			case <-m.stop:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-m.wake:
		case <-m.stop:
			return
		}
	}
}

// maxRejoinPeers caps the failed peers one rejoin round contacts, so that a
// mass failure does not make every round dial hundreds of dead addresses.
const maxRejoinPeers = 8

// rejoinLoop heals partitions. memberlist marks the other side of a
// partition dead and never probes dead nodes again, so without this the two
// sides stay apart forever. Every RejoinInterval (±25% jitter) the node
// joins the seeds that are not in its view and up to maxRejoinPeers peers
// that failed within RejoinWindow. A join is a push/pull: each side learns
// that the other thinks it dead, refutes with a higher incarnation, and the
// views merge. After the network heals, every live node sees every other
// within about RejoinInterval×1.25 plus one gossip round.
func (m *Membership) rejoinLoop() {
	defer m.wg.Done()
	t := time.NewTimer(m.jitter())
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		if m.mustReannounce(time.Now()) {
			if err := m.ml.UpdateNode(m.cfg.RejoinInterval); err != nil {
				m.cfg.Logger.Debug("re-announce", "err", err)
			}
		}
		if targets := m.rejoinTargets(time.Now()); len(targets) > 0 {
			if err := m.join(targets); err != nil {
				level := slog.LevelDebug
				if errors.Is(err, ErrIncompatible) {
					level = slog.LevelError
				}
				m.cfg.Logger.Log(context.Background(), level, "rejoin", "targets", targets, "err", err)
			}
		}
		t.Reset(m.jitter())
	}
}

// jitter returns RejoinInterval ±25%. Only rejoinLoop calls it, so
// cfg.Rand has a single user.
func (m *Membership) jitter() time.Duration {
	d := m.cfg.RejoinInterval
	return d*3/4 + time.Duration(m.cfg.Rand.Int64N(int64(d/2)+1))
}

// rejoinTargets lists the addresses one rejoin round contacts.
func (m *Membership) rejoinTargets(now time.Time) []string {
	seeds := m.otherSeeds()
	m.mu.Lock()
	defer m.mu.Unlock()
	live := make(map[string]bool)
	for _, mem := range m.view {
		live[mem.Addr] = true
	}
	var targets []string
	for _, s := range seeds {
		if !live[s] {
			targets = append(targets, s)
		}
	}
	var peers []string
	for name, p := range m.lost {
		switch {
		case now.Sub(p.since) > m.cfg.RejoinWindow:
			delete(m.lost, name)
		case !live[p.addr] && !slices.Contains(targets, p.addr):
			peers = append(peers, p.addr)
		}
	}
	slices.Sort(peers) // map order must not decide which peers are tried
	m.cfg.Rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	if len(peers) > maxRejoinPeers {
		peers = peers[:maxRejoinPeers]
	}
	return append(targets, peers...)
}

// reannounceFor is how long a node keeps re-broadcasting itself after it
// learns that peers hold its name at another address. It covers failure
// detection of the old address with the slowest profile plus the reclaim
// time.
const reannounceFor = time.Minute

func (m *Membership) mustReannounce(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return now.Before(m.reannounce)
}

// check returns an *IncompatibleError unless n belongs to this cluster. It
// also notices a peer's record of this node at another address.
func (m *Membership) check(n *memberlist.Node) error {
	ours := m.Local()
	if n.Name == ours.NodeID {
		m.mu.Lock()
		if m.addr != "" && n.Address() != m.addr && time.Now().After(m.reannounce) {
			m.reannounce = time.Now().Add(reannounceFor)
			m.cfg.Logger.Info("peers hold this node at another address; re-announcing", "old", n.Address(), "new", m.addr)
		}
		m.mu.Unlock()
	}
	theirs, err := DecodeMeta(n.Meta)
	if err != nil {
		return &IncompatibleError{Node: n.Name, Field: "metadata", Theirs: err.Error(), Ours: "readable"}
	}
	switch {
	case theirs.Cluster != ours.Cluster:
		return &IncompatibleError{Node: n.Name, Field: "cluster", Theirs: strconv.Quote(theirs.Cluster), Ours: strconv.Quote(ours.Cluster)}
	case theirs.Shards != ours.Shards:
		return &IncompatibleError{Node: n.Name, Field: "shards", Theirs: fmt.Sprint(theirs.Shards), Ours: fmt.Sprint(ours.Shards)}
	case theirs.Protocol != ours.Protocol:
		return &IncompatibleError{Node: n.Name, Field: "protocol", Theirs: fmt.Sprint(theirs.Protocol), Ours: fmt.Sprint(ours.Protocol)}
	case theirs.VoterSet != 0 && ours.VoterSet != 0 && theirs.VoterSet != ours.VoterSet:
		return &IncompatibleError{Node: n.Name, Field: "voter set", Theirs: fmt.Sprintf("%016x", theirs.VoterSet), Ours: fmt.Sprintf("%016x", ours.VoterSet)}
	case theirs.NodeID != n.Name:
		return &IncompatibleError{Node: n.Name, Field: "node ID", Theirs: strconv.Quote(theirs.NodeID), Ours: strconv.Quote(n.Name)}
	}
	return nil
}

func (m *Membership) refuse(err error) error {
	m.mu.Lock()
	m.refusal = err
	m.mu.Unlock()
	return err
}

// delegate receives memberlist's callbacks. They run on memberlist's
// goroutines, some under its locks: each returns at once, and none calls
// back into memberlist.
type delegate struct {
	m *Membership
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.AliveDelegate = (*delegate)(nil)
	_ memberlist.MergeDelegate = (*delegate)(nil)
)

// NodeMeta returns the pre-encoded local metadata; its size was checked
// when it was encoded.
func (d *delegate) NodeMeta(limit int) []byte {
	w := *d.m.wire.Load()
	if len(w) > limit {
		return nil // unreachable: Encode enforces MaxMetaBytes = MetaMaxSize
	}
	return w
}

// NotifyMsg hands a peer's broadcast, copied (memberlist reuses the
// buffer), to the State delegate.
func (d *delegate) NotifyMsg(b []byte) {
	if st := d.m.cfg.Gossip; st != nil && len(b) > 0 {
		st.NotifyMsg(append([]byte(nil), b...))
	}
}

// GetBroadcasts returns nothing: application messages go out directly.
func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState returns the State delegate's state for push/pull.
func (d *delegate) LocalState(bool) []byte {
	if st := d.m.cfg.Gossip; st != nil {
		return st.LocalState()
	}
	return nil
}

// MergeRemoteState hands a peer's state, copied, to the State delegate.
func (d *delegate) MergeRemoteState(b []byte, _ bool) {
	if st := d.m.cfg.Gossip; st != nil && len(b) > 0 {
		st.MergeRemoteState(append([]byte(nil), b...))
	}
}

// NotifyAlive refuses alive messages from incompatible nodes, so that no
// member adopts them even when they arrive through gossip rather than a join.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	if err := d.m.check(n); err != nil {
		return d.m.refuse(err)
	}
	return nil
}

// NotifyMerge refuses a join whose other side holds an incompatible node.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if err := d.m.check(n); err != nil {
			return d.m.refuse(err)
		}
	}
	return nil
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.notify(Joined, n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.notify(Updated, n) }

// NotifyLeave reports Left for a node that advertised Leaving, Failed
// otherwise. memberlist records left-versus-dead in a field that shadows
// Node.State, so the Node it passes here never says which.
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.notify(Failed, n) }

func (d *delegate) notify(t EventType, n *memberlist.Node) {
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		return // refused by NotifyAlive; never a member
	}
	if t == Failed && meta.State == Leaving {
		t = Left
	}
	d.m.enqueue(Event{Type: t, Member: Member{Meta: meta, Addr: n.Address()}})
}
