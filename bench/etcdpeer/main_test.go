package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		give    []string
		wantErr string // substring; "" for success
		// wantSettle is the -settle in effect, checked on success.
		wantSettle time.Duration
	}{
		{name: "defaults", give: nil, wantSettle: 150 * time.Millisecond},
		{name: "settle grows with elections", give: []string{"-elections", "1024"}, wantSettle: 450 * time.Millisecond},
		{name: "settle 256 elections", give: []string{"-elections", "256"}, wantSettle: 150 * time.Millisecond},
		{name: "settle 257 elections", give: []string{"-elections", "257"}, wantSettle: 250 * time.Millisecond},
		{name: "settle off", give: []string{"-elections", "1024", "-settle", "0"}, wantSettle: 0},
		{name: "settle named", give: []string{"-settle", "1s"}, wantSettle: time.Second},
		{name: "one candidate", give: []string{"-candidates", "1"}, wantErr: "-candidates"},
		{name: "no election", give: []string{"-elections", "0"}, wantErr: "-elections"},
		{name: "zero ttl", give: []string{"-ttl", "0"}, wantErr: "-ttl"},
		{name: "election timeout below 5 heartbeats", give: []string{"-election-ms", "400"}, wantErr: "-election-ms"},
		{name: "negative reps", give: []string{"-reps", "-1"}, wantErr: "-reps"},
		{name: "nothing to measure", give: []string{"-reps", "0", "-moves", "0"}, wantErr: "nothing to measure"},
		{name: "negative settle", give: []string{"-settle", "-1s"}, wantErr: "-settle"},
		{name: "stray argument", give: []string{"failover"}, wantErr: `"failover"`},
		{name: "unknown flag", give: []string{"-nodes", "5"}, wantErr: "-nodes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOptions(tc.give, io.Discard)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("parseOptions(%q) = %v, want no error", tc.give, err)
			case tc.wantErr == "" && o.settle != tc.wantSettle:
				t.Fatalf("parseOptions(%q): settle %v, want %v", tc.give, o.settle, tc.wantSettle)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("parseOptions(%q) = %v, want an error naming %s", tc.give, err, tc.wantErr)
			}
		})
	}
}

// TestElection runs both measurements at a tiny size on a real embedded
// member: every resign and crash must hand each election to another
// candidate.
func TestElection(t *testing.T) {
	o, err := parseOptions([]string{"-candidates", "3", "-elections", "2", "-reps", "2", "-moves", "4"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	h, err := start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	if h.grantedTTL != 1 {
		t.Errorf("granted TTL %d s, want 1 s at a 500 ms election timeout", h.grantedTTL)
	}
	for k, w := range h.leaders {
		if w == nil {
			t.Fatalf("election %d has no leader after start", k)
		}
	}
	// Candidate k mod N campaigns first in election k.
	if a, b := h.leaders[0].cand, h.leaders[1].cand; a == b {
		t.Errorf("both elections led by %s, want them spread", a.name)
	}
	var out strings.Builder
	ho, err := h.handoff(o.moves, &out)
	if err != nil {
		t.Fatalf("handoff: %v\n%s", err, out.String())
	}
	if ho.Failed != 0 || ho.GapP50MS <= 0 || ho.GapMaxMS < ho.GapP50MS || len(ho.GapsMS) != o.moves || ho.GapsMS[len(ho.GapsMS)-1] != ho.GapMaxMS {
		t.Errorf("handoff stats %+v", ho)
	}
	fo, err := h.failover(o.reps, &out)
	if err != nil {
		t.Fatalf("failover: %v\n%s", err, out.String())
	}
	// A crashed session lives until its TTL runs out, less the time since
	// its last keep-alive (sent every 500 ms): never less than 0.5 s.
	if len(fo.RunsMS) != o.reps || fo.MinMS < 400 || fo.MaxMS > float64(10*time.Second/time.Millisecond) {
		t.Errorf("failover stats %+v", fo)
	}
	t.Log(out.String())
}
