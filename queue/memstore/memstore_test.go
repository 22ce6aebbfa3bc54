package memstore_test

import (
	"testing"

	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/memstore"
	"github.com/mtakit/mta/queue/queuetest"
)

func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queue.Store {
		s := memstore.New()
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestStoreJoined(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	if err := queuetest.TestStore(s); err != nil {
		t.Fatal(err)
	}
}
