package ledgerstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/examples/ledger/audit"
	"github.com/tenurehq/tenure/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// step is one request to the store and the reply it must get.
type step struct {
	method, path, body string
	contentType        string // default application/json
	wantCode           int
	want               map[string]any // fields of the JSON reply that must match
	wantError          string         // in the reply's "error"
}

func (s step) run(t *testing.T, base string) {
	t.Helper()
	req, err := http.NewRequest(s.method, base+s.path, strings.NewReader(s.body))
	if err != nil {
		t.Fatal(err)
	}
	ct := s.contentType
	if ct == "" {
		ct = "application/json"
	}
	req.Header.Set("Content-Type", ct)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != s.wantCode {
		t.Fatalf("%s %s %s: %d %s, want %d", s.method, s.path, s.body, resp.StatusCode, b, s.wantCode)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s %s: reply %q is not a JSON object: %v", s.method, s.path, b, err)
	}
	for k, v := range s.want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("%s %s %s: %q = %v, want %v (reply %s)", s.method, s.path, s.body, k, got[k], v, b)
		}
	}
	if s.wantError != "" && !strings.Contains(fmt.Sprint(got["error"]), s.wantError) {
		t.Errorf("%s %s %s: error %q, want it to say %q", s.method, s.path, s.body, got["error"], s.wantError)
	}
}

func post(path, body string, code int, want map[string]any) step {
	return step{method: http.MethodPost, path: path, body: body, wantCode: code, want: want}
}

func bad(path, body, wantError string) step {
	return step{method: http.MethodPost, path: path, body: body, wantCode: http.StatusBadRequest, wantError: wantError}
}

