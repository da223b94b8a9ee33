package tenurev1_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wire sends m through the protobuf encoding, as the network would.
func wire[M proto.Message](t testing.TB, m M, out M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return out
}

func TestEntryRoundTrip(t *testing.T) {
	long := strings.Repeat("x", tenurev1.MaxStringLen)
	for _, tt := range []struct {
		name string
		give shard.Entry
	}{
		{name: "led", give: shard.Entry{Shard: 5, State: shard.Led, Epoch: 7, Leader: "node-a", Desired: "node-a", Addr: "10.0.0.1:7000"}},
		{name: "moving", give: shard.Entry{Shard: 6, State: shard.Moving, Epoch: 1 << 63, Leader: "node-a", Desired: "node-b", Addr: "10.0.0.1:7000"}},
		{name: "unled, desired owner known", give: shard.Entry{Shard: 0, State: shard.Unled, Desired: "node-b", Addr: "10.0.0.2:7000"}},
		{name: "unled, formerly led", give: shard.Entry{Shard: 1, State: shard.Unled, Epoch: 3}},
		{name: "zero entry", give: shard.Entry{}},
		{name: "last shard", give: shard.Entry{Shard: shard.MaxShards - 1, State: shard.Led, Epoch: 1, Leader: "n"}},
		{name: "longest strings", give: shard.Entry{State: shard.Led, Epoch: 1, Leader: long, Desired: long, Addr: long}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tenurev1.EntryFromPB(wire(t, tenurev1.EntryToPB(tt.give), &tenurev1.ShardEntry{}))
			if err != nil {
				t.Fatalf("EntryFromPB: %v", err)
			}
			if got != tt.give {
				t.Errorf("round trip = %+v, want %+v", got, tt.give)
			}
		})
	}
}

func TestEntryStates(t *testing.T) {
	for _, tt := range []struct {
		give shard.State
		want tenurev1.ShardState
	}{
		{shard.Led, tenurev1.ShardState_SHARD_STATE_LED},
		{shard.Unled, tenurev1.ShardState_SHARD_STATE_UNLED},
		{shard.Moving, tenurev1.ShardState_SHARD_STATE_MOVING},
		{shard.State(9), tenurev1.ShardState_SHARD_STATE_UNSPECIFIED},
	} {
		if got := tenurev1.EntryToPB(shard.Entry{State: tt.give}).GetState(); got != tt.want {
			t.Errorf("state %v on the wire = %v, want %v", tt.give, got, tt.want)
		}
	}
}

// checkFieldError fails t unless err names wantField (or is nil when
// wantField is empty).
func checkFieldError(t *testing.T, err error, wantField string) {
	t.Helper()
	if wantField == "" {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("err = nil, want an error naming %s", wantField)
	}
	if !errors.Is(err, tenurev1.ErrInvalid) {
		t.Errorf("err = %v, does not wrap ErrInvalid", err)
	}
	var fe *tenurev1.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v (%T), want a *FieldError", err, err)
	}
	if fe.Field != wantField {
		t.Errorf("Field = %q, want %q (err: %v)", fe.Field, wantField, err)
	}
	t.Log(err)
}

func TestEntryFromPBValidation(t *testing.T) {
	long := strings.Repeat("x", tenurev1.MaxStringLen+1)
	led := func() *tenurev1.ShardEntry {
		return tenurev1.EntryToPB(shard.Entry{Shard: 5, State: shard.Led, Epoch: 7, Leader: "node-a", Desired: "node-a", Addr: "a:1"})
	}
	for _, tt := range []struct {
		name      string
		give      func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry
		wantField string
	}{
		{"nil message", func(*tenurev1.ShardEntry) *tenurev1.ShardEntry { return nil }, "ShardEntry"},
		{"valid", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { return m }, ""},
		{"shard at MaxShards", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.Shard = shard.MaxShards; return m }, "ShardEntry.shard"},
		{"largest uint32 shard", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.Shard = 1<<32 - 1; return m }, "ShardEntry.shard"},
		{"unspecified state", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry {
			m.State = tenurev1.ShardState_SHARD_STATE_UNSPECIFIED
			return m
		}, "ShardEntry.state"},
		{"unknown state", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.State = 4; return m }, "ShardEntry.state"},
		{"negative state", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.State = -1; return m }, "ShardEntry.state"},
		{"led without leader", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.Leader = ""; return m }, "ShardEntry.leader"},
		{"moving without leader", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry {
			m.State, m.Leader = tenurev1.ShardState_SHARD_STATE_MOVING, ""
			return m
		}, "ShardEntry.leader"},
		{"led at epoch 0", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.Epoch = 0; return m }, "ShardEntry.epoch"},
		{"unled without leader", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry {
			m.State, m.Leader, m.Epoch = tenurev1.ShardState_SHARD_STATE_UNLED, "", 0
			return m
		}, ""},
		{"leader too long", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.Leader = long; return m }, "ShardEntry.leader"},
		{"address too long", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.Address = long; return m }, "ShardEntry.address"},
		{"desired too long", func(m *tenurev1.ShardEntry) *tenurev1.ShardEntry { m.Desired = long; return m }, "ShardEntry.desired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tenurev1.EntryFromPB(tt.give(led()))
			checkFieldError(t, err, tt.wantField)
		})
	}
}

