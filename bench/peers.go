package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// etcdPeerModule is the module path of bench/etcdpeer, the etcd side of the
// peers scenario. It is a module of its own so that Tenure's module does not
// depend on etcd.
const etcdPeerModule = "github.com/tenurehq/tenure/bench/etcdpeer"

// etcdResult is the JSON line bench/etcdpeer prints last (its type result:
// keep the two in step).
type etcdResult struct {
	Scenario    string `json:"scenario"`
	EtcdVersion string `json:"etcd_version"`
	Members     int    `json:"members"`
	Fsync       bool   `json:"fsync"`
	Candidates  int    `json:"candidates"`
	Elections   int    `json:"elections"`
	TTLS        int    `json:"ttl_s"`
	GrantedTTLS int64  `json:"granted_ttl_s"`
	ElectionMS  uint   `json:"election_ms"`
	HeartbeatMS uint   `json:"heartbeat_ms"`
	Failover    *struct {
		Reps   int       `json:"reps"`
		Led    int       `json:"elections_failed_over"`
		P50MS  float64   `json:"p50_ms"`
		P99MS  float64   `json:"p99_ms"`
		MaxMS  float64   `json:"max_ms"`
		MinMS  float64   `json:"min_ms"`
		RunsMS []float64 `json:"runs_ms"`
	} `json:"failover"`
	Handoff *struct {
		Moves       int       `json:"moves"`
		GapP50MS    float64   `json:"gap_p50_ms"`
		GapP99MS    float64   `json:"gap_p99_ms"`
		GapMaxMS    float64   `json:"gap_max_ms"`
		GapsMS      []float64 `json:"gaps_ms"`
		ResignP50MS float64   `json:"resign_p50_ms"`
		ResignP99MS float64   `json:"resign_p99_ms"`
		NotifyP50MS float64   `json:"notify_p50_ms"`
		NotifyP99MS float64   `json:"notify_p99_ms"`
		NotifyMaxMS float64   `json:"notify_max_ms"`
		Failed      int       `json:"failed"`
		Settled     int       `json:"settled"`
		SettleMS    float64   `json:"settle_ms"`
		Seed        uint64    `json:"seed"`
	} `json:"handoff"`
}

// tenureSide is what the peers scenario measured of Tenure.
type tenureSide struct {
	Failover failoverResult `json:"failover"`
	Handoff  handoffResult  `json:"handoff"`
}

// comparison is one row of the side-by-side table.
type comparison struct {
	Metric string  `json:"metric"`
	Tenure float64 `json:"tenure_ms"`
	Etcd   float64 `json:"etcd_ms"`
	// Ratio is Tenure / etcd; absent when etcd's figure is not positive.
	Ratio *float64 `json:"ratio,omitempty"`
}

type peersResult struct {
	Scenario string       `json:"scenario"` // "peers"
	Tenure   tenureSide   `json:"tenure"`
	Etcd     etcdResult   `json:"etcd"`
	Rows     []comparison `json:"comparison"`
	// EtcdArgs are the flags the etcd side ran with.
	EtcdArgs []string `json:"etcd_args"`
	WallS    float64  `json:"wall_s"`
	// Load is the machine's 1-minute load average when each side started
	// and at the end (absent where /proc/loadavg is not): other work on
	// the machine weighs on either side.
	Load struct {
		TenureStart float64 `json:"tenure_start,omitempty"`
		EtcdStart   float64 `json:"etcd_start,omitempty"`
		End         float64 `json:"end,omitempty"`
	} `json:"load_1m"`
}

// loadAverage returns the 1-minute load average, or 0 where it is not known.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return v
}

