package e2e

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/examples/ledger/audit"
	"github.com/tenurehq/tenure/internal/loopback"
)

// bins are the binaries TestMain builds.
var bins struct{ ledger, store string }

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself
	}
	dir, err := os.MkdirTemp("", "ledger-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		began := time.Now()
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		if os.Getenv("TENURE_E2E_RACE") != "" {
			args = append(args, "-race")
		}
		args = append(args, "github.com/tenurehq/tenure/examples/ledger", "github.com/tenurehq/tenure/examples/ledger/cmd/ledgerstore")
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go %s: %v\n%s", strings.Join(args, " "), err, out)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: built ledger and ledgerstore in %v\n", time.Since(began).Round(time.Millisecond))
		bins.ledger, bins.store = filepath.Join(dir, "ledger"), filepath.Join(dir, "ledgerstore")
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(began)
}

// proc is one process of a run.
type proc struct {
	name   string
	http   string // the address of its HTTP server
	log    string // path of its stdout and stderr
	cmd    *exec.Cmd
	exited chan struct{}
	code   int
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// waitExit waits up to d for the process to exit and returns its code.
func (p *proc) waitExit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v", p.name, d)
		return -1
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// start runs bin with args, its environment without TENURE_* variables,
// logging to dir.
func start(t *testing.T, dir, name, bin, httpAddr string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, http: httpAddr, log: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TENURE_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		f.Close()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only once it runs
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if strings.Contains(p.logText(), "WARNING: DATA RACE") { // TENURE_E2E_RACE=1
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("--- %s log (last lines):\n%s", name, tail(p.logText(), 30))
		}
	})
	return p
}

// getJSON decodes the JSON at url into v.
func getJSON(url string, v any) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// nodeCounts is GET /ledger.
type nodeCounts struct {
	Node     string   `json:"node"`
	Charged  uint64   `json:"charged"`
	Rejected uint64   `json:"rejected"`
	Errors   uint64   `json:"errors"`
	Leading  []uint32 `json:"leading"`
}

// run is a store and a cluster of ledger nodes on loopback.
type run struct {
	t      *testing.T
	dir    string
	shards int
	store  *proc
	nodes  map[string]*proc
}

// newRun starts a store (with storeArgs) and the nodes ids, of which the
// first voters are voters; nodeArgs[id] are extra flags of node id.
func newRun(t *testing.T, ids []string, voters, shards int, storeArgs []string, nodeArgs map[string][]string) *run {
	t.Helper()
	r := &run{t: t, dir: t.TempDir(), shards: shards, nodes: map[string]*proc{}}
	storeAddr := freeAddr(t)
	r.store = start(t, r.dir, "store", bins.store, storeAddr, append([]string{"-addr", storeAddr}, storeArgs...)...)
	grpc, gossip := map[string]string{}, map[string]string{}
	var vs, ss []string
	for i, id := range ids {
		grpc[id], gossip[id] = freeAddr(t), freeAddr(t)
		if i < voters {
			vs = append(vs, id+"="+grpc[id])
		}
		ss = append(ss, gossip[id])
	}
	waitFor(t, "the store to answer", 10*time.Second, func() bool { return getJSON("http://"+storeAddr+"/audit", &audit.Report{}) == nil })
	for i, id := range ids {
		httpAddr := freeAddr(t)
		args := []string{
			"-node-id", id, "-shards", fmt.Sprint(shards), "-voters", strings.Join(vs, ","), "-seeds", strings.Join(ss, ","),
			"-grpc-addr", grpc[id], "-gossip-addr", gossip[id], "-http-addr", httpAddr,
			"-profile", "local", "-lease-duration", "1s", "-join-timeout", "30s", "-drain-timeout", "15s",
			"-store", "http://" + storeAddr, "-charge-every", "20ms",
		}
		if i < voters {
			args = append(args, "-data-dir", filepath.Join(r.dir, id), "-init")
		}
		r.nodes[id] = start(t, r.dir, id, bins.ledger, httpAddr, append(args, nodeArgs[id]...)...)
	}
	return r
}

func (r *run) audit() audit.Report {
	r.t.Helper()
	var rep audit.Report
	if err := getJSON("http://"+r.store.http+"/audit", &rep); err != nil {
		r.t.Fatalf("audit: %v", err)
	}
	return rep
}

