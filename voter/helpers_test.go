package voter_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tenurehq/tenure/lease"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
	"github.com/tenurehq/tenure/voter"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	cluster = "prod"
	voterID = "v1"
	ld      = 10 * time.Second
	// callTimeout bounds every call so that a hung test fails instead of
	// waiting for the test binary's timeout.
	callTimeout = 10 * time.Second
)

// fakeClock is a Config.Clock that moves only when the test advances it,
// and by step after every reading.
type fakeClock struct {
	mu   sync.Mutex
	now  time.Duration
	step time.Duration
}

func (c *fakeClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now
	c.now += c.step
	return now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now += d
}

// logWriter sends a logger's lines to t.Log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a
// logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testVoters is the voter set of testConfig, this voter included.
var testVoters = []string{"v0", voterID, "v9"}

func testConfig(t testing.TB, dir string, clock *fakeClock, init bool) voter.Config {
	return voter.Config{
		ID:            voterID,
		Cluster:       cluster,
		Voters:        testVoters,
		Dir:           dir,
		Init:          init,
		LeaseDuration: ld,
		Logger:        slog.New(slog.NewTextHandler(logWriter{t}, nil)),
		Clock:         clock.Now,
	}
}

// harness is one voter served over an in-memory gRPC connection.
type harness struct {
	srv    *voter.Server
	client voterv1.VoterClient

	g        *grpc.Server
	conn     *grpc.ClientConn
	served   chan error
	stopOnce sync.Once
}

// serve opens a voter with cfg and serves it over bufconn until the test
// ends or stop is called.
func serve(tb testing.TB, cfg voter.Config) *harness {
	tb.Helper()
	srv, err := voter.Open(cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	lis := bufconn.Listen(1 << 20)
	h := &harness{srv: srv, g: grpc.NewServer(), served: make(chan error, 1)}
	srv.Register(h.g)
	go func() { h.served <- h.g.Serve(lis) }()
	h.conn, err = grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.g.Stop()
		<-h.served
		_ = srv.Close()
		tb.Fatalf("NewClient: %v", err)
	}
	h.client = voterv1.NewVoterClient(h.conn)
	tb.Cleanup(func() { h.stop(tb) })
	return h
}

// serveNew initialises a voter in dir, serves it like serve, and advances
// clock past the grace period that every voter, a new one included,
// starts in: the voter grants from then on.
func serveNew(tb testing.TB, dir string, clock *fakeClock) *harness {
	tb.Helper()
	h := serve(tb, testConfig(tb, dir, clock, true))
	clock.Advance(ld)
	return h
}

// stop shuts the connection, the gRPC server and the voter down, in the
// order a voter process does. Idempotent.
func (h *harness) stop(tb testing.TB) {
	h.stopOnce.Do(func() {
		if err := h.conn.Close(); err != nil {
			tb.Errorf("conn.Close: %v", err)
		}
		h.g.GracefulStop()
		if err := <-h.served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
		if err := h.srv.Close(); err != nil {
			tb.Errorf("Server.Close: %v", err)
		}
	})
}

// send calls the voter with req from a node of cluster.
func (h *harness) send(cluster string, req lease.Request) (lease.Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	pb, err := h.client.Call(ctx, voterv1.RequestToPB(cluster, req))
	if err != nil {
		return lease.Reply{}, err
	}
	_, rep, err := voterv1.ReplyFromPB(pb)
	return rep, err
}

// call calls the voter with req and fails the test on any error.
func (h *harness) call(tb testing.TB, req lease.Request) lease.Reply {
	tb.Helper()
	rep, err := h.send(cluster, req)
	if err != nil {
		tb.Fatalf("Call(%+v): %v", req, err)
	}
	if len(rep.Results) != len(req.Ops) {
		tb.Fatalf("Call(%+v): %d results, want %d", req, len(rep.Results), len(req.Ops))
	}
	return rep
}

func request(from string, ops ...lease.Op) lease.Request {
	return lease.Request{From: from, Inc: 1, Ops: ops}
}

func grant(shard uint32, epoch uint64) lease.Op {
	return lease.Op{Kind: lease.OpGrant, Shard: shard, Epoch: epoch}
}

// wantResult fails the test unless res has the refusal and record given.
func wantResult(tb testing.TB, what string, res lease.Result, refusal lease.Refusal, rec lease.Record) {
	tb.Helper()
	if res.Refusal != refusal || res.Record != rec {
		tb.Fatalf("%s: refusal %v with record %+v, want %v with %+v", what, res.Refusal, res.Record, refusal, rec)
	}
}

// outcome is what a call made in the background returned.
type outcome struct {
	rep lease.Reply
	err error
}

// sendAsync sends req in the background; the channel delivers the outcome.
func (h *harness) sendAsync(req lease.Request) <-chan outcome {
	c := make(chan outcome, 1)
	go func() {
		rep, err := h.send(cluster, req)
		c <- outcome{rep, err}
	}()
	return c
}
