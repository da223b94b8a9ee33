// Package daemon is the Tenure node daemon, tenured, as a library: an
// application that embeds Tenure gets everything tenured does — flags,
// TENURE_* environment variables and a JSON config file; TLS, mTLS and
// gossip encryption; the tenure.v1 gRPC API, gRPC health and reflection;
// HTTP /metrics, /status, /healthz and /readyz; a drain on SIGTERM and
// tenured's exit codes — plus its own flags, its own work on each shard
// the node leads, and its own HTTP routes.
//
// cmd/tenured is daemon.Main with the zero App. An application adds a
// shard.Handler (optionally a shard.Preparer and shard.Quiescer, for
// graceful handoffs, and an io.Closer):
//
//	func main() {
//		var store string
//		os.Exit(daemon.Main(daemon.App{
//			Name:  "ledger",
//			Flags: func(fs *flag.FlagSet) { fs.StringVar(&store, "store", "", "store `URL`") },
//			Start: func(h *daemon.Host) (shard.Handler, error) {
//				if store == "" {
//					return nil, daemon.Usagef("-store is required")
//				}
//				l := newLedger(h.NodeID(), store, h.Logger())
//				h.Handle("GET /ledger", http.HandlerFunc(l.serveCounts))
//				return l, nil // Acquired starts the shard's work under l.Context()
//			},
//		}))
//	}
//
// The application's flags read TENURE_STORE from the environment and
// "store" from the config file, like the daemon's own. The daemon logs
// every transition and then calls the application's Handler, on the
// node's handler goroutine (see shard.Handler).
package daemon
