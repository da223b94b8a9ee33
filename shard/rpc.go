package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/tenurehq/tenure/lease"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
	"github.com/tenurehq/tenure/voter"
)

// rpcPlane is the node's network edge for the lease protocol: the gRPC
// server (serving the voter protocol when the node is a voter) and one
// client per voter. Requests leave without blocking the node's loop; a
// voter that cannot keep up loses requests, which the protocol tolerates
// (they are keep-alives and idempotent operations).
type rpcPlane struct {
	log      *slog.Logger
	metrics  *metrics
	cluster  string
	voterSet uint64 // lease.VoterSetID of Config.Voters, sent with every request
	timeout  time.Duration

	srv   *grpc.Server
	lis   net.Listener
	voter *voter.Server

	dialOpts []grpc.DialOption // for voters and peers

	clients []*voterClient
	byID    map[string]*voterClient
	replies chan lease.Reply
	// observe, when set, sees every request as send queues it (tests).
	observe func(lease.Envelope)

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type voterClient struct {
	id       string
	conn     *grpc.ClientConn
	rpc      voterv1.VoterClient
	queue    chan lease.Request
	inflight sync.WaitGroup // calls the sender started; only the sender waits
	pending  atomic.Int64   // requests queued or in flight, for flush
	refused  atomic.Int64   // unix nanoseconds of the last refusal logged as a warning
	// trouble counts failed calls and dropped requests since the last
	// warning about them (troubleAt, unix nanoseconds).
	failed, dropped atomic.Int64
	troubleAt       atomic.Int64
	troubleTotal    atomic.Int64 // failed and dropped since start
	lastErr         atomic.Pointer[string]
}

// refusalLogEvery spaces the warnings a voter's refusals cause: a node that
// another cluster's voters, or voters with another voter set, refuse would
// otherwise warn four times a second per voter.
const refusalLogEvery = 10 * time.Second

// Per-voter limits: requests waiting to leave, and requests in flight.
const (
	voterQueue    = 64
	voterInflight = 8
)

// startRPC opens the voter store (on a voter), serves gRPC on
// cfg.GRPCListen when set — the voter protocol, what register adds and the
// application's services — and connects to the voters.
func startRPC(cfg Config, log *slog.Logger, m *metrics, register func(*grpc.Server)) (p *rpcPlane, err error) {
	p = &rpcPlane{
		log:      log,
		metrics:  m,
		cluster:  cfg.Cluster,
		voterSet: cfg.voterSet(),
		timeout:  cfg.LeaseDuration / 2,
		byID:     make(map[string]*voterClient),
		replies:  make(chan lease.Reply, 1024),
		stop:     make(chan struct{}),
	}
	plane := p // the named result is nil on the error returns
	defer func() {
		if err != nil {
			plane.close()
		}
	}()
	if cfg.isVoter() {
		p.voter, err = voter.Open(voter.Config{
			ID: cfg.NodeID, Cluster: cfg.Cluster, Voters: cfg.voterIDs(), Dir: cfg.DataDir, Init: cfg.InitVoterStore,
			LeaseDuration: cfg.LeaseDuration, Logger: log, OnCommit: m.voterCommit,
		})
		if err != nil {
			return nil, err
		}
	}
	if cfg.GRPCListen != "" && (len(cfg.Voters) > 0 || cfg.RegisterGRPC != nil) {
		listen := cfg.Listen
		if listen == nil {
			listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
		}
		if p.lis, err = listen(cfg.GRPCListen); err != nil {
			return nil, fmt.Errorf("gRPC listen on %s: %w", cfg.GRPCListen, err)
		}
		sopts := append([]grpc.ServerOption{grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: 5 * time.Second, PermitWithoutStream: true,
		})}, cfg.GRPCServerOptions...)
		p.srv = grpc.NewServer(sopts...)
		if p.voter != nil {
			p.voter.Register(p.srv)
		}
		if register != nil {
			register(p.srv)
		}
		if cfg.RegisterGRPC != nil {
			cfg.RegisterGRPC(p.srv)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if err := p.srv.Serve(p.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				log.Error("gRPC server stopped", "err", err)
			}
		}()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A restarted voter must be reachable again within a fraction of
		// a lease, not after gRPC's default two-minute backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.LeaseDuration / 4},
			MinConnectTimeout: cfg.LeaseDuration / 2,
		}),
		// Client Time must be at least the server's MinTime, or the
		// server answers with GOAWAY.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(cfg.Dial))
	}
	opts = append(opts, cfg.GRPCDialOptions...)
	p.dialOpts = opts
	for _, v := range cfg.Voters {
		conn, err := grpc.NewClient("passthrough:///"+v.Addr, opts...)
		if err != nil {
			return nil, fmt.Errorf("voter %s at %s: %w", v.ID, v.Addr, err)
		}
		c := &voterClient{id: v.ID, conn: conn, rpc: voterv1.NewVoterClient(conn), queue: make(chan lease.Request, voterQueue)}
		p.clients = append(p.clients, c)
		p.byID[v.ID] = c
		p.wg.Add(1)
		go p.sender(c)
	}
	return p, nil
}

