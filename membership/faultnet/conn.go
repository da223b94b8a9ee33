package faultnet

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// This file applies the Network's rules to long-lived TCP connections, such
// as the ones gRPC keeps open between nodes. Unlike memberlist, which dials
// afresh for every stream, gRPC reuses one connection for as long as it
// lives, so refusing new dials is not enough: a connection that crosses a
// link when it is cut has to break too.
//
// A connection is cut at both ends. The dialing end knows the node it dialed
// from the listener's registered address. The accepting end only sees an
// ephemeral source address, so it learns its peer from the dialing end,
// which records its endpoints in Network.dialedFrom. Either end may be
// registered first, so an accepting end whose peer is not known yet looks it
// up again on every rule change.
//
// Every live wrapped connection is in Network.conns until it is closed or
// cut. A rule change walks that set once, after the rule is in place, and
// closes whatever the new rules separate. Registration checks the rules
// under the same lock, so a connection is either registered before the rule
// change (and cut by it) or checks the new rule itself (and is refused).

// tcpPair identifies one TCP connection by its endpoints, seen from the
// dialing side. Local ports alone are not unique: the kernel reuses an
// ephemeral port for connections to different destinations.
type tcpPair struct {
	local, remote string
}

// Listen opens a TCP listener on addr (typically "127.0.0.1:0") for the node
// called name and registers its address -> name, so that dials to it through
// a Dialer are subject to this network's rules. A listener on a wildcard
// address registers the loopback addresses on its port, since that is how
// peers in the same process reach it.
//
// Accepted connections are wrapped like dialed ones (see Dialer) once their
// peer is known, that is when they come from a Dialer of the same Network.
// Connections from anywhere else are never cut. Delays do not apply to
// connections.
//
// Closing the listener unregisters its address; connections it accepted are
// left open, as with any net.Listener. name must be non-empty; it may also
// have a Transport and any number of other listeners. Listen is safe to call
// concurrently with every other method.
func (n *Network) Listen(name, addr string) (net.Listener, error) {
	if name == "" {
		return nil, fmt.Errorf("faultnet: node name must not be empty")
	}
	inner, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faultnet: node %q: %w", name, err)
	}
	keys := listenKeys(inner.Addr())

	n.mu.Lock()
	for _, key := range keys {
		if owner, taken := n.addrs[key]; taken {
			n.mu.Unlock()
			_ = inner.Close()
			return nil, fmt.Errorf("faultnet: node %q: address %s is already registered to %q", name, key, owner)
		}
	}
	for _, key := range keys {
		n.addrs[key] = name
	}
	n.mu.Unlock()

	return &listener{Listener: inner, network: n, name: name, keys: keys}, nil
}

// Dialer returns a dial function for grpc.WithContextDialer (or anything
// else that wants one) to be used by the node called from.
//
// TCP needs both directions, so a dial is refused with a *net.OpError
// naming the cut link if from -> destination or destination -> from is
// blocked. Otherwise the connection is opened and wrapped: from the moment
// either direction between the two is cut, every Read and Write at both ends
// fails with a *net.OpError naming the link, and the underlying connection is
// closed, so calls blocked in Read or Write return at once. Healing the link
// does not revive a cut connection; the caller has to dial again, as gRPC
// does by itself.
//
// The destination is identified by the address it was reached at, which
// must be registered by Listen. Connections to any other address are never
// cut. Delays do not apply to connections. Refused dials and cut connection
// ends are counted in Dropped.
//
// The returned function is safe for concurrent use. Each connection is
// tracked by the Network until it is closed or cut, so callers must Close
// the connections it returns, as with any net.Conn.
func (n *Network) Dialer(from string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		n.mu.RLock()
		to, known := n.addrs[normalizeAddr(addr)]
		l, cut := n.streamCutLocked(from, to)
		n.mu.RUnlock()
		if known && cut {
			n.dropped.Add(1)
			return nil, dialRefused(l, addr)
		}

		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return n.trackDialed(from, c, addr)
	}
}

