package faultnet

import (
	"fmt"
	"log"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// Transport is a memberlist transport for one node of a Network. It wraps a
// real memberlist.NetTransport and applies the Network's rules to everything
// the node sends: packets to a blocked peer are dropped, packets to a delayed
// peer are held, and dials across a cut link are refused.
//
// Transport is safe for concurrent use, as memberlist requires: all methods
// may be called from any goroutine, including concurrently with Shutdown.
// Once Shutdown has returned, writes and dials fail with an error wrapping
// net.ErrClosed and no goroutine started by the Transport is left running.
type Transport struct {
	network *Network
	name    string
	inner   *memberlist.NetTransport
	logger  *log.Logger

	// keys lists the advertised addresses registered for this node.
	// Guarded by network.mu.
	keys []string

	// packetCh and streamCh are what memberlist reads from. Forwarders
	// copy the NetTransport's channels into them so that Shutdown can
	// keep draining the NetTransport even when nobody reads any more.
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	mu      sync.Mutex
	closed  bool
	closing chan struct{}  // closed when Shutdown starts
	stopped chan struct{}  // closed once the NetTransport is down
	pending sync.WaitGroup // delayed deliveries not yet finished
	fwd     sync.WaitGroup // forwarder goroutines

	shutdownOnce sync.Once
	shutdownErr  error
}

func newTransport(n *Network, name string, inner *memberlist.NetTransport, logger *log.Logger) *Transport {
	t := &Transport{
		network:  n,
		name:     name,
		inner:    inner,
		logger:   logger,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		closing:  make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	t.fwd.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

// FinalAdvertiseAddr returns the address the underlying NetTransport
// advertises and registers it with the Network under this node's name, so
// that peers sending to it are subject to the rules. It implements
// memberlist.Transport and is safe for concurrent use.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	advIP, advPort, err := t.inner.FinalAdvertiseAddr(ip, port)
	if err != nil {
		return nil, 0, err
	}
	t.network.register(t, addrKey(advIP, advPort))
	return advIP, advPort, nil
}

// WriteTo sends a packet to addr, subject to the Network's rules. It
// implements memberlist.Transport and is safe for concurrent use.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends a packet to a.Addr, subject to the Network's rules.
// A packet on a blocked link is dropped without error, as a lossy network
// would. A packet on a delayed link is copied and sent once the delay has
// passed; the call itself returns at once. The destination is identified by
// a.Addr alone, since memberlist does not always fill in a.Name. It
// implements memberlist.NodeAwareTransport and is safe for concurrent use.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if err := t.checkOpen(); err != nil {
		return time.Time{}, err
	}
	to, blocked, delay := t.network.route(t.name, a.Addr)
	if blocked {
		t.network.dropped.Add(1)
		return time.Now(), nil
	}
	if delay > 0 {
		return t.hold(b, a, to, delay)
	}
	return t.inner.WriteToAddress(b, a)
}

// hold schedules a packet for delivery after delay. The caller may reuse b
// once hold returns.
func (t *Transport) hold(b []byte, a memberlist.Address, to string, delay time.Duration) (time.Time, error) {
	buf := append([]byte(nil), b...)

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return time.Time{}, t.closedErr()
	}
	// Adding under mu while open orders every Add before Shutdown's Wait.
	t.pending.Add(1)
	t.mu.Unlock()

	go func() {
		defer t.pending.Done()
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-t.closing:
			return
		}
		if t.network.isBlocked(t.name, to) {
			t.network.dropped.Add(1)
			return
		}
		if _, err := t.inner.WriteToAddress(buf, a); err != nil {
			t.logger.Printf("[DEBUG] faultnet: %s: delayed packet to %s: %v", t.name, a.Addr, err)
		}
	}()
	return time.Now(), nil
}

// PacketCh returns the channel of packets received by this node. Incoming
// packets are not filtered; see the package documentation. It implements
// memberlist.Transport and is safe for concurrent use.
func (t *Transport) PacketCh() <-chan *memberlist.Packet {
	return t.packetCh
}

// DialTimeout opens a stream to addr, subject to the Network's rules. It
// implements memberlist.Transport and is safe for concurrent use.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a stream to a.Addr, subject to the Network's
// rules. TCP needs both directions, so the dial is refused at once with a
// *net.OpError if either this node -> peer or peer -> this node is blocked.
// Delays do not apply to dials. It implements memberlist.NodeAwareTransport
// and is safe for concurrent use.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if err := t.checkOpen(); err != nil {
		return nil, err
	}
	to, blocked, _ := t.network.route(t.name, a.Addr)
	from := t.name
	if !blocked && to != "" && t.network.isBlocked(to, t.name) {
		from, to, blocked = to, t.name, true
	}
	if blocked {
		t.network.dropped.Add(1)
		opErr := &net.OpError{
			Op:  "dial",
			Net: "tcp",
			Err: fmt.Errorf("faultnet: link %s -> %s is cut", from, to),
		}
		if tcpAddr, err := net.ResolveTCPAddr("tcp", a.Addr); err == nil {
			opErr.Addr = tcpAddr
		}
		return nil, opErr
	}
	return t.inner.DialAddressTimeout(a, timeout)
}

// StreamCh returns the channel of streams accepted by this node. Incoming
// streams are not filtered; see the package documentation. It implements
// memberlist.Transport and is safe for concurrent use.
func (t *Transport) StreamCh() <-chan net.Conn {
	return t.streamCh
}

// Shutdown stops the Transport: it cancels packets still held by a delay,
// shuts the underlying NetTransport down, unregisters the node from the
// Network and waits for every goroutine the Transport started. Packets and
// streams that arrive while shutting down are discarded, so Shutdown does not
// depend on anyone reading PacketCh or StreamCh. It is idempotent and safe to
// call concurrently; every call returns once shutdown is complete. It
// implements memberlist.Transport.
func (t *Transport) Shutdown() error {
	t.shutdownOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		close(t.closing)
		t.mu.Unlock()

		t.pending.Wait()
		t.network.unregister(t)

		// The forwarders keep draining the NetTransport's channels
		// until it is down: its listener goroutines block on unbuffered
		// sends, and its Shutdown waits for them.
		t.shutdownErr = t.inner.Shutdown()
		close(t.stopped)
		t.fwd.Wait()
	})
	return t.shutdownErr
}

func (t *Transport) checkOpen() error {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return t.closedErr()
	}
	return nil
}

func (t *Transport) closedErr() error {
	return fmt.Errorf("faultnet: transport for %s is shut down: %w", t.name, net.ErrClosed)
}

func (t *Transport) forwardPackets() {
	defer t.fwd.Done()
	in := t.inner.PacketCh()
	for {
		select {
		case p := <-in:
			select {
			case t.packetCh <- p:
			case <-t.closing:
			}
		case <-t.stopped:
			return
		}
	}
}

func (t *Transport) forwardStreams() {
	defer t.fwd.Done()
	in := t.inner.StreamCh()
	for {
		select {
		case c := <-in:
			select {
			case t.streamCh <- c:
			case <-t.closing:
				_ = c.Close()
			}
		case <-t.stopped:
			return
		}
	}
}
