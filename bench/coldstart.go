package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/shard"
)

// tenureModule is the module path of Tenure itself, whose cmd/tenured the
// coldstart scenario builds.
const tenureModule = "github.com/tenurehq/tenure"

// coldstartResult is the JSON line of the coldstart scenario. A figure
// that was not measured (the cluster did not settle, or the failover did
// not finish) is -1, and Error says what did not happen.
type coldstartResult struct {
	Scenario string  `json:"scenario"` // "coldstart"
	Nodes    int     `json:"nodes"`
	Shards   int     `json:"shards"`
	LeaseMS  float64 `json:"lease_ms"`
	Profile  string  `json:"profile"`
	PollMS   float64 `json:"poll_ms"`
	TimeoutS float64 `json:"timeout_s"`
	// Starts counts the starts of the processes: above 1 when a node
	// exited before it served, as when another process took one of its
	// ports first, and the cluster was started again on new ports.
	Starts int `json:"starts"`
	// Settled: every shard was led once within -timeout. SettleMS is
	// from starting the first process to the poll that saw it.
	Settled  bool    `json:"settled"`
	SettleMS float64 `json:"settle_ms"`
	// RSSMaxMB is the largest resident set (VmRSS, MiB) of any one
	// tenured process at any poll.
	RSSMaxMB float64 `json:"rss_max_mb"`
	// VoterFailures counts the requests the nodes counted as failed
	// (tenure_voter_request_failures_total) to voters that were running:
	// all of them until the kill, and the survivors' to the other
	// survivors after it. VoterFailuresSettle is its part until the
	// cluster settled; VoterFailuresKilled the survivors' requests to the
	// killed voter after the kill, expected and not in VoterFailures.
	VoterFailures       int64 `json:"voter_failures"`
	VoterFailuresSettle int64 `json:"voter_failures_settle"`
	VoterFailuresKilled int64 `json:"voter_failures_killed"`
	// Killed led KilledShards when it was killed with SIGKILL; FailoverMS
	// is from the kill to the poll that saw the survivors lead every
	// shard.
	Killed       string  `json:"killed,omitempty"`
	KilledShards int     `json:"killed_shards"`
	FailedOver   bool    `json:"failed_over"`
	FailoverMS   float64 `json:"failover_ms"`
	// LedEnd is Σ tenure_leases_held over the running nodes at the last
	// poll; UnledEnd the most tenure_shards_unled any of them showed.
	LedEnd   int                `json:"led_end"`
	UnledEnd int                `json:"unled_end"`
	PerNode  []coldstartNodeRow `json:"per_node"`
	WallS    float64            `json:"wall_s"`
	// Load is the machine's 1-minute load average when the processes
	// started and at the end (0 where /proc/loadavg is not): other work
	// on the machine slows every figure.
	LoadStart float64 `json:"load_1m_start,omitempty"`
	LoadEnd   float64 `json:"load_1m_end,omitempty"`
	Error     string  `json:"error,omitempty"`
}

// coldstartNodeRow is one node's line of the report.
type coldstartNodeRow struct {
	ID            string  `json:"id"`
	PID           int     `json:"pid"`
	LedSettled    int     `json:"led_settled"` // leases held at the poll that saw the cluster settled
	LedEnd        int     `json:"led_end"`
	RSSMaxMB      float64 `json:"rss_max_mb"`
	VoterFailures int64   `json:"voter_failures"` // its counter at its last poll
	Killed        bool    `json:"killed,omitempty"`
}

// coldstartSpec is what the coldstart flags ask for.
type coldstartSpec struct {
	nodes, shards int
	ld            time.Duration
	profile       membership.Profile
	poll, timeout time.Duration
	asJSON        bool
}

func (sp coldstartSpec) String() string {
	return fmt.Sprintf("%d tenured processes, every one a voter; %d shards, lease %v, %s gossip; polled every %v",
		sp.nodes, sp.shards, sp.ld, sp.profile, sp.poll)
}

