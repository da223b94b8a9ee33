package voterstore_test

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/voterstore"
)

// A directory whose store is gone but whose marker remains held a voter
// that may have voted: Init refuses to make a new voter identity there
// unless told to, and Open without Init says the store was lost.
func TestInitRefusesWhereAStoreWas(t *testing.T) {
	s, dir := create(t)
	if err := s.Save(t.Context(), []lease.ShardRecord{rec(7, 3, "node-a")}); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	path := filepath.Join(dir, voterstore.FileName)
	marker := filepath.Join(dir, voterstore.MarkerFileName)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	opts := options(t, dir)
	opts.Init = true
	if s, err := voterstore.Open(opts); !errors.Is(err, voterstore.ErrReinit) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Init where a store was = %v, want ErrReinit", err)
	} else {
		t.Log(err)
		wantMentions(t, err, path, marker, `voter "v1" of cluster "alpha"`, "NEW voter identity", "majority", "Reinit")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused Init created %s (stat: %v)", path, err)
	}

	_, err := voterstore.Open(options(t, dir))
	if !errors.Is(err, voterstore.ErrNoStore) {
		t.Fatalf("Open without Init = %v, want ErrNoStore", err)
	}
	t.Log(err)
	wantMentions(t, err, marker, "lost or deleted")

	opts.Reinit = true
	s = open(t, opts)
	if recs, err := s.Records(); err != nil || len(recs) != 0 {
		t.Errorf("re-initialised store: Records = %v, %v; want none", recs, err)
	}
}

// Deleting the marker along with the store is the operator's other way to
// say that re-initialising is intended.
func TestInitAfterDeletingStoreAndMarker(t *testing.T) {
	s, dir := create(t)
	mustClose(t, s)
	for _, f := range []string{voterstore.FileName, voterstore.MarkerFileName} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	opts := options(t, dir)
	opts.Init = true
	open(t, opts)
}

// A store made before markers existed gets one at its next Open, so that
// its loss is recognised from then on.
func TestOpenWritesMissingMarker(t *testing.T) {
	s, dir := create(t)
	mustClose(t, s)
	marker := filepath.Join(dir, voterstore.MarkerFileName)
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	mustClose(t, open(t, options(t, dir)))
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatalf("Open wrote no marker: %v", err)
	}
	t.Logf("%s", b)
	if !strings.Contains(string(b), `voter "v1" of cluster "alpha"`) {
		t.Errorf("marker %q does not name the voter and cluster", b)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(matches) > 0 {
		t.Errorf("temporary files left behind: %v", matches)
	}
}

// Every Init says, at WARN level, that it creates a new voter identity.
func TestInitWarnsOfANewVoterIdentity(t *testing.T) {
	var logs bytes.Buffer
	opts := options(t, t.TempDir())
	opts.Init = true
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mustClose(t, open(t, opts))
	t.Log(logs.String())
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "NEW voter identity with none of the cluster's records") {
		t.Errorf("Init logged %q, want a warning of a new voter identity", logs.String())
	}
}

// Garbage written over any page of a real store makes Open or Records
// fail with ErrCorrupt naming the file, never panic (bbolt panics on some
// damaged pages: the freelist at Open, a branch or leaf when read).
func TestDamagedFileIsErrCorrupt(t *testing.T) {
	s, dir := create(t)
	var recs []lease.ShardRecord
	for i := range uint32(2000) {
		recs = append(recs, rec(i, 1, strings.Repeat("n", 40)))
	}
	if err := s.Save(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	// A few more commits, so that the file holds free pages too.
	for i := range uint32(5) {
		if err := s.Save(t.Context(), []lease.ShardRecord{rec(i, 2, "m")}); err != nil {
			t.Fatal(err)
		}
	}
	mustClose(t, s)
	good, err := os.ReadFile(filepath.Join(dir, voterstore.FileName))
	if err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	pages := len(good) / pageSize
	rng := rand.New(rand.NewPCG(1, 2))
	var detected int
	// Pages 0 and 1 are bbolt's two checksummed meta pages.
	for p := 2; p < pages; p++ {
		damaged := bytes.Clone(good)
		for i := p * pageSize; i < (p+1)*pageSize; i++ {
			damaged[i] = byte(rng.Uint32())
		}
		copyDir := t.TempDir()
		path := filepath.Join(copyDir, voterstore.FileName)
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		opts := options(t, copyDir)
		opts.Logger = nil
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("page %d of %d damaged: panic: %v", p, pages, r)
				}
			}()
			s, err := voterstore.Open(opts)
			if err != nil {
				return err
			}
			defer mustClose(t, s)
			_, err = s.Records()
			return err
		}()
		switch {
		case err == nil:
			// A free page: nothing reads it.
		case errors.Is(err, voterstore.ErrCorrupt):
			detected++
			if !strings.Contains(err.Error(), path) {
				t.Errorf("page %d damaged: %v does not name %s", p, err, path)
			}
		default:
			t.Errorf("page %d damaged: %v, want ErrCorrupt", p, err)
		}
	}
	t.Logf("%d of %d damaged pages detected", detected, pages-2)
	if detected == 0 {
		t.Error("no damaged page was detected")
	}
}
