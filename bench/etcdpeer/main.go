// Command etcdpeer measures etcd's concurrency.Election the way Tenure's
// bench measures Tenure's leases, so that `go run ./bench peers` can put the
// two side by side in one run. It lives in a module of its own so that
// Tenure's module does not depend on etcd.
//
// One embedded etcd member (its WAL fsynced, its data directory on this
// disk) serves several candidates, each with its own client and one session
// lease, campaigning on one election (or -elections of them):
//
//   - failover: the leader's client is closed without revoking its session
//     (its keep-alives stop, as in a crash); timed from the crash until
//     every election it led has another leader (Campaign returned);
//   - handoff: the leader resigns; timed from the Resign call until the next
//     campaigner's Campaign returns.
//
// It prints a table and, with -json, one JSON object as its last line.
//
//	go run . -candidates 5 -ttl 1 -reps 20 -moves 200 -json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"go.etcd.io/etcd/api/v3/version"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "etcdpeer:", err)
		os.Exit(1)
	}
}

// options are the parsed flags.
type options struct {
	candidates  int
	elections   int
	ttl         int // seconds
	electionMS  uint
	heartbeatMS uint
	reps        int
	moves       int
	seed        uint64
	settle      time.Duration
	asJSON      bool
	verbose     bool
	check       bool
}

