package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/tenurehq/tenure/internal/loopback"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/voterstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for the daemon's logger and the test
// to use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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

// daemonRun is run() on its own goroutine.
type daemonRun struct {
	signals chan os.Signal
	code    chan int
	stderr  *syncBuffer
}

func startRun(t *testing.T, args []string) *daemonRun {
	t.Helper()
	r := &daemonRun{signals: make(chan os.Signal, 2), code: make(chan int, 1), stderr: &syncBuffer{}}
	go func() { r.code <- App{}.run(args, noEnv, io.Discard, r.stderr, r.signals) }()
	t.Cleanup(func() {
		select {
		case r.signals <- syscall.SIGTERM:
		default:
		}
		select {
		case <-r.code:
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop")
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", r.stderr.String())
		}
	})
	return r
}

// waitFor polls cond every 20 ms until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(url string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSingleNode runs a one-voter cluster in process: readiness, gRPC
// health, the HTTP endpoints, and a drain on a signal that exits 0.
func TestSingleNode(t *testing.T) {
	grpcAddr, gossipAddr, httpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	r := startRun(t, []string{
		"-node-id", "solo", "-shards", "8", "-voters", "solo=" + grpcAddr,
		"-grpc-addr", grpcAddr, "-gossip-addr", gossipAddr, "-http-addr", httpAddr,
		"-data-dir", filepath.Join(t.TempDir(), "data"), "-init", "-profile", "local",
		"-lease-duration", "500ms", "-log-level", "debug",
		// A lone node has nobody to hand its shards to: its drain ends
		// at the timeout, releasing them.
		"-drain-timeout", "1s",
	})
	base := "http://" + httpAddr
	waitFor(t, "/readyz", 15*time.Second, func() bool { code, _ := get(base + "/readyz"); return code == 200 })

	if code, body := get(base + "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	conn, err := grpc.NewClient("passthrough:///"+grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, svc := range []string{"", tenureService} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		cancel()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}

	// Reflection lists the services, for grpcurl.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, svc := range rr.GetListServicesResponse().GetService() {
		services = append(services, svc.GetName())
	}
	for _, want := range []string{"tenure.v1.Tenure", "grpc.health.v1.Health", "tenure.voter.v1.Voter"} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %q, not %s", services, want)
		}
	}
	_ = rs.CloseSend()

	var doc statusDoc
	waitFor(t, "every shard led", 10*time.Second, func() bool {
		_, body := get(base + "/status?format=json")
		doc = statusDoc{}
		return json.Unmarshal([]byte(body), &doc) == nil && doc.Led == 8
	})
	if doc.Node != "solo" || doc.Shards != 8 || !doc.Ready || len(doc.Members) != 1 || len(doc.Voters) != 1 || len(doc.Entries) != 8 {
		t.Errorf("status = %+v", doc)
	}
	if len(doc.Voters) == 1 && (!doc.Voters[0].Answered || doc.Voters[0].Failures != 0 || doc.NotConverging != 0) {
		t.Errorf("status voter %+v, not converging %d; want answered, no failures, 0", doc.Voters[0], doc.NotConverging)
	}
	if len(doc.Transitions) == 0 || doc.Transitions[0].Event != "acquired" {
		t.Errorf("status transitions = %+v, want acquisitions", doc.Transitions)
	}
	code, html := get(base + "/status")
	for _, want := range []string{"<title>Tenure solo", "Shard map", "Recent transitions", "solo", "answers this node"} {
		if code != 200 || !strings.Contains(html, want) {
			t.Errorf("/status HTML (%d) lacks %q", code, want)
		}
	}
	if code, _ := get(base + "/status?format=xml"); code != http.StatusBadRequest {
		t.Errorf("/status?format=xml = %d, want 400", code)
	}
	_, metrics := get(base + "/metrics")
	for _, want := range []string{`tenure_leases_held{node="solo"} 8`, `tenure_shards_unled{node="solo"} 0`, `tenure_node_ready{node="solo"} 1`, "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(r.stderr.String(), "msg=transition event=acquired") {
		t.Error("no transition was logged")
	}

	r.signals <- syscall.SIGTERM
	select {
	case code := <-r.code:
		r.code <- code // for Cleanup
		if code != exitOK {
			t.Fatalf("exit code after SIGTERM = %d, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if log := r.stderr.String(); !strings.Contains(log, "reason=drain") && !strings.Contains(log, "reason=shutdown") {
		t.Errorf("no release logged with its reason:\n%s", log)
	}
}

// TestStartErrors: what stops the daemon before it serves, with its exit
// code and the words an operator needs.
func TestStartErrors(t *testing.T) {
	grpcAddr := freeAddr(t)
	common := func(dataDir string, extra ...string) []string {
		return append([]string{
			"-node-id", "n1", "-shards", "8", "-voters", "n1=" + grpcAddr, "-grpc-addr", grpcAddr,
			"-gossip-addr", "127.0.0.1:0", "-http-addr", "", "-data-dir", dataDir, "-profile", "local",
		}, extra...)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	initialised := t.TempDir()
	if code := runQuiet(t, common(initialised, "-init", "-join-timeout", "1s"), func(sig chan os.Signal) { sig <- syscall.SIGTERM }); code != exitOK {
		t.Fatalf("first start with -init: exit %d", code)
	}
	// A data directory whose store was lost: its marker remains.
	lost := t.TempDir()
	st, err := voterstore.Open(voterstore.Options{Dir: lost, Cluster: membership.DefaultCluster, VoterID: "n1", Init: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(lost, voterstore.FileName)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{name: "no store without -init", args: common(t.TempDir()), wantCode: exitDataDir, want: "pass -init"},
		{name: "-init where the store was lost", args: common(lost, "-init"), wantCode: exitDataDir, want: "Delete " + voterstore.MarkerFileName + " only"},
		{name: "missing data dir without -init", args: common(filepath.Join(t.TempDir(), "nope")), wantCode: exitDataDir, want: "pass -init"},
		{name: "-init over a store", args: common(initialised, "-init"), wantCode: exitDataDir, want: "drop it"},
		{name: "data dir is a file", args: common(file), wantCode: exitDataDir, want: "is not a directory"},
		{name: "data dir under a file", args: common(filepath.Join(file, "sub"), "-init"), wantCode: exitDataDir, want: "not a directory"},
		{name: "bad flag", args: common(initialised, "-shards", "x"), wantCode: exitUsage, want: "-shards"},
		{name: "tls files missing", args: common(initialised, "-tls-cert", "/nonexistent.pem", "-tls-key", "/nonexistent.key"), wantCode: exitUsage, want: "-tls-cert"},
		{name: "seeds unreachable", args: common(initialised, "-seeds", freeAddr(t), "-join-timeout", "300ms"), wantCode: exitJoin, want: "no seed answered within -join-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr syncBuffer
			sig := make(chan os.Signal, 1)
			code := App{}.run(tt.args, noEnv, io.Discard, &stderr, sig)
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, want %d, with %q in:\n%s", code, tt.wantCode, tt.want, stderr.String())
			}
		})
	}
}

// runQuiet runs the daemon until act has been called once it is ready,
// and returns its exit code.
func runQuiet(t *testing.T, args []string, act func(chan os.Signal)) int {
	t.Helper()
	var stderr syncBuffer
	sig := make(chan os.Signal, 2)
	code := make(chan int, 1)
	go func() { code <- App{}.run(args, noEnv, io.Discard, &stderr, sig) }()
	waitFor(t, "the node to serve", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "msg=serving") || len(code) > 0 })
	act(sig)
	c := <-code
	if c != exitOK {
		t.Logf("daemon log:\n%s", stderr.String())
	}
	return c
}
