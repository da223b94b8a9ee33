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
// and the same without -init on every later start. Every flag can come
// from the environment (TENURE_NODE_ID, ...) or a JSON file (-config).
// SIGTERM drains the node (its shards are handed off first) and exits 0.
// Run tenured -h for the flags and the exit codes.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Buffered for two: the second signal must reach run while it drains.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr, signals))
}
