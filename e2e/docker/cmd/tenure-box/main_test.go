package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenurehq/tenure/voterstore"
)

func TestRun(t *testing.T) {
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ready\n")) }))
	defer ready.Close()
	unready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: joining or settling", http.StatusServiceUnavailable)
	}))
	defer unready.Close()

	dir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{"TENURE_NODE_ID": "n1", "TENURE_CLUSTER": "c1", "TENURE_DATA_DIR": dir}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	noenv := func(string) (string, bool) { return "", false }

	loseStore := func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, voterstore.FileName)); err != nil {
			t.Fatal(err)
		}
	}

	// A burner's input that ends only when the test does.
	open, keepOpen := io.Pipe()
	defer keepOpen.Close()

	// The rows run in order: the second init finds the first one's store.
	tests := []struct {
		name     string
		before   func(t *testing.T) // optional
		args     []string
		getenv   func(string) (string, bool)
		stdin    io.Reader // optional: empty
		wantCode int
		wantOut  string // substring of stdout, or of stderr when the code is not 0
		wantErr  string // substring of stderr, whatever the code
	}{
		{name: "first init creates the store", args: []string{"init-voter"}, getenv: getenv, wantCode: 0, wantOut: "created the store",
			wantErr: "WARNING: voter n1: created a NEW voter identity"},
		{name: "second init keeps it", args: []string{"init-voter"}, getenv: getenv, wantCode: 0, wantOut: "exists; keeping it"},
		{name: "init where the store was lost is refused", before: loseStore, args: []string{"init-voter"}, getenv: getenv,
			wantCode: 3, wantOut: voterstore.MarkerFileName, wantErr: "-reinit"},
		{name: "refused again until forced", args: []string{"init-voter"}, getenv: getenv, wantCode: 3, wantOut: "REFUSED"},
		{name: "-reinit forces it", args: []string{"init-voter", "-reinit"}, getenv: getenv, wantCode: 0, wantOut: "created the store",
			wantErr: "NEW voter identity"},
		{name: "-reinit keeps an existing store", args: []string{"init-voter", "-reinit"}, getenv: getenv, wantCode: 0, wantOut: "exists; keeping it"},
		{name: "init without a node ID", args: []string{"init-voter", "-data-dir", dir}, getenv: noenv, wantCode: 2, wantOut: "-node-id"},
		{name: "init without a data directory", args: []string{"init-voter", "-node-id", "n1"}, getenv: noenv, wantCode: 2, wantOut: "-data-dir"},
		{name: "probe of a ready node", args: []string{"probe", ready.URL}, getenv: noenv, wantCode: 0},
		{name: "probe of an unready node", args: []string{"probe", unready.URL}, getenv: noenv, wantCode: 1, wantOut: "503"},
		{name: "probe without a URL", args: []string{"probe"}, getenv: noenv, wantCode: 2, wantOut: "want one URL"},
		{name: "burn until stdin ends", args: []string{"burn", "-threads", "2"}, getenv: noenv, wantCode: 0, wantOut: "burning on 2 threads"},
		{name: "burn for a while at most", args: []string{"burn", "-for", "50ms"}, getenv: noenv, stdin: open, wantCode: 0, wantOut: "burning on"},
		{name: "burn on no thread", args: []string{"burn", "-threads", "0"}, getenv: noenv, wantCode: 2, wantOut: "-threads must be positive"},
		{name: "burn with an argument", args: []string{"burn", "hot"}, getenv: noenv, wantCode: 2, wantOut: `unexpected argument "hot"`},
		{name: "unknown command", args: []string{"format"}, getenv: noenv, wantCode: 2, wantOut: `unknown command "format"`},
		{name: "no command", args: nil, getenv: noenv, wantCode: 2, wantOut: "Usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.before != nil {
				tt.before(t)
			}
			var stdout, stderr bytes.Buffer
			stdin := tt.stdin
			if stdin == nil {
				stdin = strings.NewReader("")
			}
			code := run(tt.args, tt.getenv, stdin, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, tt.wantCode, stdout.String(), stderr.String())
			}
			out := stdout.String()
			if code != 0 {
				out = stderr.String()
			}
			if !strings.Contains(out, tt.wantOut) {
				t.Errorf("output %q lacks %q", out, tt.wantOut)
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.wantErr)
			}
		})
	}

	// The store is one tenured opens without -init, for this voter only.
	if _, err := os.Stat(filepath.Join(dir, voterstore.FileName)); err != nil {
		t.Fatal(err)
	}
	st, err := voterstore.Open(voterstore.Options{Dir: dir, Cluster: "c1", VoterID: "n1"})
	if err != nil {
		t.Fatalf("open the initialised store: %v", err)
	}
	if !st.Restarted() {
		t.Errorf("restarted %v: want an existing store", st.Restarted())
	}
	st.Close()
	if _, err := voterstore.Open(voterstore.Options{Dir: dir, Cluster: "c1", VoterID: "n2"}); err == nil {
		t.Error("the store opened for another voter")
	}
}
