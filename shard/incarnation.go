package shard

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// IncarnationFile is the name of the file in Config.DataDir that holds
// the highest incarnation a process of this node has taken, in decimal.
const IncarnationFile = "incarnation"

// takeIncarnation returns the incarnation of a process that starts at wall
// time now. Voters order the processes of one NodeID by it and ignore all
// but the highest they have seen, so it must grow from one start to the
// next. The wall clock in nanoseconds does unless the clock steps back
// between two starts; with a data directory the incarnation is also above
// the one persisted there, and is persisted (fsynced) before it is used.
// Without one, a restart after a step back is refused as stale by the
// voters until the holder takes an incarnation above theirs (see
// lease.Holder.Inc).
func takeIncarnation(dir string, now time.Time) (uint64, error) {
	inc := uint64(max(now.UnixNano(), 1))
	if dir == "" {
		return inc, nil
	}
	last, err := readIncarnation(dir)
	if err != nil {
		return 0, err
	}
	if last == math.MaxUint64 {
		return 0, fmt.Errorf("incarnation file %s holds the largest incarnation, %d: none can follow it", filepath.Join(dir, IncarnationFile), last)
	}
	inc = max(inc, last+1)
	if err := writeIncarnation(dir, inc); err != nil {
		return 0, err
	}
	return inc, nil
}

// raiseIncarnationFile records inc in dir if it is above the incarnation
// recorded there: a process that raised its incarnation at run time makes
// the next start take a higher one.
func raiseIncarnationFile(dir string, inc uint64) error {
	last, err := readIncarnation(dir)
	if err != nil || inc <= last {
		return err
	}
	return writeIncarnation(dir, inc)
}

// readIncarnation returns the incarnation recorded in dir, 0 if none is.
// A file that does not hold one is an error: it may have held a higher
// incarnation than the clock gives, so guessing could go back.
func readIncarnation(dir string) (uint64, error) {
	path := filepath.Join(dir, IncarnationFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("incarnation file: %w", err)
	}
	inc, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("incarnation file %s does not hold an incarnation (remove it to start from the wall clock, which must then be ahead of every earlier start): %w", path, err)
	}
	return inc, nil
}

// writeIncarnation replaces the incarnation file in dir atomically and
// durably: a temporary file, fsynced, renamed over it, and the directory
// fsynced.
func writeIncarnation(dir string, inc uint64) (err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("incarnation file: %w", err)
	}
	path := filepath.Join(dir, IncarnationFile)
	tmp := path + ".tmp"
	defer func() {
		if err != nil {
			os.Remove(tmp)
			err = fmt.Errorf("incarnation file %s: %w", path, err)
		}
	}()
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(strconv.FormatUint(inc, 10) + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
