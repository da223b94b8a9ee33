// Package wirecheck holds the validation errors and checks shared by the
// packages that convert Tenure's protobuf messages, so that every decoder
// reports a bad field the same way.
package wirecheck

import (
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every *FieldError.
var ErrInvalid = errors.New("invalid message")

// FieldError says which field of a received message is invalid and why.
// errors.Is(err, ErrInvalid) holds for every *FieldError.
type FieldError struct {
	// Field is the path of the field from the message type, in proto names:
	// "CallRequest.ops[3].kind". For a nil message it is the type alone.
	Field string
	// Reason says what is wrong with the field.
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInvalid, e.Field, e.Reason)
}

// Is reports whether target is ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// In returns e with its field placed under the path prefix. Element
// checkers report paths relative to their element, so that the index is
// formatted only when a message is rejected.
func (e *FieldError) In(prefix string) *FieldError {
	return &FieldError{Field: prefix + "." + e.Field, Reason: e.Reason}
}

// Invalid returns a *FieldError for field with a formatted reason.
func Invalid(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// String enforces a length limit and, if required, non-emptiness.
func String(field, s string, required bool, limit int) *FieldError {
	switch {
	case required && s == "":
		return Invalid(field, "empty")
	case len(s) > limit:
		return Invalid(field, "%d bytes exceed the limit of %d", len(s), limit)
	}
	return nil
}

// Count enforces a limit on the number of entries of a repeated field.
func Count(field string, n, limit int) *FieldError {
	if n > limit {
		return Invalid(field, "%d entries exceed the limit of %d", n, limit)
	}
	return nil
}
