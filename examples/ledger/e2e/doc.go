// Package e2e tests the ledger example with real processes on loopback:
// the tests build ledger and ledgerstore, run a store and a cluster of
// ledger nodes, crash, drain and pause them, and read the store's audit.
// It has no code of its own.
//
//	go test -count=1 ./examples/ledger/e2e          # -short skips it
//	TENURE_E2E_RACE=1 go test ./examples/ledger/e2e # binaries built with -race
package e2e
