package faultnet_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tenurehq/tenure/membership/faultnet"
)

func TestGRPCIsolateAndHeal(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	b := serveHealth(t, n, "node-b")
	client := dialHealth(t, n, "node-a", b.addr)

	checkServing(t, client)

	// A server-streaming call that sits in Recv until something changes.
	watchCtx, cancelWatch := context.WithCancel(context.Background())
	defer cancelWatch()
	watch, err := client.Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch update: %v, %v; want SERVING", resp, err)
	}
	watchErr := make(chan error, 1)
	go func() {
		_, err := watch.Recv()
		watchErr <- err
	}()

	before := n.Dropped()
	n.Isolate("node-b")

	select {
	case err := <-watchErr:
		if err == nil {
			t.Fatal("Watch delivered an update across an isolated link")
		}
		t.Logf("Watch after Isolate: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("in-flight Watch was not broken by Isolate")
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("Check succeeded while node-b is isolated")
	} else {
		t.Logf("Check after Isolate: %v", err)
	}
	// Both ends of the connection were cut, and the client's redial was
	// refused.
	if got := n.Dropped(); got < before+3 {
		t.Fatalf("Dropped went %d -> %d, want at least 3 more", before, got)
	}

	n.Heal()
	waitUntil(t, "Check to succeed after Heal", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil
	}, nil)
}

func TestBlockRefusesDialsBothWays(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := listen(t, n, "node-a")
	b := listen(t, n, "node-b")

	n.Block("node-a", "node-b")
	assertConnRefused(t, n, "node-a", b, "node-a", "node-b")
	assertConnRefused(t, n, "node-b", a, "node-a", "node-b")

	n.Unblock("node-a", "node-b")
	connRoundTrip(t, n, "node-a", b)
	connRoundTrip(t, n, "node-b", a)
}

func TestIsolateCoversListenersAndConnections(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	a := listen(t, n, "node-a")
	b := listen(t, n, "node-b")

	// node-a and node-b are known through their listeners alone.
	n.Isolate("node-b")
	assertConnRefused(t, n, "node-a", b, "node-a", "node-b")
	assertConnRefused(t, n, "node-b", a, "node-b", "node-a")
	n.Heal()

	// node-c has no listener, only a connection to node-b; isolating
	// node-b cuts it too.
	c, accepted := dialAccept(t, n, "node-c", b)
	n.Isolate("node-b")
	// Each end names the direction leading away from it first.
	assertCut(t, c, "node-c", "node-b")
	assertCut(t, accepted, "node-b", "node-c")
	assertConnRefused(t, n, "node-c", b, "node-c", "node-b")
	n.Heal()
	connRoundTrip(t, n, "node-c", b)
}

func TestCutInterruptsBlockedReadsAtBothEnds(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	b := listen(t, n, "node-b")
	dialed, accepted := dialAccept(t, n, "node-a", b)

	// Delays, and blocks involving other nodes, leave the connection
	// alone.
	n.Delay("node-a", "node-b", time.Hour)
	n.Block("node-a", "node-c")
	roundTrip(t, dialed, accepted)

	readErrs := make(chan error, 2)
	for _, c := range []net.Conn{dialed, accepted} {
		go func() {
			_, err := c.Read(make([]byte, 1))
			readErrs <- err
		}()
	}

	before := n.Dropped()
	n.Block("node-a", "node-b") // one way is enough to break TCP
	for range 2 {
		select {
		case err := <-readErrs:
			assertCutErr(t, err, "read", "node-a", "node-b")
		case <-time.After(waitTimeout):
			t.Fatal("Read blocked on a cut connection did not return")
		}
	}
	if got := n.Dropped(); got != before+2 {
		t.Fatalf("Dropped went %d -> %d, want 2 more (one per end)", before, got)
	}

	// Every later call fails the same way, even after Heal: a cut
	// connection stays cut.
	n.Heal()
	for _, c := range []net.Conn{dialed, accepted} {
		_, err := c.Write([]byte("x"))
		assertCutErr(t, err, "write", "node-a", "node-b")
		_, err = c.Read(make([]byte, 1))
		assertCutErr(t, err, "read", "node-a", "node-b")
		if err := c.Close(); err != nil {
			t.Fatalf("Close of a cut connection: %v", err)
		}
	}
	assertNothingTracked(t, n)
}

func TestUnknownPeersAreNeverCut(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	b := listen(t, n, "node-b")

	// A listener the network does not know.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plainAccepted := make(chan net.Conn, 1)
	go func() {
		c, err := plain.Accept()
		if err != nil {
			close(plainAccepted)
			return
		}
		plainAccepted <- c
	}()

	n.Isolate("node-a")
	n.Isolate("node-b")

	// node-a dials an address nobody registered.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out, err := n.Dialer("node-a")(ctx, plain.Addr().String())
	if err != nil {
		t.Fatalf("dial to an unregistered address: %v", err)
	}
	defer out.Close()
	in, ok := <-plainAccepted
	if !ok {
		t.Fatal("plain listener never accepted")
	}
	defer in.Close()
	roundTrip(t, out, in)

	// A plain dialer reaches node-b's listener; the accepted end has no
	// known peer and is not cut.
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", b.addr)
	if err != nil {
		t.Fatalf("plain dial to a faultnet listener: %v", err)
	}
	defer raw.Close()
	accepted := b.accept(t)
	defer accepted.Close()
	n.Isolate("node-b")
	roundTrip(t, raw, accepted)

	if got := n.Dropped(); got != 0 {
		t.Fatalf("Dropped() = %d, want 0", got)
	}
}

