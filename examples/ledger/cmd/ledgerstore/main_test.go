package main

import (
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/internal/loopback"
	"github.com/tenurehq/tenure/shard/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a strings.Builder safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func TestRunServesUntilSignal(t *testing.T) {
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	signals := make(chan os.Signal, 1)
	code := make(chan int, 1)
	go func() { code <- run([]string{"-addr", addr, "-unsafe-no-fence"}, &stderr, signals) }()
	shardtest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "/healthz")
	signals <- syscall.SIGTERM
	if c := <-code; c != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", c)
	}
	for _, want := range []string{"-unsafe-no-fence: the store accepts every write", "final audit"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr.String())
		}
	}
}

func TestRunRefuses(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{name: "unknown flag", args: []string{"-fence"}, wantCode: 2, want: "-fence"},
		{name: "argument", args: []string{"extra"}, wantCode: 2, want: `unexpected argument "extra"`},
		{name: "log level", args: []string{"-log-level", "loud"}, wantCode: 2, want: "-log-level"},
		{name: "address", args: []string{"-addr", "nowhere:x"}, wantCode: 1, want: "-addr nowhere:x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr syncBuffer
			if c := run(tt.args, &stderr, nil); c != tt.wantCode || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, want %d with %q in:\n%s", c, tt.wantCode, tt.want, stderr.String())
			}
		})
	}
}
