package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/tenurehq/tenure/internal/loopback"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/tenurehq/tenure/client"
	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
	"github.com/tenurehq/tenure/shard"
)

// bins are the binaries TestMain builds.
var bins struct{ tenured, tenurectl string }

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself
	}
	dir, err := os.MkdirTemp("", "tenure-e2e-")
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
		args = append(args, "github.com/tenurehq/tenure/cmd/tenured", "github.com/tenurehq/tenure/cmd/tenurectl")
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go %s: %v\n%s", strings.Join(args, " "), err, out)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: built tenured and tenurectl in %v\n", time.Since(began).Round(time.Millisecond))
		bins.tenured, bins.tenurectl = filepath.Join(dir, "tenured"), filepath.Join(dir, "tenurectl")
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

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs processes")
	}
}

// freeAddr returns a free loopback address (see loopback.FreeAddr).
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// cleanEnv is the test's environment without TENURE_* variables, which
// would otherwise configure the processes.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TENURE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(began)
}

// proc is one tenured process.
type proc struct {
	id                 string
	grpc, gossip, http string
	log                string // path of its stdout and stderr
	cmd                *exec.Cmd
	exited             chan struct{}
	code               int
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// waitExit waits up to d for the process to exit and returns its code.
func (p *proc) waitExit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v; log:\n%s", p.id, d, tail(p.logText(), 40))
		return -1
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startProc runs tenured with args and env, logging to dir.
func startProc(t *testing.T, dir, id string, args []string, env []string) *proc {
	t.Helper()
	p := &proc{id: id, log: filepath.Join(dir, id+".log"), exited: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bins.tenured, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		f.Close()
		p.code = 0
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
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("--- %s log (last lines):\n%s", id, tail(p.logText(), 25))
		}
	})
	return p
}

// cluster is a set of tenured processes on loopback with mTLS and gossip
// encryption.
type cluster struct {
	t       *testing.T
	dir     string
	pki     pki
	key     string // base64 gossip key
	shards  int
	voters  string
	seeds   string
	procs   map[string]*proc
	grpcs   map[string]string
	gossips map[string]string
}

func gossipKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func newCluster(t *testing.T, ids []string, voters int, shards int) *cluster {
	c := &cluster{
		t: t, dir: t.TempDir(), pki: newPKI(t), key: gossipKey(t), shards: shards,
		procs: map[string]*proc{}, grpcs: map[string]string{}, gossips: map[string]string{},
	}
	var vs, ss []string
	for i, id := range ids {
		c.grpcs[id], c.gossips[id] = freeAddr(t), freeAddr(t)
		if i < voters {
			vs = append(vs, id+"="+c.grpcs[id])
		}
		ss = append(ss, c.gossips[id])
	}
	c.voters, c.seeds = strings.Join(vs, ","), strings.Join(ss, ",")
	return c
}

func (c *cluster) isVoter(id string) bool { return strings.Contains(","+c.voters, ","+id+"=") }

// args are the flags of node id; extra ones come last and win.
func (c *cluster) args(id string, extra ...string) []string {
	if c.grpcs[id] == "" {
		c.grpcs[id], c.gossips[id] = freeAddr(c.t), freeAddr(c.t)
	}
	a := []string{
		"-node-id", id, "-shards", fmt.Sprint(c.shards), "-voters", c.voters, "-seeds", c.seeds,
		"-grpc-addr", c.grpcs[id], "-gossip-addr", c.gossips[id], "-http-addr", freeAddr(c.t),
		"-profile", "local", "-lease-duration", "1s", "-log-format", "json",
		"-join-timeout", "30s", "-drain-timeout", "15s",
		"-tls-cert", c.pki.nodeCert, "-tls-key", c.pki.nodeKey, "-tls-client-ca", c.pki.ca,
	}
	if c.isVoter(id) {
		a = append(a, "-data-dir", filepath.Join(c.dir, id), "-init")
	}
	return append(a, extra...)
}

