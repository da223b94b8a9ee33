package daemon

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenurehq/tenure/shard"
)

// App is what an application adds to the daemon: its name, its own flags,
// its work on the shards the node leads, and its own HTTP routes. The zero
// App is tenured itself. Every field is optional.
type App struct {
	// Name is the command's name in messages and in the usage. Default
	// "tenured".
	Name string
	// About is the usage paragraph that says what the command does, after
	// the synopsis. Default: tenured's.
	About string
	// Flags declares the application's flags on the daemon's flag set.
	// They work like the daemon's own: each also comes from the
	// environment (TENURE_ and the name in upper case, '-' as '_') and
	// from the -config file, and shows in -h. Their names must not clash
	// with the daemon's (flag panics if they do).
	Flags func(fs *flag.FlagSet)
	// Start runs once the flags are parsed and checked, before the node
	// starts. It checks the application's flags, registers its HTTP routes
	// (Host.Handle) and returns the Handler that does the application's
	// work on each shard the node leads. The Handler may also implement
	// shard.Preparer and shard.Quiescer (called during graceful handoffs)
	// and io.Closer, which the daemon calls once the node has stopped, so
	// that the application's goroutines end before Run returns. A nil
	// Handler adds no work. An error from Usagef exits with the usage exit
	// code (2); any other error exits 1.
	Start func(h *Host) (shard.Handler, error)
}

func (a App) name() string {
	if a.Name == "" {
		return "tenured"
	}
	return a.Name
}

// Host is what App.Start gets from the daemon: the node's identity, its
// logger and metrics registry, a place for HTTP routes, and the node
// itself once it runs.
type Host struct {
	d *daemon
}

// NodeID returns this node's ID (-node-id).
func (h *Host) NodeID() string { return h.d.o.NodeID }

// Logger returns the daemon's logger (-log-level, -log-format).
func (h *Host) Logger() *slog.Logger { return h.d.log }

// Registerer returns the registry that /metrics serves.
func (h *Host) Registerer() prometheus.Registerer { return h.d.reg }

// LeaseDuration returns the cluster's lease duration (-lease-duration).
func (h *Host) LeaseDuration() time.Duration { return h.d.o.LeaseDuration }

// Node returns the running node. It is nil while App.Start runs; the
// Handler's methods and HTTP handlers may call it.
func (h *Host) Node() *shard.Node { return h.d.node }

// Handle registers an HTTP route on the daemon's HTTP server (-http-addr),
// next to /metrics, /status, /healthz and /readyz; pattern is an
// http.ServeMux pattern such as "GET /ledger". Like ServeMux.Handle, it
// panics if the pattern conflicts with one already registered. Routes are
// served from the moment the node has started (before it has joined);
// with -http-addr "" nothing is served.
func (h *Host) Handle(pattern string, handler http.Handler) { h.d.mux.Handle(pattern, handler) }

// Usagef returns an error for App.Start that exits with the usage exit
// code, like a bad flag of the daemon's own. Name the flag in the message.
func Usagef(format string, args ...any) error { return usagef(format, args...) }

// Process is what Run reads and writes: the arguments (without the
// program name), the environment, the outputs and the signals that drain
// the node.
type Process struct {
	Args      []string
	LookupEnv func(string) (string, bool)
	Stdout    io.Writer // the usage, for -h
	Stderr    io.Writer // logs and fatal errors
	// Signals delivers SIGTERM and SIGINT, buffered for two: the first
	// drains the node, a second one during the drain exits at once.
	Signals <-chan os.Signal
}

// Main runs the daemon with app as a process's main function and returns
// its exit code, for os.Exit: it reads os.Args and the environment, logs
// to stderr, and drains on SIGTERM or SIGINT.
//
//	func main() { os.Exit(daemon.Main(daemon.App{Name: "ledger", Flags: ..., Start: ...})) }
func Main(app App) int {
	// Buffered for two: the second signal must reach Run while it drains.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	return Run(app, Process{Args: os.Args[1:], LookupEnv: os.LookupEnv, Stdout: os.Stdout, Stderr: os.Stderr, Signals: signals})
}

// Run is Main with its inputs given: it runs the node until the first
// signal, drains it, and returns the exit code (see -h).
func Run(app App, p Process) int {
	return app.run(p.Args, p.LookupEnv, p.Stdout, p.Stderr, p.Signals)
}

// handlers is the node's Handler: the transition log, then the
// application's Handler, whose optional Preparer and Quiescer it passes
// on (without them, Prepare answers ready and Quiesce returns at once,
// which is what the node does for a Handler that lacks them).
type handlers struct {
	log transitionLog
	app shard.Handler
}

func (h handlers) Acquired(l *shard.Lease) {
	h.log.Acquired(l)
	if h.app != nil {
		h.app.Acquired(l)
	}
}

func (h handlers) Released(l *shard.Lease, r shard.Reason) {
	h.log.Released(l, r)
	if h.app != nil {
		h.app.Released(l, r)
	}
}

func (h handlers) Prepare(ctx context.Context, s uint32, epoch uint64) error {
	if p, ok := h.app.(shard.Preparer); ok {
		return p.Prepare(ctx, s, epoch)
	}
	return nil
}

func (h handlers) Quiesce(ctx context.Context, l *shard.Lease) error {
	if q, ok := h.app.(shard.Quiescer); ok {
		return q.Quiesce(ctx, l)
	}
	return nil
}

// closeApp calls the application Handler's Close, if it has one, once.
func (d *daemon) closeApp() {
	d.appOnce.Do(func() {
		c, ok := d.app.(io.Closer)
		if !ok {
			return
		}
		if err := c.Close(); err != nil {
			d.log.Warn("application close", "err", err)
		}
	})
}

var _ interface {
	shard.Handler
	shard.Preparer
	shard.Quiescer
} = handlers{}
