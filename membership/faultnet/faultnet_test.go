package faultnet_test

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tenurehq/tenure/membership/faultnet"
)

func TestTransportRegistration(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()

	if _, err := n.Transport("", "127.0.0.1", 0, nil); err == nil {
		t.Fatal("Transport accepted an empty name")
	}
	if _, err := n.Transport("node-1", "localhost", 0, nil); err == nil {
		t.Fatal("Transport accepted a host name as bind address")
	}

	a := newNode(t, n, "node-1")
	if _, err := n.Transport("node-1", "127.0.0.1", 0, nil); err == nil {
		t.Fatal("Transport accepted a name that already has a live transport")
	}

	if err := a.tr.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The name is free again once its transport is gone.
	newNode(t, n, "node-1")
}

func TestHealedLinksCarryPacketsAndStreams(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := newNode(t, n, "node-a")
	b := newNode(t, n, "node-b")

	sendAndReceive(t, a, b)
	sendAndReceive(t, b, a)
	streamRoundTrip(t, a, b)
	streamRoundTrip(t, b, a)

	// Cutting and healing leaves the link fully usable.
	n.Partition([]string{"node-a"}, []string{"node-b"})
	assertPacketDropped(t, n, a, b)
	n.Heal()
	sendAndReceive(t, a, b)
	streamRoundTrip(t, a, b)

	if got := n.Dropped(); got != 1 {
		t.Fatalf("Dropped() = %d, want 1", got)
	}
}

func TestBlockIsOneWay(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := newNode(t, n, "node-a")
	b := newNode(t, n, "node-b")

	n.Block("node-a", "node-b")

	// a -> b packets are dropped at the sender.
	dropped := payload("blocked")
	before := n.Dropped()
	if _, err := a.tr.WriteToAddress(dropped, memberlist.Address{Addr: b.addr}); err != nil {
		t.Fatalf("WriteToAddress on a blocked link: %v", err)
	}
	if got := n.Dropped(); got != before+1 {
		t.Fatalf("Dropped() = %d after a blocked write, want %d", got, before+1)
	}

	// b -> a still works.
	sendAndReceive(t, b, a)

	// TCP needs both directions, so dials are refused either way, and the
	// error names the link that is actually cut.
	assertDialRefused(t, n, a, b, "node-a", "node-b")
	assertDialRefused(t, n, b, a, "node-a", "node-b")

	// Once unblocked, a -> b delivers again, and the packet written while
	// blocked never shows up ahead of the new one.
	n.Unblock("node-a", "node-b")
	marker := payload("after-unblock")
	deadline := time.Now().Add(waitTimeout)
	for arrived := false; !arrived; {
		if time.Now().After(deadline) {
			t.Fatal("a -> b never delivered after Unblock")
		}
		if _, err := a.tr.WriteTo(marker, b.addr); err != nil {
			t.Fatalf("WriteTo after Unblock: %v", err)
		}
		timer := time.NewTimer(100 * time.Millisecond)
	recv:
		for {
			select {
			case p := <-b.tr.PacketCh():
				if bytes.Equal(p.Buf, dropped) {
					t.Fatal("packet written while a -> b was blocked was delivered")
				}
				if bytes.Equal(p.Buf, marker) {
					arrived = true
					break recv
				}
			case <-timer.C:
				break recv
			}
		}
		timer.Stop()
	}
	streamRoundTrip(t, a, b)
	streamRoundTrip(t, b, a)
}