// TestHTTPContract runs each scenario on a fresh store: the replies of
// the contract in README.md, row by row.
func TestHTTPContract(t *testing.T) {
	tests := []struct {
		name   string
		unsafe bool
		steps  []step
	}{
		{name: "first fence", steps: []step{
			post("/fence", `{"shard":3,"epoch":7,"node":"n1"}`, 200, map[string]any{"fence": 7, "next_period": 1}),
		}},
		{name: "any content type", steps: []step{
			{method: http.MethodPost, path: "/fence", body: `{"shard":3,"epoch":7,"node":"n1"}`, contentType: "application/x-www-form-urlencoded", wantCode: 200},
		}},
		{name: "charges in order", steps: []step{
			post("/fence", `{"shard":3,"epoch":7,"node":"n1"}`, 200, nil),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":1}`, 200, map[string]any{"fence": 7, "next_period": 2}),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":2}`, 200, map[string]any{"next_period": 3}),
		}},
		{name: "a new leader reads where the old one stopped", steps: []step{
			post("/fence", `{"shard":3,"epoch":7,"node":"n1"}`, 200, nil),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":1}`, 200, nil),
			post("/fence", `{"shard":3,"epoch":8,"node":"n2"}`, 200, map[string]any{"fence": 8, "next_period": 2}),
		}},
		{name: "stale fence", steps: []step{
			post("/fence", `{"shard":3,"epoch":8,"node":"n2"}`, 200, nil),
			post("/fence", `{"shard":3,"epoch":7,"node":"n1"}`, 409, map[string]any{"reason": "stale_epoch", "fence": 8, "next_period": 1}),
		}},
		{name: "fencing again at the same epoch re-reads", steps: []step{
			post("/fence", `{"shard":3,"epoch":8,"node":"n2"}`, 200, nil),
			post("/charge", `{"shard":3,"epoch":8,"node":"n2","period":1}`, 200, nil),
			post("/fence", `{"shard":3,"epoch":8,"node":"n2"}`, 200, map[string]any{"fence": 8, "next_period": 2}),
		}},
		{name: "stale charge", steps: []step{
			post("/fence", `{"shard":3,"epoch":7,"node":"n1"}`, 200, nil),
			post("/fence", `{"shard":3,"epoch":8,"node":"n2"}`, 200, nil),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":1}`, 409, map[string]any{"reason": "stale_epoch", "fence": 8, "next_period": 1}),
		}},
		{name: "a charge at a higher epoch raises the fence", steps: []step{
			post("/charge", `{"shard":3,"epoch":9,"node":"n1","period":1}`, 200, map[string]any{"fence": 9}),
			post("/fence", `{"shard":3,"epoch":8,"node":"n2"}`, 409, map[string]any{"reason": "stale_epoch", "fence": 9}),
		}},
		{name: "duplicate", steps: []step{
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":1}`, 200, nil),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":1}`, 409, map[string]any{"reason": "duplicate", "fence": 7, "next_period": 2}),
		}},
		{name: "gap on a new shard names fence 0", steps: []step{
			post("/charge", `{"shard":4,"epoch":7,"node":"n1","period":2}`, 409, map[string]any{"reason": "gap", "fence": 0, "next_period": 1}),
		}},
		{name: "shards are independent", steps: []step{
			post("/fence", `{"shard":1,"epoch":9,"node":"n1"}`, 200, nil),
			post("/charge", `{"shard":2,"epoch":1,"node":"n2","period":1}`, 200, map[string]any{"fence": 1}),
		}},
		{name: "unsafe store accepts stale, duplicate and gap", unsafe: true, steps: []step{
			post("/fence", `{"shard":3,"epoch":8,"node":"n2"}`, 200, nil),
			post("/charge", `{"shard":3,"epoch":8,"node":"n2","period":1}`, 200, nil),
			post("/fence", `{"shard":3,"epoch":7,"node":"n1"}`, 200, map[string]any{"fence": 8}),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":1}`, 200, map[string]any{"fence": 8, "next_period": 2}),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":5}`, 200, map[string]any{"next_period": 6}),
		}},
		{name: "malformed requests", steps: []step{
			bad("/fence", `{"shard":3,"epoch":7`, "malformed JSON"),
			bad("/fence", ``, "empty body"),
			bad("/fence", `[1]`, "want a JSON object"),
			bad("/fence", `{"shard":3,"epoch":7,"node":"n1","color":"red"}`, `unknown field "color"`),
			bad("/fence", `{"epoch":7,"node":"n1"}`, `missing field "shard"`),
			bad("/fence", `{"shard":3,"node":"n1"}`, `missing field "epoch"`),
			bad("/fence", `{"shard":3,"epoch":7}`, `missing field "node"`),
			bad("/fence", `{"shard":3,"epoch":0,"node":"n1"}`, `field "epoch" must be at least 1`),
			bad("/fence", `{"shard":-1,"epoch":7,"node":"n1"}`, `field "shard"`),
			bad("/fence", `{"shard":3,"epoch":"7","node":"n1"}`, `field "epoch"`),
			bad("/fence", `{"shard":3,"epoch":7,"node":""}`, `field "node" must be 1-64 bytes`),
			bad("/fence", `{"shard":3,"epoch":7,"node":"n1"} {}`, "data after the JSON object"),
			bad("/charge", `{"shard":3,"epoch":7,"node":"n1"}`, `missing field "period"`),
			bad("/charge", `{"shard":3,"epoch":7,"node":"n1","period":0}`, `field "period" must be in [1,`),
			bad("/charge", `{"shard":3,"epoch":7,"node":"n1","period":9007199254740993}`, `field "period" must be in [1,`),
			bad("/fence", `{"shard":3,"epoch":7,"node":"`+strings.Repeat("x", 5000)+`"}`, "body"),
			// None of these is an attempt.
			{method: http.MethodGet, path: "/audit", wantCode: 200, want: map[string]any{"attempts": 0, "fences": 0, "ok": true}},
		}},
		{name: "audit and log", steps: []step{
			post("/fence", `{"shard":3,"epoch":7,"node":"n1"}`, 200, nil),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":1}`, 200, nil),
			post("/charge", `{"shard":3,"epoch":7,"node":"n1","period":1}`, 409, nil),
			{method: http.MethodGet, path: "/audit", wantCode: 200, want: map[string]any{
				"attempts": 2, "accepted": 1, "rejected": 1, "fences": 1, "stale_rejected": 0, "stale_accepted": 0,
				"double_leaders": 0, "duplicates": 0, "lost": 0, "shards": 1, "max_period_sum": 1, "ok": true,
			}},
			{method: http.MethodGet, path: "/log?after=1&limit=1", wantCode: 200},
			{method: http.MethodGet, path: "/log?after=x", wantCode: 400, wantError: `"after"`},
			{method: http.MethodGet, path: "/log?limit=0", wantCode: 400, wantError: `"limit"`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(New(Config{UnsafeNoFence: tt.unsafe}).Handler())
			defer srv.Close()
			for _, s := range tt.steps {
				s.run(t, srv.URL)
			}
		})
	}
}

// TestLogRecordsEveryAttempt: accepted and refused attempts are logged
// in order with their token and the store's receive time.
func TestLogRecordsEveryAttempt(t *testing.T) {
	s := New(Config{})
	_, _ = s.Fence(1, 2, "n1")
	_, _ = s.Charge(1, 2, "n1", 1)
	_, _ = s.Charge(1, 1, "n0", 2)
	log := s.Log(0, 0)
	want := []audit.Attempt{
		{Seq: 1, Kind: audit.Fence, Shard: 1, Epoch: 2, Node: "n1", Accepted: true},
		{Seq: 2, Kind: audit.Charge, Shard: 1, Epoch: 2, Node: "n1", Period: 1, Accepted: true},
		{Seq: 3, Kind: audit.Charge, Shard: 1, Epoch: 1, Node: "n0", Period: 2, Reason: "stale_epoch"},
	}
	if len(log) != len(want) {
		t.Fatalf("log has %d attempts, want %d: %+v", len(log), len(want), log)
	}
	for i := range want {
		got := log[i]
		if got.Time.IsZero() {
			t.Errorf("attempt %d has no receive time", i+1)
		}
		got.Time = want[i].Time
		if got != want[i] {
			t.Errorf("attempt %d = %+v, want %+v", i+1, got, want[i])
		}
	}
	if page := s.Log(1, 1); len(page) != 1 || page[0].Seq != 2 {
		t.Errorf("Log(1, 1) = %+v, want the attempt of seq 2", page)
	}
	if page := s.Log(3, 0); len(page) != 0 {
		t.Errorf("Log(3, 0) = %+v, want none", page)
	}
}