// runColdstart builds cmd/tenured, starts -nodes processes of it on
// loopback, every one a voter, and times how long they take to lead
// every shard; then kills the one that leads the most with SIGKILL and
// times how long the others take to lead its shards.
func runColdstart(args []string, out io.Writer) error {
	fs := flags("coldstart")
	nodes := fs.Int("nodes", 3, "tenured processes, every one a voter (3 or 5: a voter set has 1, 3 or 5 members, and the kill must leave a majority)")
	shards := fs.Int("shards", 65536, "shards P")
	ld := fs.Duration("lease", time.Second, "lease duration, passed as -lease-duration (tenured's default is 1s)")
	profile := fs.String("profile", "lan", "gossip profile, passed as -profile: lan (tenured's default), local or wan")
	poll := fs.Duration("poll", 200*time.Millisecond, "how often to read every node's /metrics and /proc/<pid>/status")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the cluster to settle, and again for the failover")
	asJSON := fs.Bool("json", false, "print a JSON summary as the last line, also when the run fails")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	p, err := membership.ParseProfile(*profile)
	if err != nil {
		return fmt.Errorf("-profile: %w", err)
	}
	switch {
	case *nodes != 3 && *nodes != 5:
		return fmt.Errorf("need -nodes 3 or 5, got %d", *nodes)
	case *shards < 1 || *shards > shard.MaxShards:
		return fmt.Errorf("need -shards in [1, %d], got %d", shard.MaxShards, *shards)
	case *ld <= 0:
		return fmt.Errorf("need -lease > 0, got %v", *ld)
	case *poll <= 0:
		return fmt.Errorf("need -poll > 0, got %v", *poll)
	case *timeout <= 0:
		return fmt.Errorf("need -timeout > 0, got %v", *timeout)
	}
	sp := coldstartSpec{nodes: *nodes, shards: *shards, ld: *ld, profile: p, poll: *poll, timeout: *timeout, asJSON: *asJSON}

	// On Ctrl-C or SIGTERM the run stops and the deferred cleanup kills
	// every process it started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()
	res, err := measureColdstart(ctx, sp, out)
	res.WallS = math.Round(time.Since(began).Seconds()*10) / 10
	if err != nil {
		res.Error = err.Error()
	}
	printColdstart(out, res)
	if sp.asJSON {
		if jerr := emit(out, res); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}

// measureColdstart runs the scenario. The result it returns is filled as
// far as the run got, also with an error.
func measureColdstart(ctx context.Context, sp coldstartSpec, out io.Writer) (coldstartResult, error) {
	res := coldstartResult{
		Scenario: "coldstart", Nodes: sp.nodes, Shards: sp.shards, LeaseMS: msOf(sp.ld), Profile: sp.profile.String(),
		PollMS: msOf(sp.poll), TimeoutS: sp.timeout.Seconds(), SettleMS: -1, FailoverMS: -1,
	}
	fmt.Fprintf(out, "coldstart: %v\n", sp)

	wd, err := os.Getwd()
	if err != nil {
		return res, err
	}
	root, ok := findModule(wd, tenureModule, "")
	if !ok {
		return res, fmt.Errorf("no %s module in %s or any directory above it: run from Tenure's source tree", tenureModule, wd)
	}
	tmp, err := os.MkdirTemp("", "tenure-coldstart-")
	if err != nil {
		return res, err
	}
	if keep := os.Getenv("TENURE_BENCH_KEEP"); keep != "" {
		// For a post-mortem: the nodes' logs and stores stay in tmp.
		fmt.Fprintf(os.Stderr, "coldstart: TENURE_BENCH_KEEP set: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	bin := filepath.Join(tmp, "tenured")
	built := time.Now()
	if err := goBuild(ctx, root, "./cmd/tenured", bin); err != nil {
		return res, fmt.Errorf("building tenured: %w", err)
	}
	fmt.Fprintf(out, "built %s/cmd/tenured in %v\n", root, time.Since(built).Round(100*time.Millisecond))

	// A node that exits before it ever served, with exit code 1 (a
	// listener failed), most likely lost a port from loopback.FreeAddr to
	// another process between the probe and its bind: start every node
	// again on new ports, a few times at most.
	const maxStarts = 3
	var c *tenuredCluster
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	var settledAt time.Time
	for {
		res.Starts++
		if c, err = startTenureds(sp, filepath.Join(tmp, fmt.Sprintf("start-%d", res.Starts)), bin, out); err != nil {
			return res, err
		}
		res.LoadStart = loadAverage()
		var settled bool
		settledAt, settled, err = c.watch(ctx, sp.timeout, "cold start", func(polls []nodePoll) bool {
			_, _, complete := coverage(polls, sp.shards)
			return complete
		})
		var ee *procExitError
		if errors.As(err, &ee) && ee.lostPort() && res.Starts < maxStarts {
			fmt.Fprintf(out, "%v; starting every node again on new ports\n", err)
			c.close()
			c = nil
			continue
		}
		if err != nil {
			c.fill(&res)
			return res, err
		}
		if !settled {
			c.fill(&res)
			return res, fmt.Errorf("the cluster did not settle within -timeout %v: %s", sp.timeout, c.describe(sp.shards))
		}
		break
	}
	res.Settled, res.SettleMS = true, msOf(settledAt.Sub(c.started))
	for _, counts := range c.failures() {
		res.VoterFailuresSettle += total(counts)
	}
	settledLed := c.led()
	fmt.Fprintf(out, "settled: every shard led once, %v after the processes started\n", settledAt.Sub(c.started).Round(time.Millisecond))

	// Let the start-up burst (every shard acquired at once, tables
	// gossiped, voter stores written) die down, as the failover scenario
	// does: the kill meets a cluster in its steady state. Polls go on
	// meanwhile, for the RSS.
	if _, _, err := c.watch(ctx, 2*sp.ld, "", func([]nodePoll) bool { return false }); err != nil {
		c.fill(&res)
		return res, err
	}
	victim, victimLed := c.mostLed()
	res.Killed, res.KilledShards = victim, victimLed
	fmt.Fprintf(out, "killing %s (SIGKILL) while it leads %d shards\n", victim, victimLed)
	killedAt, err := c.kill(victim)
	if err != nil {
		c.fill(&res)
		return res, err
	}
	at, done, err := c.watch(ctx, sp.timeout, "failover", func(polls []nodePoll) bool {
		_, _, complete := coverage(polls, sp.shards)
		return complete
	})
	c.fill(&res)
	for i := range res.PerNode {
		res.PerNode[i].LedSettled = settledLed[res.PerNode[i].ID]
	}
	if err != nil {
		return res, err
	}
	if !done {
		return res, fmt.Errorf("%s's %d shards were not all led by the others within -timeout %v after the kill: %s",
			victim, victimLed, sp.timeout, c.describe(sp.shards))
	}
	res.FailedOver, res.FailoverMS = true, msOf(at.Sub(killedAt))
	fmt.Fprintf(out, "failed over: the others lead every shard %v after the kill\n", at.Sub(killedAt).Round(time.Millisecond))
	return res, nil
}

// printColdstart prints the per-node table and the summary line.
func printColdstart(out io.Writer, res coldstartResult) {
	if len(res.PerNode) > 0 {
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "node\tpid\tled when settled\tled at end\tRSS max\tvoter failures\t\t")
		for _, n := range res.PerNode {
			settled, note := "n/a", ""
			if res.Settled {
				settled = strconv.Itoa(n.LedSettled)
			}
			if n.Killed {
				note = "killed"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%.1f MB\t%d\t%s\t\n", n.ID, n.PID, settled, n.LedEnd, n.RSSMaxMB, n.VoterFailures, note)
		}
		w.Flush()
	}
	settle, failover := "did not settle", "no kill"
	if res.Settled {
		settle = fmt.Sprintf("settled in %.0f ms", res.SettleMS)
	}
	switch {
	case res.FailedOver:
		failover = fmt.Sprintf("%.0f ms (%s killed, leading %d shards)", res.FailoverMS, res.Killed, res.KilledShards)
	case res.Killed != "":
		failover = fmt.Sprintf("not finished (%s killed, leading %d shards)", res.Killed, res.KilledShards)
	}
	failures := strconv.FormatInt(res.VoterFailures, 10)
	if res.Settled {
		failures += fmt.Sprintf(" (%d until settled)", res.VoterFailuresSettle)
	}
	if res.Killed != "" {
		failures += fmt.Sprintf(", and %d to the killed voter", res.VoterFailuresKilled)
	}
	fmt.Fprintf(out, "coldstart %d nodes, %d shards: %s, failover %s, RSS max %.1f MB, voter failures %s; at the end %d of %d shards led, at most %d unled in a node's view; load %.2f → %.2f; %d start(s), wall %.1f s\n",
		res.Nodes, res.Shards, settle, failover, res.RSSMaxMB, failures, res.LedEnd, res.Shards, res.UnledEnd,
		res.LoadStart, res.LoadEnd, res.Starts, res.WallS)
	fmt.Fprintf(out, "  settled: every shard led once (Σ tenure_leases_held over the running nodes = P, and no node's tenure_shards_unled above 0); times are those of the first poll that saw it, so up to one poll late\n")
}

// nodeMetrics is what one read of a node's /metrics says.
type nodeMetrics struct {
	led   int // tenure_leases_held: shards this node leads
	unled int // tenure_shards_unled: shards without a known leader in its table
	// voterFailures is tenure_voter_request_failures_total by voter; a
	// voter this node never failed to reach is absent.
	voterFailures map[string]int64
}

// parseMetrics reads the Prometheus text exposition format and returns the
// node's lease gauges and voter failure counters. It fails when either
// gauge is missing, so that a node that serves no such metrics is not
// read as leading nothing.
func parseMetrics(r io.Reader) (nodeMetrics, error) {
	m := nodeMetrics{voterFailures: map[string]int64{}}
	var haveLed, haveUnled bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, value, err := parseSample(line)
		if err != nil {
			return m, err
		}
		switch name {
		case "tenure_leases_held":
			m.led, haveLed = int(value), true
		case "tenure_shards_unled":
			m.unled, haveUnled = int(value), true
		case "tenure_voter_request_failures_total":
			m.voterFailures[labels["voter"]] += int64(value)
		}
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	switch {
	case !haveLed:
		return m, errors.New("no tenure_leases_held in /metrics")
	case !haveUnled:
		return m, errors.New("no tenure_shards_unled in /metrics")
	}
	return m, nil
}

// parseSample splits one sample line, `name{label="value",...} value
// [timestamp]`, with the format's escapes (\\, \" and \n) in label values.
func parseSample(line string) (name string, labels map[string]string, value float64, err error) {
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return "", nil, 0, fmt.Errorf("metrics line %q: no value", line)
	}
	name, rest := line[:i], line[i:]
	if rest[0] == '{' {
		if labels, rest, err = parseLabels(rest[1:]); err != nil {
			return "", nil, 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
	}
	f := strings.Fields(rest)
	if len(f) < 1 || len(f) > 2 {
		return "", nil, 0, fmt.Errorf("metrics line %q: want a value and at most a timestamp after the name", line)
	}
	if value, err = strconv.ParseFloat(f[0], 64); err != nil {
		return "", nil, 0, fmt.Errorf("metrics line %q: %w", line, err)
	}
	return name, labels, value, nil
}

// parseLabels reads `label="value",...}` and returns the labels and what
// follows the closing brace.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t,")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		key, after, ok := strings.Cut(s, "=")
		if !ok || !strings.HasPrefix(after, `"`) {
			return nil, "", fmt.Errorf("label %q: want name=\"value\"", s)
		}
		var v strings.Builder
		i := 1
		for ; i < len(after) && after[i] != '"'; i++ {
			c := after[i]
			if c == '\\' && i+1 < len(after) {
				i++
				switch after[i] {
				case 'n':
					c = '\n'
				default:
					c = after[i]
				}
			}
			v.WriteByte(c)
		}
		if i >= len(after) {
			return nil, "", fmt.Errorf("label %s: unterminated value", strings.TrimSpace(key))
		}
		labels[strings.TrimSpace(key)] = v.String()
		s = after[i+1:]
	}
}

// parseVmRSS returns the VmRSS line of a /proc/<pid>/status file in kB;
// ok is false when there is none (a process that has exited).
func parseVmRSS(status string) (kB int64, ok bool) {
	for line := range strings.Lines(status) {
		rest, found := strings.CutPrefix(line, "VmRSS:")
		if !found {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, false
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		return n, err == nil
	}
	return 0, false
}

// nodePoll is one poll of one running node.
type nodePoll struct {
	m     nodeMetrics
	err   error // reading or parsing its /metrics
	rssKB int64 // 0 when not read
}

// coverage says what one round of polls of the running nodes shows: led
// is Σ tenure_leases_held, unled the most tenure_shards_unled any node
// shows. complete is true when every node answered, led == shards and no
// node sees a shard unled: then every shard is led exactly once, as the
// voters never grant two valid leases on one shard, so P leases held cover
// P different shards. (The gauge follows a node's table, republished
// within milliseconds of a change: it can count for that long a lease its
// node has just lost.)
func coverage(polls []nodePoll, shards int) (led, unled int, complete bool) {
	complete = len(polls) > 0
	for _, p := range polls {
		if p.err != nil {
			complete = false
			continue
		}
		led += p.m.led
		unled = max(unled, p.m.unled)
	}
	return led, unled, complete && led == shards && unled == 0
}

// tenuredProc is one tenured process.
type tenuredProc struct {
	id, http string
	log      string // its stdout and stderr
	cmd      *exec.Cmd
	exited   chan struct{} // closed once it has exited and been waited for
	code     int           // its exit code, once exited is closed (-1: killed by a signal)
	killed   bool          // killed by the benchmark, on purpose

	// Set by the polls.
	served bool        // its /metrics answered at least once
	last   nodeMetrics // the last metrics it served
	rssMax int64       // kB
}

// procExitError is a tenured process that ended on its own.
type procExitError struct {
	ID     string
	Code   int
	Served bool
	Log    string // its last lines
}

func (e *procExitError) Error() string {
	what := "after it served"
	if !e.Served {
		what = "before it served"
	}
	return fmt.Sprintf("%s exited with code %d %s; its last lines:\n%s", e.ID, e.Code, what, e.Log)
}

// lostPort reports whether the exit looks like a port that another
// process bound first: exit code 1 (a listener or the node failed to
// start) before the node ever served.
func (e *procExitError) lostPort() bool { return e.Code == 1 && !e.Served }

// tenuredCluster is the processes of one start. Its methods are called
// from one goroutine; watch polls in goroutines of its own that end
// before it returns.
type tenuredCluster struct {
	out     io.Writer
	poll    time.Duration
	procs   []*tenuredProc
	client  *http.Client
	started time.Time // just before the first process started
	// victim is the node kill killed, and atKill every node's voter
	// failure counters at the last poll before (see failures).
	victim string
	atKill map[string]map[string]int64

	closeOnce sync.Once
}

// startTenureds starts sp.nodes tenured processes on new loopback ports,
// every one a voter with its store in dir (created with -init: this is
// each voter's only start), logging to files in dir.
func startTenureds(sp coldstartSpec, dir, bin string, out io.Writer) (*tenuredCluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	type addrs struct{ grpc, gossip, http string }
	as := make([]addrs, sp.nodes)
	var voters, seeds []string
	for i := range as {
		for _, a := range []*string{&as[i].grpc, &as[i].gossip, &as[i].http} {
			var err error
			if *a, err = freeAddr(); err != nil {
				return nil, err
			}
		}
		voters = append(voters, fmt.Sprintf("node-%d=%s", i+1, as[i].grpc))
		seeds = append(seeds, as[i].gossip)
	}
	c := &tenuredCluster{
		out: out, poll: sp.poll,
		client: &http.Client{Timeout: max(2*time.Second, sp.poll), Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
	}
	env := tenuredEnv()
	c.started = time.Now()
	for i, a := range as {
		id := fmt.Sprintf("node-%d", i+1)
		args := []string{
			"-node-id", id, "-cluster", "coldstart", "-shards", strconv.Itoa(sp.shards),
			"-voters", strings.Join(voters, ","), "-seeds", strings.Join(seeds, ","),
			"-grpc-addr", a.grpc, "-gossip-addr", a.gossip, "-http-addr", a.http,
			"-data-dir", filepath.Join(dir, id), "-init",
			"-lease-duration", sp.ld.String(), "-profile", sp.profile.String(),
		}
		p, err := startTenured(bin, id, filepath.Join(dir, id+".log"), args, env)
		if err != nil {
			c.close()
			return nil, err
		}
		p.http = a.http
		c.procs = append(c.procs, p)
	}
	var pids []string
	for _, p := range c.procs {
		pids = append(pids, fmt.Sprintf("%s pid %d", p.id, p.cmd.Process.Pid))
	}
	fmt.Fprintf(out, "started %s\n", strings.Join(pids, ", "))
	return c, nil
}

// tenuredEnv is this process's environment without TENURE_* variables,
// which would configure the nodes behind the flags' back.
func tenuredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TENURE_") {
			env = append(env, kv)
		}
	}
	return env
}