// trackDialed wraps c, dialed by from, and registers it, unless the rules
// changed while it was being dialed and it is cut already. The destination
// is looked up again by the address actually connected to, which also covers
// dials by host name.
func (n *Network) trackDialed(from string, c net.Conn, addr string) (net.Conn, error) {
	pair := tcpPair{
		local:  normalizeAddr(c.LocalAddr().String()),
		remote: normalizeAddr(c.RemoteAddr().String()),
	}

	n.mu.Lock()
	to, known := n.addrs[pair.remote]
	if !known {
		n.mu.Unlock()
		return c, nil
	}
	if l, cut := n.streamCutLocked(from, to); cut {
		n.mu.Unlock()
		_ = c.Close()
		n.dropped.Add(1)
		return nil, dialRefused(l, addr)
	}
	wc := &conn{Conn: c, network: n, local: from, peer: to, pair: pair}
	n.conns[wc] = struct{}{}
	n.dialedFrom[pair] = from
	n.mu.Unlock()
	return wc, nil
}

// trackAccepted wraps c, accepted by a listener of node name, and registers
// it. It returns false, having closed c, if c comes from a node that name
// is cut off from.
func (n *Network) trackAccepted(name string, c net.Conn) (net.Conn, bool) {
	wc := &conn{
		Conn:     c,
		network:  n,
		local:    name,
		accepted: true,
		// The dialing end recorded the same pair from its side.
		pair: tcpPair{
			local:  normalizeAddr(c.RemoteAddr().String()),
			remote: normalizeAddr(c.LocalAddr().String()),
		},
	}

	n.mu.Lock()
	wc.peer = n.dialedFrom[wc.pair]
	if wc.peer != "" {
		if _, cut := n.streamCutLocked(name, wc.peer); cut {
			n.mu.Unlock()
			_ = c.Close()
			n.dropped.Add(1)
			return nil, false
		}
	}
	n.conns[wc] = struct{}{}
	n.mu.Unlock()
	return wc, true
}

// cutConns cuts every live connection whose ends the current rules separate.
// Rule changes that add blocks call it after releasing n.mu.
func (n *Network) cutConns() {
	var cut []*conn
	n.mu.Lock()
	// Resolve every peer before cutting anything: cutting a dialing end
	// forgets its pair, which its accepting end may still need.
	n.resolvePeersLocked()
	for c := range n.conns {
		if c.peer == "" {
			continue
		}
		l, isCut := n.streamCutLocked(c.local, c.peer)
		if !isCut {
			continue
		}
		c.cut.Store(&l)
		n.forgetLocked(c)
		cut = append(cut, c)
	}
	n.mu.Unlock()

	// Closing outside the lock: a cut conn's owner may be inside Close,
	// which takes n.mu.
	n.dropped.Add(uint64(len(cut)))
	for _, c := range cut {
		_ = c.closeInner()
	}
}

// resolvePeersLocked fills in the peer of every accepting end whose dialing
// end has been registered since. n.mu must be held for writing.
func (n *Network) resolvePeersLocked() {
	for c := range n.conns {
		if c.peer == "" {
			c.peer = n.dialedFrom[c.pair]
		}
	}
}

// forgetLocked removes c from the registry. n.mu must be held for writing.
func (n *Network) forgetLocked(c *conn) {
	if _, live := n.conns[c]; !live {
		// Already cut; the pair may belong to a newer connection now.
		return
	}
	delete(n.conns, c)
	if !c.accepted {
		delete(n.dialedFrom, c.pair)
	}
}

// knownNodesLocked returns the names of every node the network currently
// knows of: those with a live Transport or listener, and the ends of live
// connections. n.mu must be held for writing.
func (n *Network) knownNodesLocked() map[string]struct{} {
	names := make(map[string]struct{}, len(n.nodes)+len(n.addrs))
	for name := range n.nodes {
		names[name] = struct{}{}
	}
	for _, name := range n.addrs {
		names[name] = struct{}{}
	}
	n.resolvePeersLocked()
	for c := range n.conns {
		names[c.local] = struct{}{}
		if c.peer != "" {
			names[c.peer] = struct{}{}
		}
	}
	return names
}

// streamCutLocked reports whether a TCP connection between a and b is cut,
// and by which direction: a -> b if that is blocked, else b -> a. TCP needs
// both directions, so either one cuts it. n.mu must be held.
func (n *Network) streamCutLocked(a, b string) (link, bool) {
	if _, blocked := n.blocked[link{a, b}]; blocked {
		return link{a, b}, true
	}
	if _, blocked := n.blocked[link{b, a}]; blocked {
		return link{b, a}, true
	}
	return link{}, false
}

