package tenurev1_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// overWire sends a status error through the protobuf encoding of
// google.rpc.Status, as gRPC carries it in the trailers.
func overWire(t *testing.T, err error) error {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%v (%T) is not a status", err, err)
	}
	b, mErr := proto.Marshal(st.Proto())
	if mErr != nil {
		t.Fatalf("marshal: %v", mErr)
	}
	var p spb.Status
	if uErr := proto.Unmarshal(b, &p); uErr != nil {
		t.Fatalf("unmarshal: %v", uErr)
	}
	return status.FromProto(&p).Err()
}

// reasonOf returns the reason of err's tenure.io ErrorInfo, or "".
func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == tenurev1.ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

func TestStatusRoundTrip(t *testing.T) {
	nle := &shard.NotLeaderError{Shard: 42, Leader: "node-b", Addr: "10.0.0.2:7000", Epoch: 1<<40 + 3}
	ste := &shard.StaleTokenError{Shard: shard.MaxShards - 1, Epoch: 4, Highest: 9}
	fe := &tenurev1.FieldError{Field: "LookupRequest.key", Reason: "too long"}
	for _, tt := range []struct {
		name       string
		give       error
		wantCode   codes.Code
		wantReason string
		wantIs     error
		// check, if set, inspects the client's error further.
		check func(t *testing.T, got error)
	}{
		{
			name: "not leader", give: nle,
			wantCode: codes.FailedPrecondition, wantReason: "NOT_LEADER", wantIs: shard.ErrNotLeader,
			check: func(t *testing.T, got error) {
				var g *shard.NotLeaderError
				if !errors.As(got, &g) {
					t.Fatalf("errors.As(%v, *NotLeaderError) = false", got)
				}
				if *g != *nle {
					t.Errorf("NotLeaderError = %+v, want %+v", *g, *nle)
				}
			},
		},
		{
			name:     "wrapped not leader with unknown leader",
			give:     fmt.Errorf("handoff: %w", &shard.NotLeaderError{Shard: 0, Addr: "desired:1"}),
			wantCode: codes.FailedPrecondition, wantReason: "NOT_LEADER", wantIs: shard.ErrNotLeader,
			check: func(t *testing.T, got error) {
				var g *shard.NotLeaderError
				if !errors.As(got, &g) {
					t.Fatalf("errors.As(%v, *NotLeaderError) = false", got)
				}
				if want := (shard.NotLeaderError{Addr: "desired:1"}); *g != want {
					t.Errorf("NotLeaderError = %+v, want %+v", *g, want)
				}
			},
		},
		{
			name: "bare not leader", give: shard.ErrNotLeader,
			wantCode: codes.FailedPrecondition, wantReason: "NOT_LEADER", wantIs: shard.ErrNotLeader,
			check: func(t *testing.T, got error) {
				var g *shard.NotLeaderError
				if errors.As(got, &g) {
					t.Errorf("bare ErrNotLeader came back as %+v", *g)
				}
			},
		},
		{
			name: "stale token", give: ste,
			wantCode: codes.FailedPrecondition, wantReason: "STALE_EPOCH", wantIs: shard.ErrStaleEpoch,
			check: func(t *testing.T, got error) {
				var g *shard.StaleTokenError
				if !errors.As(got, &g) {
					t.Fatalf("errors.As(%v, *StaleTokenError) = false", got)
				}
				if *g != *ste {
					t.Errorf("StaleTokenError = %+v, want %+v", *g, *ste)
				}
				if errors.Is(got, shard.ErrNotLeader) {
					t.Error("a stale epoch reads as not leader")
				}
			},
		},
		{
			name: "wrapped stale epoch", give: fmt.Errorf("write: %w", shard.ErrStaleEpoch),
			wantCode: codes.FailedPrecondition, wantReason: "STALE_EPOCH", wantIs: shard.ErrStaleEpoch,
		},
		{
			name: "unknown shard", give: shard.CheckShard(70, 64),
			wantCode: codes.NotFound, wantReason: "UNKNOWN_SHARD", wantIs: shard.ErrUnknownShard,
		},
		{
			name: "key too large", give: shard.CheckKey(make([]byte, shard.MaxKeyBytes+1)),
			wantCode: codes.InvalidArgument, wantReason: "KEY_TOO_LARGE", wantIs: shard.ErrKeyTooLarge,
		},
		{
			name: "invalid message", give: fe,
			wantCode: codes.InvalidArgument, wantReason: "INVALID_MESSAGE", wantIs: tenurev1.ErrInvalid,
			check: func(t *testing.T, got error) {
				var g *tenurev1.FieldError
				if !errors.As(got, &g) {
					t.Fatalf("errors.As(%v, *FieldError) = false", got)
				}
				if *g != *fe {
					t.Errorf("FieldError = %+v, want %+v", *g, *fe)
				}
				if errors.Is(got, shard.ErrKeyTooLarge) {
					t.Error("an invalid message reads as a key too large")
				}
			},
		},
		{
			name: "handoff failed", give: &shard.HandoffError{Shard: 7, To: "node-c", Step: "prepare", Err: &shard.NotLeaderError{Shard: 7}},
			wantCode: codes.Aborted, wantReason: "HANDOFF_FAILED", wantIs: shard.ErrHandoff,
			check: func(t *testing.T, got error) {
				var g *shard.HandoffError
				if !errors.As(got, &g) {
					t.Fatalf("errors.As(%v, *HandoffError) = false", got)
				}
				if g.Shard != 7 || g.To != "node-c" || g.Step != "prepare" || g.Err.Error() != (&shard.NotLeaderError{Shard: 7}).Error() {
					t.Errorf("HandoffError = %+v, want shard 7 to node-c at prepare with the cause's message", *g)
				}
				if errors.Is(got, shard.ErrNotLeader) {
					t.Error("a failed handoff reads as not leader")
				}
			},
		},
		{
			name: "unknown node", give: fmt.Errorf("drain node-9: %w", shard.ErrUnknownNode),
			wantCode: codes.NotFound, wantReason: "UNKNOWN_NODE", wantIs: shard.ErrUnknownNode,
			check: func(t *testing.T, got error) {
				if errors.Is(got, shard.ErrUnknownShard) {
					t.Error("an unknown node reads as an unknown shard")
				}
			},
		},
		{
			name: "draining", give: shard.ErrDraining,
			wantCode: codes.Unavailable, wantReason: "DRAINING", wantIs: shard.ErrDraining,
		},
		{
			name: "not started", give: shard.ErrNotStarted,
			wantCode: codes.Unavailable, wantReason: "NOT_STARTED", wantIs: shard.ErrNotStarted,
		},
		{
			name: "no voters", give: shard.ErrNoVoters,
			wantCode: codes.FailedPrecondition, wantReason: "NO_VOTERS", wantIs: shard.ErrNoVoters,
		},
		{
			name: "client certificate required", give: fmt.Errorf("Drain: %w", tenurev1.ErrUnauthenticated),
			wantCode: codes.Unauthenticated, wantReason: "CLIENT_CERT_REQUIRED", wantIs: tenurev1.ErrUnauthenticated,
		},
		{
			name: "canceled", give: fmt.Errorf("lookup: %w", context.Canceled),
			wantCode: codes.Canceled, wantIs: context.Canceled,
		},
		{
			name: "deadline exceeded", give: context.DeadlineExceeded,
			wantCode: codes.DeadlineExceeded, wantIs: context.DeadlineExceeded,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := tenurev1.ToStatus(tt.give)
			if code := status.Code(st); code != tt.wantCode {
				t.Fatalf("code = %v, want %v (%v)", code, tt.wantCode, st)
			}
			if msg := status.Convert(st).Message(); msg != tt.give.Error() {
				t.Errorf("message = %q, want %q", msg, tt.give.Error())
			}
			if r := reasonOf(st); r != tt.wantReason {
				t.Errorf("ErrorInfo reason = %q, want %q", r, tt.wantReason)
			}
			got := tenurev1.FromStatus(overWire(t, st))
			if !errors.Is(got, tt.wantIs) {
				t.Fatalf("errors.Is(%v, %v) = false", got, tt.wantIs)
			}
			if got.Error() != tt.give.Error() {
				t.Errorf("client message = %q, want %q", got.Error(), tt.give.Error())
			}
			if code := status.Code(got); code != tt.wantCode {
				t.Errorf("client error lost its code: %v, want %v", code, tt.wantCode)
			}
			var te *tenurev1.Error
			if !errors.As(got, &te) {
				t.Errorf("client error %T is not a *tenurev1.Error", got)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
			// A server forwarding the client's error sends the same status.
			again := tenurev1.ToStatus(got)
			if status.Code(again) != tt.wantCode || reasonOf(again) != tt.wantReason {
				t.Errorf("forwarded as %v (reason %q), want %v (reason %q)",
					again, reasonOf(again), tt.wantCode, tt.wantReason)
			}
		})
	}
}