// startTenured starts bin with args, its output to the file logPath.
func startTenured(bin, id, logPath string, args, env []string) (*tenuredProc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &tenuredProc{id: id, log: logPath, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = tenuredProcAttr()
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", id, err)
	}
	go func() {
		defer close(p.exited)
		err := p.cmd.Wait()
		f.Close()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
	}()
	return p, nil
}

// close kills every process that still runs with SIGKILL and waits for
// it. It may be called more than once.
func (c *tenuredCluster) close() {
	c.closeOnce.Do(func() {
		for _, p := range c.procs {
			p.cmd.Process.Kill() // an error means it has exited already
		}
		for _, p := range c.procs {
			<-p.exited
		}
		c.client.CloseIdleConnections()
	})
}

// running returns the processes not killed by the benchmark.
func (c *tenuredCluster) running() []*tenuredProc {
	var out []*tenuredProc
	for _, p := range c.procs {
		if !p.killed {
			out = append(out, p)
		}
	}
	return out
}

// kill sends SIGKILL to id and returns when it was sent.
func (c *tenuredCluster) kill(id string) (time.Time, error) {
	i := slices.IndexFunc(c.procs, func(p *tenuredProc) bool { return p.id == id })
	if i < 0 {
		return time.Time{}, fmt.Errorf("no node %s", id)
	}
	p := c.procs[i]
	p.killed, c.victim, c.atKill = true, id, c.failures()
	at := time.Now()
	if err := p.cmd.Process.Kill(); err != nil {
		return at, fmt.Errorf("killing %s: %w", id, err)
	}
	return at, nil
}

