package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"

	"github.com/mtakit/mta/queue"
)

// The benchmarks need MTA_TEST_POSTGRES like the tests (they skip without
// it) and run every benchmark function call in a fresh schema, dropped at
// its end. Each store uses the pool settings of MTA_TEST_POSTGRES: the
// default pool has max(4, GOMAXPROCS) connections, so beyond that many
// producers or workers the extra goroutines wait for a connection, as they
// would in an MTA with the default settings; append e.g.
// &pool_max_conns=64 to the connection string to measure otherwise.
//
// Full measurement (on a quiet machine):
//
//	MTA_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run '^$' -bench . -benchtime 5000x -count 5 -timeout 60m ./queue/pgstore/

// benchBodySize is the size of every benchmark message body.
const benchBodySize = 10 << 10

// benchBody returns a body of exactly benchBodySize bytes: an X-Seq header
// (read by the cluster sink) and lines of 64 characters.
func benchBody(seq int) []byte {
	var b bytes.Buffer
	b.Grow(benchBodySize)
	fmt.Fprintf(&b, "X-Seq: %d\r\nSubject: benchmark message %d\r\n\r\n", seq, seq)
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n"
	for benchBodySize-b.Len() >= len(line)+2 {
		b.WriteString(line)
	}
	// The last line takes the 2 to 67 bytes left.
	b.WriteString(strings.Repeat("x", benchBodySize-b.Len()-2) + "\r\n")
	return b.Bytes()
}

// benchRecipient is the one recipient of benchmark message i, at one of
// eight domains (so that per-destination limits do not bind).
func benchRecipient(i int) string {
	return fmt.Sprintf("u%d@d%d.sink.test", i, i%8)
}

// benchMessage returns benchmark message i: one delivery of one recipient,
// ready now, held if held.
func benchMessage(i int, now time.Time, held bool) *queue.Message {
	rcpt := benchRecipient(i)
	return &queue.Message{
		ID:      fmt.Sprintf("bench-%010d", i),
		From:    "sender@src.test",
		Created: now,
		Expires: now.Add(24 * time.Hour),
		Deliveries: []queue.Delivery{{
			Index:       0,
			Domain:      rcpt[strings.IndexByte(rcpt, '@')+1:],
			Recipients:  []queue.Recipient{{Address: rcpt}},
			NextAttempt: now,
			Held:        held,
		}},
	}
}

// runWorkers runs f(i) for i in [0, n) from exactly workers goroutines, and
// returns the first error.
func runWorkers(workers, n int, f func(w, i int) error) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(w, i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop the others
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// prefill enqueues messages 0..n-1 (bodies from benchBody) with 16
// goroutines.
func prefill(b *testing.B, s *Store, n int, held bool) {
	b.Helper()
	now := time.Now()
	err := runWorkers(16, n, func(_, i int) error {
		return s.Enqueue(context.Background(), benchMessage(i, now, held), bytes.NewReader(benchBody(i)))
	})
	if err != nil {
		b.Fatalf("prefill: %v", err)
	}
}

func reportRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "msgs/s")
	}
}

// BenchmarkEnqueue10KB measures Store.Enqueue of 10 KiB messages (one
// recipient) from exactly P goroutines: b.N messages in all.
func BenchmarkEnqueue10KB(b *testing.B) {
	for _, producers := range []int{1, 16, 64} {
		b.Run("producers="+strconv.Itoa(producers), func(b *testing.B) {
			s := openTest(b, Config{})
			body := benchBody(0)
			now := time.Now()
			ctx := context.Background()
			b.SetBytes(benchBodySize)
			b.ResetTimer()
			err := runWorkers(producers, b.N, func(_, i int) error {
				return s.Enqueue(ctx, benchMessage(i, now, false), bytes.NewReader(body))
			})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			reportRate(b)
		})
	}
}

