package shard

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A voter whose calls fail or whose queue overflows is reported at WARN,
// once per interval, with the counts and the last error.
func TestVoterTroubleIsWarnedWithTheNumbers(t *testing.T) {
	var buf bytes.Buffer
	p := &rpcPlane{log: slog.New(slog.NewTextHandler(&buf, nil)), timeout: 500 * time.Millisecond}
	c := &voterClient{id: "v1"}
	fail := func(at time.Duration, err string) {
		c.failed.Add(1)
		c.lastErr.Store(&err)
		p.warnTrouble(c, int64(at))
	}
	fail(time.Second, "rpc error: code = DeadlineExceeded")
	for at := time.Second; at < time.Second+refusalLogEvery; at += time.Second {
		fail(at, "rpc error: code = DeadlineExceeded")
	}
	if buf.Len() != 0 {
		t.Fatalf("warned within the first interval: %s", buf.String())
	}
	c.dropped.Add(3)
	fail(time.Second+refusalLogEvery, errors.New("rpc error: code = Unavailable").Error())
	out := buf.String()
	for _, want := range []string{"level=WARN", "voter requests failing", "voter=v1", "failed=12", "dropped_queue_full=3", "Unavailable"} {
		if !strings.Contains(out, want) {
			t.Errorf("warning %q lacks %q", out, want)
		}
	}
	buf.Reset()
	fail(2*time.Second+refusalLogEvery, "again")
	if buf.Len() != 0 {
		t.Fatalf("warned twice within one interval: %s", buf.String())
	}
}
