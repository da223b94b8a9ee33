package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/rebalance"
	"github.com/tenurehq/tenure/server"
	"github.com/tenurehq/tenure/shard"
	"github.com/tenurehq/tenure/voterstore"
)

// The exit codes; exitCodesHelp documents them for operators.
const (
	exitOK           = 0
	exitFailure      = 1
	exitUsage        = 2
	exitDataDir      = 3
	exitJoin         = 4
	exitIncompatible = 5
)

// exitError is a fatal error with the exit code it maps to.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitWith(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// tenureService is the health service name of the public API; "" stands
// for the whole server. Both follow Node.Ready.
const tenureService = "tenure.v1.Tenure"

// run is the daemon's main: it returns the exit code. signals delivers
// SIGTERM and SIGINT: the first drains the node and returns exitOK, a
// second one during the drain returns exitFailure at once (and leaves the
// drain running: the caller exits the process).
func (a App) run(args []string, getenv func(string) (string, bool), stdout, stderr io.Writer, signals <-chan os.Signal) int {
	o, err := loadOptions(a, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, a)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' for the flags.\n", a.name(), err, a.name())
		return exitUsage
	}
	d, err := start(o, a, stderr)
	if err != nil {
		return a.fail(stderr, err)
	}
	joined, err := d.waitJoined(signals)
	if err != nil {
		return a.fail(stderr, err)
	}
	if !joined { // a signal arrived first
		return exitOK
	}
	d.log.Info("serving", "grpc", o.GRPCAdvertise, "http", o.HTTPAddr, "gossip", d.node.GossipAddr())
	return d.serveUntilSignal(signals)
}

// fail prints a fatal error once and returns its exit code.
func (a App) fail(stderr io.Writer, err error) int {
	code := exitFailure
	var ee *exitError
	var ue *usageError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &ue):
		code = exitUsage
	}
	fmt.Fprintf(stderr, "%s: %v\n", a.name(), err)
	if code == exitUsage {
		fmt.Fprintf(stderr, "Run '%s -h' for the flags.\n", a.name())
	}
	return code
}

// daemon is one running node with its gRPC services and HTTP server. run
// owns it; shutdown stops everything it started and waits.
type daemon struct {
	o      options
	log    *slog.Logger
	reg    *prometheus.Registry
	node   *shard.Node
	api    *server.Server
	health *health.Server

	httpSrv *http.Server
	httpLis net.Listener
	mux     *http.ServeMux // the built-in routes and the application's

	app     shard.Handler // the application's, or nil
	appOnce sync.Once     // closeApp

	started  time.Time
	draining atomic.Bool

	stop     chan struct{}  // closed by shutdown: ends the health watcher
	wg       sync.WaitGroup // the health watcher and the HTTP server
	stopOnce sync.Once
}

// newLogger returns the daemon's logger on w.
func newLogger(o options, w io.Writer) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.LogLevel}
	if o.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// start checks the data directory and TLS files, starts the application
