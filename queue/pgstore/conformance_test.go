package pgstore

import (
	"context"
	"testing"

	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/queuetest"
)

// reopenable wraps a Store with queuetest.Reopener: closing the pool and
// opening a new one on the same schema.
type reopenable struct {
	*Store
	cfg Config
}

func (r *reopenable) Reopen() (queue.Store, error) {
	if err := r.Store.Close(); err != nil {
		return nil, err
	}
	s, err := Open(context.Background(), r.cfg)
	if err != nil {
		return nil, err
	}
	return &reopenable{Store: s, cfg: r.cfg}, nil
}

func TestConformance(t *testing.T) {
	dsn := testDSN(t)
	queuetest.Run(t, func(t *testing.T) queue.Store {
		cfg := Config{DSN: dsn, Schema: testSchema(t, dsn)}
		s := openTest(t, cfg)
		return &reopenable{Store: s, cfg: cfg}
	})
}
