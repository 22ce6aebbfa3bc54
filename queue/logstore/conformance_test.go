package logstore

import (
	"testing"

	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/queuetest"
)

// reopenable wraps a Store with queuetest.Reopener.
type reopenable struct {
	*Store
	dir string
	cfg *Config
}

func (r *reopenable) Reopen() (queue.Store, error) {
	if err := r.Store.Close(); err != nil {
		return nil, err
	}
	s, err := Open(r.dir, r.cfg)
	if err != nil {
		return nil, err
	}
	return &reopenable{Store: s, dir: r.dir, cfg: r.cfg}, nil
}

func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queue.Store {
		dir := t.TempDir()
		s, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return &reopenable{Store: s, dir: dir}
	})
}

// TestConformanceSmallSegments runs the suite with tiny segments and bodies
// so that rotation, body files and compaction happen all the time.
func TestConformanceSmallSegments(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queue.Store {
		dir := t.TempDir()
		cfg := &Config{SegmentSize: 4096, LargeBody: 64}
		s, err := Open(dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return &reopenable{Store: s, dir: dir, cfg: cfg}
	})
}