func TestListenerCloseUnregisters(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()

	if _, err := n.Listen("", "127.0.0.1:0"); err == nil {
		t.Fatal("Listen accepted an empty name")
	}

	b := listen(t, n, "node-b")
	n.Block("node-a", "node-b")
	assertConnRefused(t, n, "node-a", b, "node-a", "node-b")

	if err := b.lis.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The address is no longer node-b's: the dial reaches the kernel,
	// which refuses it since nothing listens there any more.
	before := n.Dropped()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := n.Dialer("node-a")(ctx, b.addr)
	if err == nil {
		c.Close()
		t.Fatal("dial to a closed listener succeeded")
	}
	if got := n.Dropped(); got != before {
		t.Fatalf("dial to a closed listener counted as dropped (%v)", err)
	}

	// The same name can listen again, and the rules still apply to it.
	b2 := listen(t, n, "node-b")
	assertConnRefused(t, n, "node-a", b2, "node-a", "node-b")
}

func TestClosingEverythingLeaksNothing(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()

	servers := []*healthNode{serveHealth(t, n, "node-a"), serveHealth(t, n, "node-b")}
	var clients []*grpc.ClientConn
	var watches []context.CancelFunc
	for _, from := range []string{"node-a", "node-b", "node-c"} {
		for _, to := range servers {
			cc, client := newHealthClient(t, n, from, to.addr)
			clients = append(clients, cc)
			checkServing(t, client)
			ctx, cancel := context.WithCancel(context.Background())
			watches = append(watches, cancel)
			w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			if _, err := w.Recv(); err != nil {
				t.Fatalf("Watch: %v", err)
			}
		}
	}
	if conns, _ := n.TrackedConns(); conns == 0 {
		t.Fatal("no connections tracked while clients are connected")
	}

	// Cut some, leave the rest open, then tear everything down.
	n.Partition([]string{"node-a"}, []string{"node-b", "node-c"})
	for _, cancel := range watches {
		cancel()
	}
	for _, cc := range clients {
		if err := cc.Close(); err != nil {
			t.Fatalf("client Close: %v", err)
		}
	}
	for _, s := range servers {
		s.stop()
	}
	assertNothingTracked(t, n)
}

