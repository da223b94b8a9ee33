package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestSplitSummary(t *testing.T) {
	tests := []struct {
		name     string
		give     string
		wantText string
		wantKeys []string
	}{
		{"table then JSON", "a table\nrow\n{\"p50_ms\":1.5,\"runs_ms\":[1,2]}\n", "a table\nrow\n", []string{"p50_ms", "runs_ms"}},
		{"no trailing newline", "x\n{\"a\":1}", "x\n", []string{"a"}},
		{"no JSON line", "only a table\n", "only a table\n", nil},
		{"JSON that is not an object", "t\n[1,2]\n", "t\n[1,2]\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text, m := splitSummary(tt.give)
			if text != tt.wantText {
				t.Errorf("text = %q, want %q", text, tt.wantText)
			}
			if len(m) != len(tt.wantKeys) {
				t.Fatalf("summary = %v, want keys %v", m, tt.wantKeys)
			}
			for _, k := range tt.wantKeys {
				if _, ok := m[k]; !ok {
					t.Errorf("summary lacks %q: %v", k, m)
				}
			}
		})
	}
}

func TestDistributionsPicksLatencySamples(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal([]byte(`{
		"gaps_ms": [1, 2, 3, 4, 5],
		"unary_quantiles_us": [10, 20, 30, 40, 50, 60],
		"p50_ms": 3,
		"short_ms": [1, 2],
		"drain_shards": [1, 2, 3, 4, 5],
		"mixed_ms": [1, "x", 3, 4, 5],
		"etcd": {"failover": {"runs_ms": [900, 1000, 1100, 1200, 1300]}}
	}`), &m); err != nil {
		t.Fatal(err)
	}
	got := distributions(m)
	if len(got) != 2 || len(got["ms"]) != 2 || len(got["µs"]) != 1 {
		t.Fatalf("distributions = %v, want gaps (ms) and unary quantiles (µs) only", got)
	}
	if s := got["ms"][0]; s.name != "etcd failover runs" || len(s.values) != 5 {
		t.Errorf("nested ms series = %+v", s)
	}
	if s := got["ms"][1]; s.name != "gaps" || len(s.values) != 5 {
		t.Errorf("ms series = %+v", s)
	}
	if s := got["µs"][0]; s.name != "unary quantiles" || len(s.values) != 6 {
		t.Errorf("µs series = %+v", s)
	}
}

func TestWriteCDFIsWellFormedSVG(t *testing.T) {
	var b bytes.Buffer
	err := writeCDF(&b, "a <title>", "ms", []series{
		{"tenure", []float64{1.5, 2, 2.5, 40}},
		{"etcd", []float64{0, 3, 300}}, // 0 has no place on a log axis
	})
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&b)
	polylines := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 2 {
		t.Errorf("%d curves, want 2", polylines)
	}
	if err := writeCDF(io.Discard, "empty", "ms", []series{{"none", []float64{0, -1}}}); err == nil {
		t.Error("a plot without positive values was written")
	}
}

func TestAllWritesReport(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"all", "-out", dir, "-only", "rebalance"}, &out); err != nil {
		t.Fatalf("all: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	for _, want := range []string{"## Machine", "| [rebalance](#rebalance)", "`go run ./bench rebalance -nodes 10 -shards 4096 -json`", "join_moved"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if err := run([]string{"all", "-out", dir, "-only", "nosuch"}, io.Discard); err == nil || !strings.Contains(err.Error(), `"nosuch"`) {
		t.Errorf("-only nosuch: err = %v, want one naming the scenario", err)
	}
}

// TestCDFAxisLabelsDoNotOverlap draws a wide range (0.1 ms to 10 s), where
// "5000" and "10000" used to run into each other, and checks that every
// pair of neighbouring axis labels keeps a gap.
func TestCDFAxisLabelsDoNotOverlap(t *testing.T) {
	var b bytes.Buffer
	if err := writeCDF(&b, "wide", "ms", []series{{"s", []float64{0.2, 3, 90, 1200, 9000}}}); err != nil {
		t.Fatal(err)
	}
	type label struct {
		x    float64
		text string
	}
	var labels []label
	dec := xml.NewDecoder(&b)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "text" {
			continue
		}
		var x, y float64
		var middle bool
		for _, a := range se.Attr {
			switch a.Name.Local {
			case "x":
				x, _ = strconv.ParseFloat(a.Value, 64)
			case "y":
				y, _ = strconv.ParseFloat(a.Value, 64)
			case "text-anchor":
				middle = a.Value == "middle"
			}
		}
		if !middle || y != padT+innerH+16 {
			continue // not an x-axis label
		}
		tok, err = dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		cd, _ := tok.(xml.CharData)
		labels = append(labels, label{x, string(cd)})
	}
	if len(labels) < 4 {
		t.Fatalf("only %d x-axis labels: %v", len(labels), labels)
	}
	for i := 1; i < len(labels); i++ {
		a, c := labels[i-1], labels[i]
		if gap := (c.x - float64(len(c.text))*charW/2) - (a.x + float64(len(a.text))*charW/2); gap < charW {
			t.Errorf("labels %q and %q are %.1f apart, want at least %d", a.text, c.text, gap, charW)
		}
	}
	if last := labels[len(labels)-1].text; last != "5000" && last != "10000" {
		t.Errorf("last label %q: the top of the range went unlabelled", last)
	}
}