// and the node with its gRPC services and the HTTP server, and returns the
// running daemon.
func start(o options, app App, logOut io.Writer) (*daemon, error) {
	log := newLogger(o, logOut)
	switch {
	case isVoter(o):
		if err := checkDataDir(o.DataDir, o.Init); err != nil {
			return nil, err
		}
	case o.DataDir != "":
		log.Warn("-data-dir is unused: this node is not listed in -voters and keeps no state", "data_dir", o.DataDir)
		o.DataDir = ""
	}
	ts, err := loadTLS(o)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	d := &daemon{o: o, log: log, reg: prometheus.NewRegistry(), health: health.NewServer(), started: time.Now(), stop: make(chan struct{})}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.setServing(false)
	d.mux = d.httpHandler()
	if app.Start != nil {
		if d.app, err = app.Start(&Host{d: d}); err != nil {
			d.closeApp()
			return nil, err
		}
	}

	cfg := shard.Config{
		NodeID: o.NodeID, Cluster: o.Cluster, Shards: o.Shards,
		GossipAddr: o.GossipAddr, GossipAdvertiseAddr: o.GossipAdvertise, Seeds: o.Seeds,
		GRPCAddr: o.GRPCAdvertise, GRPCListen: o.GRPCAddr,
		Zone: o.Zone, Weight: o.Weight, NoShards: o.NoShards, Profile: o.Profile, GossipKeys: o.GossipKeys,
		Voters: o.Voters, LeaseDuration: o.LeaseDuration, DataDir: o.DataDir, InitVoterStore: o.Init,
		// The sticky planner moves only what the load bounds require; the
		// ring alone would also shuffle shards between members that stay.
		Planner:    rebalance.Policy{},
		Handler:    handlers{log: transitionLog{d: d}, app: d.app},
		Registerer: d.reg,
		Logger:     log,
		RegisterGRPC: func(g *grpc.Server) {
			d.api.Register(g)
			healthpb.RegisterHealthServer(g, d.health)
			if o.Reflection {
				reflection.Register(g)
			}
		},
	}
	var dialOpts []grpc.DialOption
	if ts != nil {
		cfg.GRPCServerOptions = append(cfg.GRPCServerOptions, grpc.Creds(credentials.NewTLS(ts.server)))
		if ts.mutual {
			cfg.GRPCServerOptions = append(cfg.GRPCServerOptions, certInterceptors()...)
		}
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(ts.client)))
		cfg.GRPCDialOptions = dialOpts
	}
	if d.node, err = shard.New(cfg); err != nil {
		d.closeApp()
		return nil, exitWith(exitUsage, "configuration refused: %w", err)
	}
	d.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "tenure", Name: "node_ready", ConstLabels: prometheus.Labels{"node": o.NodeID},
		Help: "1 when the node has joined, settled and is not draining (gRPC health SERVING), else 0.",
	}, func() float64 {
		if d.ready() {
			return 1
		}
		return 0
	}))
	if d.api, err = newAPI(apiConfig{node: d.node, log: log, requireCert: ts != nil && ts.mutual, dialOptions: dialOpts, maxBatchKeys: o.MaxBatchKeys}); err != nil {
		d.closeApp()
		return nil, exitWith(exitFailure, "tenure.v1 service: %w", err)
	}
	if o.HTTPAddr != "" {
		if d.httpLis, err = net.Listen("tcp", o.HTTPAddr); err != nil {
			d.api.Close()
			d.closeApp()
			return nil, exitWith(exitFailure, "-http-addr %s: %w", o.HTTPAddr, err)
		}
	}
	if err := d.node.Start(context.Background()); err != nil {
		d.node.Stop()
		d.api.Close()
		d.closeApp()
		if d.httpLis != nil {
			d.httpLis.Close()
		}
		return nil, classifyStartError(o, err)
	}
	if d.httpLis != nil {
		d.httpSrv = &http.Server{Handler: d.mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := d.httpSrv.Serve(d.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("HTTP server stopped", "err", err)
			}
		}()
	}
	d.wg.Add(1)
	go d.watchHealth()
	return d, nil
}

func isVoter(o options) bool {
	return slices.ContainsFunc(o.Voters, func(v shard.VoterAddr) bool { return v.ID == o.NodeID })
}

