package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/tenurehq/tenure/membership"
)

// leaderGossip spreads who leads what. Each node sends its own leadership
// changes to every peer as they happen, resends its whole set every few
// seconds, and carries it in gossip push/pull; each keeps every peer's
// claims and, per shard, believes the highest epoch (docs/design.md §5). Claims are the leaders' own, never voter records. A peer's claims
// go when it leaves or fails, when it restarts, and when a newer epoch
// appears. The memberlist callbacks (NotifyMsg, LocalState,
// MergeRemoteState) run on memberlist's goroutines: they only take the
// mutex.
type leaderGossip struct {
	self, addr string

	mu     sync.Mutex
	own    map[uint32]uint64            // shards this node leads
	claims map[string]map[uint32]uint64 // node → shard → epoch
	addrs  map[string]string            // node → gRPC address
	dirty  bool                         // claims changed since the last table
	outbox []claim                      // own changes not yet sent
	// ctl is the cluster-wide rebalancing switch: the setting with the
	// highest (version, node) wins everywhere.
	ctl     control
	ctlSend bool // ctl changed here and is not sent yet
}

// control is the pause switch of automatic rebalancing.
type control struct {
	version uint64
	node    string
	paused  bool
}

func (c control) newer(d control) bool {
	return c.version > d.version || c.version == d.version && c.node > d.node
}

type claim struct {
	shard uint32
	epoch uint64
	led   bool
}

var _ membership.StateDelegate = (*leaderGossip)(nil)

func newLeaderGossip(self, addr string) *leaderGossip {
	return &leaderGossip{
		self: self, addr: addr,
		own:    make(map[uint32]uint64),
		claims: make(map[string]map[uint32]uint64),
		addrs:  make(map[string]string),
	}
}

// lead and unlead record this node's own changes for the next flush.
func (g *leaderGossip) lead(s uint32, e uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.own[s] = e
	g.outbox = append(g.outbox, claim{shard: s, epoch: e, led: true})
}

func (g *leaderGossip) unlead(s uint32, e uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.own, s)
	g.outbox = append(g.outbox, claim{shard: s, epoch: e})
}

// hint records that node leads s at epoch e, as a transfer this node made
// tells it, ahead of node's own claim; node's next full set replaces it.
func (g *leaderGossip) hint(s uint32, node, addr string, e uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.claims[node] == nil {
		g.claims[node] = make(map[uint32]uint64)
	}
	if e > g.claims[node][s] {
		g.claims[node][s] = e
		g.dirty = true
	}
	if g.addrs[node] == "" {
		g.addrs[node] = addr
	}
}

// setPaused sets the cluster-wide rebalancing switch, to be sent with the
// next flush.
func (g *leaderGossip) setPaused(p bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ctl = control{version: g.ctl.version + 1, node: g.self, paused: p}
	g.ctlSend, g.dirty = true, true
}

// paused reports the switch as this node knows it.
func (g *leaderGossip) paused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ctl.paused
}

// forget drops every claim of node (it left, failed or restarted).
func (g *leaderGossip) forget(node string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.claims[node]) > 0 {
		g.dirty = true
	}
	delete(g.claims, node)
}

// flush returns the messages for own changes since the last flush.
func (g *leaderGossip) flush() [][]byte {
	g.mu.Lock()
	out := g.outbox
	g.outbox = nil
	ctl, send := g.ctl, g.ctlSend
	g.ctlSend = false
	g.mu.Unlock()
	msgs := chunkClaims(g.self, g.addr, out)
	if send {
		msgs = append(msgs, encodeControl(ctl))
	}
	return msgs
}

// refresh returns messages carrying every own claim, to repair what lost
// packets dropped. They are range messages: each says "of the shards in
// [lo, hi), the sender leads exactly these", and together they cover every
// shard, so a peer also drops claims whose release it never heard of. (A
// lost unlead delta would otherwise leave a stale claim until the next
// push/pull, 30 s or more apart on the LAN profile, and while every peer
// believed the sender led the shard, none would acquire it.)
func (g *leaderGossip) refresh() [][]byte {
	g.mu.Lock()
	cs := make([]claim, 0, len(g.own))
	for _, s := range slices.Sorted(maps.Keys(g.own)) {
		cs = append(cs, claim{shard: s, epoch: g.own[s], led: true})
	}
	ctl := g.ctl
	g.mu.Unlock()
	msgs := rangeClaims(g.self, g.addr, cs)
	if ctl.version > 0 {
		msgs = append(msgs, encodeControl(ctl))
	}
	return msgs
}