// cutError is the error carried by refused dials and cut connections. Its
// text matches the one Transport uses for refused dials.
func (l link) cutError() error {
	return fmt.Errorf("faultnet: link %s -> %s is cut", l.from, l.to)
}

func dialRefused(l link, addr string) error {
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: l.cutError()}
	if tcpAddr, err := net.ResolveTCPAddr("tcp", addr); err == nil {
		opErr.Addr = tcpAddr
	}
	return opErr
}

// listenKeys returns the addresses a listener on a is registered under.
func listenKeys(a net.Addr) []string {
	tcpAddr, ok := a.(*net.TCPAddr)
	if !ok {
		return []string{normalizeAddr(a.String())}
	}
	if tcpAddr.IP.IsUnspecified() {
		return []string{
			addrKey(net.IPv4(127, 0, 0, 1), tcpAddr.Port),
			addrKey(net.IPv6loopback, tcpAddr.Port),
		}
	}
	return []string{addrKey(tcpAddr.IP, tcpAddr.Port)}
}

// listener registers the address of a Listen listener and wraps the
// connections it accepts.
type listener struct {
	net.Listener
	network *Network
	name    string
	keys    []string

	unregisterOnce sync.Once
}

// Accept waits for the next connection and wraps it. A connection from a
// node this one is cut off from is closed and skipped.
func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if wc, ok := l.network.trackAccepted(l.name, c); ok {
			return wc, nil
		}
	}
}

// Close unregisters the listener's address and closes it. Connections it
// accepted stay open.
func (l *listener) Close() error {
	l.unregisterOnce.Do(func() {
		n := l.network
		n.mu.Lock()
		for _, key := range l.keys {
			if n.addrs[key] == l.name {
				delete(n.addrs, key)
			}
		}
		n.mu.Unlock()
	})
	return l.Listener.Close()
}

// conn is one end of a connection from Listen or Dialer.
type conn struct {
	net.Conn
	network  *Network
	local    string  // node owning this end
	accepted bool    // accepted by a listener rather than dialed
	pair     tcpPair // endpoints as seen by the dialing end

	// peer is the node at the other end, "" while unknown (accepting
	// ends only). Guarded by network.mu.
	peer string

	// cut is set, before the underlying conn is closed, once a rule
	// separates the two ends.
	cut atomic.Pointer[link]

	closeOnce sync.Once
	closeErr  error
}

// Read reads from the connection, or fails with the link's error once it is
// cut.
func (c *conn) Read(b []byte) (int, error) {
	if err := c.cutErr("read"); err != nil {
		return 0, err
	}
	nr, err := c.Conn.Read(b)
	if err != nil {
		if cerr := c.cutErr("read"); cerr != nil {
			return nr, cerr
		}
	}
	return nr, err
}

// Write writes to the connection, or fails with the link's error once it is
// cut.
func (c *conn) Write(b []byte) (int, error) {
	if err := c.cutErr("write"); err != nil {
		return 0, err
	}
	nw, err := c.Conn.Write(b)
	if err != nil {
		if cerr := c.cutErr("write"); cerr != nil {
			return nw, cerr
		}
	}
	return nw, err
}

// SetDeadline sets the read and write deadlines, as net.Conn does. On a cut
// connection it does nothing and returns nil, as on a real broken one:
// Read and Write fail at once regardless.
func (c *conn) SetDeadline(t time.Time) error {
	if c.cut.Load() != nil {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline is like SetDeadline for reads only.
func (c *conn) SetReadDeadline(t time.Time) error {
	if c.cut.Load() != nil {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline is like SetDeadline for writes only.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if c.cut.Load() != nil {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close unregisters the connection and closes it. Closing a cut connection
// returns nil.
func (c *conn) Close() error {
	n := c.network
	n.mu.Lock()
	n.forgetLocked(c)
	n.mu.Unlock()
	return c.closeInner()
}

func (c *conn) closeInner() error {
	c.closeOnce.Do(func() { c.closeErr = c.Conn.Close() })
	return c.closeErr
}

// cutErr returns the error for op on a cut connection, or nil if the
// connection has not been cut.
func (c *conn) cutErr(op string) error {
	l := c.cut.Load()
	if l == nil {
		return nil
	}
	return &net.OpError{
		Op:     op,
		Net:    "tcp",
		Source: c.LocalAddr(),
		Addr:   c.RemoteAddr(),
		Err:    l.cutError(),
	}
}