// runPeers measures Tenure's failover and handoff in process (the code of
// the failover and handoff scenarios), then etcd's concurrency.Election the
// same way in a subprocess built from bench/etcdpeer, and prints the two
// side by side with their ratios.
func runPeers(args []string, out io.Writer) error {
	fs := flags("peers")
	cf := addClusterFlags(fs)
	reps := fs.Int("reps", 20, "leaders to kill (Tenure) and crash (etcd), one after another")
	moves := fs.Int("moves", 200, "handoffs (Tenure: operator moves of random shards; etcd: resigns), one after another")
	seed := fs.Uint64("seed", 1, "seed of the shards and elections moved")
	candidates := fs.Int("candidates", 0, "etcd campaigners, a client and a session each (0: as many as -nodes)")
	elections := fs.Int("elections", 1, "independent etcd elections every candidate campaigns in")
	ttl := fs.Int("ttl", 0, "etcd session TTL in whole seconds (0: -lease rounded up, for a like-for-like comparison)")
	electionMS := fs.Uint("etcd-election-ms", 500, "the etcd member's election timeout in ms (etcd grants TTLs of at least ⌈1.5 × this⌉: 500 allows 1 s, etcd's default 1000 makes it 2 s)")
	settle := fs.Duration("settle", 0, "etcd: before a crash or resign, wait until the next in line has been queued this long, as etcd syncs new watchers every 100 ms (default: bench/etcdpeer's, 150 ms for up to 256 elections)")
	module := fs.String("etcd-module", "", "directory of the bench/etcdpeer module (default: found from the working directory upwards)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	sp, err := cf.spec()
	if err != nil {
		return err
	}
	switch {
	case *reps < 1:
		return fmt.Errorf("need -reps ≥ 1, got %d", *reps)
	case *moves < 1:
		return fmt.Errorf("need -moves ≥ 1, got %d", *moves)
	case *candidates < 0:
		return fmt.Errorf("need -candidates ≥ 0, got %d", *candidates)
	case *ttl < 0:
		return fmt.Errorf("need -ttl ≥ 0, got %d", *ttl)
	case *elections < 1:
		return fmt.Errorf("need -elections ≥ 1, got %d", *elections)
	case *settle < 0:
		return fmt.Errorf("need -settle ≥ 0, got %v", *settle)
	}
	if *candidates == 0 {
		*candidates = sp.nodes
	}
	if *ttl == 0 {
		*ttl = int(math.Ceil(sp.ld.Seconds()))
	}
	etcdArgs := []string{
		"-candidates", strconv.Itoa(*candidates), "-elections", strconv.Itoa(*elections),
		"-ttl", strconv.Itoa(*ttl), "-election-ms", strconv.FormatUint(uint64(*electionMS), 10),
		"-reps", strconv.Itoa(*reps), "-moves", strconv.Itoa(*moves),
		"-seed", strconv.FormatUint(*seed, 10), "-json",
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "settle" {
			etcdArgs = append(etcdArgs, "-settle", settle.String())
		}
	})
	if *cf.verbose {
		etcdArgs = append(etcdArgs, "-v")
	}

	began := time.Now()
	dir := *module
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if dir, err = findEtcdPeer(wd); err != nil {
			return err
		}
	} else if err := checkModule(dir, etcdPeerModule); err != nil {
		return fmt.Errorf("-etcd-module: %w", err)
	}
	tmp, err := os.MkdirTemp("", "tenure-peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(out, "peers: building the etcd side in %s\n", dir)
	bin, err := buildEtcdPeer(dir, tmp)
	if err != nil {
		return err
	}
	// Bad etcd flags fail now, not after the Tenure side ran for minutes.
	if err := runEtcdPeer(bin, slices.Concat(etcdArgs, []string{"-check"}), io.Discard, nil); err != nil {
		return fmt.Errorf("the etcd side refused its flags (%s): %w", strings.Join(etcdArgs, " "), err)
	}

	var res peersResult
	res.Scenario, res.EtcdArgs = "peers", etcdArgs
	res.Load.TenureStart = loadAverage()
	if res.Tenure.Failover, err = measureFailover(sp, *reps, out); err != nil {
		return fmt.Errorf("tenure failover: %w", err)
	}
	if res.Tenure.Handoff, err = measureHandoff(sp, *moves, *seed, out); err != nil {
		return fmt.Errorf("tenure handoff: %w", err)
	}
	res.Load.EtcdStart = loadAverage()
	fmt.Fprintf(out, "etcd: etcdpeer %s\n", strings.Join(etcdArgs, " "))
	var last string
	if err := runEtcdPeer(bin, etcdArgs, out, &last); err != nil {
		return err
	}
	if res.Etcd, err = parseEtcdLine(last); err != nil {
		return err
	}
	res.Load.End = loadAverage()
	res.Rows = compare(res.Tenure, res.Etcd)
	res.WallS = math.Round(time.Since(began).Seconds()*10) / 10
	printPeers(out, sp, res)
	if sp.asJSON {
		return emit(out, res)
	}
	return nil
}