// counts returns GET /ledger of node id; ok is false if it does not
// answer.
func (r *run) counts(id string) (nodeCounts, bool) {
	var c nodeCounts
	err := getJSON("http://"+r.nodes[id].http+"/ledger", &c)
	return c, err == nil
}

// leaders maps every shard to the nodes among ids that charge it.
func (r *run) leaders(ids ...string) map[uint32][]string {
	out := map[uint32][]string{}
	for _, id := range ids {
		if c, ok := r.counts(id); ok {
			for _, s := range c.Leading {
				out[s] = append(out[s], id)
			}
		}
	}
	return out
}

// eachLedOnceBy reports whether every shard is charged by exactly one of
// ids.
func (r *run) eachLedOnceBy(ids ...string) bool {
	l := r.leaders(ids...)
	if len(l) != r.shards {
		return false
	}
	for _, ns := range l {
		if len(ns) != 1 {
			return false
		}
	}
	return true
}

// progress returns the highest period accepted for each shard.
func (r *run) progress() map[uint32]uint64 {
	r.t.Helper()
	out := map[uint32]uint64{}
	var after uint64
	for {
		var page struct{ Attempts []audit.Attempt }
		if err := getJSON(fmt.Sprintf("http://%s/log?after=%d", r.store.http, after), &page); err != nil {
			r.t.Fatalf("log: %v", err)
		}
		if len(page.Attempts) == 0 {
			return out
		}
		for _, a := range page.Attempts {
			if a.Accepted && a.Kind == audit.Charge {
				out[a.Shard] = max(out[a.Shard], a.Period)
			}
			after = a.Seq
		}
	}
}

// waitProgress waits until every shard has been charged beyond before.
func (r *run) waitProgress(what string, before map[uint32]uint64) time.Duration {
	r.t.Helper()
	return waitFor(r.t, what, 20*time.Second, func() bool {
		now := r.progress()
		for s := range uint32(r.shards) {
			if now[s] <= before[s] {
				return false
			}
		}
		return true
	})
}

func (r *run) checkClean(rep audit.Report) {
	r.t.Helper()
	if !rep.OK || rep.Accepted == 0 || rep.Shards != r.shards || uint64(rep.Accepted) != rep.MaxPeriodSum {
		r.t.Errorf("audit: %+v; want clean, with every shard charged", rep)
	}
}

// TestCrashAndDrain: a store and four ledger nodes (three voters). A
// leader is killed with SIGKILL, another drained with SIGTERM; every shard
// keeps being charged and the audit finds no period charged twice or
// skipped and no stale write accepted.
func TestCrashAndDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs processes")
	}
	began := time.Now()
	ids := []string{"n1", "n2", "n3", "n4"}
	r := newRun(t, ids, 3, 8, nil, nil)
	took := waitFor(t, "every shard charged by exactly one node", 30*time.Second, func() bool { return r.eachLedOnceBy(ids...) })
	t.Logf("4 nodes up, 8 shards charged by one node each: %v", took.Round(time.Millisecond))
	r.waitProgress("every shard charged", nil)

	// kill -9 a leader: n4, which is not a voter (the drain below takes a
	// voter, and two of three must remain).
	victim, ok := r.counts("n4")
	if !ok || len(victim.Leading) == 0 {
		t.Fatalf("n4 leads nothing (%+v): nothing to fail over", victim)
	}
	before := r.progress()
	r.nodes["n4"].signal(t, syscall.SIGKILL)
	r.nodes["n4"].waitExit(t, 5*time.Second)
	took = waitFor(t, "n4's shards charged by the others", 20*time.Second, func() bool { return r.eachLedOnceBy("n1", "n2", "n3") })
	r.waitProgress("every shard charged after the kill", before)
	t.Logf("kill -9 of n4 (leading %v): its shards charged elsewhere %v later", victim.Leading, took.Round(time.Millisecond))

	// SIGTERM drains n3: its shards are handed off, not lost.
	drained, _ := r.counts("n3")
	if len(drained.Leading) == 0 {
		t.Fatalf("n3 leads nothing (%+v): nothing to drain", drained)
	}
	before = r.progress()
	r.nodes["n3"].signal(t, syscall.SIGTERM)
	if code := r.nodes["n3"].waitExit(t, 20*time.Second); code != 0 {
		t.Fatalf("n3 exit code after SIGTERM: %d, want 0", code)
	}
	took = waitFor(t, "n3's shards charged by n1 and n2", 20*time.Second, func() bool { return r.eachLedOnceBy("n1", "n2") })
	r.waitProgress("every shard charged after the drain", before)
	t.Logf("drain of n3 (leading %v): exit 0, its shards charged elsewhere %v after it exited", drained.Leading, took.Round(time.Millisecond))
	for _, line := range strings.Split(r.nodes["n3"].logText(), "\n") {
		if strings.Contains(line, "msg=transition event=released") && (strings.Contains(line, `reason="lease expired"`) || strings.Contains(line, `reason="quorum lost"`)) {
			t.Errorf("n3 lost a shard while draining: %s", line)
		}
	}

	rep := r.audit()
	r.checkClean(rep)
	t.Logf("audit: %d charges accepted, %d refused, %d stale refused, %d fences; %d shards, max period sum %d; took %v",
		rep.Accepted, rep.Rejected, rep.StaleRejected, rep.Fences, rep.Shards, rep.MaxPeriodSum, time.Since(began).Round(time.Millisecond))
}

