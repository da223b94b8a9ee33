// Package server serves Tenure's public gRPC API (tenure.v1.Tenure) from a
// running shard.Node: lookups of shard leaders for clients that are not
// members, a Watch stream of leader-table changes, the cluster's state, and
// the administrative calls operators steer it with.
//
// Every answer comes from the node's own view: the table it publishes, the
// members it sees. Administrative calls that concern another node are
// forwarded to it (Drain to the node named, Transfer to the shard's
// leader), at most one hop, so that any node can take them. The canonical
// use registers the service on the node's own gRPC server:
//
//	var srv *server.Server
//	cfg.RegisterGRPC = func(g *grpc.Server) { srv.Register(g) }
//	node, err := shard.New(cfg)
//	...
//	srv, err = server.New(server.Config{Node: node})
//	...
//	err = node.Start(ctx)
//	...
//	defer node.Stop()
//	defer srv.Close() // ends Watch streams first, so the node's gRPC server stops at once
//
// Every error leaves through tenurev1.ToStatus, the one mapping between Go
// errors and gRPC statuses.
package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// Config configures a Server. New copies it and fills defaults; it never
// modifies the caller's value.
type Config struct {
	// Node is the node whose view the server answers from. Required. The
	// server does not start or stop it.
	Node *shard.Node
	// Logger receives the server's logs (administrative calls, drains).
	// Default: discard.
	Logger *slog.Logger
	// AdminRequiresClientCert refuses Drain, Transfer, PauseRebalance and
	// ResumeRebalance unless the caller presented a client certificate
	// verified by the server's TLS config (mTLS): the gRPC server must then
	// use TLS credentials whose ClientAuth verifies certificates
	// (tls.VerifyClientCertIfGiven or tls.RequireAndVerifyClientCert);
	// without TLS every administrative call is refused. Lookups, Watch,
	// ListShards, GetShard and Cluster stay open to any caller the
	// transport admits. Forwarded calls carry this node's own credentials
	// from DialOptions, so with mTLS every node needs a client certificate
	// its peers verify.
	AdminRequiresClientCert bool
	// DialOptions are used to forward administrative calls to the node they
	// concern (TLS credentials, a dialer). Default: plaintext; credentials
	// given here replace it.
	DialOptions []grpc.DialOption
	// MaxBatchKeys bounds the keys of one BatchLookup; more is refused with
	// INVALID_ARGUMENT naming BatchLookupRequest.keys. It bounds the work
	// and the reply size of one call: 10000 entries make a reply of about
	// 0.5 MB, well under gRPC's default 4 MB message limit. Default 10000.
	MaxBatchKeys int
	// WatchHistory is how many recent table versions the server keeps the
	// changes of, so that a Watch client that reconnects, or falls behind,
	// receives what changed instead of the whole table. The history is also
	// bounded to max(2P, 4096) changed entries in all (two tables' worth of
	// memory, and at least one Watch event's worth).
	// Default 1024.
	WatchHistory int
}

// Defaults of Config.
const (
	DefaultMaxBatchKeys = 10000
	DefaultWatchHistory = 1024
)

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxBatchKeys == 0 {
		c.MaxBatchKeys = DefaultMaxBatchKeys
	}
	if c.WatchHistory == 0 {
		c.WatchHistory = DefaultWatchHistory
	}
	c.DialOptions = append([]grpc.DialOption(nil), c.DialOptions...)
	return c
}

// Validate reports the first invalid field of c by name.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Node == nil:
		return errors.New("server: Config.Node is required")
	case c.MaxBatchKeys < 1:
		return fmt.Errorf("server: Config.MaxBatchKeys must be positive, got %d", c.MaxBatchKeys)
	case c.WatchHistory < 1:
		return fmt.Errorf("server: Config.WatchHistory must be positive, got %d", c.WatchHistory)
	}
	return nil
}

// Server implements tenurev1.TenureServer on a shard.Node. Its methods are
// safe for concurrent use. It owns a goroutine that follows the node's
// table for Watch, the goroutines of open Watch streams and a drain it
// started; Close ends them all.
type Server struct {
	tenurev1.UnimplementedTenureServer

	cfg  Config
	node *shard.Node
	log  *slog.Logger
	feed *feed
	// origin names this server's table history in Watch events: versions
	// are the node's, and a restarted node counts them again from 1, so a
	// client may resume only within one origin.
	origin uint64

	// stop is closed by Close: the feed and every Watch stream end, a
	// running drain is cancelled.
	stop chan struct{}
	// drainCtx is the context of a drain this server starts; Close cancels
	// it.
	drainCtx    context.Context
	cancelDrain context.CancelFunc
	// draining is closed when this server starts a drain of its node: Watch
	// streams end (UNAVAILABLE, reason DRAINING) so that clients move to
	// other nodes while this one still answers lookups; the node's gRPC
	// server stops when the drain is done and would otherwise wait for
	// them.
	draining chan struct{}
	drained  chan struct{}

	mu           sync.Mutex
	closed       bool
	drainStarted bool
	wg           sync.WaitGroup // the feed, Watch senders, the drain
}

