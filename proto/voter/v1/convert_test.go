package voterv1_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/tenurehq/tenure/lease"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fullRequest sets every field and uses every operation kind.
func fullRequest() lease.Request {
	return lease.Request{
		From:          "node-a",
		Inc:           7,
		Nonce:         1<<64 - 3,
		Seq:           1 << 40,
		NoticesSince:  -1 << 62,
		LeaseDuration: 1<<63 - 1,
		HeldSince:     1<<64 - 2,
		Ops: []lease.Op{
			{Kind: lease.OpGrant, Shard: 3, Epoch: 12},
			{Kind: lease.OpRelease, Shard: 1<<20 - 1, Epoch: 1},
			{Kind: lease.OpTransfer, Shard: 0, Epoch: 1<<64 - 1, To: "node-b", ToInc: 9},
		},
	}
}

// fullReply sets every field and uses every refusal.
func fullReply() lease.Reply {
	rec := lease.Record{Epoch: 12, Holder: "node-a", HolderGen: 5<<32 | 1}
	return lease.Reply{
		Voter:     "voter-1",
		Seq:       1 << 40,
		Stale:     true,
		Inc:       1<<64 - 1,
		IncLive:   true,
		Mismatch:  "lease duration 2s, voter voter-1's is 1s",
		Gen:       5<<32 | 1,
		NoticesAt: 1 << 62,
		HeldVer:   1<<64 - 1,
		HeldDelta: true,
		HeldSince: 3 << 32,
		Results: []lease.Result{
			{Op: lease.Op{Kind: lease.OpGrant, Shard: 3, Epoch: 12}, Refusal: lease.Accepted, Record: rec, Gen: rec.HolderGen},
			{Op: lease.Op{Kind: lease.OpGrant, Shard: 4, Epoch: 2}, Refusal: lease.RefusedGrace},
			{Op: lease.Op{Kind: lease.OpRelease, Shard: 5, Epoch: 2}, Refusal: lease.RefusedEpoch,
				Record: lease.Record{Epoch: 3, Holder: "node-c", HolderGen: 2, Released: true}},
			{Op: lease.Op{Kind: lease.OpGrant, Shard: 6, Epoch: 4}, Refusal: lease.RefusedHeld,
				Record: lease.Record{Epoch: 3, Holder: "node-c", HolderGen: 2}},
			{Op: lease.Op{Kind: lease.OpTransfer, Shard: 3, Epoch: 12, To: "node-b", ToInc: 9}, Refusal: lease.RefusedTarget, Record: rec},
			{Op: lease.Op{Kind: lease.OpTransfer, Shard: 3, Epoch: 12, To: "node-b", ToInc: 9}, Refusal: lease.RefusedIncarnation, Record: rec},
		},
		Held: []lease.ShardRecord{
			{Shard: 3, Record: rec},
			{Shard: 8, Record: lease.Record{Epoch: 1, Holder: "node-a", HolderGen: 4, Released: true}},
		},
		Expired: []lease.NodeGen{{Node: "node-c", Gen: 2}, {Node: "node-d", Gen: 1 << 33}},
		Started: []lease.NodeGen{{Node: "node-e", Gen: 3}},
	}
}

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

// diffRequest describes the first difference between two requests, or
// returns "" if they are equal. Nil and empty Ops are equal.
func diffRequest(a, b lease.Request) string {
	ha, hb := a, b
	ha.Ops, hb.Ops = nil, nil
	if !reflect.DeepEqual(ha, hb) {
		return fmt.Sprintf("header: %+v != %+v", ha, hb)
	}
	return diffSlices("Ops", a.Ops, b.Ops)
}

// diffReply is diffRequest for replies.
func diffReply(a, b lease.Reply) string {
	ha, hb := a, b
	ha.Results, ha.Held, ha.Expired, ha.Started = nil, nil, nil, nil
	hb.Results, hb.Held, hb.Expired, hb.Started = nil, nil, nil, nil
	if !reflect.DeepEqual(ha, hb) {
		return fmt.Sprintf("header: %+v != %+v", ha, hb)
	}
	if d := diffSlices("Results", a.Results, b.Results); d != "" {
		return d
	}
	if d := diffSlices("Held", a.Held, b.Held); d != "" {
		return d
	}
	if d := diffSlices("Expired", a.Expired, b.Expired); d != "" {
		return d
	}
	return diffSlices("Started", a.Started, b.Started)
}