func TestConcurrentConnsAndRuleChanges(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()
	b := listen(t, n, "node-b")

	// An echo server on node-b.
	var servers sync.WaitGroup
	servers.Add(1)
	go func() {
		defer servers.Done()
		for {
			c, err := b.lis.Accept()
			if err != nil {
				return
			}
			servers.Add(1)
			go func() {
				defer servers.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()

	// Each worker keeps one connection busy with echoes until it breaks,
	// then dials again, so cuts land on dials, idle connections and
	// connections blocked in Read alike.
	stop := make(chan struct{})
	var echoes atomic.Int64
	var workers sync.WaitGroup
	for _, from := range []string{"node-a", "node-c", "node-d"} {
		workers.Add(1)
		go func() {
			defer workers.Done()
			dial := n.Dialer(from)
			buf := make([]byte, 4)
			echo := func(c net.Conn) {
				defer c.Close()
				// The deadline only bounds a hang if a cut went
				// unnoticed.
				_ = c.SetDeadline(time.Now().Add(waitTimeout))
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := c.Write([]byte("ping")); err != nil {
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					echoes.Add(1)
				}
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				c, err := dial(ctx, b.addr)
				cancel()
				if err == nil {
					echo(c)
				}
			}
		}()
	}

	for i := range 80 {
		switch i % 4 {
		case 0:
			n.Block("node-a", "node-b")
		case 1:
			n.Isolate("node-b")
		case 2:
			n.Partition([]string{"node-c", "node-d"}, []string{"node-b"})
		case 3:
			n.Heal()
			// Let fresh connections carry traffic before the next cut.
			start := echoes.Load()
			waitUntil(t, "echoes after Heal", func() bool { return echoes.Load() > start+10 }, nil)
		}
	}
	close(stop)
	workers.Wait()
	t.Logf("%d echoes, %d dials refused or connection ends cut", echoes.Load(), n.Dropped())
	if err := b.lis.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	servers.Wait()
	assertNothingTracked(t, n)
}

// listenNode is a faultnet listener together with its address.
type listenNode struct {
	name string
	lis  net.Listener
	addr string
}

func listen(t *testing.T, n *faultnet.Network, name string) *listenNode {
	t.Helper()
	lis, err := n.Listen(name, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen(%q): %v", name, err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	return &listenNode{name: name, lis: lis, addr: lis.Addr().String()}
}

// accept waits for the next connection on l.
func (l *listenNode) accept(t *testing.T) net.Conn {
	t.Helper()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := l.lis.Accept()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept on %s: %v", l.name, r.err)
		}
		return r.c
	case <-time.After(waitTimeout):
		// Unblock the goroutine before failing.
		_ = l.lis.Close()
		<-ch
		t.Fatalf("%s never accepted a connection", l.name)
		return nil
	}
}

// dialAccept dials from -> to and returns both ends of the connection,
// closed when the test ends.
func dialAccept(t *testing.T, n *faultnet.Network, from string, to *listenNode) (dialed, accepted net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	dialed, err := n.Dialer(from)(ctx, to.addr)
	if err != nil {
		t.Fatalf("dial %s -> %s: %v", from, to.name, err)
	}
	t.Cleanup(func() { _ = dialed.Close() })
	accepted = to.accept(t)
	t.Cleanup(func() { _ = accepted.Close() })
	return dialed, accepted
}

// connRoundTrip opens a fresh connection from -> to, checks that it carries
// data both ways, and closes it.
func connRoundTrip(t *testing.T, n *faultnet.Network, from string, to *listenNode) {
	t.Helper()
	dialed, accepted := dialAccept(t, n, from, to)
	roundTrip(t, dialed, accepted)
	dialed.Close()
	accepted.Close()
}

// roundTrip sends a message each way between two ends of a connection.
func roundTrip(t *testing.T, x, y net.Conn) {
	t.Helper()
	for _, dir := range [][2]net.Conn{{x, y}, {y, x}} {
		msg := payload("conn")
		if _, err := dir[0].Write(msg); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if err := dir[1].SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(dir[1], got); err != nil {
			t.Fatalf("Read: %v", err)
		}
		if string(got) != string(msg) {
			t.Fatalf("connection carried %q, want %q", got, msg)
		}
		if err := dir[1].SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
}

// assertConnRefused dials from -> to through a Dialer and checks that the
// dial is refused with an error naming the cut link, and that the refusal
// is counted.
func assertConnRefused(t *testing.T, n *faultnet.Network, from string, to *listenNode, cutFrom, cutTo string) {
	t.Helper()
	before := n.Dropped()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := n.Dialer(from)(ctx, to.addr)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s -> %s succeeded across a cut link", from, to.name)
	}
	assertCutErr(t, err, "dial", cutFrom, cutTo)
	if got := n.Dropped(); got != before+1 {
		t.Fatalf("dial %s -> %s: Dropped went %d -> %d, want one more", from, to.name, before, got)
	}
}

// assertCut checks that reading from c fails because the link is cut. The
// read deadline only keeps a broken cut from hanging the test.
func assertCut(t *testing.T, c net.Conn, cutFrom, cutTo string) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 1))
	assertCutErr(t, err, "read", cutFrom, cutTo)
}

func assertCutErr(t *testing.T, err error, op, cutFrom, cutTo string) {
	t.Helper()
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != op {
		t.Fatalf("got %T %v, want a *net.OpError from %s", err, err, op)
	}
	want := fmt.Sprintf("faultnet: link %s -> %s is cut", cutFrom, cutTo)
	if got := opErr.Err.Error(); got != want {
		t.Fatalf("%s: error %q, want %q", op, got, want)
	}
}

// assertNothingTracked waits until the network tracks no connections.
// Servers may still be closing their ends when this is called.
func assertNothingTracked(t *testing.T, n *faultnet.Network) {
	t.Helper()
	var conns, dialed int
	waitUntil(t, "no tracked connections", func() bool {
		conns, dialed = n.TrackedConns()
		return conns == 0 && dialed == 0
	}, func() string { return fmt.Sprintf("%d ends, %d dialing ends", conns, dialed) })
}

// healthNode is a gRPC health server on a faultnet listener.
type healthNode struct {
	addr string
	stop func()
}

func serveHealth(t *testing.T, n *faultnet.Network, name string) *healthNode {
	t.Helper()
	lis, err := n.Listen(name, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen(%q): %v", name, err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()

	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Stop()
			if err := <-served; err != nil {
				t.Errorf("Serve(%q): %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return &healthNode{addr: lis.Addr().String(), stop: stop}
}

// newHealthClient connects node from to a health server at addr through
// the network. Reconnection backoff is kept short so that tests notice a
// healed link quickly.
func newHealthClient(t *testing.T, n *faultnet.Network, from, addr string) (*grpc.ClientConn, healthpb.HealthClient) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(n.Dialer(from)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  10 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   100 * time.Millisecond,
			},
			MinConnectTimeout: time.Second,
		}),
	)
	if err != nil {
		t.Fatalf("NewClient %s -> %s: %v", from, addr, err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc, healthpb.NewHealthClient(cc)
}

func dialHealth(t *testing.T, n *faultnet.Network, from, addr string) healthpb.HealthClient {
	t.Helper()
	_, client := newHealthClient(t, n, from, addr)
	return client
}

func checkServing(t *testing.T, client healthpb.HealthClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: status %v, want SERVING", resp.GetStatus())
	}
}
