package logstore

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"syscall"
)

// memFS is an in-memory FS that models what survives a power cut: file data
// written since the file's last Sync, and names created or removed since the
// last SyncDir, are lost (a random part of a file's unsynced appended tail
// may survive, as a torn write). It can also run out of space.
type memFS struct {
	mu      sync.Mutex
	files   map[string]*memInode // current names
	durable map[string]*memInode // names as of the last SyncDir
	limit   int64                // total bytes allowed; 0 = no limit
	dead    bool                 // after a cut, this instance fails everything
	locked  bool
	rng     *rand.Rand
}

type memInode struct {
	data   []byte // current content
	synced []byte // content as of the last Sync
}

func newMemFS(seed uint64) *memFS {
	return &memFS{
		files:   map[string]*memInode{},
		durable: map[string]*memInode{},
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

var errDead = errors.New("memfs: power is off")

func (fs *memFS) check() error {
	if fs.dead {
		return errDead
	}
	return nil
}

// Cut simulates a power cut: it returns the file system as it will be
// found after power returns, and makes this instance fail every call.
func (fs *memFS) Cut() *memFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.dead = true
	nfs := &memFS{
		files:   map[string]*memInode{},
		durable: map[string]*memInode{},
		limit:   fs.limit,
		rng:     fs.rng,
	}
	for name, ino := range fs.durable {
		data := slices.Clone(ino.synced)
		if len(ino.data) > len(ino.synced) && string(ino.data[:len(ino.synced)]) == string(ino.synced) && fs.rng.IntN(2) == 0 {
			// A torn write: part of the unsynced tail reached the disk.
			extra := ino.data[len(ino.synced):]
			data = append(data, extra[:fs.rng.IntN(len(extra)+1)]...)
			if fs.rng.IntN(4) == 0 {
				data = append(data, make([]byte, fs.rng.IntN(64))...) // zeroed blocks
			}
		}
		n := &memInode{data: data, synced: slices.Clone(data)}
		nfs.files[name] = n
		nfs.durable[name] = n
	}
	return nfs
}

func (fs *memFS) used() int64 {
	var n int64
	for _, ino := range fs.files {
		n += int64(len(ino.data))
	}
	return n
}

func (fs *memFS) SetLimit(n int64) {
	fs.mu.Lock()
	fs.limit = n
	fs.mu.Unlock()
}

func (fs *memFS) Create(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return nil, err
	}
	ino := &memInode{}
	fs.files[name] = ino
	return &memFile{fs: fs, ino: ino}, nil
}

func (fs *memFS) Open(name string) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return nil, err
	}
	ino := fs.files[name]
	if ino == nil {
		return nil, fmt.Errorf("memfs: open %s: %w", name, syscall.ENOENT)
	}
	return &memFile{fs: fs, ino: ino}, nil
}

func (fs *memFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return err
	}
	if fs.files[name] == nil {
		return fmt.Errorf("memfs: remove %s: %w", name, syscall.ENOENT)
	}
	delete(fs.files, name)
	return nil
}

func (fs *memFS) List() ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return nil, err
	}
	var names []string
	for name := range fs.files {
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

func (fs *memFS) SyncDir() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return err
	}
	fs.durable = map[string]*memInode{}
	for name, ino := range fs.files {
		fs.durable[name] = ino
	}
	return nil
}

type memLock struct{ fs *memFS }

func (l memLock) Close() error {
	l.fs.mu.Lock()
	l.fs.locked = false
	l.fs.mu.Unlock()
	return nil
}

func (fs *memFS) Lock() (io.Closer, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.check(); err != nil {
		return nil, err
	}
	if fs.locked {
		return nil, ErrLocked
	}
	fs.locked = true
	return memLock{fs}, nil
}

type memFile struct {
	fs  *memFS
	ino *memInode
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return 0, err
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return 0, err
	}
	n := len(p)
	var err error
	if f.fs.limit > 0 {
		grow := max(0, off+int64(len(p))-int64(len(f.ino.data)))
		if room := f.fs.limit - f.fs.used(); grow > room {
			// Write what fits, as a real file system does.
			n = max(0, int(int64(len(f.ino.data))+room-off))
			n = min(n, len(p))
			err = syscall.ENOSPC
		}
	}
	if end := off + int64(n); end > int64(len(f.ino.data)) {
		f.ino.data = append(f.ino.data, make([]byte, end-int64(len(f.ino.data)))...)
	}
	copy(f.ino.data[off:], p[:n])
	return n, err
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return err
	}
	f.ino.synced = slices.Clone(f.ino.data)
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return err
	}
	if size <= int64(len(f.ino.data)) {
		f.ino.data = f.ino.data[:size:size]
	} else {
		f.ino.data = append(f.ino.data, make([]byte, size-int64(len(f.ino.data)))...)
	}
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.check(); err != nil {
		return 0, err
	}
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Close() error { return nil }