// watch polls the running nodes every c.poll until done holds for a round
// of polls (it returns that round's time and true), limit passes (false),
// ctx ends or a running node exits (an error). With a label it prints
// progress every 5 seconds.
func (c *tenuredCluster) watch(ctx context.Context, limit time.Duration, label string, done func([]nodePoll) bool) (time.Time, bool, error) {
	began := time.Now()
	deadline := began.Add(limit)
	nextReport := began.Add(5 * time.Second)
	t := time.NewTicker(c.poll)
	defer t.Stop()
	for {
		// The context first: on Ctrl-C the nodes get the SIGINT too and
		// may exit before the benchmark sees it.
		if ctx.Err() != nil {
			return time.Time{}, false, fmt.Errorf("stopped: %w", context.Cause(ctx))
		}
		if err := c.checkExits(); err != nil {
			return time.Time{}, false, err
		}
		polls := c.pollAll(ctx)
		now := time.Now()
		if ctx.Err() != nil {
			continue
		}
		if done(polls) {
			return now, true, nil
		}
		if label != "" && now.After(nextReport) {
			led, unled, _ := coverage(polls, 0)
			fmt.Fprintf(c.out, "  %s, %4.1f s: %d shards led, at most %d unled in a node's view; RSS max %.1f MB\n",
				label, now.Sub(began).Seconds(), led, unled, c.rssMaxMB())
			nextReport = nextReport.Add(5 * time.Second)
		}
		if now.After(deadline) {
			return now, false, nil
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

// checkExits returns a *procExitError for the first running node that has
// exited.
func (c *tenuredCluster) checkExits() error {
	for _, p := range c.running() {
		select {
		case <-p.exited:
			b, _ := os.ReadFile(p.log)
			return &procExitError{ID: p.id, Code: p.code, Served: p.served, Log: tail(string(b), 20)}
		default:
		}
	}
	return nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// pollAll reads every running node's /metrics and resident set at once
// and records them in its tenuredProc.
func (c *tenuredCluster) pollAll(ctx context.Context) []nodePoll {
	ps := c.running()
	polls := make([]nodePoll, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() {
			polls[i].m, polls[i].err = c.scrape(ctx, p.http)
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)); err == nil {
				polls[i].rssKB, _ = parseVmRSS(string(b))
			}
		})
	}
	wg.Wait()
	for i, p := range ps {
		p.rssMax = max(p.rssMax, polls[i].rssKB)
		if polls[i].err == nil {
			p.served, p.last = true, polls[i].m
		}
	}
	return polls
}

func (c *tenuredCluster) scrape(ctx context.Context, addr string) (nodeMetrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nodeMetrics{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nodeMetrics{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nodeMetrics{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// led returns the leases each node held at its last poll.
func (c *tenuredCluster) led() map[string]int {
	out := map[string]int{}
	for _, p := range c.procs {
		out[p.id] = p.last.led
	}
	return out
}

// mostLed returns the running node that led the most shards at its last
// poll, the first in order on a tie.
func (c *tenuredCluster) mostLed() (id string, led int) {
	for _, p := range c.running() {
		if id == "" || p.last.led > led {
			id, led = p.id, p.last.led
		}
	}
	return id, led
}

// failures returns a copy of every node's voter failure counters at its
// last poll: node → voter → failed requests.
func (c *tenuredCluster) failures() map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for _, p := range c.procs {
		out[p.id] = maps.Clone(p.last.voterFailures)
	}
	return out
}

// total sums counters.
func total(counts map[string]int64) int64 {
	var n int64
	for _, v := range counts {
		n += v
	}
	return n
}

// failuresSince splits the voter failures counted between two snapshots
// (node → voter → count) into those to the voter killed and those to the
// others, counted by the nodes other than killed (whose counters stopped
// with it).
func failuresSince(before, after map[string]map[string]int64, killed string) (toOthers, toKilled int64) {
	for node, counts := range after {
		if node == killed {
			continue
		}
		for voter, n := range counts {
			d := n - before[node][voter]
			if voter == killed {
				toKilled += d
			} else {
				toOthers += d
			}
		}
	}
	return toOthers, toKilled
}

func (c *tenuredCluster) rssMaxMB() float64 {
	var kB int64
	for _, p := range c.procs {
		kB = max(kB, p.rssMax)
	}
	return float64(kB) / 1024
}

// describe says, for an error, what the running nodes showed at their
// last polls.
func (c *tenuredCluster) describe(shards int) string {
	var parts []string
	led, unled := 0, 0
	for _, p := range c.running() {
		if !p.served {
			parts = append(parts, p.id+" never served /metrics")
			continue
		}
		led += p.last.led
		unled = max(unled, p.last.unled)
		parts = append(parts, fmt.Sprintf("%s leads %d and sees %d unled", p.id, p.last.led, p.last.unled))
	}
	return fmt.Sprintf("%d of %d shards led, at most %d unled in a node's view (%s)", led, shards, unled, strings.Join(parts, "; "))
}

// fill copies what the polls saw into res: the per-node rows, the RSS and
// the state at the last poll.
func (c *tenuredCluster) fill(res *coldstartResult) {
	res.PerNode = res.PerNode[:0]
	res.LedEnd, res.UnledEnd = 0, 0
	for _, p := range c.procs {
		row := coldstartNodeRow{ID: p.id, PID: p.cmd.Process.Pid, RSSMaxMB: float64(p.rssMax) / 1024,
			VoterFailures: total(p.last.voterFailures), Killed: p.killed}
		if !p.killed {
			row.LedEnd = p.last.led
			res.LedEnd += p.last.led
			res.UnledEnd = max(res.UnledEnd, p.last.unled)
		}
		res.PerNode = append(res.PerNode, row)
	}
	now := c.failures()
	until := now
	if c.atKill != nil {
		until = c.atKill
	}
	res.VoterFailures = 0
	for _, counts := range until {
		res.VoterFailures += total(counts)
	}
	if c.atKill != nil {
		toOthers, toKilled := failuresSince(c.atKill, now, c.victim)
		res.VoterFailures += toOthers
		res.VoterFailuresKilled = toKilled
	}
	res.RSSMaxMB = c.rssMaxMB()
	res.LoadEnd = loadAverage()
}