// start runs node id with the cluster's gossip key in TENURE_GOSSIP_KEY
// (the environment path of the configuration).
func (c *cluster) start(id string, extra ...string) *proc {
	return c.startEnv(id, []string{"TENURE_GOSSIP_KEY=" + c.key}, extra...)
}

func (c *cluster) startEnv(id string, env []string, extra ...string) *proc {
	args := c.args(id, extra...)
	p := startProc(c.t, c.dir, id, args, cleanEnv(env...))
	p.grpc, p.gossip = c.grpcs[id], c.gossips[id]
	p.http = args[slices.Index(args, "-http-addr")+1]
	c.procs[id] = p
	return p
}

// creds are TLS credentials that verify the nodes, without a client
// certificate.
func (c *cluster) creds() grpc.DialOption {
	c.t.Helper()
	b, err := os.ReadFile(c.pki.ca)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
}

// dial connects to a node with TLS and no client certificate.
func (c *cluster) dial(addr string) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, c.creds())
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

func serving(conn *grpc.ClientConn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "tenure.v1.Tenure"})
	return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// allLed reports whether every shard is led in the view of the node at
// conn, none of them by a node in not.
func allLed(conn *grpc.ClientConn, not ...string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := tenurev1.NewTenureClient(conn).ListShards(ctx, &tenurev1.ListShardsRequest{})
	if err != nil {
		return false
	}
	for _, e := range r.GetEntries() {
		if e.GetState() != tenurev1.ShardState_SHARD_STATE_LED || slices.Contains(not, e.GetLeader()) {
			return false
		}
	}
	return len(r.GetEntries()) > 0
}

// ctl runs tenurectl with the cluster's CA, against addrs (node IDs or
// host:port), and returns its exit code and outputs.
func (c *cluster) ctl(t *testing.T, admin bool, addrs []string, args ...string) (int, string, string) {
	t.Helper()
	var as []string
	for _, a := range addrs {
		if g, ok := c.grpcs[a]; ok {
			a = g
		}
		as = append(as, a)
	}
	full := []string{"-tls-ca", c.pki.ca, "-addr", strings.Join(as, ","), "-timeout", "10s"}
	if admin {
		full = append(full, "-tls-cert", c.pki.adminCert, "-tls-key", c.pki.adminKey)
	}
	return runCtl(t, append(full, args...)...)
}

func runCtl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bins.tenurectl, args...)
	cmd.Env = cleanEnv()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// entry is a shard entry as tenurectl -o json prints it.
type entry struct {
	Key     string `json:"key"`
	Shard   uint32 `json:"shard"`
	State   string `json:"state"`
	Leader  string `json:"leader"`
	Epoch   uint64 `json:"epoch"`
	Desired string `json:"desired"`
	Address string `json:"address"`
}

type member struct {
	NodeID string `json:"node_id"`
	State  string `json:"state"`
	Voter  bool   `json:"voter"`
}

func decode[T any](t *testing.T, what, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v in %q", what, err, s)
	}
	return v
}

