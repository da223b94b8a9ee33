package tenurev1

import (
	"context"
	"errors"
	"strconv"

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
//	context.Canceled         CANCELLED
//	context.DeadlineExceeded DEADLINE_EXCEEDED
//	a gRPC status            its own code, unchanged
//	anything else            INTERNAL
//
// The metadata of NOT_LEADER and STALE_EPOCH is present when the error is a
// *shard.NotLeaderError or a *shard.StaleTokenError; numbers are decimal.

// ErrorDomain is the domain of every ErrorInfo this package attaches.
const ErrorDomain = "tenure.io"

// The ErrorInfo reasons, one per mapped Go error.
const (
	ReasonNotLeader    = "NOT_LEADER"
	ReasonStaleEpoch   = "STALE_EPOCH"
	ReasonUnknownShard = "UNKNOWN_SHARD"
	ReasonKeyTooLarge  = "KEY_TOO_LARGE"
	ReasonInvalid      = "INVALID_MESSAGE"
)

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
	)
	switch {
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
	}
	return nil
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
