// Package e2e tests tenured and tenurectl end to end: the tests build both
// binaries, run clusters of real tenured processes on loopback, and drive
// them with tenurectl. It has no code of its own.
//
//	go test -count=1 ./cmd/e2e          # -short skips it
//	TENURE_E2E_RACE=1 go test ./cmd/e2e # binaries built with -race
package e2e