// TestCluster runs four tenured processes (three voters) with mTLS and an
// encrypted gossip, and drives them with tenurectl: lookups, listings and
// exit codes, admin calls with and without a client certificate, a kill -9
// of a leader observed through tenurectl watch, a SIGTERM drain, and
// nodes the cluster must refuse.
func TestCluster(t *testing.T) {
	skipShort(t)
	began := time.Now()
	ids := []string{"n1", "n2", "n3", "n4"}
	c := newCluster(t, ids, 3, 32)
	for _, id := range ids[:3] {
		c.start(id)
	}
	// n4 finds the cluster through a DNS name (localhost) rather than
	// addresses.
	_, n1Port, _ := net.SplitHostPort(c.gossips["n1"])
	c.start("n4", "-seeds", "localhost:"+n1Port)
	conns := map[string]*grpc.ClientConn{}
	for _, id := range ids {
		conns[id] = c.dial(c.grpcs[id])
	}
	took := waitFor(t, "every node SERVING with every shard led", 30*time.Second, func() bool {
		for _, id := range ids {
			if !serving(conns[id]) || !allLed(conns[id]) {
				return false
			}
		}
		return true
	})
	t.Logf("4 nodes serving, 32 shards led: %v after start", took.Round(time.Millisecond))

	t.Run("status", func(t *testing.T) {
		resp, err := http.Get("http://" + c.procs["n1"].http + "/status?format=json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct {
			Ready   bool `json:"ready"`
			Led     int  `json:"shards_led"`
			Members []struct {
				ID string `json:"node_id"`
			} `json:"members"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || !doc.Ready || doc.Led != 32 || len(doc.Members) != 4 {
			t.Errorf("/status = %+v (%v)", doc, err)
		}
	})

	t.Run("tenurectl", func(t *testing.T) {
		code, out, errs := c.ctl(t, false, []string{"n1"}, "lookup", "customer/1", "customer/2", "-o", "json")
		if code != 0 {
			t.Fatalf("lookup: exit %d: %s", code, errs)
		}
		es := decode[[]entry](t, "lookup", out)
		if len(es) != 2 || es[0].Key != "customer/1" || es[0].State != "led" || es[0].Leader == "" || es[0].Epoch == 0 {
			t.Errorf("lookup = %+v", es)
		}
		code, out, _ = c.ctl(t, false, []string{"n2"}, "lookup", "customer/1")
		if code != 0 || !strings.HasPrefix(out, "KEY") || !strings.Contains(out, es[0].Leader) {
			t.Errorf("lookup table: exit %d\n%s", code, out)
		}

		code, out, _ = c.ctl(t, false, []string{"n1"}, "shards", "-o", "json")
		all := decode[[]entry](t, "shards", out)
		if code != 0 || len(all) != 32 {
			t.Fatalf("shards: exit %d, %d entries", code, len(all))
		}
		code, out, _ = c.ctl(t, false, []string{"n1"}, "shards", "-state", "unled", "-o", "json")
		if code != 0 || strings.TrimSpace(out) != "[]" {
			t.Errorf("shards -state unled: exit %d, %q", code, out)
		}
		code, out, _ = c.ctl(t, false, []string{"n1"}, "shards", "-node", "n3", "-o", "json")
		if code != 0 {
			t.Errorf("shards -node n3: exit %d", code)
		}
		for _, e := range decode[[]entry](t, "shards -node", out) {
			if e.Leader != "n3" && e.Desired != "n3" {
				t.Errorf("shards -node n3 gave %+v", e)
			}
		}

		code, out, _ = c.ctl(t, false, []string{"n4"}, "members", "-o", "json")
		ms := decode[[]member](t, "members", out)
		voters := 0
		for _, m := range ms {
			if m.Voter {
				voters++
			}
			if m.State != "active" {
				t.Errorf("member %+v not active", m)
			}
		}
		if code != 0 || len(ms) != 4 || voters != 3 {
			t.Errorf("members: exit %d, %+v", code, ms)
		}

		// Exit codes, and failover past a dead endpoint.
		dead := freeAddr(t)
		for _, tt := range []struct {
			name  string
			addrs []string
			args  []string
			code  int
			want  string
		}{
			{"failover past a dead node", []string{dead, "n2"}, []string{"members"}, 0, ""},
			{"unknown shard", []string{"n1"}, []string{"shard", "999"}, 3, "unknown shard"},
			{"unknown node", []string{"n1"}, []string{"shards", "-node", "n9"}, 3, "not a member"},
			{"usage", []string{"n1"}, []string{"frobnicate"}, 2, "unknown command"},
			{"nobody answers", []string{dead}, []string{"members"}, 4, "no node reachable"},
		} {
			code, _, errs := c.ctl(t, false, tt.addrs, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Errorf("%s: exit %d, want %d; stderr %q should contain %q", tt.name, code, tt.code, errs, tt.want)
			}
		}
	})

	t.Run("mTLS", func(t *testing.T) {
		code, _, errs := c.ctl(t, false, []string{"n1"}, "pause")
		if code != 1 || !strings.Contains(errs, "client certificate") {
			t.Errorf("pause without a client certificate: exit %d, %q; want 1, refused", code, errs)
		}
		code, _, errs = c.ctl(t, false, []string{"n1"}, "drain", "n3")
		if code != 1 || !strings.Contains(errs, "client certificate") {
			t.Errorf("drain without a client certificate: exit %d, %q; want 1, refused", code, errs)
		}
		if code, _, errs := c.ctl(t, true, []string{"n1"}, "pause"); code != 0 {
			t.Errorf("pause with a client certificate: exit %d: %s", code, errs)
		}
		waitFor(t, "the pause to reach n2", 5*time.Second, func() bool {
			_, out, _ := c.ctl(t, false, []string{"n2"}, "cluster", "-o", "json")
			return strings.Contains(out, `"rebalance_paused": true`)
		})
		// The dry run is an administrative call too; paused, it says so.
		if code, _, errs := c.ctl(t, false, []string{"n2"}, "plan"); code != 1 || !strings.Contains(errs, "client certificate") {
			t.Errorf("plan without a client certificate: exit %d, %q; want 1, refused", code, errs)
		}
		if code, out, errs := c.ctl(t, true, []string{"n2"}, "plan", "-o", "json"); code != 0 || !strings.Contains(out, `"paused": true`) {
			t.Errorf("plan with a client certificate: exit %d: %s %s", code, out, errs)
		}
		if code, _, errs := c.ctl(t, true, []string{"n2"}, "resume"); code != 0 {
			t.Errorf("resume with a client certificate: exit %d: %s", code, errs)
		}
		// The internal services are closed to callers without a
		// certificate too: a voter call is refused before the voter
		// sees it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := conns["n1"].Invoke(ctx, "/tenure.voter.v1.Voter/Call", &voterv1.CallRequest{}, &voterv1.CallReply{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("voter call without a client certificate: %v, want UNAUTHENTICATED", err)
		}
	})

	t.Run("kill -9 fails over", func(t *testing.T) {
		victim := "n2"
		w := startWatch(t, c, "n4", "n1")
		// The Go client follows the victim itself first: it must move to
		// the next endpoint when the victim dies.
		cl, err := client.New(client.Config{Endpoints: []string{c.grpcs[victim], c.grpcs["n4"]}, DialOptions: []grpc.DialOption{c.creds()}})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cl.WaitReady(ctx); err != nil {
			t.Fatalf("client: %v", err)
		}
		waitFor(t, "the watch to load the table", 10*time.Second, func() bool { return len(w.snapshot()) == 32 })
		before := map[uint32]uint64{}
		for s, e := range w.snapshot() {
			if e.Leader == victim {
				before[s] = e.Epoch
			}
		}
		if len(before) == 0 {
			t.Fatalf("%s leads nothing in n4's view", victim)
		}
		if err := c.procs[victim].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, "the victim's shards led elsewhere at higher epochs", 15*time.Second, func() bool {
			snap := w.snapshot()
			for s, e := range before {
				cur := snap[s]
				if cur.State != "led" || cur.Leader == victim || cur.Leader == "" || cur.Epoch <= e {
					return false
				}
			}
			return true
		})
		t.Logf("kill -9 of %s: its %d shards led elsewhere at higher epochs %v after the kill (seen through tenurectl watch)", victim, len(before), took.Round(time.Millisecond))
		took = waitFor(t, "the Go client to see the new leaders", 15*time.Second, func() bool {
			es := cl.Table().Entries()
			for s, e := range before {
				if es[s].State != shard.Led || es[s].Leader == victim || es[s].Epoch <= e {
					return false
				}
			}
			return true
		})
		t.Logf("the Go client, which followed %s, saw them %v later", victim, took.Round(time.Millisecond))
		if e, ok := cl.LookupString("customer/1"); !ok || e.Leader == victim || e.State != shard.Led {
			t.Errorf("client lookup after the failover: %+v, %v", e, ok)
		}
		if code := c.procs[victim].waitExit(t, 5*time.Second); code != -1 && code != 137 && code != 0 && code != 1 {
			t.Logf("killed process exit code %d", code)
		}
		w.stop(t)

		waitFor(t, "every shard led without the victim in n1's view", 10*time.Second, func() bool { return allLed(conns["n1"], victim) })
		code, out, _ := c.ctl(t, false, []string{"n1"}, "shards", "-state", "led", "-o", "json")
		for _, e := range decode[[]entry](t, "shards", out) {
			if e.Leader == victim {
				t.Errorf("shard %d still led by %s", e.Shard, victim)
			}
		}
		if code != 0 {
			t.Errorf("shards: exit %d", code)
		}
	})

	t.Run("SIGTERM drains and exits 0", func(t *testing.T) {
		p := c.procs["n4"]
		began := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.waitExit(t, 20*time.Second); code != 0 {
			t.Fatalf("exit code after SIGTERM: %d, want 0", code)
		}
		t.Logf("SIGTERM to exit: %v", time.Since(began).Round(time.Millisecond))
		waitFor(t, "every shard led by the remaining nodes", 10*time.Second, func() bool { return allLed(conns["n1"], "n2", "n4") })
		released, handedTo := 0, map[string]int{}
		for _, line := range strings.Split(p.logText(), "\n") {
			var rec struct {
				Msg, Event, Reason, To string
			}
			if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "transition" || rec.Event != "released" {
				continue
			}
			released++
			if rec.To != "" {
				handedTo[rec.To]++
			}
			if rec.Reason == "lease expired" || rec.Reason == "quorum lost" {
				t.Errorf("n4 lost a shard to %q while draining", rec.Reason)
			}
		}
		if released == 0 {
			t.Error("n4 logged no released transition")
		}
		t.Logf("n4 released %d shards, handed off to %v", released, handedTo)
	})

	t.Run("refused nodes", func(t *testing.T) {
		// Seeds point at n1 only; a short join timeout makes the refusal
		// quick.
		seedArgs := []string{"-seeds", c.gossips["n1"], "-join-timeout", "3s"}
		wrongKey := c.startEnv("x-key", []string{"TENURE_GOSSIP_KEY=" + gossipKey(t)}, seedArgs...)
		noKey := c.startEnv("x-nokey", nil, seedArgs...)
		shards := c.start("x-shards", append(seedArgs, "-shards", "64")...)
		for _, tt := range []struct {
			p    *proc
			code int
			want string
		}{
			{wrongKey, 4, "no seed answered within -join-timeout"},
			{noKey, 4, "no seed answered within -join-timeout"},
			{shards, 5, "shards"},
		} {
			if code := tt.p.waitExit(t, 15*time.Second); code != tt.code || !strings.Contains(tt.p.logText(), tt.want) {
				t.Errorf("%s: exit %d, want %d with %q; log:\n%s", tt.p.id, code, tt.code, tt.want, tail(tt.p.logText(), 5))
			}
		}
		_, out, _ := c.ctl(t, false, []string{"n1"}, "members", "-o", "json")
		for _, m := range decode[[]member](t, "members", out) {
			if strings.HasPrefix(m.NodeID, "x-") {
				t.Errorf("refused node %s is a member", m.NodeID)
			}
		}
	})
	t.Logf("TestCluster took %v", time.Since(began).Round(time.Millisecond))
}

// watch is a running `tenurectl watch -o json`, applying its events to a
// table.
type watch struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	table map[uint32]entry
	done  chan struct{}
	errb  strings.Builder
}

func startWatch(t *testing.T, c *cluster, addrs ...string) *watch {
	t.Helper()
	var as []string
	for _, a := range addrs {
		as = append(as, c.grpcs[a])
	}
	w := &watch{table: map[uint32]entry{}, done: make(chan struct{})}
	w.cmd = exec.Command(bins.tenurectl, "-tls-ca", c.pki.ca, "-addr", strings.Join(as, ","), "-o", "json", "watch")
	w.cmd.Env = cleanEnv()
	w.cmd.Stderr = &w.errb
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		w.read(out)
	}()
	t.Cleanup(func() {
		_ = w.cmd.Process.Kill()
		<-w.done
		_ = w.cmd.Wait()
	})
	return w
}

func (w *watch) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev struct {
			Reset   bool    `json:"reset"`
			Changed []entry `json:"changed"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		w.mu.Lock()
		if ev.Reset {
			w.table = map[uint32]entry{}
		}
		for _, e := range ev.Changed {
			w.table[e.Shard] = e
		}
		w.mu.Unlock()
	}
}

func (w *watch) snapshot() map[uint32]entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[uint32]entry, len(w.table))
	for k, v := range w.table {
		out[k] = v
	}
	return out
}

