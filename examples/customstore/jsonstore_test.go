package main

import (
	"testing"

	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/queuetest"
)

// reopenable adds queuetest.Reopener to a JSONStore: it opens the same
// directory again, as after a restart.
type reopenable struct {
	*JSONStore
}

func (r reopenable) Reopen() (queue.Store, error) {
	r.Close()
	s, err := OpenJSONStore(r.dir)
	if err != nil {
		return nil, err
	}
	return reopenable{s}, nil
}

func TestJSONStoreConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queue.Store {
		s, err := OpenJSONStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return reopenable{s}
	})
}

func TestRun(t *testing.T) {
	if err := run(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

func TestJSONStoreJoined(t *testing.T) {
	s, err := OpenJSONStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := queuetest.TestStore(reopenable{s}); err != nil {
		t.Fatal(err)
	}
}
