package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/daemon"
	"github.com/tenurehq/tenure/internal/loopback"
	"github.com/tenurehq/tenure/shard/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(url)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// next gets an ID.
func next(t *testing.T, url string) reply {
	t.Helper()
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	return r
}

// TestServeNext runs a one-node sequencer in process: IDs of a shard
// increase, a key maps to its shard, bad requests say what is wrong.
func TestServeNext(t *testing.T) {
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	signals := make(chan os.Signal, 2)
	code := make(chan int, 1)
	go func() {
		code <- daemon.Run(app(), daemon.Process{
			Args: []string{"-node-id", "solo", "-shards", "4", "-voters", "solo=" + grpcAddr, "-grpc-addr", grpcAddr,
				"-gossip-addr", freeAddr(t), "-http-addr", httpAddr, "-data-dir", filepath.Join(t.TempDir(), "d"), "-init",
				"-profile", "local", "-drain-timeout", "1s"},
			LookupEnv: func(string) (string, bool) { return "", false },
			Stdout:    io.Discard, Stderr: io.Discard, Signals: signals,
		})
	}()
	defer func() {
		signals <- syscall.SIGTERM
		if c := <-code; c != 0 {
			t.Errorf("exit %d", c)
		}
	}()
	base := "http://" + httpAddr + "/next"
	shardtest.Eventually(t, 15*time.Second, func() bool { c, _ := get(t, base+"?shard=1"); return c == 200 }, "an ID of shard 1")
	a, b := next(t, base+"?shard=1"), next(t, base+"?shard=1")
	if a.ID >= b.ID || a.Epoch < 1 || b.Epoch != a.Epoch || b.Counter != a.Counter+1 || a.Shard != 1 {
		t.Errorf("two IDs of shard 1: %+v then %+v", a, b)
	}
	if c, m := get(t, base+"?key=customer/1001"); c != 200 || m["shard"] == nil {
		t.Errorf("?key: %d %v", c, m)
	}
	for _, tt := range []struct{ name, query, want string }{
		{"no shard", "", "give ?shard=N or ?key=K"},
		{"shard out of range", "?shard=4", `shard "4"`},
		{"shard not a number", "?shard=x", `shard "x"`},
		{"both", "?shard=1&key=a", "not both"},
	} {
		if c, m := get(t, base+tt.query); c != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), tt.want) {
			t.Errorf("%s: %d %v, want 400 saying %q", tt.name, c, m, tt.want)
		}
	}
}
