// Command tenurectl looks up shard leaders and steers a Tenure cluster
// through any of its tenured nodes:
//
//	tenurectl -addr h1:7000,h2:7000 lookup customer/1001
//	tenurectl shards -node n1 -state led -o json
//	tenurectl members
//	tenurectl watch
//	tenurectl drain n2
//	tenurectl transfer 17 n3
//	tenurectl pause; tenurectl resume
//
// -addr lists several nodes: a call goes to the first that answers. Exit
// codes are stable for scripts: 0 ok, 1 the operation failed, 2 usage
// error, 3 not found (unknown shard or node), 4 no node reachable. Run
// tenurectl -h for the flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Interrupting watch is its normal end: run sees ctx cancelled.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
