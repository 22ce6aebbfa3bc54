package logstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// FS is the narrow file system the store does all of its I/O through: the
// files of one directory, by plain name. [Config.FS] replaces the default
// (the operating system's files under the store's directory); tests use that
// to simulate power loss and full disks.
//
// The store relies on POSIX semantics: a file's data is durable after
// File.Sync; a created or removed name is durable after SyncDir; an open
// File stays readable after its name is removed. Implementations must be
// safe for concurrent use.
type FS interface {
	// Create creates (or truncates) the named file for reading and writing.
	Create(name string) (File, error)
	// Open opens an existing file for reading and writing.
	Open(name string) (File, error)
	// Remove removes the named file.
	Remove(name string) error
	// List returns the names of the directory's files.
	List() ([]string, error)
	// SyncDir makes the directory's entries (creations and removals)
	// durable.
	SyncDir() error
	// Lock takes an exclusive lock on the directory for this process, or
	// fails with an error wrapping [ErrLocked] if another holder has it.
	// Closing the returned Closer releases it.
	Lock() (io.Closer, error)
}

// File is an open file of an [FS]. ReadAt and WriteAt may be called
// concurrently.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the file's data durable.
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Size returns the file's current size.
	Size() (int64, error)
	Close() error
}

// DirFS returns the [FS] of the operating system directory dir, creating it
// if needed when the store opens.
func DirFS(dir string) FS { return osFS{dir} }

type osFS struct{ dir string }

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (fs osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(filepath.Join(fs.dir, name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (fs osFS) Open(name string) (File, error) {
	f, err := os.OpenFile(filepath.Join(fs.dir, name), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (fs osFS) Remove(name string) error { return os.Remove(filepath.Join(fs.dir, name)) }

func (fs osFS) List() ([]string, error) {
	ents, err := os.ReadDir(fs.dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

func (fs osFS) SyncDir() error {
	d, err := os.Open(fs.dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (fs osFS) Lock() (io.Closer, error) {
	if err := os.MkdirAll(fs.dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(fs.dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, fs.dir)
		}
		return nil, fmt.Errorf("logstore: locking %s: %w", fs.dir, err)
	}
	return f, nil
}
