// Package faultnet provides a fault-injecting network for tests of code built
// on github.com/hashicorp/memberlist.
//
// A Network hands out Transports, each of which wraps a real
// memberlist.NetTransport, normally bound on loopback, so real memberlist
// instances talk to each other over real UDP and TCP. The Network keeps a set
// of rules (one-way blocks and per-link delays) that tests can change at any
// time to cut, slow down and heal links between named nodes.
//
// Rules are enforced on the sending side only: a Transport consults the
// Network before it writes a packet or dials a stream, and incoming traffic
// is never filtered. This is complete as long as every node taking part in a
// test uses a Transport from the same Network. A node on a plain transport
// can still reach a faultnet node regardless of the rules.
//
// Streams that were already established when a link is cut are left alone;
// only new packets and new dials are affected. memberlist opens a fresh TCP
// connection for every stream operation, so in practice a cut takes effect
// within one probe or push/pull round.
//
// The same rules also apply to long-lived TCP connections such as gRPC's,
// opened through Network.Listen and Network.Dialer: unlike memberlist
// streams, those are cut as soon as a rule separates their ends, at both
// ends, as a real partition would eventually break them.
package faultnet

import (
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// link is a directed edge between two node names.
type link struct {
	from, to string
}

// Network is a set of transports whose links can be cut, delayed and healed.
// Safe for concurrent use: every method may be called from any goroutine,
// including while the transports it created are carrying traffic, and a rule
// change is seen by every send that starts after the call returns.
type Network struct {
	dropped atomic.Uint64

	mu      sync.RWMutex
	nodes   map[string]*Transport  // live transports by node name
	addrs   map[string]string      // advertised "ip:port" -> node name
	blocked map[link]struct{}      // one-way blocks
	delays  map[link]time.Duration // one-way delays

	conns      map[*conn]struct{} // live connections from Listen and Dialer
	dialedFrom map[tcpPair]string // dialed connection's endpoints -> dialing node
}

// New returns an empty Network with no transports and no rules. It is safe
// to use from multiple goroutines as soon as it is returned.
func New() *Network {
	return &Network{
		nodes:   make(map[string]*Transport),
		addrs:   make(map[string]string),
		blocked: make(map[link]struct{}),
		delays:  make(map[link]time.Duration),

		conns:      make(map[*conn]struct{}),
		dialedFrom: make(map[tcpPair]string),
	}
}

// Transport binds a real memberlist NetTransport on bindAddr:port (port 0 =
// pick a free port) for the node called name, registers its advertised
// address -> name, and returns a wrapper that applies this network's rules.
// logger may be nil (discard).
//
// bindAddr must be an IP address such as "127.0.0.1"; host names are
// rejected. name must be non-empty and must not belong to another live
// Transport of this Network; once a Transport is shut down its name may be
// reused, and any rules naming it apply to the new Transport as well.
// Transport is safe to call concurrently with every other method.
func (n *Network) Transport(name, bindAddr string, port int, logger *log.Logger) (*Transport, error) {
	if name == "" {
		return nil, fmt.Errorf("faultnet: node name must not be empty")
	}
	ip := net.ParseIP(bindAddr)
	if ip == nil {
		return nil, fmt.Errorf("faultnet: bind address %q is not an IP address", bindAddr)
	}
	if logger == nil {
		// NetTransport logs unconditionally, so it needs a real logger.
		logger = log.New(io.Discard, "", 0)
	}

	n.mu.RLock()
	_, taken := n.nodes[name]
	n.mu.RUnlock()
	if taken {
		return nil, fmt.Errorf("faultnet: node %q already has a transport", name)
	}

	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  port,
		Logger:    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("faultnet: node %q: %w", name, err)
	}

	// The advertised address is known up front for a specific bind IP: it
	// is that IP plus the port the listeners ended up on. For a wildcard
	// bind NetTransport picks a private interface address instead.
	var key string
	if ip.IsUnspecified() {
		if advIP, advPort, err := inner.FinalAdvertiseAddr("", 0); err == nil {
			key = addrKey(advIP, advPort)
		}
	} else {
		key = addrKey(ip, inner.GetAutoBindPort())
	}

	t := newTransport(n, name, inner, logger)

	n.mu.Lock()
	if _, taken := n.nodes[name]; taken {
		n.mu.Unlock()
		_ = t.Shutdown()
		return nil, fmt.Errorf("faultnet: node %q already has a transport", name)
	}
	n.nodes[name] = t
	if key != "" {
		n.registerLocked(t, key)
	}
	n.mu.Unlock()

	return t, nil
}

// Block drops everything sent from -> to (one-way). Unblock undoes it.
//
// Packets from -> to are dropped, and because TCP needs both directions,
// dials from -> to and from to -> from are refused. Names need not belong to
// a live Transport yet; the rule applies as soon as they do. Connections
// from Listen and Dialer between the two are cut before Block returns. Safe
// for concurrent use.
func (n *Network) Block(from, to string) {
	n.mu.Lock()
	n.blocked[link{from, to}] = struct{}{}
	n.mu.Unlock()
	n.cutConns()
}