// send queues requests for their voters without blocking.
func (p *rpcPlane) send(envs []lease.Envelope) {
	for _, e := range envs {
		if p.observe != nil {
			p.observe(e)
		}
		c := p.byID[e.To]
		if c == nil {
			continue
		}
		c.pending.Add(1)
		select {
		case c.queue <- e.Req:
		default:
			c.pending.Add(-1)
			c.dropped.Add(1)
			c.troubleTotal.Add(1)
			p.log.Debug("voter queue full; request dropped", "voter", e.To)
			p.warnTrouble(c, time.Now().UnixNano())
		}
	}
}

func (p *rpcPlane) sender(c *voterClient) {
	defer p.wg.Done()
	slots := make(chan struct{}, voterInflight)
	for {
		var req lease.Request
		select {
		case <-p.stop:
			c.inflight.Wait()
			return
		case req = <-c.queue:
		}
		select {
		case slots <- struct{}{}:
		case <-p.stop:
			c.inflight.Wait()
			return
		}
		c.inflight.Add(1)
		go func() {
			defer func() { <-slots; c.pending.Add(-1); c.inflight.Done() }()
			p.call(c, req)
		}()
	}
}

func (p *rpcPlane) call(c *voterClient, req lease.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	began := time.Now()
	pb := voterv1.RequestToPB(p.cluster, req)
	pb.VoterSet = p.voterSet
	m, err := c.rpc.Call(ctx, pb)
	p.metrics.voterCall(c.id, time.Since(began), err)
	if err != nil {
		if status.Code(err) == codes.FailedPrecondition {
			// Wrong cluster, voter set or lease duration: configuration,
			// not the network.
			// It stays so until an operator acts, so say it loudly.
			now := time.Now().UnixNano()
			if last := c.refused.Load(); now-last >= int64(refusalLogEvery) && c.refused.CompareAndSwap(last, now) {
				p.log.Warn("voter refuses this node; check Cluster, Voters and LeaseDuration against the voter's configuration", "voter", c.id, "err", err)
			}
			return
		}
		p.log.Debug("voter call failed", "voter", c.id, "err", err)
		c.failed.Add(1)
		c.troubleTotal.Add(1)
		msg := err.Error()
		c.lastErr.Store(&msg)
		p.warnTrouble(c, time.Now().UnixNano())
		return
	}
	cluster, rep, err := voterv1.ReplyFromPB(m)
	if err != nil || cluster != p.cluster || rep.Voter != c.id {
		p.log.Warn("voter reply refused", "voter", c.id, "cluster", cluster, "from", rep.Voter, "err", err)
		return
	}
	select {
	case p.replies <- rep:
	case <-p.stop:
	}
}

// warnTrouble logs, at most once per refusalLogEvery and voter, a warning
// with the calls to c that failed and the requests dropped because its
// queue was full since the last such warning: a node whose voters do not
// answer in time loses its leases, and must say why before it does.
func (p *rpcPlane) warnTrouble(c *voterClient, now int64) {
	last := c.troubleAt.Load()
	if last == 0 {
		// The first trouble starts the first interval.
		c.troubleAt.CompareAndSwap(0, now)
		return
	}
	if now-last < int64(refusalLogEvery) || !c.troubleAt.CompareAndSwap(last, now) {
		return
	}
	failed, dropped := c.failed.Swap(0), c.dropped.Swap(0)
	if failed == 0 && dropped == 0 {
		return
	}
	lastErr := ""
	if e := c.lastErr.Load(); e != nil {
		lastErr = *e
	}
	p.log.Warn("voter requests failing", "voter", c.id, "failed", failed, "dropped_queue_full", dropped,
		"over", time.Duration(now-last).Round(time.Millisecond), "timeout", p.timeout, "last_err", lastErr)
}

// failures returns, per voter, the requests that failed or were dropped
// since the node started, as "id=n" pairs in the voters' order.
func (p *rpcPlane) failures() string {
	var b strings.Builder
	for i, c := range p.clients {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", c.id, c.troubleTotal.Load())
	}
	return b.String()
}

// flush waits until every queued request has been answered (or has
// failed) or ctx ends.
func (p *rpcPlane) flush(ctx context.Context) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		idle := true
		for _, c := range p.clients {
			if c.pending.Load() > 0 {
				idle = false
			}
		}
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.stop:
			return nil
		case <-t.C:
		}
	}
}

// close stops the clients and the server and waits for their goroutines.
func (p *rpcPlane) close() {
	p.closeOnce.Do(func() {
		close(p.stop)
		if p.srv != nil {
			// Voter calls are short; a bounded graceful stop lets those in
			// flight persist and answer.
			done := make(chan struct{})
			go func() { p.srv.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(time.Second):
				p.srv.Stop()
				<-done
			}
		}
		p.wg.Wait()
		for _, c := range p.clients {
			c.conn.Close()
		}
		if p.voter != nil {
			if err := p.voter.Close(); err != nil {
				p.log.Warn("closing voter store", "err", err)
			}
		}
	})
}