func diffSlices[E comparable](name string, a, b []E) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%s: %d entries != %d", name, len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("%s[%d]: %+v != %+v", name, i, a[i], b[i])
		}
	}
	return ""
}

func TestRequestRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cluster string
		give    lease.Request
	}{
		{name: "full", cluster: "prod-eu", give: fullRequest()},
		{name: "keep-alive only", give: lease.Request{From: "n", Inc: 1, Seq: 2}},
		{name: "longest strings", cluster: strings.Repeat("c", voterv1.MaxStringLen),
			give: lease.Request{From: strings.Repeat("f", voterv1.MaxStringLen),
				Ops: []lease.Op{{Kind: lease.OpTransfer, To: strings.Repeat("t", voterv1.MaxStringLen)}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := wire(t, voterv1.RequestToPB(tt.cluster, tt.give), &voterv1.CallRequest{})
			cluster, got, err := voterv1.RequestFromPB(m)
			if err != nil {
				t.Fatalf("RequestFromPB: %v", err)
			}
			if cluster != tt.cluster {
				t.Errorf("cluster = %q, want %q", cluster, tt.cluster)
			}
			if d := diffRequest(got, tt.give); d != "" {
				t.Errorf("round trip changed the request: %s", d)
			}
		})
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cluster string
		give    lease.Reply
	}{
		{name: "full", cluster: "prod-eu", give: fullReply()},
		{name: "keep-alive only", give: lease.Reply{Voter: "v", Seq: 2, Gen: 3}},
		{name: "longest mismatch", give: lease.Reply{Voter: "v", Mismatch: strings.Repeat("m", voterv1.MaxMismatchLen)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := wire(t, voterv1.ReplyToPB(tt.cluster, tt.give), &voterv1.CallReply{})
			cluster, got, err := voterv1.ReplyFromPB(m)
			if err != nil {
				t.Fatalf("ReplyFromPB: %v", err)
			}
			if cluster != tt.cluster {
				t.Errorf("cluster = %q, want %q", cluster, tt.cluster)
			}
			if d := diffReply(got, tt.give); d != "" {
				t.Errorf("round trip changed the reply: %s", d)
			}
		})
	}
}

// The proto enum documents that its numbers equal lease.OpKind's.
func TestOpKindNumbersMatchLease(t *testing.T) {
	for _, tt := range []struct {
		give lease.OpKind
		want voterv1.OpKind
	}{
		{lease.OpGrant, voterv1.OpKind_OP_KIND_GRANT},
		{lease.OpRelease, voterv1.OpKind_OP_KIND_RELEASE},
		{lease.OpTransfer, voterv1.OpKind_OP_KIND_TRANSFER},
	} {
		if int32(tt.give) != int32(tt.want) {
			t.Errorf("%v = %d on the wire, %d in lease", tt.want, int32(tt.want), tt.give)
		}
	}
}

// An unset refusal must never read as an acceptance, although
// lease.Accepted is lease.Refusal's zero value.
func TestUnsetRefusalIsRejected(t *testing.T) {
	m := voterv1.ReplyToPB("", fullReply())
	m.Results[0].Refusal = voterv1.Refusal_REFUSAL_UNSPECIFIED
	if _, _, err := voterv1.ReplyFromPB(wire(t, m, &voterv1.CallReply{})); err == nil {
		t.Fatal("ReplyFromPB accepted a result without a refusal")
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
	if !errors.Is(err, voterv1.ErrInvalid) {
		t.Errorf("err = %v, does not wrap ErrInvalid", err)
	}
	var fe *voterv1.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v (%T), want a *FieldError", err, err)
	}
	if fe.Field != wantField {
		t.Errorf("Field = %q, want %q (err: %v)", fe.Field, wantField, err)
	}
	t.Log(err)
}

// repeat returns n copies of e; the entries share one pointer, which is
// enough for a count check.
func repeat[E any](n int, e E) []E {
	s := make([]E, n)
	for i := range s {
		s[i] = e
	}
	return s
}