// Unblock removes the one-way block from -> to set by Block, Partition or
// Isolate. It does not touch the opposite direction or any delay. Safe for
// concurrent use.
func (n *Network) Unblock(from, to string) {
	n.mu.Lock()
	delete(n.blocked, link{from, to})
	n.mu.Unlock()
}

// Partition cuts every link between a node in a and a node in b, both
// directions. Links inside a and inside b are left as they are. Connections
// from Listen and Dialer across the partition are cut before Partition
// returns. Safe for concurrent use.
func (n *Network) Partition(a, b []string) {
	defer n.cutConns() // runs after the unlock below
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.blocked[link{x, y}] = struct{}{}
			n.blocked[link{y, x}] = struct{}{}
		}
	}
}

// Isolate cuts every link between name and every other registered node,
// both directions. Only nodes known at the time of the call are cut off:
// those with a live Transport or Listen listener, and the ends of live
// connections from Listen and Dialer. A node registered later can still talk
// to name until it is blocked separately. Connections to name are cut before
// Isolate returns. Safe for concurrent use.
func (n *Network) Isolate(name string) {
	defer n.cutConns() // runs after the unlock below
	n.mu.Lock()
	defer n.mu.Unlock()
	for other := range n.knownNodesLocked() {
		if other == name {
			continue
		}
		n.blocked[link{name, other}] = struct{}{}
		n.blocked[link{other, name}] = struct{}{}
	}
}

// Delay holds packets sent from -> to for d before delivering (d=0 removes
// the delay).
//
// Only packets are delayed; dials are not. A held packet is checked against
// the blocks again when its delay ends and is dropped, and counted in
// Dropped, if the link has been cut in the meantime. Shutting the sending
// Transport down discards held packets without counting them. Safe for
// concurrent use.
func (n *Network) Delay(from, to string, d time.Duration) {
	n.mu.Lock()
	if d <= 0 {
		delete(n.delays, link{from, to})
	} else {
		n.delays[link{from, to}] = d
	}
	n.mu.Unlock()
}

// Heal removes every block and delay. Packets already held by a delay are
// still delivered when their delay ends. Safe for concurrent use.
func (n *Network) Heal() {
	n.mu.Lock()
	clear(n.blocked)
	clear(n.delays)
	n.mu.Unlock()
}

// Dropped reports how many packets and dials this network has refused, and
// how many Listen and Dialer connection ends it has cut, so far (useful for
// tests to assert a cut took effect). The count only grows; it
// is safe to read concurrently with traffic.
func (n *Network) Dropped() uint64 {
	return n.dropped.Load()
}

// register records that the advertised address key belongs to t.
func (n *Network) register(t *Transport, key string) {
	n.mu.Lock()
	n.registerLocked(t, key)
	n.mu.Unlock()
}

// registerLocked is register with n.mu already held for writing.
func (n *Network) registerLocked(t *Transport, key string) {
	if n.nodes[t.name] != t {
		// Shut down (or never fully registered): don't resurrect it.
		return
	}
	if n.addrs[key] == t.name {
		return
	}
	n.addrs[key] = t.name
	t.keys = append(t.keys, key)
}

// unregister forgets t and every address it registered. Rules naming t are
// kept so that a replacement node with the same name inherits them.
func (n *Network) unregister(t *Transport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes[t.name] == t {
		delete(n.nodes, t.name)
	}
	for _, key := range t.keys {
		if n.addrs[key] == t.name {
			delete(n.addrs, key)
		}
	}
	t.keys = nil
}

// route returns the node name behind addr and the rules for sending from
// from to it. An address that no live Transport advertised resolves to ""
// and is never blocked or delayed.
func (n *Network) route(from, addr string) (to string, blocked bool, delay time.Duration) {
	key := normalizeAddr(addr)
	n.mu.RLock()
	defer n.mu.RUnlock()
	to, ok := n.addrs[key]
	if !ok {
		return "", false, 0
	}
	_, blocked = n.blocked[link{from, to}]
	return to, blocked, n.delays[link{from, to}]
}

// isBlocked reports whether from -> to is currently cut.
func (n *Network) isBlocked(from, to string) bool {
	n.mu.RLock()
	_, blocked := n.blocked[link{from, to}]
	n.mu.RUnlock()
	return blocked
}

// addrKey formats ip:port the way memberlist does when it addresses a node,
// so that lookups by destination string match.
func addrKey(ip net.IP, port int) string {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

// normalizeAddr canonicalises a "host:port" string whose host is an IP
// literal. Anything else is returned unchanged.
func normalizeAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return addr
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return addr
	}
	return addrKey(ip, p)
}