func FuzzEntryFromPB(f *testing.F) {
	for _, m := range []*tenurev1.ShardEntry{
		tenurev1.EntryToPB(shard.Entry{Shard: 5, State: shard.Led, Epoch: 7, Leader: "node-a", Desired: "node-a", Addr: "a:1"}),
		tenurev1.EntryToPB(shard.Entry{Shard: shard.MaxShards - 1, State: shard.Moving, Epoch: 1, Leader: "n"}),
		tenurev1.EntryToPB(shard.Entry{}),
		{Shard: shard.MaxShards, State: 9},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m tenurev1.ShardEntry
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		e, err := tenurev1.EntryFromPB(&m)
		if err != nil {
			var fe *tenurev1.FieldError
			if !errors.Is(err, tenurev1.ErrInvalid) || !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("rejection %v (%T) is not a *FieldError wrapping ErrInvalid", err, err)
			}
			return
		}
		e2, err := tenurev1.EntryFromPB(wire(t, tenurev1.EntryToPB(e), &tenurev1.ShardEntry{}))
		if err != nil {
			t.Fatalf("accepted %+v, rejected its round trip: %v", e, err)
		}
		if e2 != e {
			t.Fatalf("round trip changed the entry: %+v != %+v", e2, e)
		}
	})
}

// nodeIDPattern is membership's rule for NodeIDs, the reference
// CheckNodeID is checked against.
var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func TestCheckNodeID(t *testing.T) {
	for _, tt := range []struct {
		name string
		give string
		ok   bool
	}{
		{"plain", "node-1", true},
		{"every allowed character", "Az09._-", true},
		{"64 characters", strings.Repeat("n", 64), true},
		{"empty", "", false},
		{"65 characters", strings.Repeat("n", 65), false},
		{"leading dot", ".node", false},
		{"leading dash", "-node", false},
		{"space", "node 1", false},
		{"slash", "node/1", false},
		{"non-ASCII", "nöde", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tenurev1.CheckNodeID("DrainRequest.node", tt.give)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckNodeID(%q) = %v, want ok=%v", tt.give, err, tt.ok)
			}
			var fe *tenurev1.FieldError
			if err != nil && (!errors.As(err, &fe) || fe.Field != "DrainRequest.node") {
				t.Errorf("CheckNodeID(%q) = %v, want a *FieldError naming DrainRequest.node", tt.give, err)
			}
		})
	}
}

func TestStateFromPB(t *testing.T) {
	for _, tt := range []struct {
		give tenurev1.ShardState
		want shard.State
		ok   bool
	}{
		{tenurev1.ShardState_SHARD_STATE_LED, shard.Led, true},
		{tenurev1.ShardState_SHARD_STATE_UNLED, shard.Unled, true},
		{tenurev1.ShardState_SHARD_STATE_MOVING, shard.Moving, true},
		{tenurev1.ShardState_SHARD_STATE_UNSPECIFIED, 0, false},
		{tenurev1.ShardState(42), 0, false},
	} {
		got, err := tenurev1.StateFromPB("ListShardsRequest.state", tt.give)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("StateFromPB(%v) = %v, %v; want %v, ok=%v", tt.give, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzCheckNodeID checks the hand-written scanner against membership's
// regular expression: a node ID from a request is accepted exactly when a
// node could carry it.
func FuzzCheckNodeID(f *testing.F) {
	for _, s := range []string{"node-1", "", ".x", strings.Repeat("a", 65), "a\x00b", "ñ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := tenurev1.CheckNodeID("f", s)
		if want := nodeIDPattern.MatchString(s); (err == nil) != want {
			t.Fatalf("CheckNodeID(%q) = %v, pattern says %v", s, err, want)
		}
		if err != nil && !errors.Is(err, tenurev1.ErrInvalid) {
			t.Fatalf("CheckNodeID(%q) = %v, does not wrap ErrInvalid", s, err)
		}
	})
}

// FuzzPageStart feeds PageStart any token: it never panics, refuses with
// ErrInvalid naming page_token, and a token it accepts resumes where a
// token made for that shard and those filters does.
func FuzzPageStart(f *testing.F) {
	req := &tenurev1.ListShardsRequest{Node: "node-2", FilterState: true, State: tenurev1.ShardState_SHARD_STATE_LED}
	for _, s := range []string{"", "ls1.", "12", tenurev1.NextPageToken(req, 0), tenurev1.NextPageToken(req, 1<<20),
		tenurev1.NextPageToken(&tenurev1.ListShardsRequest{}, 7)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		r := &tenurev1.ListShardsRequest{Node: req.Node, FilterState: req.FilterState, State: req.State, PageToken: tok}
		next, err := tenurev1.PageStart(r)
		if err != nil {
			var fe *tenurev1.FieldError
			if !errors.Is(err, tenurev1.ErrInvalid) || !errors.As(err, &fe) || fe.Field != "ListShardsRequest.page_token" {
				t.Fatalf("PageStart(%q) = %v: not a FieldError on page_token", tok, err)
			}
			return
		}
		if tok == "" {
			if next != 0 {
				t.Fatalf("no token resumes at %d", next)
			}
			return
		}
		r.PageToken = tenurev1.NextPageToken(req, next)
		if again, err := tenurev1.PageStart(r); err != nil || again != next {
			t.Fatalf("token %q resumes at %d; a fresh token for %d resumes at %d, %v", tok, next, next, again, err)
		}
	})
}
