// Package queuetest is the conformance suite for [queue.Store]
// implementations. Every store, ours and our users', runs it:
//
//	func TestConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T) queue.Store {
//			s := mystore.Open(t.TempDir())
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// [Run] runs one subtest per rule of the Store contract, each on a fresh
// store and each explaining the rule when it fails. [TestStore] checks one
// store outside the testing package and joins every violation into one
// error.
//
// # Durability
//
// The rule "durable-across-reopen" needs to close a store and open it again
// on the same data. A store offers that by implementing [Reopener] (usually
// only in its test factory's wrapper). Durable stores must implement it; a
// store without it (an in-memory store) has that rule skipped with a message
// saying so.
//
// # Optional interfaces
//
// The rules for [queue.IdempotentStore] and [queue.Notifier] run only when
// the store implements them.
//
// # Model test
//
// The rule "model" drives the store with random operation sequences and
// compares every observable result with a simple reference model. It is
// skipped in -short mode. The environment variable QUEUETEST_MODEL_SEQS
// sets the number of random sequences (default 6) for longer stress runs.
package queuetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mta/queue"
)

// Reopener is implemented by stores that can be closed and opened again on
// the same data, to check durability. Reopen closes the store (as a crash or
// a clean shutdown would) and returns a new store over the same data; the
// suite closes the new store when the rule ends. Closing a store that was
// already closed must be harmless.
type Reopener interface {
	Reopen() (queue.Store, error)
}

// rule is one conformance rule.
type rule struct {
	name string
	// explanation states the rule, shown with every violation.
	explanation string
	// skip, if it returns a non-empty reason, skips the rule for s.
	skip func(s queue.Store, short bool) string
	run  func(c *checker)
}

// checker runs one rule against one store and collects violations.
type checker struct {
	ctx     context.Context
	s       queue.Store
	errs    []error
	closers []func()
	logf    func(format string, args ...any)
}

// errorf records a violation.
func (c *checker) errorf(format string, args ...any) {
	_, file, line, _ := runtime.Caller(1)
	if i := strings.LastIndexByte(file, '/'); i >= 0 {
		file = file[i+1:]
	}
	c.errs = append(c.errs, fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...)))
}

// Run runs every rule as a subtest of t, each on a fresh store from
// newStore. newStore returns an empty store and registers its own cleanup
// (t.Cleanup) to close it.
func Run(t *testing.T, newStore func(t *testing.T) queue.Store) {
	t.Helper()
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			s := newStore(t)
			if r.skip != nil {
				if reason := r.skip(s, testing.Short()); reason != "" {
					t.Skip(reason)
				}
			}
			c := &checker{ctx: t.Context(), s: s, logf: t.Logf}
			r.run(c)
			for _, f := range c.closers {
				f()
			}
			for _, err := range c.errs {
				t.Errorf("%v\nrule: %s", err, r.explanation)
			}
		})
	}
}

// TestStore checks s against every rule and returns the violations joined,
// or nil. s must be empty; TestStore deletes every message in it before each
// rule. If s implements Reopener, the durability rule closes s and keeps
// using the reopened store, which TestStore closes before returning. The
// model rule is skipped (it needs many fresh stores); use Run for it.
func TestStore(s queue.Store) error {
	ctx := context.Background()
	var (
		all     []error
		closers []func()
	)
	defer func() {
		for _, f := range closers {
			f()
		}
	}()
	for _, r := range rules {
		if r.name == "model" {
			continue
		}
		if r.skip != nil {
			if reason := r.skip(s, true); reason != "" {
				continue
			}
		}
		if err := empty(ctx, s); err != nil {
			return errors.Join(append(all, fmt.Errorf("emptying the store before rule %s: %w", r.name, err))...)
		}
		c := &checker{ctx: ctx, s: s, logf: func(string, ...any) {}}
		r.run(c)
		s = c.s // a reopened store replaces the original
		closers = append(closers, c.closers...)
		for _, err := range c.errs {
			all = append(all, fmt.Errorf("%s: %w (rule: %s)", r.name, err, r.explanation))
		}
	}
	return errors.Join(all...)
}

func empty(ctx context.Context, s queue.Store) error {
	msgs, err := s.List(ctx, queue.Filter{})
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := s.Delete(ctx, m.ID); err != nil && !errors.Is(err, queue.ErrNotFound) {
			return err
		}
	}
	return nil
}

// t0 is the base of every time the suite passes to stores.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }
