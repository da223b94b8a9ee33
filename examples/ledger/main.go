// Command ledger is the ledger example of Tenure: charge each subscription
// exactly once, across crashes, pauses and handoffs.
//
// Subscriptions are spread over the cluster's shards. The leader of a
// shard, while its lease is live, charges the shard's next billing period
// every -charge-every and writes each charge with its token (shard, epoch)
// to a store that refuses stale epochs (package ledgerstore, command
// ledgerstore). A new leader first fences the store at its epoch and
// reads the next period: where the old leader stopped. So a period is
// never charged twice (a deposed leader's late charge carries a lower
// epoch and is refused) and never skipped (the store accepts only the
// next period, and the new leader reads it).
//
// ledger is tenured with this work added (package daemon): it takes every
// tenured flag, environment variable and config key, plus
//
//	-store URL              the ledger store, e.g. http://store:8080 (TENURE_STORE); required
//	-charge-every duration  how often a leader charges its shard's next period (default 20ms)
//	-unsafe-ignore-lease    planted bug: keep charging with the old token for 2 s after a lease ends
//
// and serves, next to /metrics and /status, GET /ledger: this node's
// counts and the shards it charges. See README.md.
package main

import (
	"flag"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/tenurehq/tenure/daemon"
	"github.com/tenurehq/tenure/examples/ledger/ledgerstore"
	"github.com/tenurehq/tenure/shard"
)

func main() { os.Exit(daemon.Main(app())) }

// zombieFor is how long -unsafe-ignore-lease charges after a lease ends.
const zombieFor = 2 * time.Second

// app is the ledger's part of the daemon.
func app() daemon.App {
	var (
		storeURL    string
		every       time.Duration
		ignoreLease bool
	)
	return daemon.App{
		Name: "ledger",
		About: `ledger runs one Tenure node that charges the subscriptions of the shards it
leads, exactly once, into the fenced ledger store at -store (see
examples/ledger/README.md). It is tenured plus -store, -charge-every and
GET /ledger (this node's counts).`,
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&storeURL, "store", "", "base `URL` of the ledger store, such as http://store:8080 (required)")
			fs.DurationVar(&every, "charge-every", 20*time.Millisecond, "how often a leader charges the next period of its shard")
			fs.BoolVar(&ignoreLease, "unsafe-ignore-lease", false, "PLANTED BUG, for tests of the fence and the audit: keep charging with the old token for 2s after a lease ends")
		},
		Start: func(h *daemon.Host) (shard.Handler, error) {
			if storeURL == "" {
				return nil, daemon.Usagef("-store is required: the base URL of the ledger store, such as http://store:8080")
			}
			if every <= 0 || every > time.Minute {
				return nil, daemon.Usagef("-charge-every must be in (0, 1m], got %v", every)
			}
			hc := &http.Client{Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
				MaxIdleConns:        512,
				MaxIdleConnsPerHost: 512,
				IdleConnTimeout:     30 * time.Second,
			}}
			st, err := ledgerstore.NewClient(storeURL, hc)
			if err != nil {
				return nil, daemon.Usagef("-store: %v", err)
			}
			if ignoreLease {
				h.Logger().Warn("-unsafe-ignore-lease: this node keeps charging for 2s after its leases end; only the store's fence stops it")
			}
			lg := newLedger(config{
				node: h.NodeID(), store: st, every: every, hold: h.LeaseDuration(),
				ignoreLease: ignoreLease, zombieFor: zombieFor, log: h.Logger(),
			})
			h.Handle("GET /ledger", http.HandlerFunc(lg.serveCounts))
			return closeIdle{lg, hc}, nil
		},
	}
}

// closeIdle closes the HTTP client's idle connections after the ledger's
// workers have stopped.
type closeIdle struct {
	*ledger
	hc *http.Client
}

func (c closeIdle) Close() error {
	err := c.ledger.Close()
	c.hc.CloseIdleConnections()
	return err
}
