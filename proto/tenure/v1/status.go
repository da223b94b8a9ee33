package tenurev1

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenurehq/tenure/shard"
)

// This file is the one place where Go errors become gRPC statuses and back.
// A server returns every error through ToStatus; a client passes every
// error of a call through FromStatus and then tests it with errors.Is and
// errors.As, never with status codes or message text.
//
//	Go error                 code                 ErrorInfo reason   metadata
//	shard.ErrNotLeader       FAILED_PRECONDITION  NOT_LEADER         shard, leader, address, epoch
//	shard.ErrStaleEpoch      FAILED_PRECONDITION  STALE_EPOCH        shard, epoch, highest
//	shard.ErrUnknownShard    NOT_FOUND            UNKNOWN_SHARD
//	shard.ErrKeyTooLarge     INVALID_ARGUMENT     KEY_TOO_LARGE
//	ErrInvalid               INVALID_ARGUMENT     INVALID_MESSAGE    field, reason
//	*shard.HandoffError      ABORTED              HANDOFF_FAILED     shard, to, step, cause
//	shard.ErrUnknownNode     NOT_FOUND            UNKNOWN_NODE
//	shard.ErrDraining        UNAVAILABLE          DRAINING
//	shard.ErrNotStarted      UNAVAILABLE          NOT_STARTED
//	shard.ErrNoVoters        FAILED_PRECONDITION  NO_VOTERS
//	ErrUnauthenticated       UNAUTHENTICATED      CLIENT_CERT_REQUIRED
//	context.Canceled         CANCELLED
//	context.DeadlineExceeded DEADLINE_EXCEEDED
//	a gRPC status            its own code, unchanged
//	anything else            INTERNAL
//
// The metadata of NOT_LEADER, STALE_EPOCH and HANDOFF_FAILED is present when
// the error is a *shard.NotLeaderError, a *shard.StaleTokenError or a
// *shard.HandoffError; numbers are decimal. A handoff error is matched
// before the error it wraps: that the handoff failed, and at which step, is
// what the caller acts on (the shard's leadership is unchanged or being
// re-acquired), whatever the step's own error was.

// ErrorDomain is the domain of every ErrorInfo this package attaches.
const ErrorDomain = "tenure.io"

// The ErrorInfo reasons, one per mapped Go error.
const (
	ReasonNotLeader       = "NOT_LEADER"
	ReasonStaleEpoch      = "STALE_EPOCH"
	ReasonUnknownShard    = "UNKNOWN_SHARD"
	ReasonKeyTooLarge     = "KEY_TOO_LARGE"
	ReasonInvalid         = "INVALID_MESSAGE"
	ReasonHandoff         = "HANDOFF_FAILED"
	ReasonUnknownNode     = "UNKNOWN_NODE"
	ReasonDraining        = "DRAINING"
	ReasonNotStarted      = "NOT_STARTED"
	ReasonNoVoters        = "NO_VOTERS"
	ReasonUnauthenticated = "CLIENT_CERT_REQUIRED"
)

// ErrUnauthenticated is returned for an administrative call (Drain,
// Transfer, PauseRebalance, ResumeRebalance, Plan) from a caller that presented
// no client certificate verified by the server, when the server requires
// one.
var ErrUnauthenticated = errors.New("administrative call requires a verified client certificate")

// Error is what FromStatus returns for a status it maps: a Go error that
// keeps its status. errors.Is and errors.As see the mapped error through
// Unwrap; status.Code and status.FromError see the status through
// GRPCStatus.
type Error struct {
	st  *status.Status
	err error
}

// Error returns the message the server sent.
func (e *Error) Error() string {
	if msg := e.st.Message(); msg != "" {
		return msg
	}
	return e.err.Error()
}

// Unwrap returns the mapped Go error: a sentinel, a *shard.NotLeaderError,
// a *shard.StaleTokenError or a *FieldError.
func (e *Error) Unwrap() error { return e.err }