// rangeClaims splits sorted led claims into range messages of at most
// perMessage claims that together cover [0, rangeEnd).
func rangeClaims(node, addr string, cs []claim) [][]byte {
	var msgs [][]byte
	lo := uint64(0)
	for {
		n := min(perMessage, len(cs))
		hi := uint64(rangeEnd)
		if n < len(cs) {
			hi = uint64(cs[n].shard) // the next message starts at the next claim
		}
		msgs = append(msgs, encodeRange(node, addr, lo, hi, cs[:n]))
		if n == len(cs) {
			return msgs
		}
		lo, cs = hi, cs[n:]
	}
}

// perMessage is the most claims one message carries: ≤ 22 bytes each, well
// inside MaxBroadcastBytes.
const perMessage = 64

func chunkClaims(node, addr string, cs []claim) [][]byte {
	var msgs [][]byte
	for len(cs) > 0 {
		n := min(perMessage, len(cs))
		msgs = append(msgs, encodeClaims(kindDelta, node, addr, cs[:n]))
		cs = cs[n:]
	}
	return msgs
}

// takeDirty reports whether peers' claims changed since the last call.
func (g *leaderGossip) takeDirty() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	d := g.dirty
	g.dirty = false
	return d
}

// best returns, per shard below p, the peer claim with the highest epoch;
// a shard nobody claims has an empty node. (A slice, not a map: the table
// and the plan call it for every change of leader, and building a map of
// P entries each time took a twelfth of a node's CPU during handoffs.)
func (g *leaderGossip) best(p int) []remoteLead {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]remoteLead, p)
	for node, cs := range g.claims {
		addr := g.addrs[node]
		for s, e := range cs {
			if int(s) < p && (out[s].node == "" || e > out[s].epoch) {
				out[s] = remoteLead{node: node, addr: addr, epoch: e}
			}
		}
	}
	return out
}

// leaderOf returns the peer claim on shard s with the highest epoch.
func (g *leaderGossip) leaderOf(s uint32) (remoteLead, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var best remoteLead
	for node, cs := range g.claims {
		if e, ok := cs[s]; ok && (best.node == "" || e > best.epoch) {
			best = remoteLead{node: node, addr: g.addrs[node], epoch: e}
		}
	}
	return best, best.node != ""
}

type remoteLead struct {
	node, addr string
	epoch      uint64
}

// NotifyMsg applies a peer's delta.
func (g *leaderGossip) NotifyMsg(b []byte) { g.merge(b) }

// MergeRemoteState applies a peer's full set.
func (g *leaderGossip) MergeRemoteState(b []byte) { g.merge(b) }

// LocalState returns this node's full set of claims.
func (g *leaderGossip) LocalState() []byte {
	g.mu.Lock()
	cs := make([]claim, 0, len(g.own))
	for s, e := range g.own {
		cs = append(cs, claim{shard: s, epoch: e, led: true})
	}
	g.mu.Unlock()
	return encodeClaims(kindFull, g.self, g.addr, cs)
}