// New validates cfg and returns a server for cfg.Node, which may be
// started or not. The server follows the node's table from now on; call
// Close when done.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	s := &Server{
		cfg:      cfg,
		node:     cfg.Node,
		log:      cfg.Logger,
		origin:   binary.LittleEndian.Uint64(b[:]) | 1, // never 0, which means none
		stop:     make(chan struct{}),
		draining: make(chan struct{}),
		drained:  make(chan struct{}),
	}
	s.drainCtx, s.cancelDrain = context.WithCancel(context.Background())
	s.feed = newFeed(cfg.Node, cfg.WatchHistory)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.feed.run(s.stop)
	}()
	return s, nil
}

// Register registers the tenure.v1.Tenure service on g, and nothing else.
func (s *Server) Register(g *grpc.Server) { tenurev1.RegisterTenureServer(g, s) }

// Close ends the open Watch streams (with UNAVAILABLE, so that clients
// reconnect elsewhere), cancels a drain this server started and stops
// following the node's table. It waits for all of it and is idempotent.
// Later calls to Watch and Drain fail with UNAVAILABLE; the other methods
// keep answering. Call it before stopping or draining the node by other
// means than this server's Drain (a daemon on SIGTERM: Close, then
// Node.Drain): the node's gRPC server otherwise waits up to a second for
// the Watch streams when it stops.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
		s.cancelDrain()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Drained returns a channel that is closed when a drain of this node,
// started by a Drain call, has finished: the node has handed its shards
// off and stopped (or the drain was cancelled by Close). A daemon exits
// then.
func (s *Server) Drained() <-chan struct{} { return s.drained }

// track counts a goroutine the server owns, unless the server is closed.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

var errClosed = status.Error(codes.Unavailable, "server: closing; reconnect to another node")

// Lookup answers one key from the node's current table.
func (s *Server) Lookup(_ context.Context, req *tenurev1.LookupRequest) (*tenurev1.LookupReply, error) {
	key := req.GetKey()
	if err := shard.CheckKey(key); err != nil {
		return nil, tenurev1.ToStatus(fmt.Errorf("LookupRequest.key: %w", err))
	}
	return &tenurev1.LookupReply{Entry: tenurev1.EntryToPB(s.node.Lookup(key))}, nil
}

// BatchLookup answers every key from one snapshot of the node's table, so
// that the entries are consistent with each other. It refuses the whole
// batch if any key is too large, naming the first by its index.
func (s *Server) BatchLookup(_ context.Context, req *tenurev1.BatchLookupRequest) (*tenurev1.BatchLookupReply, error) {
	keys := req.GetKeys()
	if len(keys) > s.cfg.MaxBatchKeys {
		return nil, tenurev1.ToStatus(&tenurev1.FieldError{
			Field:  "BatchLookupRequest.keys",
			Reason: fmt.Sprintf("%d keys exceed the limit of %d", len(keys), s.cfg.MaxBatchKeys),
		})
	}
	for i, k := range keys {
		if err := shard.CheckKey(k); err != nil {
			return nil, tenurev1.ToStatus(fmt.Errorf("BatchLookupRequest.keys[%d]: %w", i, err))
		}
	}
	t := s.node.Table()
	// Two allocations for the whole reply instead of one per entry: a
	// batch of thousands of keys is otherwise dominated by the allocator.
	pbs := make([]tenurev1.ShardEntry, len(keys))
	out := make([]*tenurev1.ShardEntry, len(keys))
	for i, k := range keys {
		fillEntry(&pbs[i], t.Lookup(k))
		out[i] = &pbs[i]
	}
	return &tenurev1.BatchLookupReply{Entries: out}, nil
}

// fillEntry sets m to the wire form of e, as tenurev1.EntryToPB does,
// without allocating a message.
func fillEntry(m *tenurev1.ShardEntry, e shard.Entry) {
	m.Shard, m.State, m.Leader, m.Address, m.Epoch, m.Desired = uint32(e.Shard), tenurev1.StateToPB(e.State), e.Leader, e.Addr, e.Epoch, e.Desired
}

// maxPageBytes and maxUnpagedBytes are tenurev1's bounds (tests lower
// them).
var maxPageBytes, maxUnpagedBytes = tenurev1.MaxPageBytes, tenurev1.MaxUnpagedBytes