// BenchmarkClaimComplete10KB prefills b.N messages of 10 KiB (outside the
// timer), then measures 16 workers claiming and completing (delivered, so
// the message and its body are removed) all of them.
func BenchmarkClaimComplete10KB(b *testing.B) {
	const workers = 16
	s := openTest(b, Config{})
	prefill(b, s, b.N, false)
	ctx := context.Background()
	ok := &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "ok"}
	b.SetBytes(benchBodySize)
	b.ResetTimer()
	err := runWorkers(workers, b.N, func(w, _ int) error {
		owner := "bench/w" + strconv.Itoa(w)
		var cl *queue.Claim
		for deadline := time.Now().Add(30 * time.Second); ; {
			now := time.Now()
			var err error
			cl, err = s.Claim(ctx, queue.ClaimRequest{Owner: owner, Now: now, Until: now.Add(time.Minute)})
			if err == nil {
				break
			}
			// Every claim is counted, so one is still ready unless the
			// others hold it (SKIP LOCKED): try again.
			if !errors.Is(err, queue.ErrNoneReady) || now.After(deadline) {
				return fmt.Errorf("Claim: %w", err)
			}
			time.Sleep(time.Millisecond)
		}
		now := time.Now()
		return s.Complete(ctx, &queue.Completion{
			Lease:       cl.Lease,
			Now:         now,
			Results:     []queue.RecipientResult{{Address: cl.Delivery.Recipients[0].Address, State: queue.RecipientDelivered, Reply: ok, Attempted: now}},
			NextAttempt: now.Add(time.Hour),
		})
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	reportRate(b)
	var left int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM messages`).Scan(&left); err != nil {
		b.Fatal(err)
	}
	if left != 0 {
		b.Fatalf("%d messages left after claiming and completing all %d", left, b.N)
	}
}

// BenchmarkClusterDelivery measures how fast 1, 2 or 3 node processes (the
// cluster tests' node: a queue.Queue with 16 workers on its own Store) on
// one schema deliver b.N messages of 10 KiB (one recipient each, over eight
// domains) to the loopback SMTP sink.
//
// The messages are enqueued first, held, outside the timer; the nodes are
// started, also outside the timer, and awaited until each LISTENs on the
// store's channel. The timer covers releasing every hold (one UPDATE and a
// NOTIFY) until the sink received every recipient and every completion is
// recorded (the schema holds no message): delivery throughput only, neither
// enqueue nor process start-up.
func BenchmarkClusterDelivery(b *testing.B) {
	for _, nodes := range []int{1, 2, 3} {
		b.Run("nodes="+strconv.Itoa(nodes), func(b *testing.B) {
			benchClusterDelivery(b, nodes)
		})
	}
}

func benchClusterDelivery(b *testing.B, nodes int) {
	b.StopTimer()
	dsn := testDSN(b)
	schema := testSchema(b, dsn)
	s := openTest(b, Config{DSN: dsn, Schema: schema})
	ctx := context.Background()
	prefill(b, s, b.N, true)

	k := newSink(b)
	app := "pgstore-bench-" + schema + "-"
	var ns []*node
	for i := range nodes {
		name := fmt.Sprintf("node%d", i)
		ns = append(ns, startNode(b, name, withAppName(b, dsn, app+name), schema, k.addr, 30*time.Second))
	}
	dump := func() {
		for _, n := range ns {
			out := n.output.String()
			if len(out) > 4000 {
				out = out[len(out)-4000:]
			}
			b.Logf("%s output:\n%s", n.name, out)
		}
	}
	// Wait until every node's store LISTENs (its queue starts right
	// after), plus a little for the queues' start.
	for deadline := time.Now().Add(time.Minute); ; {
		var listening int
		err := s.pool.QueryRow(ctx, `SELECT count(DISTINCT application_name) FROM pg_stat_activity
			WHERE starts_with(application_name, $1) AND query LIKE 'LISTEN %'`, app).Scan(&listening)
		if err != nil {
			b.Fatal(err)
		}
		if listening == nodes {
			break
		}
		if time.Now().After(deadline) {
			dump()
			b.Fatalf("after a minute %d of %d nodes were listening", listening, nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)

	b.SetBytes(benchBodySize)
	b.ResetTimer()
	b.StartTimer()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE deliveries SET held = false WHERE held`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, s.channel)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	timeout := 3*time.Minute + time.Duration(b.N)*20*time.Millisecond
	if !k.waitFor(timeout, func() bool { return len(k.got) >= b.N }) {
		k.mu.Lock()
		d := len(k.got)
		k.mu.Unlock()
		dump()
		b.Fatalf("after %v %d of %d recipients were delivered", timeout, d, b.N)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var left int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM messages`).Scan(&left); err != nil {
			b.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			dump()
			b.Fatalf("every recipient was delivered but %d messages are still queued", left)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	reportRate(b)

	for _, n := range ns {
		n.stdin.Close()
		if err := n.cmd.Wait(); err != nil {
			b.Errorf("%s: %v\n%s", n.name, err, n.output.String())
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.hits != b.N || len(k.got) != b.N {
		b.Errorf("the sink saw %d deliveries of %d distinct recipients, want %d of %d", k.hits, len(k.got), b.N, b.N)
	}
	for i := range b.N {
		if key := fmt.Sprintf("%d/%s", i, benchRecipient(i)); len(k.got[key]) == 0 {
			b.Errorf("%s was never delivered", key)
			break
		}
	}
	if b.N >= 100 && testing.Verbose() {
		b.Logf("%d messages delivered by %d nodes; per node: %v", b.N, nodes, k.nodes)
	}
}