// TestConcurrentLeaders: two writers at different epochs race on one
// shard. Every period is accepted exactly once, the stale writer loses
// for good once the newer one has written, and the audit agrees.
func TestConcurrentLeaders(t *testing.T) {
	s := New(Config{})
	var wg sync.WaitGroup
	for _, w := range []struct {
		node  string
		epoch uint64
	}{{"old", 4}, {"new", 5}, {"new2", 5}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := uint64(1)
			for range 500 {
				_, err := s.Charge(0, w.epoch, w.node, next)
				var re *RejectedError
				switch {
				case err == nil:
					next++
				case errors.As(err, &re):
					next = re.NextPeriod
				}
			}
		}()
	}
	wg.Wait()
	rep := s.Audit()
	if rep.StaleAccepted != 0 || rep.Duplicates != 0 || rep.Lost != 0 || rep.Accepted == 0 || uint64(rep.Accepted) != rep.MaxPeriodSum {
		t.Errorf("audit of a fenced store: %+v", rep)
	}
	// new and new2 share epoch 5: two leaders with one token, which the
	// store cannot tell apart and the audit must report.
	wrote := map[string]bool{}
	for _, a := range s.Log(0, 0) {
		if a.Accepted {
			wrote[a.Node] = true
		}
	}
	if want := wrote["new"] && wrote["new2"]; (rep.DoubleLeaders == 1) != want {
		t.Errorf("new and new2 both wrote at epoch 5: %v; double_leaders %d", want, rep.DoubleLeaders)
	}
}

// TestClient: the client turns replies into results and typed errors.
func TestClient(t *testing.T) {
	srv := httptest.NewServer(New(Config{}).Handler())
	defer srv.Close()
	c, err := NewClient(srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if res, err := c.Fence(ctx, FenceRequest{Shard: 1, Epoch: 3, Node: "n1"}); err != nil || res.NextPeriod != 1 {
		t.Fatalf("Fence = %+v, %v", res, err)
	}
	if res, err := c.Charge(ctx, ChargeRequest{Shard: 1, Epoch: 3, Node: "n1", Period: 1}); err != nil || res.NextPeriod != 2 {
		t.Fatalf("Charge = %+v, %v", res, err)
	}
	_, _ = c.Fence(ctx, FenceRequest{Shard: 1, Epoch: 4, Node: "n2"})
	tests := []struct {
		name     string
		req      ChargeRequest
		want     error
		wantNext uint64
	}{
		{name: "stale", req: ChargeRequest{Shard: 1, Epoch: 3, Node: "n1", Period: 2}, want: shard.ErrStaleEpoch, wantNext: 2},
		{name: "duplicate", req: ChargeRequest{Shard: 1, Epoch: 4, Node: "n2", Period: 1}, want: ErrDuplicate, wantNext: 2},
		{name: "gap", req: ChargeRequest{Shard: 1, Epoch: 4, Node: "n2", Period: 3}, want: ErrGap, wantNext: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Charge(ctx, tt.req)
			var re *RejectedError
			if !errors.Is(err, tt.want) || !errors.As(err, &re) || re.NextPeriod != tt.wantNext || re.Fence != 4 || re.Shard != 1 {
				t.Errorf("Charge(%+v) = %#v, want %v with next period %d and fence 4", tt.req, err, tt.want, tt.wantNext)
			}
		})
	}
	if _, err := c.Charge(ctx, ChargeRequest{Shard: 1, Epoch: 0, Node: "n1", Period: 1}); err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), `"epoch"`) {
		t.Errorf("epoch 0: %v, want a 400 naming the field", err)
	}
	rep, err := c.Audit(ctx)
	if err != nil || rep.Accepted != 1 || rep.Rejected != 3 || !rep.OK {
		t.Errorf("Audit = %+v, %v", rep, err)
	}
	for _, u := range []string{"", "store:8080", "ftp://store", "http://"} {
		if _, err := NewClient(u, nil); err == nil {
			t.Errorf("NewClient(%q) accepted", u)
		}
	}
}
