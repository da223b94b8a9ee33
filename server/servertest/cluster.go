// Package servertest runs in-process Tenure clusters whose nodes serve the
// public API (tenure.v1.Tenure) on their own gRPC servers, over a
// membership/faultnet network, for tests of the server, the Go client and
// the tools built on them.
//
//	c := servertest.NewCluster(t, 3, 64, 500*time.Millisecond)
//	c.Start(3)                     // node-1 … node-3, all voters
//	conn := c.Dial(t, "client", "node-1")
//	...
package servertest

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/server"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/shard/shardtest"
)

// Cluster is a shardtest.Cluster whose every node also runs a
// server.Server registered on the node's gRPC server. Set the hooks before
// adding nodes. Like shardtest.Cluster it is not safe for concurrent use.
type Cluster struct {
	*shardtest.Cluster

	// NodeConfig, when set, adjusts each node's config before it starts
	// (TLS server and dial options, say).
	NodeConfig func(*shard.Config)
	// ServerConfig, when set, adjusts each server's config. Node and a
	// DialOptions entry that dials through the cluster's network are set
	// already.
	ServerConfig func(*server.Config)
	// Register, when set, registers more services on each node's gRPC
	// server (a test's own application service).
	Register func(node *Lazy[*shard.Node], g *grpc.Server)

	t       testing.TB
	servers map[string]*server.Server
	pending map[string]*lateServer
	nodes   map[string]*Lazy[*shard.Node]
}

// NewCluster returns a cluster of no nodes yet, of which the first voters
// to be added ("node-1" …) will be voters, with P shards and leases of
// duration ld. With voters 0 the nodes lead nothing and every shard stays
// unled. Servers and nodes are stopped when the test ends.
func NewCluster(t testing.TB, voters, shards int, ld time.Duration) *Cluster {
	t.Helper()
	c := &Cluster{
		Cluster: shardtest.NewLeaseCluster(t, 0, voters, shards, ld),
		t:       t,
		servers: make(map[string]*server.Server),
		pending: make(map[string]*lateServer),
		nodes:   make(map[string]*Lazy[*shard.Node]),
	}
	if voters == 0 {
		c.Cluster.LeaseDuration = 0
	}
	c.Cluster.Configure = c.configure
	// Registered after the shardtest cluster's cleanup, so it runs first:
	// servers end their Watch streams before the nodes' gRPC servers stop.
	t.Cleanup(c.closeServers)
	return c
}

// configure gives each node a gRPC listener on the fault network (lease
// clusters already have one) and registers the late-bound server.
func (c *Cluster) configure(cfg *shard.Config) {
	if cfg.Listen == nil {
		l, err := c.Net.Listen(cfg.NodeID, "127.0.0.1:0")
		if err != nil {
			c.t.Fatalf("gRPC listener for %s: %v", cfg.NodeID, err)
		}
		// The node's gRPC server closes it when the node stops.
		cfg.GRPCAddr = l.Addr().String()
		cfg.GRPCListen = ""
		cfg.Listen = func(string) (net.Listener, error) { return l, nil }
	}
	late := &lateServer{}
	lazy := &Lazy[*shard.Node]{}
	c.pending[cfg.NodeID] = late
	c.nodes[cfg.NodeID] = lazy
	register := c.Register
	cfg.RegisterGRPC = func(g *grpc.Server) {
		tenurev1.RegisterTenureServer(g, late)
		if register != nil {
			register(lazy, g)
		}
	}
	if c.NodeConfig != nil {
		c.NodeConfig(cfg)
	}
}

// Start adds nodes "node-1" … "node-n" that are not live yet.
func (c *Cluster) Start(n int) {
	c.t.Helper()
	for i := 1; i <= n; i++ {
		if id := fmt.Sprintf("node-%d", i); c.Node(id) == nil {
			c.Add(id)
		}
	}
}

// Add starts node id and its server, and returns the node.
func (c *Cluster) Add(id string) *shard.Node {
	c.t.Helper()
	n := c.Cluster.Add(id)
	cfg := server.Config{
		Node:        n,
		Logger:      shardtest.Logger().With("node", id, "component", "server"),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(c.Net.Dialer(id))},
	}
	if c.ServerConfig != nil {
		c.ServerConfig(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		c.t.Fatalf("server for %s: %v", id, err)
	}
	c.servers[id] = srv
	c.pending[id].srv.Store(srv)
	c.nodes[id].Set(n)
	return n
}

// Server returns node id's server, or nil.
func (c *Cluster) Server(id string) *server.Server { return c.servers[id] }

// Addr returns the gRPC address node id serves the API on.
func (c *Cluster) Addr(id string) string { return c.Node(id).Config().GRPCAddr }

