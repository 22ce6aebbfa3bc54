package queuetest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/memstore"
	"github.com/mtakit/mta/queue/queuetest"
)

// ignoresSkip breaks one rule: it drops ClaimRequest.Skip.
type ignoresSkip struct{ *memstore.Store }

func (s ignoresSkip) Claim(ctx context.Context, req queue.ClaimRequest) (*queue.Claim, error) {
	req.Skip = nil
	return s.Store.Claim(ctx, req)
}

// TestStoreReportsViolations checks that the suite notices a broken store
// and names the rule.
func TestStoreReportsViolations(t *testing.T) {
	if err := queuetest.TestStore(memstore.New()); err != nil {
		t.Fatalf("memstore: %v", err)
	}
	err := queuetest.TestStore(ignoresSkip{memstore.New()})
	if err == nil {
		t.Fatal("TestStore accepted a store that ignores Skip")
	}
	if !strings.Contains(err.Error(), "claim-skip-and-max-priority") {
		t.Errorf("violation does not name the rule: %v", err)
	}
}

func Example() {
	// In a store's own test file:
	//
	//	func TestConformance(t *testing.T) {
	//		queuetest.Run(t, func(t *testing.T) queue.Store { ... })
	//	}
	//
	// or, outside a test:
	err := queuetest.TestStore(memstore.New())
	fmt.Println("violations:", err)
	// Output: violations: <nil>
}