func (g *leaderGossip) merge(b []byte) {
	if len(b) >= 2 && b[0] == claimsFormat && b[1] == kindControl {
		if c, err := decodeControl(b); err == nil {
			g.mu.Lock()
			if c.newer(g.ctl) {
				g.ctl, g.dirty = c, true
			}
			g.mu.Unlock()
		}
		return
	}
	if len(b) >= 2 && b[0] == claimsFormat && b[1] == kindRange {
		node, addr, lo, hi, cs, err := decodeRange(b)
		if err != nil || node == g.self {
			return
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		g.addrs[node] = addr
		g.replaceRange(node, lo, hi, cs)
		return
	}
	kind, node, addr, cs, err := decodeClaims(b)
	if err != nil || node == g.self {
		return // a malformed message changes nothing; our own are authoritative
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.addrs[node] = addr
	if kind == kindFull {
		g.replace(node, cs)
		return
	}
	mine := g.claims[node]
	if mine == nil {
		mine = make(map[uint32]uint64)
		g.claims[node] = mine
	}
	for _, c := range cs {
		e, had := mine[c.shard]
		switch {
		case c.led && (!had || c.epoch > e):
			mine[c.shard] = c.epoch
		case !c.led && had && e <= c.epoch:
			delete(mine, c.shard)
		default:
			continue // nothing new
		}
		g.dirty = true
	}
}

// replace makes cs node's whole set of claims.
func (g *leaderGossip) replace(node string, cs []claim) {
	mine := make(map[uint32]uint64, len(cs))
	for _, c := range cs {
		if c.led {
			mine[c.shard] = c.epoch
		}
	}
	if !maps.Equal(mine, g.claims[node]) {
		g.dirty = true
	}
	g.claims[node] = mine
}

// replaceRange makes cs node's claims among the shards in [lo, hi). A claim
// at a higher epoch than the message's stays: it came in a delta sent
// after the message. A claim the message lacks goes, even if a delta
// newer than the message added it (packets reordered); the next refresh
// restores it, and meanwhile the worst outcome is an acquisition attempt
// the voters refuse.
func (g *leaderGossip) replaceRange(node string, lo, hi uint64, cs []claim) {
	mine := g.claims[node]
	if mine == nil {
		mine = make(map[uint32]uint64)
		g.claims[node] = mine
	}
	in := make(map[uint32]uint64, len(cs))
	for _, c := range cs {
		in[c.shard] = c.epoch
	}
	drop := func(s uint32) {
		if _, ok := in[s]; !ok {
			delete(mine, s)
			g.dirty = true
		}
	}
	if hi > lo && hi-lo < uint64(len(mine)) {
		// A range narrower than the node's claims: visit the range, not
		// every claim (a refresh comes in many ranges).
		for s := lo; s < hi; s++ {
			if _, ok := mine[uint32(s)]; ok {
				drop(uint32(s))
			}
		}
	} else {
		for s := range mine {
			if uint64(s) >= lo && uint64(s) < hi {
				drop(s)
			}
		}
	}
	for s, e := range in {
		if cur, ok := mine[s]; !ok || e > cur {
			mine[s] = e
			g.dirty = true
		}
	}
}

const (
	claimsFormat = 1
	kindDelta    = 1
	kindFull     = 2
	kindControl  = 3
	// kindRange is a refresh: of the shards in [lo, hi), exactly these are
	// the sender's. Nodes that predate it ignore it as malformed.
	kindRange = 4
	// rangeEnd is the end of the last range: past every shard.
	rangeEnd = MaxShards
	// maxClaims bounds a decoded message: more shards than any cluster has.
	maxClaims = MaxShards
)

var errClaims = errors.New("malformed leadership gossip")

func encodeClaims(kind byte, node, addr string, cs []claim) []byte {
	b := []byte{claimsFormat, kind}
	for _, s := range []string{node, addr} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for _, c := range cs {
		b = binary.AppendUvarint(b, uint64(c.shard))
		b = binary.AppendUvarint(b, c.epoch)
		led := byte(0)
		if c.led {
			led = 1
		}
		b = append(b, led)
	}
	return b
}

// encodeRange encodes a range message: the claims format with lo and hi
// between the address and the claims.
func encodeRange(node, addr string, lo, hi uint64, cs []claim) []byte {
	delta := encodeClaims(kindDelta, node, addr, nil)
	b := append([]byte{claimsFormat, kindRange}, delta[2:len(delta)-1]...) // node and address
	b = binary.AppendUvarint(b, lo)
	b = binary.AppendUvarint(b, hi)
	body := encodeClaims(kindDelta, "", "", cs)
	return append(b, body[4:]...) // the count and the claims
}

// decodeRange decodes a range message; every claim must be led and inside
// [lo, hi), and lo < hi ≤ rangeEnd.
func decodeRange(b []byte) (node, addr string, lo, hi uint64, cs []claim, err error) {
	if len(b) < 2 || b[0] != claimsFormat || b[1] != kindRange {
		return "", "", 0, 0, nil, fmt.Errorf("%w: bad header", errClaims)
	}
	// Re-use the claims decoder: a range message is a delta with two more
	// numbers after the address.
	nodeLen, n1 := binary.Uvarint(b[2:])
	if n1 <= 0 || nodeLen > uint64(len(b)) {
		return "", "", 0, 0, nil, fmt.Errorf("%w: node", errClaims)
	}
	at := 2 + n1 + int(nodeLen)
	if at > len(b) {
		return "", "", 0, 0, nil, fmt.Errorf("%w: node", errClaims)
	}
	addrLen, n2 := binary.Uvarint(b[at:])
	if n2 <= 0 || addrLen > uint64(len(b)) || at+n2+int(addrLen) > len(b) {
		return "", "", 0, 0, nil, fmt.Errorf("%w: address", errClaims)
	}
	at += n2 + int(addrLen)
	head, rest := b[:at], b[at:]
	var n int
	if lo, n = binary.Uvarint(rest); n <= 0 {
		return "", "", 0, 0, nil, fmt.Errorf("%w: range", errClaims)
	}
	rest = rest[n:]
	if hi, n = binary.Uvarint(rest); n <= 0 || lo >= hi || hi > rangeEnd {
		return "", "", 0, 0, nil, fmt.Errorf("%w: range", errClaims)
	}
	rest = rest[n:]
	delta := append(append([]byte{claimsFormat, kindDelta}, head[2:]...), rest...)
	_, node, addr, cs, err = decodeClaims(delta)
	if err != nil {
		return "", "", 0, 0, nil, err
	}
	for _, c := range cs {
		if !c.led || uint64(c.shard) < lo || uint64(c.shard) >= hi {
			return "", "", 0, 0, nil, fmt.Errorf("%w: claim outside its range", errClaims)
		}
	}
	return node, addr, lo, hi, cs, nil
}

func decodeClaims(b []byte) (kind byte, node, addr string, cs []claim, err error) {
	if len(b) < 2 || b[0] != claimsFormat || (b[1] != kindDelta && b[1] != kindFull) {
		return 0, "", "", nil, fmt.Errorf("%w: bad header", errClaims)
	}
	kind, b = b[1], b[2:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	str := func() (string, bool) {
		n, ok := uv()
		if !ok || n > 256 || n > uint64(len(b)) {
			return "", false
		}
		s := string(b[:n])
		b = b[n:]
		return s, true
	}
	var ok bool
	if node, ok = str(); !ok || node == "" {
		return 0, "", "", nil, fmt.Errorf("%w: node", errClaims)
	}
	if addr, ok = str(); !ok {
		return 0, "", "", nil, fmt.Errorf("%w: address", errClaims)
	}
	n, ok := uv()
	if !ok || n > maxClaims || n > uint64(len(b)) {
		return 0, "", "", nil, fmt.Errorf("%w: count", errClaims)
	}
	cs = make([]claim, 0, n)
	for range n {
		s, ok1 := uv()
		e, ok2 := uv()
		if !ok1 || !ok2 || len(b) < 1 || s >= MaxShards || b[0] > 1 {
			return 0, "", "", nil, fmt.Errorf("%w: entry", errClaims)
		}
		cs = append(cs, claim{shard: uint32(s), epoch: e, led: b[0] == 1})
		b = b[1:]
	}
	return kind, node, addr, cs, nil
}

func encodeControl(c control) []byte {
	b := []byte{claimsFormat, kindControl}
	b = binary.AppendUvarint(b, c.version)
	b = binary.AppendUvarint(b, uint64(len(c.node)))
	b = append(b, c.node...)
	if c.paused {
		return append(b, 1)
	}
	return append(b, 0)
}

func decodeControl(b []byte) (control, error) {
	b = b[2:]
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return control{}, fmt.Errorf("%w: control version", errClaims)
	}
	b = b[n:]
	l, n := binary.Uvarint(b)
	if n <= 0 || l == 0 || l > 256 || uint64(len(b)-n) != l+1 || b[len(b)-1] > 1 {
		return control{}, fmt.Errorf("%w: control", errClaims)
	}
	b = b[n:]
	return control{version: v, node: string(b[:l]), paused: b[l] == 1}, nil
}
