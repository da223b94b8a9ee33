package voter

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
	"github.com/tenurehq/tenure/voterstore"
)

// Errors of this package, always wrapped in an error that names the values
// involved; test for them with errors.Is.
var (
	// ErrConfig is wrapped by every error of Config.Validate.
	ErrConfig = errors.New("invalid voter configuration")

	// ErrWrongCluster means a request came from a node of another cluster.
	ErrWrongCluster = errors.New("request from another cluster")

	// ErrWrongVoterSet means a request came from a node configured with
	// another set of voters.
	ErrWrongVoterSet = errors.New("request from a node with another voter set")

	// ErrWrongLeaseDuration means a request came from a node configured
	// with another lease duration than the voter's.
	ErrWrongLeaseDuration = errors.New("request from a node with another lease duration")

	// ErrClosed means the Server was closed.
	ErrClosed = errors.New("voter closed")

	// ErrStopped means the voter stopped answering after its store failed
	// to save records that its memory already holds. It answers again only
	// after a restart from its store (with the grace period that brings).
	ErrStopped = errors.New("voter stopped after a store failure")

	// ErrOverloaded means the voter refused the call at once because
	// MaxWaiting calls already waited for it: the request had no effect.
	ErrOverloaded = errors.New("voter overloaded")
)

// statusError is the one place where the errors of a call become gRPC
// status codes; clients map the codes back.
//
//   - InvalidArgument: the request failed validation; the message names the
//     field. Resending it cannot help.
//   - FailedPrecondition: the request names another cluster, another
//     voter set or another lease duration; the message names both values.
//     The node is pointed at the wrong voters, or configured with a
//     different voter list or lease duration. Resending cannot help until
//     an operator makes the configurations agree.
//   - Unavailable: the voter is closed or stopped, or its store failed. The
//     request may or may not have taken effect; a node retries, here or at
//     another voter, and learns the outcome from the repeat.
//   - ResourceExhausted: the voter shed the call at once (MaxWaiting calls
//     already waited for it); the request had no effect.
//   - Canceled, DeadlineExceeded: the caller gave up before the records the
//     reply depends on were durable. They may still become durable.
//   - Internal: anything else, which is a bug.
func statusError(err error) error {
	var code codes.Code
	switch {
	case errors.Is(err, voterv1.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrWrongCluster), errors.Is(err, ErrWrongVoterSet), errors.Is(err, ErrWrongLeaseDuration):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrClosed), errors.Is(err, ErrStopped), errors.Is(err, voterstore.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, ErrOverloaded):
		code = codes.ResourceExhausted
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		code = codes.Internal
	}
	return status.Error(code, err.Error())
}