func parseOptions(args []string, errOut io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("etcdpeer", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.IntVar(&o.candidates, "candidates", 5, "campaigners, each with its own client and session")
	fs.IntVar(&o.elections, "elections", 1, "independent elections every candidate campaigns in (one session per candidate for all of them)")
	fs.IntVar(&o.ttl, "ttl", 1, "session lease TTL in whole seconds (etcd grants at least ⌈1.5 × election timeout⌉)")
	fs.UintVar(&o.electionMS, "election-ms", 500, "the member's election timeout in ms (etcd's default 1000 makes 2 s the smallest TTL; 500 allows 1 s)")
	fs.UintVar(&o.heartbeatMS, "heartbeat-ms", 100, "the member's heartbeat interval in ms (etcd's default)")
	fs.IntVar(&o.reps, "reps", 20, "leaders to crash, one after another (0: skip failover)")
	fs.IntVar(&o.moves, "moves", 200, "leaders to resign, one after another (0: skip handoff)")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the choice of elections to move and of the pause before each crash")
	fs.DurationVar(&o.settle, "settle", 0, "before a crash or resign, wait until the next in line has been queued this long (etcd syncs new watchers every 100 ms, 512 at a time); 0: no wait (default: 50 ms + 100 ms per 256 elections, rounded up: 150 ms for one)")
	fs.BoolVar(&o.asJSON, "json", false, "print a JSON summary as the last line")
	fs.BoolVar(&o.verbose, "v", false, "log the member's warnings to stderr")
	fs.BoolVar(&o.check, "check", false, "check the flags and exit (bench peers does this before its long Tenure run)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	settleSet := false
	fs.Visit(func(f *flag.Flag) { settleSet = settleSet || f.Name == "settle" })
	if !settleSet {
		o.settle = autoSettle(o.elections)
	}
	switch {
	case o.candidates < 2:
		return o, fmt.Errorf("need -candidates ≥ 2, got %d", o.candidates)
	case o.elections < 1:
		return o, fmt.Errorf("need -elections ≥ 1, got %d", o.elections)
	case o.ttl < 1:
		return o, fmt.Errorf("need -ttl ≥ 1 (whole seconds), got %d", o.ttl)
	case o.heartbeatMS == 0 || o.electionMS < 5*o.heartbeatMS:
		return o, fmt.Errorf("need -heartbeat-ms > 0 and -election-ms ≥ 5 × -heartbeat-ms, got %d and %d", o.heartbeatMS, o.electionMS)
	case o.reps < 0:
		return o, fmt.Errorf("need -reps ≥ 0, got %d", o.reps)
	case o.moves < 0:
		return o, fmt.Errorf("need -moves ≥ 0, got %d", o.moves)
	case o.settle < 0:
		return o, fmt.Errorf("need -settle ≥ 0, got %v", o.settle)
	case o.reps == 0 && o.moves == 0:
		return o, fmt.Errorf("-reps 0 and -moves 0 leave nothing to measure")
	}
	return o, nil
}

// autoSettle is the default -settle for n elections: a crash re-creates up
// to n watchers (those behind the victim's keys) and its restart n more,
// and etcd syncs 512 unsynced watchers every 100 ms; 50 ms of margin.
func autoSettle(n int) time.Duration {
	rounds := (2*n + 511) / 512
	return 50*time.Millisecond + time.Duration(rounds)*100*time.Millisecond
}

// result is the JSON summary. bench/peers.go in Tenure's module reads it:
// keep the two in step.
type result struct {
	Scenario    string         `json:"scenario"` // "etcd"
	EtcdVersion string         `json:"etcd_version"`
	Members     int            `json:"members"`
	Fsync       bool           `json:"fsync"`
	Candidates  int            `json:"candidates"`
	Elections   int            `json:"elections"`
	TTLS        int            `json:"ttl_s"`         // requested
	GrantedTTLS int64          `json:"granted_ttl_s"` // what the member granted
	ElectionMS  uint           `json:"election_ms"`
	HeartbeatMS uint           `json:"heartbeat_ms"`
	Failover    *failoverStats `json:"failover,omitempty"`
	Handoff     *handoffStats  `json:"handoff,omitempty"`
}

type failoverStats struct {
	Reps   int       `json:"reps"`
	Led    int       `json:"elections_failed_over"`
	P50MS  float64   `json:"p50_ms"`
	P99MS  float64   `json:"p99_ms"`
	MaxMS  float64   `json:"max_ms"`
	MinMS  float64   `json:"min_ms"`
	RunsMS []float64 `json:"runs_ms"`
}

type handoffStats struct {
	Moves    int     `json:"moves"`
	GapP50MS float64 `json:"gap_p50_ms"`
	GapP99MS float64 `json:"gap_p99_ms"`
	GapMaxMS float64 `json:"gap_max_ms"`
	// GapsMS is every move's gap, sorted: the distribution the report plots.
	GapsMS []float64 `json:"gaps_ms"`
	// Resign is the Resign call alone (one fsynced delete).
	ResignP50MS float64 `json:"resign_p50_ms"`
	ResignP99MS float64 `json:"resign_p99_ms"`
	// Notify is from Resign's return to the next Campaign's: the watch
	// that tells the next in line.
	NotifyP50MS float64 `json:"notify_p50_ms"`
	NotifyP99MS float64 `json:"notify_p99_ms"`
	NotifyMaxMS float64 `json:"notify_max_ms"`
	Failed      int     `json:"failed"`
	// Settled counts the moves that waited for the next in line's watch
	// (see -settle).
	Settled  int     `json:"settled"`
	SettleMS float64 `json:"settle_ms"`
	Seed     uint64  `json:"seed"`
}

func run(args []string, out io.Writer) error {
	o, err := parseOptions(args, os.Stderr)
	if err != nil || o.check {
		return err
	}
	h, err := start(o)
	if err != nil {
		return err
	}
	defer h.close()
	res := result{Scenario: "etcd", EtcdVersion: version.Version, Members: 1, Fsync: true,
		Candidates: o.candidates, Elections: o.elections, TTLS: o.ttl, GrantedTTLS: h.grantedTTL,
		ElectionMS: o.electionMS, HeartbeatMS: o.heartbeatMS}
	fmt.Fprintf(out, "etcd %s: 1 embedded member (WAL fsync, data dir %s), election timeout %d ms, heartbeat %d ms; "+
		"%d candidates (a client and a session each) on %d election(s); session TTL %d s requested, %d s granted\n",
		version.Version, h.dataDir, o.electionMS, o.heartbeatMS, o.candidates, o.elections, o.ttl, h.grantedTTL)
	if o.reps > 0 {
		fo, err := h.failover(o.reps, out)
		if err != nil {
			return fmt.Errorf("failover: %w", err)
		}
		res.Failover = &fo
	}
	if o.moves > 0 {
		ho, err := h.handoff(o.moves, out)
		if err != nil {
			return fmt.Errorf("handoff: %w", err)
		}
		res.Handoff = &ho
	}
	if o.asJSON {
		return emit(out, res)
	}
	return nil
}

// emit prints v as one JSON line.
func emit(out io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(b))
	return err
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentile returns the p-th percentile (0..100) of sorted ds, nearest
// rank, as bench/main.go computes it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}
