package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
)

// Node is one node the Checker follows.
type Node struct {
	ID       string // its NodeID: the leader name its tables use for itself
	GRPCAddr string // host:port of its tenure.v1 service
	HTTPAddr string // host:port of its HTTP server (/status)
}

// Config configures a Checker. New copies it and fills defaults.
type Config struct {
	// Nodes are the nodes to follow, all of them. Required.
	Nodes []Node
	// Shards is the cluster's shard count. Required.
	Shards int
	// Bound is the failover bound: the longest a shard may go without a
	// leader while the cluster is expected to be available. Required.
	Bound time.Duration
	// PollInterval is how often each node's /status is polled. It is the
	// resolution of a leader's disappearance: a node that stops answering
	// is taken to have stopped leading at its last answer. Default 250 ms.
	PollInterval time.Duration
	// PollTimeout bounds each poll; a poll that takes longer counts as the
	// node being unreachable. Too short, and a node slowed by a loaded
	// machine looks gone for a moment. Default 1 s.
	PollTimeout time.Duration
	// Logger receives the followers' logs (streams that end, nodes that
	// stop answering). Default: discard.
	Logger *slog.Logger
	// DialOptions are added to the gRPC connections to the nodes (a
	// dialer, TLS credentials). Default: plaintext.
	DialOptions []grpc.DialOption
}

// Defaults of Config.
const (
	DefaultPollInterval = 250 * time.Millisecond
	DefaultPollTimeout  = time.Second
)

// Validate reports the first invalid field of c by name.
func (c Config) Validate() error {
	switch {
	case len(c.Nodes) == 0:
		return errors.New("check: Config.Nodes is empty")
	case c.Shards < 1:
		return fmt.Errorf("check: Config.Shards must be positive, got %d", c.Shards)
	case c.Bound <= 0:
		return fmt.Errorf("check: Config.Bound must be positive, got %v", c.Bound)
	case c.PollInterval < 0:
		return fmt.Errorf("check: Config.PollInterval must not be negative, got %v", c.PollInterval)
	case c.PollTimeout < 0:
		return fmt.Errorf("check: Config.PollTimeout must not be negative, got %v", c.PollTimeout)
	}
	ids := map[string]bool{}
	for i, n := range c.Nodes {
		if n.ID == "" {
			return fmt.Errorf("check: Config.Nodes[%d].ID is empty", i)
		}
		if ids[n.ID] {
			return fmt.Errorf("check: Config.Nodes[%d].ID %q is listed twice", i, n.ID)
		}
		ids[n.ID] = true
		for _, a := range []struct{ field, addr string }{{"GRPCAddr", n.GRPCAddr}, {"HTTPAddr", n.HTTPAddr}} {
			if _, _, err := net.SplitHostPort(a.addr); err != nil {
				return fmt.Errorf("check: Config.Nodes[%d].%s %q is not host:port: %w", i, a.field, a.addr, err)
			}
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.PollTimeout == 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Nodes = append([]Node(nil), c.Nodes...)
	c.DialOptions = append([]grpc.DialOption(nil), c.DialOptions...)
	return c
}

// Checker follows every node of a cluster and records what they report
// in a Recorder. Its methods are safe for concurrent use. It owns two
// goroutines per node between Start and Stop.
type Checker struct {
	cfg   Config
	log   *slog.Logger
	rec   *Recorder
	http  *http.Client
	conns map[string]*grpc.ClientConn

	mu    sync.Mutex
	views map[string]NodeView

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	startOnce sync.Once
	stopOnce  sync.Once
}

// NodeView is what the Checker last learned about one node from its
// /status page.
type NodeView struct {
	ID string
	// Reachable: the last poll answered.
	Reachable bool
	Ready     bool
	Draining  bool
	// Leads is the number of shards the node says it leads; Claims are
	// those shards with their epochs.
	Leads  int
	Claims map[uint32]uint64
	// Pending is the number of moves in the node's rebalancing plan.
	Pending int
	// Members is the number of members in its gossip view.
	Members int
	// Polled is when the last answer was asked for.
	Polled time.Time
}

// View is the cluster as the Checker sees it now.
type View struct {
	Nodes map[string]NodeView
	// Led is the number of shards that some reachable node leads.
	Led int
}

// New validates cfg and prepares the connections (they connect on first
// use). Start begins following.
func New(cfg Config) (*Checker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Checker{
		cfg:   cfg,
		log:   cfg.Logger,
		rec:   NewRecorder(cfg.Shards),
		http:  &http.Client{Timeout: cfg.PollTimeout},
		conns: make(map[string]*grpc.ClientConn),
		views: make(map[string]NodeView),
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Reconnect fast to a node that restarted: the default backoff
		// grows to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}),
		// Notice a stream to a node that vanished from the network;
		// nodes refuse pings more often than every 5 s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 2 * time.Second}),
	}, cfg.DialOptions...)
	for _, n := range cfg.Nodes {
		conn, err := grpc.NewClient("passthrough:///"+n.GRPCAddr, opts...)
		if err != nil {
			c.closeConns()
			return nil, fmt.Errorf("check: node %s: %w", n.ID, err)
		}
		c.conns[n.ID] = conn
	}
	return c, nil
}

// Start begins following every node. It returns at once.
func (c *Checker) Start() {
	c.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		c.cancel = cancel
		for _, n := range c.cfg.Nodes {
			c.wg.Add(2)
			go func() {
				defer c.wg.Done()
				c.watch(ctx, n)
			}()
			go func() {
				defer c.wg.Done()
				c.poll(ctx, n)
			}()
		}
	})
}