// checkDataDir makes sure the voter's data directory can hold its store,
// so that the operator hears about permissions before the node joins.
func checkDataDir(dir string, init bool) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !init:
		return exitWith(exitDataDir, "-data-dir %s does not exist: on this voter's very first start pass -init to create its store; "+
			"otherwise point -data-dir at the directory that holds voter.db", dir)
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return exitWith(exitDataDir, "-data-dir %s cannot be created: %w", dir, err)
		}
	case err != nil:
		return exitWith(exitDataDir, "-data-dir %s: %w", dir, err)
	case !st.IsDir():
		return exitWith(exitDataDir, "-data-dir %s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".tenured-write-check-*")
	if err != nil {
		return exitWith(exitDataDir, "-data-dir %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return nil
}

// classifyStartError maps an error of Node.Start to its exit code and adds
// what the operator should do.
func classifyStartError(o options, err error) error {
	var inc *membership.IncompatibleError
	switch {
	case errors.As(err, &inc):
		hint := ""
		switch inc.Field {
		case "shards":
			hint = ": -shards must be the same on every node, and is fixed for the life of a cluster"
		case "cluster":
			hint = ": -cluster must be the same on every node"
		case "node ID":
			hint = ": another live node uses -node-id " + o.NodeID
		}
		return exitWith(exitIncompatible, "the cluster refused this node: %w%s", err, hint)
	case errors.Is(err, voterstore.ErrNoStore):
		return exitWith(exitDataDir, "%w\n(on this voter's very first start, pass -init)", err)
	case errors.Is(err, voterstore.ErrExists):
		return exitWith(exitDataDir, "%w\n(-init is for a voter's very first start only: drop it, and TENURE_INIT, on restarts)", err)
	case errors.Is(err, voterstore.ErrReinit):
		return exitWith(exitDataDir, "%w\n(-data-dir %s held this voter's store, which is gone: the voter lost its records. "+
			"Delete %s only to re-initialise it as a NEW voter, and only when that is safe)", err, o.DataDir, voterstore.MarkerFileName)
	case errors.Is(err, voterstore.ErrWrongCluster), errors.Is(err, voterstore.ErrWrongVoter):
		return exitWith(exitDataDir, "-data-dir %s belongs to another voter or cluster: %w", o.DataDir, err)
	case errors.Is(err, voterstore.ErrLocked):
		return exitWith(exitDataDir, "-data-dir %s is in use by another process: %w", o.DataDir, err)
	case errors.Is(err, voterstore.ErrCorrupt):
		return exitWith(exitDataDir, "-data-dir %s: %w", o.DataDir, err)
	}
	return exitWith(exitFailure, "start: %w", err)
}

// otherSeeds returns the seeds that are not this node's own address.
func (d *daemon) otherSeeds() []string {
	own := []string{d.o.GossipAddr, d.o.GossipAdvertise, d.node.GossipAddr()}
	var out []string
	for _, s := range d.o.Seeds {
		if !slices.Contains(own, s) {
			out = append(out, s)
		}
	}
	return out
}

// waitJoined waits until another member is in the node's view, and
// returns an exitJoin error after -join-timeout. A node without other
// seeds starts a cluster and is joined at once. A signal meanwhile stops
// everything and returns false.
func (d *daemon) waitJoined(signals <-chan os.Signal) (bool, error) {
	seeds := d.otherSeeds()
	if len(seeds) == 0 {
		d.log.Info("no other seeds: starting a cluster")
		return true, nil
	}
	var deadline <-chan time.Time
	if d.o.JoinTimeout > 0 {
		t := time.NewTimer(d.o.JoinTimeout)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if len(d.node.Members()) > 1 {
			d.log.Info("joined the cluster", "members", len(d.node.Members()), "took", time.Since(d.started).Round(time.Millisecond))
			return true, nil
		}
		select {
		case <-tick.C:
		case <-deadline:
			d.shutdownNode()
			d.shutdown()
			return false, exitWith(exitJoin, "no seed answered within -join-timeout %v (seeds %v): check the addresses and firewalls (gossip uses UDP and TCP), "+
				"and that every node has the same -gossip-key: nodes with another key, or none, never answer", d.o.JoinTimeout, seeds)
		case sig := <-signals:
			d.log.Info("signal before joining: stopping", "signal", sig.String())
			d.shutdownNode()
			d.shutdown()
			return false, nil
		}
	}
}

// serveUntilSignal runs until the first signal, then drains; or until a
// drain that an operator started through the API (tenurectl drain) has
// stopped the node.
func (d *daemon) serveUntilSignal(signals <-chan os.Signal) int {
	var sig os.Signal
	select {
	case sig = <-signals:
	case <-d.api.Drained():
		d.log.Info("drained through the API: exiting")
		d.draining.Store(true)
		d.health.Shutdown()
		d.node.Stop()
		d.shutdown()
		return exitOK
	}
	d.log.Info("signal: draining", "signal", sig.String(), "timeout", d.o.DrainTimeout)
	d.draining.Store(true)
	// Load balancers and health-checking clients stop sending here
	// before the shards go, and Watch streams end (UNAVAILABLE) so that
	// their clients move to another node now rather than when this one
	// stops. Lookups keep being answered until the node stops.
	d.health.Shutdown()
	d.api.Close()
	if d.o.ShutdownDelay > 0 {
		d.log.Info("reporting NOT_SERVING before the drain", "delay", d.o.ShutdownDelay)
		select {
		case <-time.After(d.o.ShutdownDelay):
		case sig := <-signals:
			d.log.Warn("second signal: exiting without draining", "signal", sig.String())
			return exitFailure
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), d.o.DrainTimeout)
	defer cancel()
	done := make(chan struct{})
	began := time.Now()
	go func() {
		defer close(done)
		d.drainNode(ctx)
	}()
	select {
	case <-done:
	case sig := <-signals:
		d.log.Warn("second signal: exiting without finishing the drain", "signal", sig.String())
		return exitFailure
	}
	d.shutdown()
	d.log.Info("drained and stopped", "took", time.Since(began).Round(time.Millisecond))
	return exitOK
}

// drainNode hands the node's shards off and stops it. Node.Drain releases
// at the voters whatever it could not hand off (so that the new owners
// take over within a voter round rather than a lease), leaves gossip and
// stops the node.
func (d *daemon) drainNode(ctx context.Context) {
	if err := d.node.Drain(ctx); err != nil {
		d.log.Warn("drain incomplete: the remaining shards were released", "err", err)
	}
	d.node.Stop()
}

func (d *daemon) shutdownNode() {
	d.draining.Store(true)
	d.health.Shutdown()
	d.node.Stop()
}

// shutdown stops the application, the API, the HTTP server and the health
// watcher, after the node has stopped, and waits for them. Idempotent.
func (d *daemon) shutdown() {
	d.stopOnce.Do(func() {
		d.closeApp()
		d.api.Close()
		if d.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := d.httpSrv.Shutdown(ctx); err != nil {
				d.httpSrv.Close()
			}
		} else if d.httpLis != nil {
			d.httpLis.Close()
		}
		close(d.stop)
		d.wg.Wait()
	})
}

// ready is what gRPC health, /readyz and tenure_node_ready report.
func (d *daemon) ready() bool {
	return !d.draining.Load() && d.node.Ready()
}

func (d *daemon) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	d.health.SetServingStatus("", st)
	d.health.SetServingStatus(tenureService, st)
}