// printPeers prints the setups of both sides and the side-by-side table.
func printPeers(out io.Writer, sp clusterSpec, res peersResult) {
	e, fo := res.Etcd, res.Tenure.Failover
	fmt.Fprintln(out)
	fmt.Fprintln(out, "peers: Tenure and etcd's concurrency.Election, one after the other in this run, on this machine")
	fmt.Fprintf(out, "  Tenure: %v; the voters' records in bbolt, fsynced before each reply; keep-alive every %v; one process, real gRPC on loopback\n",
		sp, sp.ld/4)
	fmt.Fprintf(out, "  etcd %s: %d embedded member (WAL fsync, data dir on this disk), election timeout %d ms; %d candidates (a client and a session each) on %d election(s); session TTL %d s (granted %d s), keep-alive every 500 ms; real gRPC on loopback\n",
		e.EtcdVersion, e.Members, e.ElectionMS, e.Candidates, e.Elections, e.TTLS, e.GrantedTTLS)
	if float64(e.GrantedTTLS) != sp.ld.Seconds() {
		fmt.Fprintf(out, "  NOTE: not like for like: Tenure's lease is %v, etcd's session TTL %d s\n", sp.ld, e.GrantedTTLS)
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "metric\tTenure\tetcd\tTenure/etcd\t")
	for _, r := range res.Rows {
		ratio := "n/a"
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *r.Ratio)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t\n", r.Metric, fmtMS(r.Tenure), fmtMS(r.Etcd), ratio)
	}
	w.Flush()
	fmt.Fprintf(out, "  failover: kill → every shard or election the victim led is led again. Tenure: %d shards over %d kills (~%d per kill, of %d). etcd: %d election(s) over %d crashes (~%d per crash, of %d; etcd moves no leadership back to a restarted candidate).\n",
		fo.ShardsMoved, fo.Reps, fo.ShardsMoved/max(fo.Reps, 1), sp.shards, e.Failover.Led, e.Failover.Reps, e.Failover.Led/max(e.Failover.Reps, 1), e.Elections)
	fmt.Fprintf(out, "  handoff gap: Tenure, the source's lease ends → the target is told it leads (a Transfer through %d voters); etcd, Resign sent → the next candidate's Campaign returns (one member). Tenure moved %d random shards to random nodes; etcd, %d resigns to the next in line (%d waited up to %.0f ms for its watch to be synced).\n",
		sp.voters, res.Tenure.Handoff.Moves, e.Handoff.Moves, e.Handoff.Settled, e.Handoff.SettleMS)
	fmt.Fprintf(out, "  violations (two valid Tenure leases at once, or a new one without a higher epoch): failover %d, handoff %d. Wall time %.1f s.\n",
		fo.Violations, res.Tenure.Handoff.Violations, res.WallS)
	if res.Load.End > 0 {
		fmt.Fprintf(out, "  load average (1 min) of the machine: %.2f when Tenure started, %.2f when etcd started, %.2f at the end (%d cores)\n",
			res.Load.TenureStart, res.Load.EtcdStart, res.Load.End, runtime.NumCPU())
	}
}

