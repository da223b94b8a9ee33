// Package alerts checks the example Prometheus alerting rules in this
// directory: they parse as a rules file, their templates compile, and
// every Tenure metric they use exists.
package alerts

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/tenurehq/tenure/shard"
)

// rulesFile mirrors Prometheus's rule file format (rulefmt), strictly:
// an unknown key is an error.
type rulesFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert         string            `yaml:"alert"`
			Record        string            `yaml:"record"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func load(t *testing.T) rulesFile {
	t.Helper()
	b, err := os.ReadFile("tenure-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f rulesFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("tenure-alerts.yml: %v", err)
	}
	return f
}

// promTemplateFuncs stands in for the functions Prometheus offers to
// annotation templates, so that the templates compile here as there.
var promTemplateFuncs = template.FuncMap{
	"humanize": func(any) string { return "" }, "humanize1024": func(any) string { return "" },
	"humanizeDuration": func(any) string { return "" }, "humanizePercentage": func(any) string { return "" },
	"humanizeTimestamp": func(any) string { return "" }, "title": strings.ToUpper, "toUpper": strings.ToUpper,
	"toLower": strings.ToLower, "first": func(any) any { return nil }, "label": func(string, any) string { return "" },
	"value": func(any) any { return nil }, "query": func(string) (any, error) { return nil, nil },
}

func TestRulesParse(t *testing.T) {
	f := load(t)
	if len(f.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	seen := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q is unnamed or empty", g.Name)
		}
		for _, r := range g.Rules {
			name := r.Alert
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("rule %q%q: exactly one of alert and record must be set", r.Alert, r.Record)
				continue
			}
			if seen[name] {
				t.Errorf("alert %s is defined twice", name)
			}
			seen[name] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: empty expr", name)
			}
			if err := balanced(r.Expr); err != "" {
				t.Errorf("%s: expr %q: %s", name, r.Expr, err)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", name, r.For, err)
				}
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity label %q, want critical or warning", name, s)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary annotation", name)
			}
			for k, v := range r.Annotations {
				// Prometheus prepends definitions of $labels and $value.
				src := "{{$labels := .Labels}}{{$value := .Value}}" + v
				if _, err := template.New(k).Funcs(promTemplateFuncs).Parse(src); err != nil {
					t.Errorf("%s: annotation %s does not compile: %v", name, k, err)
				}
			}
		}
	}
	for _, want := range []string{"TenureShardsWithoutLeader", "TenureFrequentTransitions", "TenureVoterRequestsFailing", "TenureMemberLost"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// balanced reports unbalanced brackets or quotes in a PromQL expression,
// the mistakes YAML folding most often introduces.
func balanced(expr string) string {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	var quote rune
	for _, c := range expr {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case pairs[c] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return "unbalanced " + string(c)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if quote != 0 || len(stack) > 0 {
		return "unclosed bracket or quote"
	}
	return ""
}

// captureNames is a Registerer that records the names of the metrics
// registered with it.
type captureNames map[string]bool

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (c captureNames) Register(col prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { col.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			c[m[1]] = true
		}
	}
	return nil
}

func (c captureNames) MustRegister(cs ...prometheus.Collector) {
	for _, col := range cs {
		_ = c.Register(col)
	}
}

func (c captureNames) Unregister(prometheus.Collector) bool { return true }

// TestRulesUseExistingMetrics: every tenure_* series a rule reads is one
// a node registers, so that a renamed metric breaks this test rather
// than silently disarming an alert.
func TestRulesUseExistingMetrics(t *testing.T) {
	names := captureNames{
		// Registered by tenured itself, next to the node's metrics.
		"tenure_node_ready": true,
	}
	if _, err := shard.New(shard.Config{NodeID: "n1", Shards: 8, Registerer: names}); err != nil {
		t.Fatal(err)
	}
	if !names["tenure_shards_unled"] {
		t.Fatalf("captured metric names %v lack tenure_shards_unled: the capture is broken", names)
	}
	used := regexp.MustCompile(`\btenure_[a-z_]+\b`)
	for _, g := range load(t).Groups {
		for _, r := range g.Rules {
			for _, m := range used.FindAllString(r.Expr, -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && names[b] {
						base = b
					}
				}
				if !names[base] {
					t.Errorf("%s uses %s, which no node registers", r.Alert, m)
				}
			}
		}
	}
}