// TestZombieLeader: a node with the planted bug -unsafe-ignore-lease is
// stopped (SIGSTOP) for longer than its lease; the others take its shards;
// it resumes (SIGCONT) and charges with its old token for 2 s. A fenced
// store refuses every such charge; a store with the planted bug
// -unsafe-no-fence accepts them, and the audit must say so: the check can
// fail.
func TestZombieLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs processes")
	}
	tests := []struct {
		name      string
		storeArgs []string
		unsafe    bool
	}{
		{name: "fenced store refuses the zombie"},
		{name: "unfenced store lets it through", storeArgs: []string{"-unsafe-no-fence"}, unsafe: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := []string{"n1", "n2", "n3"}
			r := newRun(t, ids, 3, 6, tt.storeArgs, map[string][]string{"n3": {"-unsafe-ignore-lease"}})
			waitFor(t, "every shard charged by exactly one node", 30*time.Second, func() bool { return r.eachLedOnceBy(ids...) })
			r.waitProgress("every shard charged", nil)
			zombie, _ := r.counts("n3")
			if len(zombie.Leading) == 0 {
				t.Fatalf("n3 leads nothing (%+v)", zombie)
			}

			r.nodes["n3"].signal(t, syscall.SIGSTOP)
			stopped := time.Now()
			waitFor(t, "n3's shards charged by n1 and n2", 20*time.Second, func() bool { return r.eachLedOnceBy("n1", "n2") })
			before := r.progress()
			r.waitProgress("every shard charged without n3", before)
			r.nodes["n3"].signal(t, syscall.SIGCONT)
			t.Logf("n3 (leading %v) stopped for %v", zombie.Leading, time.Since(stopped).Round(time.Millisecond))

			if tt.unsafe {
				waitFor(t, "the audit to report the zombie's writes", 15*time.Second, func() bool {
					rep := r.audit()
					return rep.StaleAccepted > 0 || rep.DoubleLeaders > 0
				})
				rep := r.audit()
				if rep.OK || len(rep.Violations) == 0 {
					t.Errorf("audit %+v reports no violation", rep)
				}
				t.Logf("audit: stale_accepted %d, double_leaders %d, duplicates %d, lost %d; first: %s",
					rep.StaleAccepted, rep.DoubleLeaders, rep.Duplicates, rep.Lost, rep.Violations[0])
				return
			}
			waitFor(t, "the store to refuse the zombie", 15*time.Second, func() bool {
				c, ok := r.counts("n3")
				return ok && c.Rejected > 0
			})
			// The zombie charges for 2 s after it notices its leases ended;
			// wait until it has given up on every one.
			waitFor(t, "the zombie to give up", 15*time.Second, func() bool {
				return strings.Count(r.nodes["n3"].logText(), "ledger: stopped charging") >= len(zombie.Leading)
			})
			rep := r.audit()
			r.checkClean(rep)
			if rep.StaleRejected == 0 {
				t.Errorf("audit %+v: no stale write refused", rep)
			}
			c, _ := r.counts("n3")
			t.Logf("the zombie was refused %d times; audit clean: %d accepted, %d stale refused", c.Rejected, rep.Accepted, rep.StaleRejected)
		})
	}
}
