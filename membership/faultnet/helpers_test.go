package faultnet_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/membership/faultnet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	// waitTimeout bounds every wait on a condition.
	waitTimeout = 10 * time.Second
	// pollInterval is how often conditions are re-checked.
	pollInterval = 10 * time.Millisecond
)

// checkLeaks registers a cleanup that fails the test if goroutines are still
// running once every later-registered cleanup has finished. Call it first in
// a test so that it runs last.
func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		var err error
		waitUntil(t, "no leaked goroutines", func() bool {
			err = goleak.Find()
			return err == nil
		}, func() string { return fmt.Sprint(err) })
	})
}

// waitUntil polls cond until it holds or waitTimeout passes. describe, if
// not nil, adds detail to the failure message.
func waitUntil(t *testing.T, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			detail := ""
			if describe != nil {
				detail = ": " + describe()
			}
			t.Fatalf("timed out after %v waiting for %s%s", waitTimeout, what, detail)
		}
		<-ticker.C
	}
}

// node is a bare faultnet transport together with the address peers use to
// reach it.
type node struct {
	name string
	tr   *faultnet.Transport
	addr string
}

func newNode(t *testing.T, n *faultnet.Network, name string) *node {
	t.Helper()
	tr, err := n.Transport(name, "127.0.0.1", 0, nil)
	if err != nil {
		t.Fatalf("Transport(%q): %v", name, err)
	}
	t.Cleanup(func() {
		if err := tr.Shutdown(); err != nil {
			t.Errorf("Shutdown(%q): %v", name, err)
		}
	})
	ip, port, err := tr.FinalAdvertiseAddr("", 0)
	if err != nil {
		t.Fatalf("FinalAdvertiseAddr(%q): %v", name, err)
	}
	return &node{name: name, tr: tr, addr: net.JoinHostPort(ip.String(), strconv.Itoa(port))}
}

var payloadSeq atomic.Uint64

// payload returns a packet body no other call returns.
func payload(tag string) []byte {
	return []byte(fmt.Sprintf("%s#%d", tag, payloadSeq.Add(1)))
}

// receive waits up to d for a packet with body want on to, discarding any
// other packet. It reports whether want arrived.
func receive(to *node, want []byte, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case p := <-to.tr.PacketCh():
			if bytes.Equal(p.Buf, want) {
				return true
			}
		case <-timer.C:
			return false
		}
	}
}

// sendAndReceive sends a fresh packet from -> to, resending until it
// arrives, and fails the test if it never does. UDP may lose a packet now
// and then even on loopback, so a single send is not proof of a cut.
func sendAndReceive(t *testing.T, from, to *node) {
	t.Helper()
	msg := payload(from.name + "->" + to.name)
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if _, err := from.tr.WriteToAddress(msg, memberlist.Address{Addr: to.addr}); err != nil {
			t.Fatalf("WriteToAddress %s -> %s: %v", from.name, to.name, err)
		}
		if receive(to, msg, 100*time.Millisecond) {
			return
		}
	}
	t.Fatalf("packet %s -> %s never arrived", from.name, to.name)
}

// streamRoundTrip dials from -> to, sends a line over the stream and checks
// that to receives it.
func streamRoundTrip(t *testing.T, from, to *node) {
	t.Helper()
	conn, err := from.tr.DialAddressTimeout(memberlist.Address{Addr: to.addr, Name: to.name}, time.Second)
	if err != nil {
		t.Fatalf("dial %s -> %s: %v", from.name, to.name, err)
	}
	defer conn.Close()
	msg := payload("stream " + from.name + "->" + to.name)
	if _, err := conn.Write(msg); err != nil {
		t.Fatalf("stream write %s -> %s: %v", from.name, to.name, err)
	}

	var accepted net.Conn
	select {
	case accepted = <-to.tr.StreamCh():
	case <-time.After(waitTimeout):
		t.Fatalf("stream %s -> %s was never accepted", from.name, to.name)
	}
	defer accepted.Close()
	if err := accepted.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := readFull(accepted, got); err != nil {
		t.Fatalf("stream read %s -> %s: %v", from.name, to.name, err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("stream %s -> %s carried %q, want %q", from.name, to.name, got, msg)
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// assertPacketDropped sends one packet from -> to and checks that the
// network counted it as dropped.
func assertPacketDropped(t *testing.T, n *faultnet.Network, from, to *node) {
	t.Helper()
	before := n.Dropped()
	if _, err := from.tr.WriteTo(payload("dropped"), to.addr); err != nil {
		t.Fatalf("WriteTo %s -> %s: %v", from.name, to.name, err)
	}
	if got := n.Dropped(); got != before+1 {
		t.Fatalf("packet %s -> %s: Dropped went %d -> %d, want one more", from.name, to.name, before, got)
	}
}

// assertDialRefused dials from -> to and checks that the dial is refused
// with an error naming the cut link, and that the refusal is counted.
func assertDialRefused(t *testing.T, n *faultnet.Network, from, to *node, cutFrom, cutTo string) {
	t.Helper()
	before := n.Dropped()
	conn, err := from.tr.DialTimeout(to.addr, time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s -> %s succeeded across a cut link", from.name, to.name)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "dial" {
		t.Fatalf("dial %s -> %s: got %T %v, want a *net.OpError from dial", from.name, to.name, err, err)
	}
	want := fmt.Sprintf("faultnet: link %s -> %s is cut", cutFrom, cutTo)
	if got := opErr.Err.Error(); got != want {
		t.Fatalf("dial %s -> %s: error %q, want %q", from.name, to.name, got, want)
	}
	if got := n.Dropped(); got != before+1 {
		t.Fatalf("dial %s -> %s: Dropped went %d -> %d, want one more", from.name, to.name, before, got)
	}
}