func fmtMS(ms float64) string {
	if ms >= 100 {
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.2f ms", ms)
}

// ratio returns a/b, or false when b is not positive.
func ratio(a, b float64) (float64, bool) {
	if b <= 0 || math.IsNaN(a) || math.IsInf(a, 0) {
		return 0, false
	}
	return a / b, true
}

// compare lines up the figures of both sides. Ratios are rounded to 3
// decimals.
func compare(t tenureSide, e etcdResult) []comparison {
	var rows []comparison
	add := func(metric string, tv, ev float64) {
		c := comparison{Metric: metric, Tenure: tv, Etcd: ev}
		if r, ok := ratio(tv, ev); ok {
			r = math.Round(r*1000) / 1000
			c.Ratio = &r
		}
		rows = append(rows, c)
	}
	if e.Failover != nil {
		add("failover p50", t.Failover.P50MS, e.Failover.P50MS)
		add("failover p99", t.Failover.P99MS, e.Failover.P99MS)
		add("failover max", t.Failover.MaxMS, e.Failover.MaxMS)
	}
	if e.Handoff != nil {
		add("handoff gap p50", t.Handoff.GapP50MS, e.Handoff.GapP50MS)
		add("handoff gap p99", t.Handoff.GapP99MS, e.Handoff.GapP99MS)
		add("handoff gap max", t.Handoff.GapMaxMS, e.Handoff.GapMaxMS)
	}
	return rows
}

// parseEtcdLine parses the JSON line bench/etcdpeer printed last.
func parseEtcdLine(line string) (etcdResult, error) {
	var r etcdResult
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "{") {
		return r, fmt.Errorf("the etcd side's last line is not JSON: %q", line)
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return r, fmt.Errorf("the etcd side's JSON line: %w", err)
	}
	switch {
	case r.Scenario != "etcd":
		return r, fmt.Errorf("the etcd side's JSON line has scenario %q, want \"etcd\"", r.Scenario)
	case r.Failover == nil || r.Failover.Reps < 1:
		return r, errors.New("the etcd side's JSON line has no failover figures")
	case r.Handoff == nil || r.Handoff.Moves < 1:
		return r, errors.New("the etcd side's JSON line has no handoff figures")
	}
	return r, nil
}

// findEtcdPeer returns the bench/etcdpeer module's directory: start itself
// if it is that module, else bench/etcdpeer below start or below the
// nearest of its ancestors that has it.
func findEtcdPeer(start string) (string, error) {
	if dir, ok := findModule(start, etcdPeerModule, filepath.Join("bench", "etcdpeer")); ok {
		return dir, nil
	}
	return "", fmt.Errorf("no bench/etcdpeer module (%s) in %s or any directory above it: run from Tenure's source tree or name it with -etcd-module", etcdPeerModule, start)
}

// findModule returns the directory of the module whose path is module:
// the nearest of start and its ancestors that is that module or holds it
// at sub below it (a directory is looked at before its sub). ok is false
// when there is none up to the root.
func findModule(start, module, sub string) (dir string, ok bool) {
	for dir = start; ; {
		if checkModule(dir, module) == nil {
			return dir, true
		}
		if sub != "" {
			if below := filepath.Join(dir, sub); checkModule(below, module) == nil {
				return below, true
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// checkModule reports whether dir holds the go.mod of module.
func checkModule(dir, module string) error {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			if strings.Trim(f[1], `"`) == module {
				return nil
			}
			return fmt.Errorf("%s/go.mod is module %s, want %s", dir, f[1], module)
		}
	}
	return fmt.Errorf("%s/go.mod names no module", dir)
}

// buildEtcdPeer builds the etcdpeer module in dir into tmp and returns the
// binary's path. The build's output goes to stderr.
func buildEtcdPeer(dir, tmp string) (string, error) {
	bin := filepath.Join(tmp, "etcdpeer")
	if err := goBuild(context.Background(), dir, ".", bin); err != nil {
		return "", fmt.Errorf("building the etcd side: %w", err)
	}
	return bin, nil
}

// goBuild runs `go build -o bin pkg` in dir with the go command found on
// PATH and GOWORK=off, so that the module builds as its own go.mod says
// whatever workspace surrounds it. The build's output goes to stderr;
// cancelling ctx kills the build.
func goBuild(ctx context.Context, dir, pkg, bin string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s in %s: %w", pkg, dir, err)
	}
	return nil
}

// runEtcdPeer runs bin with args, its stderr passed through. Every line of
// its stdout but the last goes to out as it comes; the last is stored in
// *last when last is not nil.
func runEtcdPeer(bin string, args []string, out io.Writer, last *string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	done := make(chan struct{})
	var prev string
	var scanErr error
	have := false
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			if have {
				fmt.Fprintln(out, prev)
			}
			prev, have = sc.Text(), true
		}
		scanErr = sc.Err()
		io.Copy(io.Discard, pr) // let the child finish if the scan stopped early
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		if have {
			fmt.Fprintln(out, prev)
		}
		return fmt.Errorf("the etcd side (%s): %w", bin, err)
	}
	if scanErr != nil {
		return fmt.Errorf("the etcd side's output: %w", scanErr)
	}
	if last != nil {
		*last = prev
	}
	return nil
}