// Crash closes id's server, ending its Watch streams, and stops the node
// without leaving, as a daemon killed with SIGKILL looks to the cluster.
func (c *Cluster) Crash(id string) {
	if srv := c.servers[id]; srv != nil {
		srv.Close()
		delete(c.servers, id)
	}
	c.Cluster.Crash(id)
}

// Restart starts id again with its server (a new process with the same ID
// and, for a voter, the same data directory and address).
func (c *Cluster) Restart(id string) *shard.Node {
	c.t.Helper()
	return c.Add(id)
}

// Leave closes id's server and makes the node leave gracefully.
func (c *Cluster) Leave(id string) {
	c.t.Helper()
	if srv := c.servers[id]; srv != nil {
		srv.Close()
		delete(c.servers, id)
	}
	c.Cluster.Leave(id)
}

// StopAll closes every server and stops every node.
func (c *Cluster) StopAll() {
	c.closeServers()
	c.Cluster.StopAll()
}

func (c *Cluster) closeServers() {
	for id, srv := range c.servers {
		srv.Close()
		delete(c.servers, id)
	}
}

// Dial returns a connection to node id's gRPC address through the
// cluster's network as node from (a name that is no node is never cut),
// closed when the test ends. opts come after plaintext credentials.
func (c *Cluster) Dial(t testing.TB, from, id string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(c.Net.Dialer(from)),
	}, opts...)
	conn, err := grpc.NewClient("passthrough:///"+c.Addr(id), opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", id, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Lazy holds a value set once after the holder was handed out: a node's
// gRPC services are registered while the node starts, before the node is
// returned.
type Lazy[T any] struct{ p atomic.Pointer[T] }

// Set sets the value.
func (l *Lazy[T]) Set(v T) { l.p.Store(&v) }

// Get returns the value and whether it is set.
func (l *Lazy[T]) Get() (T, bool) {
	if p := l.p.Load(); p != nil {
		return *p, true
	}
	var zero T
	return zero, false
}

// lateServer is registered on a node's gRPC server while the node starts
// and passes calls to the server.Server created once the node exists.
// Until then, and after the server is gone, it answers UNAVAILABLE.
type lateServer struct {
	tenurev1.UnimplementedTenureServer
	srv atomic.Pointer[server.Server]
}

var errNoServer = status.Error(codes.Unavailable, "servertest: the node's server is not running yet")

func (l *lateServer) get() (*server.Server, error) {
	if s := l.srv.Load(); s != nil {
		return s, nil
	}
	return nil, errNoServer
}

func (l *lateServer) Lookup(ctx context.Context, r *tenurev1.LookupRequest) (*tenurev1.LookupReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Lookup(ctx, r)
}

func (l *lateServer) BatchLookup(ctx context.Context, r *tenurev1.BatchLookupRequest) (*tenurev1.BatchLookupReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.BatchLookup(ctx, r)
}

func (l *lateServer) Watch(r *tenurev1.WatchRequest, st grpc.ServerStreamingServer[tenurev1.WatchEvent]) error {
	s, err := l.get()
	if err != nil {
		return err
	}
	return s.Watch(r, st)
}

func (l *lateServer) ListShards(ctx context.Context, r *tenurev1.ListShardsRequest) (*tenurev1.ListShardsReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.ListShards(ctx, r)
}

func (l *lateServer) GetShard(ctx context.Context, r *tenurev1.GetShardRequest) (*tenurev1.ShardEntry, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.GetShard(ctx, r)
}

func (l *lateServer) Cluster(ctx context.Context, r *tenurev1.ClusterRequest) (*tenurev1.ClusterReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Cluster(ctx, r)
}

func (l *lateServer) Drain(ctx context.Context, r *tenurev1.DrainRequest) (*tenurev1.DrainReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Drain(ctx, r)
}

func (l *lateServer) Transfer(ctx context.Context, r *tenurev1.TransferRequest) (*tenurev1.TransferReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Transfer(ctx, r)
}

func (l *lateServer) PauseRebalance(ctx context.Context, r *tenurev1.PauseRebalanceRequest) (*tenurev1.PauseRebalanceReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.PauseRebalance(ctx, r)
}

func (l *lateServer) ResumeRebalance(ctx context.Context, r *tenurev1.ResumeRebalanceRequest) (*tenurev1.ResumeRebalanceReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.ResumeRebalance(ctx, r)
}

func (l *lateServer) Plan(ctx context.Context, r *tenurev1.PlanRequest) (*tenurev1.PlanReply, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Plan(ctx, r)
}