func TestUnknownAddressIsNeverBlocked(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := newNode(t, n, "node-a")

	// A peer on a plain NetTransport is not registered with the network.
	plain, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"},
		Logger:    log.New(io.Discard, "", 0),
	})
	if err != nil {
		t.Fatalf("NewNetTransport: %v", err)
	}
	t.Cleanup(func() { _ = plain.Shutdown() })
	ip, port, err := plain.FinalAdvertiseAddr("", 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := (&net.TCPAddr{IP: ip, Port: port}).String()

	n.Isolate("node-a")

	msg := payload("to-plain")
	if _, err := a.tr.WriteTo(msg, peer); err != nil {
		t.Fatalf("WriteTo an unregistered address: %v", err)
	}
	select {
	case p := <-plain.PacketCh():
		if !bytes.Equal(p.Buf, msg) {
			t.Fatalf("plain transport got %q, want %q", p.Buf, msg)
		}
	case <-time.After(waitTimeout):
		t.Fatal("packet to an unregistered address never arrived")
	}

	conn, err := a.tr.DialTimeout(peer, time.Second)
	if err != nil {
		t.Fatalf("dial to an unregistered address: %v", err)
	}
	conn.Close()
	select {
	case c := <-plain.StreamCh():
		c.Close()
	case <-time.After(waitTimeout):
		t.Fatal("plain transport never accepted the stream")
	}
	if got := n.Dropped(); got != 0 {
		t.Fatalf("Dropped() = %d, want 0", got)
	}
}

func TestPartitionIsolateHeal(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := newNode(t, n, "node-a")
	b := newNode(t, n, "node-b")
	c := newNode(t, n, "node-c")

	t.Run("partition", func(t *testing.T) {
		n.Partition([]string{"node-a", "node-b"}, []string{"node-c"})
		for _, l := range [][2]*node{{a, c}, {c, a}, {b, c}, {c, b}} {
			assertPacketDropped(t, n, l[0], l[1])
			assertDialRefused(t, n, l[0], l[1], l[0].name, l[1].name)
		}
		// Links inside a side are untouched.
		sendAndReceive(t, a, b)
		sendAndReceive(t, b, a)
		streamRoundTrip(t, a, b)

		n.Heal()
		sendAndReceive(t, a, c)
		sendAndReceive(t, c, b)
		streamRoundTrip(t, c, a)
	})

	t.Run("isolate", func(t *testing.T) {
		n.Isolate("node-b")
		for _, l := range [][2]*node{{a, b}, {b, a}, {c, b}, {b, c}} {
			assertPacketDropped(t, n, l[0], l[1])
			assertDialRefused(t, n, l[0], l[1], l[0].name, l[1].name)
		}
		sendAndReceive(t, a, c)
		sendAndReceive(t, c, a)
		streamRoundTrip(t, c, a)

		n.Heal()
		sendAndReceive(t, a, b)
		sendAndReceive(t, b, c)
		streamRoundTrip(t, b, a)
	})

	t.Run("isolate only cuts registered nodes", func(t *testing.T) {
		n.Isolate("node-a")
		d := newNode(t, n, "node-d")
		sendAndReceive(t, d, a)
		sendAndReceive(t, a, d)
		assertPacketDropped(t, n, a, c)
		n.Heal()
	})
}

func TestDelay(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := newNode(t, n, "node-a")
	b := newNode(t, n, "node-b")

	const d = 300 * time.Millisecond
	n.Delay("node-a", "node-b", d)

	msg := payload("delayed")
	start := time.Now()
	if _, err := a.tr.WriteTo(msg, b.addr); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if !receive(b, msg, waitTimeout) {
		t.Fatal("delayed packet never arrived")
	}
	if elapsed := time.Since(start); elapsed < d {
		t.Fatalf("delayed packet arrived after %v, want at least %v", elapsed, d)
	}

	// The reverse direction is not delayed, and clearing the delay
	// restores normal delivery.
	sendAndReceive(t, b, a)
	n.Delay("node-a", "node-b", 0)
	sendAndReceive(t, a, b)
	if got := n.Dropped(); got != 0 {
		t.Fatalf("Dropped() = %d, want 0", got)
	}
}

func TestCutWhileHeldDropsPacket(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := newNode(t, n, "node-a")
	b := newNode(t, n, "node-b")

	n.Delay("node-a", "node-b", 200*time.Millisecond)
	if _, err := a.tr.WriteTo(payload("held"), b.addr); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	n.Block("node-a", "node-b")
	waitUntil(t, "held packet to be dropped", func() bool { return n.Dropped() == 1 }, nil)
}