func TestStatusUnmapped(t *testing.T) {
	if tenurev1.ToStatus(nil) != nil {
		t.Error("ToStatus(nil) != nil")
	}
	if tenurev1.FromStatus(nil) != nil {
		t.Error("FromStatus(nil) != nil")
	}

	// Anything else is INTERNAL with its message, and comes back as is.
	st := tenurev1.ToStatus(io.ErrUnexpectedEOF)
	if status.Code(st) != codes.Internal || status.Convert(st).Message() != io.ErrUnexpectedEOF.Error() {
		t.Errorf("ToStatus(io.ErrUnexpectedEOF) = %v, want INTERNAL with the message", st)
	}
	if got := tenurev1.FromStatus(st); got != st {
		t.Errorf("FromStatus(INTERNAL) = %v, want it unchanged", got)
	}

	// A status keeps its code on the way out and passes through on the way
	// back.
	unavail := status.Error(codes.Unavailable, "connection refused")
	if got := tenurev1.ToStatus(fmt.Errorf("dial: %w", unavail)); status.Code(got) != codes.Unavailable {
		t.Errorf("ToStatus(wrapped UNAVAILABLE) = %v, want UNAVAILABLE", got)
	}
	if got := tenurev1.FromStatus(unavail); got != unavail {
		t.Errorf("FromStatus(UNAVAILABLE) = %v, want it unchanged", got)
	}

	// A local error that is no status passes through.
	if got := tenurev1.FromStatus(io.EOF); got != io.EOF {
		t.Errorf("FromStatus(io.EOF) = %v, want io.EOF", got)
	}

	// UNAUTHENTICATED without an ErrorInfo (an interceptor's, a proxy's)
	// reads as ErrUnauthenticated.
	if got := tenurev1.FromStatus(status.Error(codes.Unauthenticated, "no")); !errors.Is(got, tenurev1.ErrUnauthenticated) {
		t.Errorf("FromStatus(UNAUTHENTICATED) = %v, does not match ErrUnauthenticated", got)
	}

	// NOT_FOUND without an ErrorInfo still reads as an unknown shard.
	if got := tenurev1.FromStatus(status.Error(codes.NotFound, "no such shard")); !errors.Is(got, shard.ErrUnknownShard) {
		t.Errorf("FromStatus(NOT_FOUND) = %v, does not match ErrUnknownShard", got)
	}
}

