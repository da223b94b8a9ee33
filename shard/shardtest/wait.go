// Package shardtest holds helpers for testing code that embeds Tenure: a
// condition wait and an in-process cluster on loopback.
package shardtest

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"
)

// Eventually polls cond every few milliseconds until it returns true, and
// fails the test if it has not within the given time. what describes the
// condition for the failure message. Tests wait on conditions, never on
// fixed sleeps.
func Eventually(t testing.TB, within time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	if !Within(within, cond) {
		t.Fatalf("not true after %v: %s", within, fmt.Sprintf(what, args...))
	}
}

// Within polls cond until it returns true or d passes, and reports which.
func Within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// Logger returns a logger for tests: debug output when TENURE_TEST_LOG is
// set, nothing otherwise.
func Logger() *slog.Logger {
	if os.Getenv("TENURE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
