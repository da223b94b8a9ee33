//go:build e2edocker

package dockere2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/tenurehq/tenure/e2e/docker/check"
)

// The ledger example runs on every node (examples/ledger): each shard's
// leader charges the shard's next period every -charge-every into the
// ledger store, with its token; the store refuses stale epochs, and its
// audit counts what should never happen.

// audit is the ledger store's GET /audit.
type audit struct {
	Attempts      int      `json:"attempts"`
	Accepted      int      `json:"accepted"`
	StaleRejected int      `json:"stale_rejected"`
	StaleAccepted int      `json:"stale_accepted"`
	DoubleLeaders int      `json:"double_leaders"`
	Duplicates    int      `json:"duplicates"`
	Lost          int      `json:"lost"`
	Shards        int      `json:"shards"`
	MaxPeriodSum  uint64   `json:"max_period_sum"`
	Violations    []string `json:"violations"`
}

// The kinds of violations the store's audit reports.
const (
	StaleAccepted check.Kind = "ledger: stale write accepted"
	StoreDouble   check.Kind = "ledger: two nodes wrote with one token"
	Duplicate     check.Kind = "ledger: period charged twice"
	Lost          check.Kind = "ledger: period never charged"
)

// ledgerNode is a node's GET /ledger.
type ledgerNode struct {
	Node     string   `json:"node"`
	Charged  uint64   `json:"charged"`
	Rejected uint64   `json:"rejected"`
	Errors   uint64   `json:"errors"`
	Leading  []uint32 `json:"leading"`
}

func getJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// audit returns the store's audit.
func (cl *cluster) audit() audit {
	cl.t.Helper()
	var a audit
	if err := getJSON("http://"+cl.addr("store", 8090)+"/audit", &a); err != nil {
		cl.t.Fatalf("ledger store audit: %v", err)
	}
	return a
}

// ledgerAudit follows the store's audit scenario by scenario: the counts
// of each scenario are the audit's growth during it, and every violation
// the audit counts becomes a checker violation of the scenario.
type ledgerAudit struct {
	prev audit
	rows []ledgerRow
}

type ledgerRow struct {
	scenario string
	delta    audit
}

// take reads the audit at the end of a scenario (before check's End, so
// that the violations land in the scenario) and records its growth.
func (la *ledgerAudit) take(cl *cluster, scenario string) {
	a := cl.audit()
	d := audit{
		Attempts: a.Attempts - la.prev.Attempts, Accepted: a.Accepted - la.prev.Accepted,
		StaleRejected: a.StaleRejected - la.prev.StaleRejected, StaleAccepted: a.StaleAccepted - la.prev.StaleAccepted,
		DoubleLeaders: a.DoubleLeaders - la.prev.DoubleLeaders, Duplicates: a.Duplicates - la.prev.Duplicates,
		Lost: a.Lost - la.prev.Lost, Violations: a.Violations,
	}
	la.prev = a
	la.rows = append(la.rows, ledgerRow{scenario: scenario, delta: d})
	now := time.Now()
	for _, c := range []struct {
		kind check.Kind
		n    int
	}{{StaleAccepted, d.StaleAccepted}, {StoreDouble, d.DoubleLeaders}, {Duplicate, d.Duplicates}, {Lost, d.Lost}} {
		if c.n > 0 {
			cl.ck.Recorder().Add(check.Violation{At: now, Kind: c.kind,
				Detail: fmt.Sprintf("the store's audit counts %d more; the first: %s", c.n, strings.Join(d.Violations[:min(3, len(d.Violations))], "; "))})
		}
	}
}

// table formats the ledger's counts per scenario.
func (la *ledgerAudit) table() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "scenario\tcharges accepted\tstale refused by the fence\tstale accepted\ttwo writers per token\tcharged twice\tlost\t")
	for _, r := range la.rows {
		d := r.delta
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", r.scenario, d.Accepted, d.StaleRejected, d.StaleAccepted, d.DoubleLeaders, d.Duplicates, d.Lost)
	}
	w.Flush()
	return b.String()
}

// logLedgerNodes logs every reachable node's /ledger counts.
func (cl *cluster) logLedgerNodes(t *testing.T) {
	t.Helper()
	for _, m := range members {
		var ln ledgerNode
		if err := getJSON("http://"+cl.addr(m.id, 7080)+"/ledger", &ln); err != nil {
			t.Logf("%s: /ledger: %v", m.id, err)
			continue
		}
		t.Logf("%s: charged %d, rejected %d, errors %d, leading %d shards", m.id, ln.Charged, ln.Rejected, ln.Errors, len(ln.Leading))
	}
}