// GRPCStatus returns the status the error was mapped from.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// ToStatus returns the gRPC status error a server sends for err, following
// the table above; nil for nil. The status message is err's message.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var (
		nle *shard.NotLeaderError
		ste *shard.StaleTokenError
		fe  *FieldError
		he  *shard.HandoffError
	)
	switch {
	case errors.As(err, &he):
		return withInfo(codes.Aborted, msg, ReasonHandoff, map[string]string{
			"shard": strconv.FormatUint(uint64(he.Shard), 10),
			"to":    he.To,
			"step":  he.Step,
			"cause": truncate(fmt.Sprint(he.Err), MaxStringLen),
		})
	case errors.Is(err, shard.ErrHandoff):
		return withInfo(codes.Aborted, msg, ReasonHandoff, nil)
	case errors.As(err, &nle):
		return withInfo(codes.FailedPrecondition, msg, ReasonNotLeader, map[string]string{
			"shard":   strconv.FormatUint(uint64(nle.Shard), 10),
			"leader":  nle.Leader,
			"address": nle.Addr,
			"epoch":   strconv.FormatUint(nle.Epoch, 10),
		})
	case errors.Is(err, shard.ErrNotLeader):
		return withInfo(codes.FailedPrecondition, msg, ReasonNotLeader, nil)
	case errors.As(err, &ste):
		return withInfo(codes.FailedPrecondition, msg, ReasonStaleEpoch, map[string]string{
			"shard":   strconv.FormatUint(uint64(ste.Shard), 10),
			"epoch":   strconv.FormatUint(ste.Epoch, 10),
			"highest": strconv.FormatUint(ste.Highest, 10),
		})
	case errors.Is(err, shard.ErrStaleEpoch):
		return withInfo(codes.FailedPrecondition, msg, ReasonStaleEpoch, nil)
	case errors.Is(err, shard.ErrUnknownShard):
		return withInfo(codes.NotFound, msg, ReasonUnknownShard, nil)
	case errors.Is(err, shard.ErrKeyTooLarge):
		return withInfo(codes.InvalidArgument, msg, ReasonKeyTooLarge, nil)
	case errors.As(err, &fe):
		return withInfo(codes.InvalidArgument, msg, ReasonInvalid, map[string]string{
			"field":  fe.Field,
			"reason": fe.Reason,
		})
	case errors.Is(err, ErrInvalid):
		return withInfo(codes.InvalidArgument, msg, ReasonInvalid, nil)
	case errors.Is(err, shard.ErrUnknownNode):
		return withInfo(codes.NotFound, msg, ReasonUnknownNode, nil)
	case errors.Is(err, shard.ErrDraining):
		return withInfo(codes.Unavailable, msg, ReasonDraining, nil)
	case errors.Is(err, shard.ErrNotStarted):
		return withInfo(codes.Unavailable, msg, ReasonNotStarted, nil)
	case errors.Is(err, shard.ErrNoVoters):
		return withInfo(codes.FailedPrecondition, msg, ReasonNoVoters, nil)
	case errors.Is(err, ErrUnauthenticated):
		return withInfo(codes.Unauthenticated, msg, ReasonUnauthenticated, nil)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, msg)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, msg)
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Error(codes.Internal, msg)
}

// withInfo returns a status error carrying an ErrorInfo of ErrorDomain.
func withInfo(code codes.Code, msg, reason string, md map[string]string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{
		Reason:   reason,
		Domain:   ErrorDomain,
		Metadata: md,
	})
	if err != nil {
		// An ErrorInfo always marshals; keep the code if it ever does not.
		return status.Error(code, msg)
	}
	return st.Err()
}