func TestShutdownCancelsDelayedPackets(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := newNode(t, n, "node-a")
	b := newNode(t, n, "node-b")

	n.Delay("node-a", "node-b", time.Hour)
	for range 10 {
		if _, err := a.tr.WriteTo(payload("pending"), b.addr); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
	}

	done := make(chan error, 1)
	go func() { done <- a.tr.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown did not return with delayed packets pending")
	}

	// Idempotent, and the transport refuses further use.
	if err := a.tr.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := a.tr.WriteTo(payload("late"), b.addr); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Shutdown: got %v, want net.ErrClosed", err)
	}
	if _, err := a.tr.WriteToAddress(payload("late"), memberlist.Address{Addr: b.addr}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteToAddress after Shutdown: got %v, want net.ErrClosed", err)
	}
	if _, err := a.tr.DialTimeout(b.addr, time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("DialTimeout after Shutdown: got %v, want net.ErrClosed", err)
	}
	if got := n.Dropped(); got != 0 {
		t.Fatalf("Dropped() = %d, want 0 (cancelled packets are not drops)", got)
	}
	// checkLeaks verifies no delivery goroutine outlived Shutdown.
}

func TestShutdownWithUnreadTraffic(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := newNode(t, n, "node-a")
	b := newNode(t, n, "node-b")

	// Nobody reads b's channels. A bare NetTransport would hang in
	// Shutdown with its listeners stuck on unbuffered sends.
	for range 5 {
		if _, err := a.tr.WriteTo(payload("unread"), b.addr); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
	}
	var conns []net.Conn
	for range 3 {
		conn, err := a.tr.DialTimeout(b.addr, time.Second)
		if err != nil {
			t.Fatalf("DialTimeout: %v", err)
		}
		conns = append(conns, conn)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	done := make(chan error, 1)
	go func() { done <- b.tr.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown hung with unread packets and streams")
	}
}

func TestConcurrentRuleChangesAndTraffic(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	nodes := []*node{newNode(t, n, "node-a"), newNode(t, n, "node-b"), newNode(t, n, "node-c")}

	var wg sync.WaitGroup
	stopDrain := make(chan struct{})
	var drainers sync.WaitGroup
	for _, nd := range nodes {
		drainers.Add(1)
		go func() {
			defer drainers.Done()
			for {
				select {
				case <-nd.tr.PacketCh():
				case c := <-nd.tr.StreamCh():
					c.Close()
				case <-stopDrain:
					return
				}
			}
		}()
	}

	for _, from := range nodes {
		for _, to := range nodes {
			if from == to {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 200 {
					if _, err := from.tr.WriteTo(payload("churn"), to.addr); err != nil {
						t.Errorf("WriteTo %s -> %s: %v", from.name, to.name, err)
						return
					}
					if i%20 == 0 {
						if c, err := from.tr.DialTimeout(to.addr, time.Second); err == nil {
							c.Close()
						}
					}
				}
			}()
		}
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			switch i % 6 {
			case 0:
				n.Block("node-a", "node-b")
			case 1:
				n.Delay("node-b", "node-c", time.Millisecond)
			case 2:
				n.Partition([]string{"node-a"}, []string{"node-b", "node-c"})
			case 3:
				n.Isolate("node-c")
			case 4:
				n.Unblock("node-a", "node-b")
			case 5:
				n.Heal()
			}
			_ = n.Dropped()
		}
	}()

	wg.Wait()

	// Shut down while held packets may still be pending and while the
	// other transports keep sending.
	n.Delay("node-a", "node-b", time.Hour)
	for range 10 {
		if _, err := nodes[0].tr.WriteTo(payload("held"), nodes[1].addr); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
	}
	var shut sync.WaitGroup
	for _, nd := range nodes {
		shut.Add(2)
		go func() {
			defer shut.Done()
			if err := nd.tr.Shutdown(); err != nil {
				t.Errorf("Shutdown(%s): %v", nd.name, err)
			}
		}()
		go func() {
			defer shut.Done()
			for _, to := range nodes {
				// Errors are expected once either side is down.
				_, _ = nd.tr.WriteTo(payload("racing"), to.addr)
			}
		}()
	}
	shut.Wait()
	close(stopDrain)
	drainers.Wait()
}
