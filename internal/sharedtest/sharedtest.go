// Package sharedtest finds the project's shared test data: the
// conformance corpora and interop tools kept in ../shared next to the
// repository (../shared/corpus, ../shared/tools). Tests use the data as it
// is and skip, naming the path, when it is absent.
package sharedtest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Path returns ../shared/elem... relative to the module root, found by
// walking up from the working directory (a test's package directory) to
// go.mod. It does not check that the path exists.
func Path(elem ...string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("sharedtest: repository root (go.mod) not found")
		}
		dir = parent
	}
	return filepath.Join(append([]string{dir, "..", "shared"}, elem...)...), nil
}

// Require returns Path(elem...), failing t when the repository root cannot
// be found and skipping it when the shared data is absent.
func Require(t testing.TB, elem ...string) string {
	t.Helper()
	p, err := Path(elem...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared test data %s is absent (it lives in ../shared next to the repository): %v", p, err)
	}
	return p
}