// FromStatus returns the Go error a client sees for an error of a call,
// following the table above backwards; nil for nil. A mapped status becomes
// an *Error wrapping the Go error:
//
//   - NOT_LEADER wraps a *shard.NotLeaderError with the fields parsed back,
//     or plain shard.ErrNotLeader when the metadata is absent or malformed;
//   - STALE_EPOCH wraps a *shard.StaleTokenError likewise, or plain
//     shard.ErrStaleEpoch;
//   - UNKNOWN_SHARD, and NOT_FOUND without an ErrorInfo, wrap
//     shard.ErrUnknownShard;
//   - KEY_TOO_LARGE wraps shard.ErrKeyTooLarge;
//   - INVALID_MESSAGE wraps a *FieldError, or plain ErrInvalid;
//   - HANDOFF_FAILED wraps a *shard.HandoffError whose Err carries the
//     cause's message, or plain shard.ErrHandoff;
//   - UNKNOWN_NODE, DRAINING, NOT_STARTED and NO_VOTERS wrap the shard
//     sentinels of the same names;
//   - CLIENT_CERT_REQUIRED, and UNAUTHENTICATED without an ErrorInfo, wrap
//     ErrUnauthenticated;
//   - CANCELLED and DEADLINE_EXCEEDED wrap the context errors.
//
// Any other error, a status of another code or an ErrorInfo of another
// domain or an unknown reason, is returned unchanged.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var mapped error
	if info := errorInfo(st); info != nil {
		mapped = fromInfo(info)
	} else {
		switch st.Code() {
		case codes.NotFound:
			mapped = shard.ErrUnknownShard
		case codes.Canceled:
			mapped = context.Canceled
		case codes.DeadlineExceeded:
			mapped = context.DeadlineExceeded
		case codes.Unauthenticated:
			mapped = ErrUnauthenticated
		}
	}
	if mapped == nil {
		return err
	}
	return &Error{st: st, err: mapped}
}

// errorInfo returns the first ErrorInfo of ErrorDomain in st's details, or
// nil.
func errorInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info
		}
	}
	return nil
}

// fromInfo returns the Go error an ErrorInfo stands for, or nil for an
// unknown reason.
func fromInfo(info *errdetails.ErrorInfo) error {
	md := info.GetMetadata()
	switch info.GetReason() {
	case ReasonNotLeader:
		s, ok1 := parseShard(md["shard"])
		epoch, ok2 := parseUint(md["epoch"])
		leader, addr := md["leader"], md["address"]
		if !ok1 || !ok2 || len(leader) > MaxStringLen || len(addr) > MaxStringLen {
			return shard.ErrNotLeader
		}
		return &shard.NotLeaderError{Shard: s, Leader: leader, Addr: addr, Epoch: epoch}
	case ReasonStaleEpoch:
		s, ok1 := parseShard(md["shard"])
		epoch, ok2 := parseUint(md["epoch"])
		highest, ok3 := parseUint(md["highest"])
		if !ok1 || !ok2 || !ok3 {
			return shard.ErrStaleEpoch
		}
		return &shard.StaleTokenError{Shard: s, Epoch: epoch, Highest: highest}
	case ReasonUnknownShard:
		return shard.ErrUnknownShard
	case ReasonKeyTooLarge:
		return shard.ErrKeyTooLarge
	case ReasonInvalid:
		field, reason := md["field"], md["reason"]
		if field == "" || len(field) > MaxStringLen || len(reason) > MaxStringLen {
			return ErrInvalid
		}
		return &FieldError{Field: field, Reason: reason}
	case ReasonHandoff:
		s, ok := parseShard(md["shard"])
		to, step, cause := md["to"], md["step"], md["cause"]
		if !ok || step == "" || len(to) > MaxStringLen || len(step) > MaxStringLen || len(cause) > MaxStringLen {
			return shard.ErrHandoff
		}
		return &shard.HandoffError{Shard: s, To: to, Step: step, Err: errors.New(cause)}
	case ReasonUnknownNode:
		return shard.ErrUnknownNode
	case ReasonDraining:
		return shard.ErrDraining
	case ReasonNotStarted:
		return shard.ErrNotStarted
	case ReasonNoVoters:
		return shard.ErrNoVoters
	case ReasonUnauthenticated:
		return ErrUnauthenticated
	}
	return nil
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func parseUint(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// parseShard parses a shard number below shard.MaxShards.
func parseShard(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n >= shard.MaxShards {
		return 0, false
	}
	return uint32(n), true
}