// watchHealth keeps gRPC health in step with ready: it re-checks on every
// table change and at least every 250 ms (Ready also depends on time: the
// view must settle). health.Shutdown, at drain, freezes it NOT_SERVING.
func (d *daemon) watchHealth() {
	defer d.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	last := false
	for {
		if ok := d.ready(); ok != last {
			d.setServing(ok)
			d.log.Info("readiness changed", "ready", ok)
			last = ok
		}
		select {
		case <-d.stop:
			return
		case <-t.C:
		case <-d.node.Changed():
		}
	}
}

// httpHandler returns the mux of the built-in routes; the application
// adds its own (Host.Handle) before the server starts.
func (d *daemon) httpHandler() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg, ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Liveness: the process answers. Readiness is /readyz.
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case d.draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case !d.node.Ready():
			http.Error(w, "not ready: joining or settling", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	mux.HandleFunc("GET /status", d.serveStatus)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/status", http.StatusFound)
	})
	return mux
}

// transitionLog logs every leadership change of this node with its
// reason and, for a handoff, the node the shard went to. It runs on the
// node's handler goroutine, which the node starts after d.node is set.
type transitionLog struct{ d *daemon }

func (t transitionLog) Acquired(l *shard.Lease) {
	t.d.log.Info("transition", "event", "acquired", "shard", l.Shard(), "epoch", l.Epoch())
}

func (t transitionLog) Released(l *shard.Lease, r shard.Reason) {
	attrs := []any{"event", "released", "shard", l.Shard(), "epoch", l.Epoch(), "reason", r.String()}
	// The node records the handoff's target in its history before it
	// calls the handler.
	tr := t.d.node.Transitions()
	for i := len(tr) - 1; i >= 0; i-- {
		if x := tr[i]; x.Shard == l.Shard() && x.Event == "released" {
			if x.Peer != "" {
				attrs = append(attrs, "to", x.Peer)
			}
			break
		}
	}
	t.d.log.Info("transition", attrs...)
}