func TestRequestFromPBValidation(t *testing.T) {
	long := strings.Repeat("x", voterv1.MaxStringLen+1)
	grant := &voterv1.Op{Kind: voterv1.OpKind_OP_KIND_GRANT, Shard: 1, Epoch: 1}
	for _, tt := range []struct {
		name      string
		give      func(m *voterv1.CallRequest) *voterv1.CallRequest
		wantField string
	}{
		{
			name:      "nil message",
			give:      func(*voterv1.CallRequest) *voterv1.CallRequest { return nil },
			wantField: "CallRequest",
		},
		{
			name:      "empty from",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.From = ""; return m },
			wantField: "CallRequest.from",
		},
		{
			name:      "from too long",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.From = long; return m },
			wantField: "CallRequest.from",
		},
		{
			name:      "cluster too long",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.Cluster = long; return m },
			wantField: "CallRequest.cluster",
		},
		{
			name:      "empty cluster is allowed",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.Cluster = ""; return m },
			wantField: "",
		},
		{
			name:      "negative lease duration",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.LeaseDurationNs = -1; return m },
			wantField: "CallRequest.lease_duration_ns",
		},
		{
			name:      "no lease duration is allowed",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.LeaseDurationNs = 0; return m },
			wantField: "",
		},
		{
			name: "unspecified op kind",
			give: func(m *voterv1.CallRequest) *voterv1.CallRequest {
				m.Ops[1].Kind = voterv1.OpKind_OP_KIND_UNSPECIFIED
				return m
			},
			wantField: "CallRequest.ops[1].kind",
		},
		{
			name:      "unknown op kind",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.Ops[2].Kind = 4; return m },
			wantField: "CallRequest.ops[2].kind",
		},
		{
			name:      "nil op",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.Ops[0] = nil; return m },
			wantField: "CallRequest.ops[0].kind",
		},
		{
			name:      "transfer target too long",
			give:      func(m *voterv1.CallRequest) *voterv1.CallRequest { m.Ops[2].To = long; return m },
			wantField: "CallRequest.ops[2].to",
		},
		{
			name: "MaxOps ops are allowed",
			give: func(m *voterv1.CallRequest) *voterv1.CallRequest {
				m.Ops = repeat(voterv1.MaxOps, grant)
				return m
			},
			wantField: "",
		},
		{
			name: "too many ops",
			give: func(m *voterv1.CallRequest) *voterv1.CallRequest {
				m.Ops = repeat(voterv1.MaxOps+1, grant)
				return m
			},
			wantField: "CallRequest.ops",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := voterv1.RequestFromPB(tt.give(voterv1.RequestToPB("prod", fullRequest())))
			checkFieldError(t, err, tt.wantField)
		})
	}
}

func TestReplyFromPBValidation(t *testing.T) {
	long := strings.Repeat("x", voterv1.MaxStringLen+1)
	for _, tt := range []struct {
		name      string
		give      func(m *voterv1.CallReply) *voterv1.CallReply
		wantField string
	}{
		{
			name:      "nil message",
			give:      func(*voterv1.CallReply) *voterv1.CallReply { return nil },
			wantField: "CallReply",
		},
		{
			name:      "empty voter",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Voter = ""; return m },
			wantField: "CallReply.voter",
		},
		{
			name:      "voter too long",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Voter = long; return m },
			wantField: "CallReply.voter",
		},
		{
			name:      "cluster too long",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Cluster = long; return m },
			wantField: "CallReply.cluster",
		},
		{
			name: "mismatch too long",
			give: func(m *voterv1.CallReply) *voterv1.CallReply {
				m.Mismatch = strings.Repeat("m", voterv1.MaxMismatchLen+1)
				return m
			},
			wantField: "CallReply.mismatch",
		},
		{
			name: "too many results",
			give: func(m *voterv1.CallReply) *voterv1.CallReply {
				m.Results = repeat(voterv1.MaxOps+1, m.Results[0])
				return m
			},
			wantField: "CallReply.results",
		},
		{
			name: "unknown op kind in a result",
			give: func(m *voterv1.CallReply) *voterv1.CallReply {
				m.Results[3].Op.Kind = -1
				return m
			},
			wantField: "CallReply.results[3].op.kind",
		},
		{
			name:      "result without op",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Results[1].Op = nil; return m },
			wantField: "CallReply.results[1].op.kind",
		},
		{
			name: "transfer target too long in a result",
			give: func(m *voterv1.CallReply) *voterv1.CallReply {
				m.Results[4].Op.To = long
				return m
			},
			wantField: "CallReply.results[4].op.to",
		},
		{
			name: "unspecified refusal",
			give: func(m *voterv1.CallReply) *voterv1.CallReply {
				m.Results[0].Refusal = voterv1.Refusal_REFUSAL_UNSPECIFIED
				return m
			},
			wantField: "CallReply.results[0].refusal",
		},
		{
			name:      "unknown refusal",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Results[5].Refusal = 7; return m },
			wantField: "CallReply.results[5].refusal",
		},
		{
			name: "result holder too long",
			give: func(m *voterv1.CallReply) *voterv1.CallReply {
				m.Results[2].Record.Holder = long
				return m
			},
			wantField: "CallReply.results[2].record.holder",
		},
		{
			name:      "result without record is the zero record",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Results[2].Record = nil; return m },
			wantField: "",
		},
		{
			name: "too many held records",
			give: func(m *voterv1.CallReply) *voterv1.CallReply {
				m.Held = repeat(voterv1.MaxHeld+1, m.Held[0])
				return m
			},
			wantField: "CallReply.held",
		},
		{
			name:      "held holder too long",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Held[1].Record.Holder = long; return m },
			wantField: "CallReply.held[1].record.holder",
		},
		{
			name: "too many expired sessions",
			give: func(m *voterv1.CallReply) *voterv1.CallReply {
				m.Expired = repeat(voterv1.MaxExpired+1, m.Expired[0])
				return m
			},
			wantField: "CallReply.expired",
		},
		{
			name:      "expired session without node",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Expired[1].Node = ""; return m },
			wantField: "CallReply.expired[1].node",
		},
		{
			name:      "expired node too long",
			give:      func(m *voterv1.CallReply) *voterv1.CallReply { m.Expired[0].Node = long; return m },
			wantField: "CallReply.expired[0].node",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := voterv1.ReplyFromPB(tt.give(voterv1.ReplyToPB("prod", fullReply())))
			checkFieldError(t, err, tt.wantField)
		})
	}
}

