// Package client is the Go client of Tenure for processes that are not
// members of a cluster: it keeps a copy of a node's leader table current
// from the node's Watch stream and answers lookups from it locally, in
// nanoseconds and without allocating; it runs work on a shard's leader,
// following "not leader" redirects and retrying across leadership changes;
// and it offers the administrative calls tools need.
//
//	c, err := client.New(client.Config{Endpoints: []string{"10.0.0.1:7000", "10.0.0.2:7000"}})
//	if err != nil { ... }
//	defer c.Close()
//	if err := c.WaitReady(ctx); err != nil { ... }
//	e, _ := c.LookupString("customer/1001") // e.Leader, e.Addr, e.Epoch
//	err = c.Do(ctx, []byte("customer/1001"), func(ctx context.Context, e shard.Entry) error {
//		return callMyService(ctx, e.Addr, e.Epoch) // returns tenurev1.ToStatus(err) errors
//	})
//
// The client follows one endpoint at a time and moves to the next when the
// stream fails (the node stopped, drains, or is unreachable), with
// exponential backoff once every endpoint has failed in a row.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tenurehq/tenure/shard"
)

// Config configures a Client. New copies it and fills defaults; it never
// modifies the caller's value.
type Config struct {
	// Endpoints are the gRPC addresses (host:port) of nodes serving the
	// public API, tried in order. Any node will do: each answers from its
	// own view and forwards administrative calls. Required.
	Endpoints []string
	// DialOptions are added to every connection (TLS credentials, a
	// dialer, keep-alive). Default: plaintext; credentials given here
	// replace it. A keep-alive Time must not be below the nodes' enforced
	// minimum (5 s), or they close the connection.
	DialOptions []grpc.DialOption
	// Logger receives the client's logs (endpoint failures and switches).
	// Default: discard.
	Logger *slog.Logger
	// BackoffBase is the first delay before retrying after every endpoint
	// failed in a row, and before retrying work that found no leader. It
	// doubles with each further failure, with jitter. Default 50 ms.
	BackoffBase time.Duration
	// BackoffMax caps the backoff delay. Default 5 s: about how long a
	// leader's failure takes to repair, with a few leases to spare.
	BackoffMax time.Duration
	// CallTimeout bounds each unary call to a node (lookups, admin) whose
	// context has no earlier deadline. Default 10 s.
	CallTimeout time.Duration
	// Rand supplies jitter. Default: seeded from the runtime. The client
	// owns it after New: do not share it.
	Rand *rand.Rand
}

// Defaults of Config.
const (
	DefaultBackoffBase = 50 * time.Millisecond
	DefaultBackoffMax  = 5 * time.Second
	DefaultCallTimeout = 10 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	c.Endpoints = append([]string(nil), c.Endpoints...)
	c.DialOptions = append([]grpc.DialOption(nil), c.DialOptions...)
	return c
}

// Validate reports the first invalid field of c by name.
func (c Config) Validate() error {
	c = c.withDefaults()
	if len(c.Endpoints) == 0 {
		return errors.New("client: Config.Endpoints must name at least one node")
	}
	for i, ep := range c.Endpoints {
		if _, _, err := net.SplitHostPort(ep); err != nil {
			return fmt.Errorf("client: Config.Endpoints[%d] %q is not host:port: %w", i, ep, err)
		}
	}
	switch {
	case c.BackoffBase < 0:
		return fmt.Errorf("client: Config.BackoffBase must be positive, got %v", c.BackoffBase)
	case c.BackoffMax < c.BackoffBase:
		return fmt.Errorf("client: Config.BackoffMax (%v) must be at least BackoffBase (%v)", c.BackoffMax, c.BackoffBase)
	case c.CallTimeout < 0:
		return fmt.Errorf("client: Config.CallTimeout must be positive, got %v", c.CallTimeout)
	}
	return nil
}

// Client keeps a local copy of a cluster's leader table and talks to its
// nodes. Its methods are safe for concurrent use. It owns one goroutine,
// which follows the table; Close stops it.
type Client struct {
	cfg   Config
	log   *slog.Logger
	conns []*grpc.ClientConn

	dir shard.Directory // the table lookups read, swapped atomically

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every new table
	ready    chan struct{} // closed with the first table
	endpoint int           // the endpoint followed now, for unary calls
	rand     *rand.Rand    // cfg.Rand, guarded by mu

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New validates cfg, prepares a connection to every endpoint (they connect
// on first use) and starts following the first endpoint's table. Close
// releases it.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		changed: make(chan struct{}),
		ready:   make(chan struct{}),
		rand:    cfg.Rand,
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, cfg.DialOptions...)
	for _, ep := range cfg.Endpoints {
		conn, err := grpc.NewClient("passthrough:///"+ep, opts...)
		if err != nil {
			c.closeConns()
			return nil, fmt.Errorf("client: endpoint %s: %w", ep, err)
		}
		c.conns = append(c.conns, conn)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.follow(ctx)
	}()
	return c, nil
}

// Close stops following the table and closes the connections. It waits
// for the client's goroutine and is idempotent. Lookups keep answering
// from the last table; calls fail.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.cancel()
		c.wg.Wait()
		c.closeConns()
	})
	return nil
}

func (c *Client) closeConns() {
	for _, conn := range c.conns {
		conn.Close()
	}
}

// ErrNoTable is returned by calls that need the leader table before the
// client has received one.
var ErrNoTable = errors.New("client: no leader table received yet")

// Lookup returns the entry of key's shard in the local table: one hash and
// one index, no lock, no allocation. ok is false until the first table
// arrived (see WaitReady).
func (c *Client) Lookup(key []byte) (e shard.Entry, ok bool) {
	t := c.dir.Current()
	if t == nil {
		return shard.Entry{}, false
	}
	return t.Lookup(key), true
}

// LookupString is Lookup for a string key.
func (c *Client) LookupString(key string) (e shard.Entry, ok bool) {
	t := c.dir.Current()
	if t == nil {
		return shard.Entry{}, false
	}
	return t.LookupString(key), true
}

// Table returns the local table, or nil before the first one arrived. Its
// version is the version of the node it came from.
func (c *Client) Table() *shard.Table { return c.dir.Current() }

// Changed returns a channel that is closed the next time the local table
// changes. Call it again after each close to keep watching.
func (c *Client) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// WaitReady waits until the first table arrived, or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("client: waiting for the first table: %w", context.Cause(ctx))
	}
}

// publish makes t the local table.
func (c *Client) publish(t *shard.Table) {
	c.dir.Publish(t)
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.changed)
	c.changed = make(chan struct{})
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
}

// backoff returns the delay before retry number n (from 1): BackoffBase
// doubled n-1 times, capped at BackoffMax, drawn from [d/2, d] so that
// clients that failed together do not retry together.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.BackoffBase
	for i := 1; i < n && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	c.mu.Lock()
	defer c.mu.Unlock()
	return d/2 + time.Duration(c.rand.Int64N(int64(d/2)+1))
}

// sleep waits d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