// Stop stops following, waits for the goroutines and closes the
// connections. Idempotent. The recorded observations stay: Report still
// works.
func (c *Checker) Stop() {
	c.stopOnce.Do(func() {
		c.startOnce.Do(func() {}) // a Checker never started stays stopped
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		c.closeConns()
		c.http.CloseIdleConnections()
	})
}

func (c *Checker) closeConns() {
	for _, conn := range c.conns {
		conn.Close()
	}
}

// Recorder returns the Recorder the Checker feeds.
func (c *Checker) Recorder() *Recorder { return c.rec }

// Expect records, as of now, whether the cluster is expected to be
// available (see Recorder.Expect).
func (c *Checker) Expect(available bool, why string) {
	c.rec.Expect(time.Now(), available, why)
}

// Begin starts a named scenario now.
func (c *Checker) Begin(name string) { c.rec.Begin(time.Now(), name) }

// Rule sets the EndRule of the current scenario (see Recorder.Rule).
func (c *Checker) Rule(rule EndRule) { c.rec.Rule(rule) }

// End ends the current scenario now.
func (c *Checker) End() { c.rec.End(time.Now()) }

// Report analyses everything recorded so far against Config.Bound.
func (c *Checker) Report() Report { return c.rec.Report(time.Now(), c.cfg.Bound) }

// View returns the cluster as the Checker sees it now.
func (c *Checker) View() View {
	c.mu.Lock()
	v := View{Nodes: make(map[string]NodeView, len(c.views))}
	for id, nv := range c.views {
		v.Nodes[id] = nv
	}
	c.mu.Unlock()
	led := map[uint32]bool{}
	for id, shards := range c.rec.Leads() {
		nv := v.Nodes[id]
		if !nv.Reachable {
			continue
		}
		nv.Leads, nv.Claims = len(shards), shards
		v.Nodes[id] = nv
		for s := range shards {
			led[s] = true
		}
	}
	v.Led = len(led)
	return v
}