// checkRejection fails t unless a FromPB error is a *FieldError wrapping
// ErrInvalid: callers map it to a status code with errors.Is.
func checkRejection(t *testing.T, err error) {
	t.Helper()
	var fe *voterv1.FieldError
	if !errors.Is(err, voterv1.ErrInvalid) || !errors.As(err, &fe) || fe.Field == "" {
		t.Fatalf("rejection %v (%T) is not a *FieldError wrapping ErrInvalid", err, err)
	}
}

func FuzzRequestFromPB(f *testing.F) {
	for _, m := range []*voterv1.CallRequest{
		voterv1.RequestToPB("prod", fullRequest()),
		voterv1.RequestToPB("", lease.Request{From: "n"}),
		{From: "n", Ops: []*voterv1.Op{{Kind: 9}}},
		{From: "n", LeaseDurationNs: -1},
		{Ops: []*voterv1.Op{{Kind: voterv1.OpKind_OP_KIND_GRANT}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m voterv1.CallRequest
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		cluster, r, err := voterv1.RequestFromPB(&m)
		if err != nil {
			checkRejection(t, err)
			return
		}
		cluster2, r2, err := voterv1.RequestFromPB(wire(t, voterv1.RequestToPB(cluster, r), &voterv1.CallRequest{}))
		if err != nil {
			t.Fatalf("accepted %+v, rejected its round trip: %v", r, err)
		}
		if cluster2 != cluster {
			t.Fatalf("cluster %q came back as %q", cluster, cluster2)
		}
		if d := diffRequest(r2, r); d != "" {
			t.Fatalf("round trip changed the request: %s", d)
		}
	})
}

func FuzzReplyFromPB(f *testing.F) {
	for _, m := range []*voterv1.CallReply{
		voterv1.ReplyToPB("prod", fullReply()),
		voterv1.ReplyToPB("", lease.Reply{Voter: "v"}),
		{Voter: "v", Results: []*voterv1.Result{{}}},
		{Voter: "v", Mismatch: strings.Repeat("m", voterv1.MaxMismatchLen+1)},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m voterv1.CallReply
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		cluster, r, err := voterv1.ReplyFromPB(&m)
		if err != nil {
			checkRejection(t, err)
			return
		}
		cluster2, r2, err := voterv1.ReplyFromPB(wire(t, voterv1.ReplyToPB(cluster, r), &voterv1.CallReply{}))
		if err != nil {
			t.Fatalf("accepted %+v, rejected its round trip: %v", r, err)
		}
		if cluster2 != cluster {
			t.Fatalf("cluster %q came back as %q", cluster, cluster2)
		}
		if d := diffReply(r2, r); d != "" {
			t.Fatalf("round trip changed the reply: %s", d)
		}
	})
}