// ListShards returns a page of the entries matching the filters, in shard
// order, each page from one snapshot of the table.
func (s *Server) ListShards(_ context.Context, req *tenurev1.ListShardsRequest) (*tenurev1.ListShardsReply, error) {
	node := req.GetNode()
	if node != "" {
		if err := tenurev1.CheckNodeID("ListShardsRequest.node", node); err != nil {
			return nil, tenurev1.ToStatus(err)
		}
	}
	var state shard.State
	if req.GetFilterState() {
		if req.GetState() == tenurev1.ShardState_SHARD_STATE_UNSPECIFIED {
			// Documented: no entry has this state.
			return &tenurev1.ListShardsReply{}, nil
		}
		var err error
		if state, err = tenurev1.StateFromPB("ListShardsRequest.state", req.GetState()); err != nil {
			return nil, tenurev1.ToStatus(err)
		}
	}
	size, err := tenurev1.PageSize(req)
	if err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	start, err := tenurev1.PageStart(req)
	if err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	t := s.node.Table()
	rep := &tenurev1.ListShardsReply{}
	if int64(start) >= int64(t.Shards()) {
		return rep, nil
	}
	whole, limit := size == 0, maxPageBytes
	if whole {
		size, limit = t.Shards(), maxUnpagedBytes
	}
	bytes := 0
	for i := int(start); i < t.Shards(); i++ {
		e, _ := t.Shard(int64(i))
		if node != "" && e.Leader != node && e.Desired != node {
			continue
		}
		if req.GetFilterState() && e.State != state {
			continue
		}
		pb := tenurev1.EntryToPB(e)
		n := proto.Size(pb) + 4 // and its tag and length
		if whole && bytes+n > limit {
			return nil, tenurev1.ToStatus(tenurev1.ErrListingTooLarge(limit))
		}
		if len(rep.Entries) == size || len(rep.Entries) > 0 && bytes+n > limit {
			rep.NextPageToken = tenurev1.NextPageToken(req, uint32(i))
			break
		}
		rep.Entries = append(rep.Entries, pb)
		bytes += n
	}
	return rep, nil
}

// GetShard returns one shard's entry; NOT_FOUND (UNKNOWN_SHARD) outside
// [0, P).
func (s *Server) GetShard(_ context.Context, req *tenurev1.GetShardRequest) (*tenurev1.ShardEntry, error) {
	e, err := s.node.Table().Shard(int64(req.GetShard()))
	if err != nil {
		return nil, tenurev1.ToStatus(fmt.Errorf("GetShardRequest.shard: %w", err))
	}
	return tenurev1.EntryToPB(e), nil
}

// Cluster returns the members, voters, configuration and health in the
// node's view.
func (s *Server) Cluster(context.Context, *tenurev1.ClusterRequest) (*tenurev1.ClusterReply, error) {
	cfg := s.node.Config()
	voters := s.node.Voters()
	isVoter := make(map[string]bool, len(voters))
	rep := &tenurev1.ClusterReply{}
	for _, v := range voters {
		isVoter[v.ID] = true
		rep.Voters = append(rep.Voters, &tenurev1.Voter{Id: v.ID, Address: v.Addr})
	}
	for _, m := range s.node.Members() {
		rep.Members = append(rep.Members, &tenurev1.Member{
			NodeId:        m.NodeID,
			GossipAddress: m.Addr,
			GrpcAddress:   m.GRPCAddr,
			Zone:          m.Zone,
			Weight:        m.Weight,
			State:         tenurev1.MemberState(m.State), // the numbers are equal
			Voter:         m.Voter || isVoter[m.NodeID],
		})
	}
	// Config() fills only some defaults; fill the rest as the node's
	// components do, so that the reply shows the values in effect.
	keepAlive := cfg.KeepAliveInterval
	if keepAlive == 0 {
		keepAlive = cfg.LeaseDuration / 4 // lease.HolderConfig's default
	}
	load, rf := cfg.Load, cfg.ReplicationFactor
	if load == 0 {
		load = shard.DefaultLoad
	}
	if rf == 0 {
		rf = shard.DefaultReplicationFactor
	}
	paused := s.node.RebalancePaused()
	rep.Config = &tenurev1.ClusterConfig{
		Cluster:             cfg.Cluster,
		Shards:              uint32(cfg.Shards),
		LeaseDurationMs:     uint64(cfg.LeaseDuration.Milliseconds()),
		KeepAliveIntervalMs: uint64(keepAlive.Milliseconds()),
		ReplicationFactor:   uint32(rf),
		Load:                load,
		RebalancePaused:     paused,
	}
	t := s.node.Table()
	h := &tenurev1.Health{Serving: s.node.Ready(), TableVersion: t.Version()}
	for i := range t.Shards() {
		switch e, _ := t.Shard(int64(i)); e.State {
		case shard.Unled:
			h.ShardsUnled++
		case shard.Moving:
			h.ShardsMoving++
		}
	}
	h.VotersReachable = uint32(s.node.VotersReachable())
	h.ShardsNotConverging = uint32(s.node.NotConverging())
	health := s.node.VoterHealth()
	for i, v := range rep.Voters {
		if i < len(health) && health[i].ID == v.Id {
			v.Answered, v.RequestFailures = health[i].Answered, uint64(health[i].Failures)
		}
	}
	rep.Health = h
	return rep, nil
}