// watch follows node's Watch stream, reconnecting until ctx ends.
func (c *Checker) watch(ctx context.Context, n Node) {
	api := tenurev1.NewTenureClient(c.conns[n.ID])
	for ctx.Err() == nil {
		err := c.watchOnce(ctx, api, n)
		if ctx.Err() != nil {
			return
		}
		c.rec.StreamDown(n.ID)
		c.log.Debug("watch stream ended", "node", n.ID, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// watchOnce follows one stream from a reset until it fails. It keeps the
// node's whole table and hands the Recorder the shards the node leads
// after each complete update.
func (c *Checker) watchOnce(ctx context.Context, api tenurev1.TenureClient, n Node) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.Watch(ctx, &tenurev1.WatchRequest{})
	if err != nil {
		return err
	}
	table := map[uint32]*tenurev1.ShardEntry{}
	var (
		started, reset bool
		changed        []*tenurev1.ShardEntry
	)
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		if !started {
			started, reset, changed = true, ev.GetReset_(), nil
		}
		changed = append(changed, ev.GetChanged()...)
		if ev.GetMore() {
			continue
		}
		if reset {
			clear(table)
		}
		for _, e := range changed {
			table[e.GetShard()] = e
		}
		c.rec.Table(n.ID, time.Now(), FromWatch, ev.GetVersion(), reset, selfLed(n.ID, table))
		started = false
	}
}

// selfLed returns the shards of table that node leads itself.
func selfLed(node string, table map[uint32]*tenurev1.ShardEntry) map[uint32]uint64 {
	out := map[uint32]uint64{}
	for s, e := range table {
		if e.GetLeader() == node && e.GetState() != tenurev1.ShardState_SHARD_STATE_UNLED && e.GetEpoch() > 0 {
			out[s] = e.GetEpoch()
		}
	}
	return out
}

// Status is the part of tenured's /status?format=json the Checker reads.
type Status struct {
	Node         string `json:"node"`
	Ready        bool   `json:"ready"`
	Draining     bool   `json:"draining"`
	TableVersion uint64 `json:"table_version"`
	Entries      []struct {
		Shard  uint32 `json:"shard"`
		State  string `json:"state"`
		Leader string `json:"leader"`
		Epoch  uint64 `json:"epoch"`
	} `json:"entries"`
	Transitions []struct {
		Time   time.Time `json:"time"`
		Shard  uint32    `json:"shard"`
		Epoch  uint64    `json:"epoch"`
		Event  string    `json:"event"`
		Reason string    `json:"reason"` // for "released"
		Peer   string    `json:"peer"`   // a handoff's other node
	} `json:"transitions"`
	Plan    []json.RawMessage `json:"plan"`
	Members []json.RawMessage `json:"members"`
}

// historyCapacity is how many transitions a node keeps for /status
// (shard.maxTransitions): a full list may have dropped older ones.
const historyCapacity = 256

// poll polls node's /status every PollInterval until ctx ends.
func (c *Checker) poll(ctx context.Context, n Node) {
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	url := "http://" + n.HTTPAddr + "/status?format=json"
	for {
		sent := time.Now()
		st, err := c.fetch(ctx, url)
		if ctx.Err() != nil {
			return
		}
		c.record(n, sent, st, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record feeds one poll's outcome to the Recorder and the view.
func (c *Checker) record(n Node, sent time.Time, st *Status, err error) {
	if err != nil {
		c.rec.Unreachable(n.ID, time.Now())
		c.mu.Lock()
		prev := c.views[n.ID]
		c.views[n.ID] = NodeView{ID: n.ID, Polled: sent}
		c.mu.Unlock()
		if prev.Reachable {
			c.log.Info("node stopped answering", "node", n.ID, "err", err)
		}
		return
	}
	if st.Node != n.ID {
		c.log.Warn("status page names another node", "node", n.ID, "names", st.Node)
	}
	claims := map[uint32]uint64{}
	for _, e := range st.Entries {
		if e.Leader == n.ID && e.State != "unled" && e.Epoch > 0 {
			claims[e.Shard] = e.Epoch
		}
	}
	c.rec.Table(n.ID, sent, FromStatus, st.TableVersion, false, claims)
	var (
		acqs []Acquisition
		rels []Release
	)
	for _, tr := range st.Transitions {
		switch tr.Event {
		case "acquired", "renewed":
			acqs = append(acqs, Acquisition{Shard: tr.Shard, Epoch: tr.Epoch, At: tr.Time, Event: tr.Event})
		case "released":
			rels = append(rels, Release{Shard: tr.Shard, Epoch: tr.Epoch, At: tr.Time, Reason: tr.Reason, Peer: tr.Peer})
		}
	}
	c.rec.History(n.ID, time.Now(), acqs, len(st.Transitions) >= historyCapacity)
	c.rec.Releases(n.ID, rels)
	c.mu.Lock()
	prev := c.views[n.ID]
	c.views[n.ID] = NodeView{ID: n.ID, Reachable: true, Ready: st.Ready, Draining: st.Draining,
		Leads: len(claims), Pending: len(st.Plan), Members: len(st.Members), Polled: sent}
	c.mu.Unlock()
	if !prev.Reachable {
		c.log.Info("node answers", "node", n.ID, "ready", st.Ready)
	}
}

func (c *Checker) fetch(ctx context.Context, url string) (*Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return &st, nil
}
