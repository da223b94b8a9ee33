// Command tenured runs one node of a Tenure cluster: gossip membership,
// leases on the shards it should lead (granted by the cluster's voters,
// which may include this node), and the services clients and operators
// use — the tenure.v1 gRPC API, gRPC health and reflection, Prometheus
// /metrics, a /status page, and /healthz and /readyz.
//
// A three-voter cluster on three hosts, the first start of each voter:
//
//	tenured -node-id n1 -shards 1024 -seeds h1,h2,h3 \
//	    -voters n1=h1:7000,n2=h2:7000,n3=h3:7000 -data-dir /var/lib/tenure -init
//
// and the same without -init on every later start. -init makes a NEW voter
// identity, with none of the cluster's records, and logs a warning saying
// so; it refuses (exit code 3) a data directory whose store was lost, which
// its marker file voter.db.created still shows. Every flag can come
// from the environment (TENURE_NODE_ID, ...) or a JSON file (-config).
// SIGTERM drains the node (its shards are handed off first) and exits 0.
// Run tenured -h for the flags and the exit codes.
//
// The daemon itself is package daemon: an application that embeds Tenure
// runs it with its own flags, per-shard work and HTTP routes.
package main

import (
	"os"

	"github.com/tenurehq/tenure/daemon"
)

func main() { os.Exit(daemon.Main(daemon.App{})) }
