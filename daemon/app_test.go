package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tenurehq/tenure/shard"
)

// countingApp is an application for the tests: a flag, a route, and a
// Handler that counts what the node tells it.
type countingApp struct {
	greeting string

	mu        sync.Mutex
	acquired  map[uint32]uint64
	released  int
	closed    int
	hostNode  func() *shard.Node
	nodeIDArg string
}

func (a *countingApp) app() App {
	return App{
		Name:  "counter",
		About: "counter counts its leases.",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&a.greeting, "greeting", "", "what GET /hello answers (required)")
		},
		Start: func(h *Host) (shard.Handler, error) {
			if a.greeting == "" {
				return nil, Usagef("-greeting is required")
			}
			if h.Node() != nil {
				return nil, errors.New("Host.Node is set before the node starts")
			}
			a.nodeIDArg, a.hostNode = h.NodeID(), h.Node
			h.Handle("GET /hello", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				a.mu.Lock()
				defer a.mu.Unlock()
				fmt.Fprintf(w, "%s from %s leading %d", a.greeting, h.Node().ID(), len(a.acquired))
			}))
			return a, nil
		},
	}
}

func (a *countingApp) Acquired(l *shard.Lease) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.acquired == nil {
		a.acquired = map[uint32]uint64{}
	}
	a.acquired[l.Shard()] = l.Epoch()
}

func (a *countingApp) Released(l *shard.Lease, _ shard.Reason) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.acquired, l.Shard())
	a.released++
}

func (a *countingApp) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed++
	return nil
}

func (a *countingApp) counts() (acquired, released, closed int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.acquired), a.released, a.closed
}

// TestAppRuns: an application's flag comes from the environment, its
// route is served next to the daemon's, its Handler hears every
// acquisition and release while the daemon still logs them, and Close
// runs once the node has stopped.
func TestAppRuns(t *testing.T) {
	grpcAddr, gossipAddr, httpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	a := &countingApp{}
	var stderr syncBuffer
	signals := make(chan os.Signal, 2)
	code := make(chan int, 1)
	args := []string{
		"-node-id", "solo", "-shards", "4", "-voters", "solo=" + grpcAddr,
		"-grpc-addr", grpcAddr, "-gossip-addr", gossipAddr, "-http-addr", httpAddr,
		"-data-dir", filepath.Join(t.TempDir(), "data"), "-init", "-profile", "local",
		"-lease-duration", "500ms", "-drain-timeout", "1s",
	}
	env := envOf(map[string]string{"TENURE_GREETING": "hello"})
	go func() {
		code <- Run(a.app(), Process{Args: args, LookupEnv: env, Stdout: io.Discard, Stderr: &stderr, Signals: signals})
	}()
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", stderr.String())
		}
	}()
	base := "http://" + httpAddr
	waitFor(t, "the application to lead every shard", 15*time.Second, func() bool {
		c, body := get(base + "/hello")
		return c == 200 && body == "hello from solo leading 4"
	})
	if a.nodeIDArg != "solo" || a.hostNode() == nil {
		t.Errorf("Host.NodeID = %q, Host.Node() = %v after start", a.nodeIDArg, a.hostNode())
	}
	if c, _ := get(base + "/readyz"); c != 200 {
		t.Errorf("/readyz = %d beside the application's route", c)
	}
	if !strings.Contains(stderr.String(), "msg=transition event=acquired") {
		t.Error("the daemon's transition log was replaced by the application's Handler")
	}
	signals <- syscall.SIGTERM
	select {
	case c := <-code:
		if c != exitOK {
			t.Fatalf("exit %d after SIGTERM, want 0", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if acq, rel, closed := a.counts(); acq != 0 || rel != 4 || closed != 1 {
		t.Errorf("after exit: %d shards still acquired, %d released, closed %d times; want 0, 4, 1", acq, rel, closed)
	}
}

// TestAppUsage: the application's flags show in -h, and its refusal of a
// flag exits with the usage code, naming the command and the flag.
func TestAppUsage(t *testing.T) {
	a := &countingApp{}
	var out strings.Builder
	if c := Run(a.app(), Process{Args: []string{"-h"}, LookupEnv: noEnv, Stdout: &out, Stderr: io.Discard}); c != exitOK {
		t.Errorf("-h: exit %d", c)
	}
	for _, want := range []string{"Usage: counter -shards P", "counter counts its leases.", "-greeting", "-node-id", "Exit codes"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	grpcAddr := freeAddr(t)
	var stderr syncBuffer
	c := Run(a.app(), Process{
		Args: []string{"-node-id", "n1", "-shards", "4", "-voters", "n1=" + grpcAddr, "-grpc-addr", grpcAddr,
			"-gossip-addr", "127.0.0.1:0", "-http-addr", "", "-data-dir", t.TempDir(), "-init"},
		LookupEnv: noEnv, Stdout: io.Discard, Stderr: &stderr,
	})
	if c != exitUsage || !strings.Contains(stderr.String(), "counter: -greeting is required") || !strings.Contains(stderr.String(), "Run 'counter -h'") {
		t.Errorf("without -greeting: exit %d, want %d; stderr:\n%s", c, exitUsage, stderr.String())
	}
}

// handoffApp is a Handler with the optional handoff hooks.
type handoffApp struct {
	shard.HandlerFuncs
	prepared, quiesced int
}

func (h *handoffApp) Prepare(context.Context, uint32, uint64) error {
	h.prepared++
	return errors.New("not ready")
}

func (h *handoffApp) Quiesce(context.Context, *shard.Lease) error {
	h.quiesced++
	return nil
}

// TestHandlersPassHandoffHooks: the daemon's Handler passes Prepare and
// Quiesce on to an application that has them, and behaves as if absent
// for one that has not.
func TestHandlersPassHandoffHooks(t *testing.T) {
	with := &handoffApp{}
	tests := []struct {
		name        string
		app         shard.Handler
		wantPrepare bool // Prepare refuses: the application's answer came through
	}{
		{name: "application with hooks", app: with, wantPrepare: true},
		{name: "application without hooks", app: shard.HandlerFuncs{}},
		{name: "no application", app: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := handlers{app: tt.app}
			if err := h.Prepare(context.Background(), 1, 2); (err != nil) != tt.wantPrepare {
				t.Errorf("Prepare = %v, want an error: %v", err, tt.wantPrepare)
			}
			if err := h.Quiesce(context.Background(), nil); err != nil {
				t.Errorf("Quiesce = %v", err)
			}
		})
	}
	if with.prepared != 1 || with.quiesced != 1 {
		t.Errorf("the application's hooks ran %d and %d times, want 1 and 1", with.prepared, with.quiesced)
	}
}
