// Package dockere2e is Tenure's chaos suite in Docker: a 5-node cluster
// with 3 voters (compose.yaml, images FROM scratch built by the suite
// itself) goes through crashes, pauses, network partitions and restarts,
// some of them with the host's CPUs taken (CPU quotas on every container
// and a burner container: overload_test.go), while package check follows
// every node and asserts that no two nodes ever claim one (shard, epoch),
// that epochs never go back, that no shard stays without a leader beyond
// the failover bound while a voter majority is connected, and, where a
// scenario says so, that no lease ends unplanned (expired, quorum lost,
// superseded) on a node that kept a voter majority.
//
// The tests need a Docker engine and docker compose (or docker-compose),
// and sit behind the e2edocker build tag so that go test ./... stays
// Docker-free:
//
//	make e2e    # go test -tags e2edocker -count=1 -timeout 20m -v ./e2e/docker
//
// Without Docker the suite fails with a message saying what is missing; it
// never skips. See the package's tests for the scenarios and README.md
// for starting the same cluster by hand.
package dockere2e