// withInfo builds a status as a foreign or faulty server might.
func withInfo(t *testing.T, code codes.Code, info *errdetails.ErrorInfo) error {
	t.Helper()
	st, err := status.New(code, "remote says so").WithDetails(info)
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestFromStatusOddDetails(t *testing.T) {
	long := strings.Repeat("x", tenurev1.MaxStringLen+1)
	good := map[string]string{"shard": "7", "leader": "n", "address": "a:1", "epoch": "3"}
	with := func(k, v string) map[string]string {
		md := map[string]string{}
		for k, v := range good {
			md[k] = v
		}
		if v == "" {
			delete(md, k)
		} else {
			md[k] = v
		}
		return md
	}
	for _, tt := range []struct {
		name string
		info *errdetails.ErrorInfo
		// wantIs is the sentinel the error must match, nil for an error
		// passed through unchanged.
		wantIs error
		// wantTyped says a *NotLeaderError must come back.
		wantTyped bool
	}{
		{"well formed", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER", Metadata: good}, shard.ErrNotLeader, true},
		{"no metadata", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER"}, shard.ErrNotLeader, false},
		{"shard not a number", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER", Metadata: with("shard", "x")}, shard.ErrNotLeader, false},
		{"negative shard", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER", Metadata: with("shard", "-1")}, shard.ErrNotLeader, false},
		{"shard beyond MaxShards", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER", Metadata: with("shard", "1048576")}, shard.ErrNotLeader, false},
		{"epoch overflows", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER", Metadata: with("epoch", "18446744073709551616")}, shard.ErrNotLeader, false},
		{"no epoch", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER", Metadata: with("epoch", "")}, shard.ErrNotLeader, false},
		{"leader too long", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER", Metadata: with("leader", long)}, shard.ErrNotLeader, false},
		{"address too long", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "NOT_LEADER", Metadata: with("address", long)}, shard.ErrNotLeader, false},
		{"stale epoch without metadata", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "STALE_EPOCH"}, shard.ErrStaleEpoch, false},
		{"invalid message without field", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "INVALID_MESSAGE"}, tenurev1.ErrInvalid, false},
		{"handoff without metadata", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "HANDOFF_FAILED"}, shard.ErrHandoff, false},
		{"handoff cause too long", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "HANDOFF_FAILED", Metadata: map[string]string{"shard": "1", "to": "n", "step": "prepare", "cause": long}}, shard.ErrHandoff, false},
		{"unknown reason", &errdetails.ErrorInfo{Domain: "tenure.io", Reason: "SOMETHING_NEW"}, nil, false},
		{"other domain", &errdetails.ErrorInfo{Domain: "example.com", Reason: "NOT_LEADER", Metadata: good}, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			give := withInfo(t, codes.FailedPrecondition, tt.info)
			got := tenurev1.FromStatus(overWire(t, give))
			if tt.wantIs == nil {
				if got.Error() != give.Error() || status.Code(got) != codes.FailedPrecondition {
					t.Errorf("FromStatus = %v, want %v unchanged", got, give)
				}
				if errors.Is(got, shard.ErrNotLeader) {
					t.Error("an unmapped status reads as not leader")
				}
				return
			}
			if !errors.Is(got, tt.wantIs) {
				t.Fatalf("errors.Is(%v, %v) = false", got, tt.wantIs)
			}
			var nle *shard.NotLeaderError
			if errors.As(got, &nle) != tt.wantTyped {
				t.Errorf("errors.As(*NotLeaderError) = %v, want %v", !tt.wantTyped, tt.wantTyped)
			}
		})
	}
}

func TestNotLeaderErrorMessage(t *testing.T) {
	for _, tt := range []struct {
		give shard.NotLeaderError
		want string
	}{
		{shard.NotLeaderError{Shard: 3, Leader: "node-b", Addr: "b:7000", Epoch: 9},
			"shard 3: not leader; leader is node-b at epoch 9 (b:7000)"},
		{shard.NotLeaderError{Shard: 3, Addr: "c:7000"}, "shard 3: not leader; leader unknown, try c:7000"},
		{shard.NotLeaderError{Shard: 3}, "shard 3: not leader; leader unknown"},
	} {
		if got := tt.give.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}
