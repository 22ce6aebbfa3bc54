package ratelimit_test

import (
	"testing"
	"time"

	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/ratelimit/limittest"
)

func TestMemStoreConformance(t *testing.T) {
	limittest.Run(t, func(t *testing.T, now func() time.Time) func() ratelimit.Store {
		s := ratelimit.NewMemStore(now)
		return func() ratelimit.Store { return s }
	}, limittest.Options{})
}
