package voterstore

import "errors"

// Errors returned by Open and the Store's methods, always wrapped in an
// error that names the store's path and the values involved; test for them
// with errors.Is.
var (
	// ErrNoStore means the store file is missing, or was never completely
	// initialised, and Options.Init was not set. The voter has lost its
	// records and must not vote until its records are restored; see the
	// package documentation.
	ErrNoStore = errors.New("no voter store")

	// ErrExists means Options.Init was set but the store file exists. Init
	// never overwrites a store; delete the file first to re-initialise.
	ErrExists = errors.New("voter store exists")

	// ErrReinit means Options.Init was set in a directory whose marker
	// (MarkerFileName) says it held a voter store, but the store file is
	// gone: the voter lost its records, and a new store would be a new
	// voter identity that has none of them. Delete the marker, or set
	// Options.Reinit, only when re-initialising is safe (see Options.Init).
	ErrReinit = errors.New("voter store was created here before")

	// ErrWrongCluster means the store was initialised for another cluster.
	ErrWrongCluster = errors.New("wrong cluster")

	// ErrWrongVoter means the store was initialised for another voter.
	ErrWrongVoter = errors.New("wrong voter")

	// ErrWrongVoterSet means the store was recorded with another voter set.
	ErrWrongVoterSet = errors.New("wrong voter set")

	// ErrLocked means another process (or another Store in this process)
	// holds the store's file lock for longer than Options.OpenTimeout.
	ErrLocked = errors.New("voter store locked")

	// ErrClosed is returned by a Store's methods after Close.
	ErrClosed = errors.New("voter store closed")

	// ErrCorrupt means the store holds a value this package cannot decode,
	// or a file bbolt cannot read.
	ErrCorrupt = errors.New("corrupt voter store")
)
