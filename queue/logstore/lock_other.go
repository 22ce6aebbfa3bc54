//go:build !unix

package logstore

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("logstore: lock held")

// lockFile creates nothing more than the lock file on systems without
// flock(2): the single-process guarantee is the caller's there.
func lockFile(f *os.File) error { return nil }