// stop interrupts the watch, which must exit 0.
func (w *watch) stop(t *testing.T) {
	t.Helper()
	if err := w.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not stop on SIGINT")
	}
	if err := w.cmd.Wait(); err != nil {
		t.Errorf("watch exit after SIGINT: %v (stderr %q)", err, w.errb.String())
	}
}

// TestStartupErrors: mistakes that stop tenured before it serves, with a
// message that names the problem and a non-zero exit code.
func TestStartupErrors(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	grpcAddr := freeAddr(t)
	base := []string{"-node-id", "n1", "-voters", "n1=" + grpcAddr, "-grpc-addr", grpcAddr, "-gossip-addr", freeAddr(t), "-http-addr", ""}
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad flag value", append(slices.Clone(base), "-shards", "lots", "-data-dir", dir), 2, "-shards"},
		{"missing shards", append(slices.Clone(base), "-data-dir", dir), 2, "-shards is required"},
		{"unknown flag", append(slices.Clone(base), "-shards", "8", "-data-dir", dir, "-leader", "n1"), 2, "-leader"},
		{"bad gossip key", append(slices.Clone(base), "-shards", "8", "-data-dir", dir, "-gossip-key", "c2hvcnQ="), 2, "-gossip-key"},
		{"unwritable data dir", append(slices.Clone(base), "-shards", "8", "-data-dir", filepath.Join(file, "sub"), "-init"), 3, "-data-dir"},
		{"no store without -init", append(slices.Clone(base), "-shards", "8", "-data-dir", dir), 3, "pass -init"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bins.tenured, tt.args...)
			cmd.Env = cleanEnv()
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tt.code || !strings.Contains(string(out), tt.want) {
				t.Errorf("exit %v, want %d with %q; output:\n%s", err, tt.code, tt.want, out)
			}
		})
	}
	if code, _, errs := runCtl(t); code != 2 || !strings.Contains(errs, "Usage") {
		t.Errorf("tenurectl without a command: exit %d, %q", code, errs)
	}
	if code, out, _ := runCtl(t, "-h"); code != 0 || !strings.Contains(out, "4  unavailable") {
		t.Errorf("tenurectl -h: exit %d, %q", code, out)
	}
}

// TestSecondSignal: a drain that cannot finish (a lone node has nobody to
// hand its shards to) is cut short by a second signal, which exits 1 at
// once.
func TestSecondSignal(t *testing.T) {
	skipShort(t)
	c := newCluster(t, []string{"solo"}, 1, 8)
	// The delay before the drain is the window the second signal lands
	// in: a lone node's drain itself ends at once (nowhere to hand to).
	p := c.start("solo", "-seeds", "", "-drain-timeout", "60s", "-shutdown-delay", "60s")
	conn := c.dial(c.grpcs["solo"])
	waitFor(t, "solo SERVING", 20*time.Second, func() bool { return serving(conn) && allLed(conn) })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the drain to begin", 10*time.Second, func() bool { return !serving(conn) })
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.waitExit(t, 5*time.Second); code != 1 {
		t.Errorf("exit code after a second signal: %d, want 1", code)
	}
	t.Logf("second signal to exit: %v", time.Since(sent).Round(time.Millisecond))
	if !strings.Contains(p.logText(), "second signal") {
		t.Error("the log does not say why it exited")
	}
}
