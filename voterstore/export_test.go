package voterstore

import "github.com/tenurehq/tenure/lease"

// FirstBoot draws a new store's boot counter from r.
var FirstBoot = firstBoot

// EncodeRecord and DecodeRecord expose the record codec to tests.
func EncodeRecord(r lease.Record) []byte { return appendRecord(nil, r) }

// DecodeRecord decodes a stored record value.
func DecodeRecord(b []byte) (lease.Record, error) { return decodeRecord(b) }

// SetCommitHook makes the committer call f before each commit; an error
// from f fails the commit. Set it before the saves it should affect.
func SetCommitHook(s *Store, f func() error) {
	s.mu.Lock()
	s.commitHook = f
	s.mu.Unlock()
}

// Commits returns how many batches s has committed.
func Commits(s *Store) uint64 { return s.commits.Load() }

// Queued returns how many records wait for the next commit.
func Queued(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued == nil {
		return 0
	}
	return len(s.queued.recs)
}
