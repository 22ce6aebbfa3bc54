package pgstore

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/queue"
)

// sink is a loopback SMTP server that records, for every message header
// X-Seq and recipient, which client (EHLO name) delivered it and when.
type sink struct {
	srv  *smtp.Server
	addr string

	mu    sync.Mutex
	got   map[string][]sinkHit // "seq/rcpt" -> deliveries
	hits  int
	nodes map[string]int // EHLO name -> deliveries
	cond  *sync.Cond
}

type sinkHit struct {
	node string
	at   time.Time
}

func newSink(t testing.TB) *sink {
	t.Helper()
	k := &sink{got: map[string][]sinkHit{}, nodes: map[string]int{}}
	k.cond = sync.NewCond(&k.mu)
	k.srv = smtp.NewServer(k)
	k.srv.Domain = "sink.test"
	k.srv.AllowInsecureAuth = true
	k.srv.ReadTimeout = time.Minute
	k.srv.WriteTimeout = time.Minute
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k.addr = ln.Addr().String()
	go k.srv.Serve(ln)
	t.Cleanup(func() { k.srv.Close() })
	return k
}

func (k *sink) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &sinkSession{k: k, c: c}, nil
}

type sinkSession struct {
	k     *sink
	c     *smtp.Conn
	rcpts []string
}

func (s *sinkSession) Reset()        { s.rcpts = nil }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(string, *smtp.MailOptions) error {
	s.rcpts = nil
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *sinkSession) Data(r io.Reader) error {
	h, err := textproto.NewReader(bufio.NewReader(r)).ReadMIMEHeader()
	if err != nil {
		return err
	}
	seq := h.Get("X-Seq")
	now := time.Now()
	k := s.k
	k.mu.Lock()
	for _, rc := range s.rcpts {
		key := seq + "/" + rc
		k.got[key] = append(k.got[key], sinkHit{node: s.c.Hostname(), at: now})
		k.hits++
	}
	k.nodes[s.c.Hostname()] += len(s.rcpts)
	k.cond.Broadcast()
	k.mu.Unlock()
	return nil
}

// waitFor waits until cond (called with k.mu held) is true or the timeout
// passes, and reports which.
func (k *sink) waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.AfterFunc(timeout, func() {
		k.mu.Lock()
		k.cond.Broadcast()
		k.mu.Unlock()
	})
	defer deadline.Stop()
	end := time.Now().Add(timeout)
	k.mu.Lock()
	defer k.mu.Unlock()
	for !cond() {
		if time.Now().After(end) {
			return false
		}
		k.cond.Wait()
	}
	return true
}

// clusterRecipients returns the recipients of message i: one, or two at
// different domains for every fourth message (two deliveries).
func clusterRecipients(i int) []string {
	r := []string{fmt.Sprintf("u%d@d%d.sink.test", i, i%8)}
	if i%4 == 0 {
		r = append(r, fmt.Sprintf("v%d@d%d.sink.test", i, (i+1)%8))
	}
	return r
}

const (
	childEnv     = "PGSTORE_CLUSTER_CHILD"
	clusterNodes = 3
	nodeWorkers  = 16
)

// TestMain runs the body of a node process when the cluster tests start
// the test binary as one (PGSTORE_CLUSTER_CHILD=1).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(clusterNode())
	}
	os.Exit(m.Run())
}

// clusterNode runs a queue.Queue on the store until its stdin is closed.
func clusterNode() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "node:", err)
		return 1
	}
	lease, _ := time.ParseDuration(os.Getenv("PGSTORE_CLUSTER_LEASE"))
	node := os.Getenv("PGSTORE_CLUSTER_NODE")
	s, err := Open(context.Background(), Config{DSN: os.Getenv("PGSTORE_CLUSTER_DSN"), Schema: os.Getenv("PGSTORE_CLUSTER_SCHEMA")})
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	tr, err := deliver.NewStatic(deliver.StaticConfig{
		ClientConfig: deliver.ClientConfig{Hostname: node + ".test"},
		Routes:       []deliver.StaticRoute{{Domain: "*", Host: os.Getenv("PGSTORE_CLUSTER_SINK"), TLS: deliver.TLSNone}},
	})
	if err != nil {
		return fail(err)
	}
	defer tr.Close()
	q, err := newNodeQueue(s, tr, node, lease)
	if err != nil {
		return fail(err)
	}
	if err := q.Start(context.Background()); err != nil {
		return fail(err)
	}
	io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Shutdown(ctx); err != nil {
		return fail(err)
	}
	return 0
}

func newNodeQueue(s *Store, tr deliver.Transport, node string, lease time.Duration) (*queue.Queue, error) {
	return queue.New(queue.Config{
		Store:                  s,
		Transport:              tr,
		Hostname:               node + ".test",
		NodeID:                 node,
		Workers:                nodeWorkers,
		DestinationConcurrency: nodeWorkers,
		AttemptTimeout:         lease / 2,
		LeaseDuration:          lease,
		RetryMin:               time.Second,
		RetryMax:               5 * time.Second,
		PollInterval:           200 * time.Millisecond,
	})
}

// clusterN is the number of messages of the cluster tests:
// MTA_PG_MULTINODE_N, default 10,000 (300 with -short).
func clusterN(t *testing.T) int {
	n := 10000
	if v := os.Getenv("MTA_PG_MULTINODE_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 10 {
			t.Fatalf("MTA_PG_MULTINODE_N=%q: want a number >= 10", v)
		}
	}
	if testing.Short() {
		n = min(n, 300)
	}
	return n
}

type node struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	output bytes.Buffer
}

func startNode(t testing.TB, name, dsn, schema, sinkAddr string, lease time.Duration) *node {
	t.Helper()
	n := &node{name: name}
	n.cmd = exec.Command(os.Args[0])
	n.cmd.Env = append(os.Environ(), childEnv+"=1",
		"PGSTORE_CLUSTER_DSN="+dsn, "PGSTORE_CLUSTER_SCHEMA="+schema, "PGSTORE_CLUSTER_SINK="+sinkAddr,
		"PGSTORE_CLUSTER_NODE="+name, "PGSTORE_CLUSTER_LEASE="+lease.String())
	n.cmd.Stdout, n.cmd.Stderr = &n.output, &n.output
	var err error
	if n.stdin, err = n.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.cmd.ProcessState == nil {
			n.cmd.Process.Kill()
			n.cmd.Wait()
		}
	})
	return n
}

// clusterRun is one run of three node processes over one schema.
type clusterRun struct {
	t      *testing.T
	dsn    string
	schema string
	store  *Store
	q      *queue.Queue
	sink   *sink
	nodes  []*node
	n      int
	total  int // recipients
	// retry makes enqueue retry a failed Enqueue (with an idempotency
	// key, so that one that did commit is not queued twice) instead of
	// failing the test.
	retry bool
}

func newClusterRun(t *testing.T, lease time.Duration) *clusterRun {
	dsn := testDSN(t)
	c := &clusterRun{t: t, schema: testSchema(t, dsn), n: clusterN(t)}
	// Every connection of the run, the nodes' included, carries the
	// schema's name, so that TestDatabaseRestart can cut them all.
	c.dsn = withAppName(t, dsn, "pgstore-"+c.schema)
	dsn = c.dsn
	c.store = openTest(t, Config{DSN: dsn, Schema: c.schema})
	var err error
	if c.q, err = queue.New(queue.Config{Store: c.store, Hostname: "parent.test"}); err != nil {
		t.Fatal(err)
	}
	c.sink = newSink(t)
	for i := range clusterNodes {
		c.nodes = append(c.nodes, startNode(t, fmt.Sprintf("node%d", i), dsn, c.schema, c.sink.addr, lease))
	}
	for i := range c.n {
		c.total += len(clusterRecipients(i))
	}
	return c
}

// enqueue enqueues the n messages from 8 goroutines while the nodes run.
func (c *clusterRun) enqueue(ctx context.Context) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < c.n; i += 8 {
				m := &queue.NewMessage{From: "sender@src.test", IdempotencyKey: strconv.Itoa(i)}
				for _, r := range clusterRecipients(i) {
					m.Recipients = append(m.Recipients, deliver.Recipient{Address: r})
				}
				body := fmt.Sprintf("X-Seq: %d\r\nSubject: message %d\r\n\r\n%s\r\n", i, i, strings.Repeat("0123456789abcdef", 64))
				for try := 0; ; try++ {
					_, err := c.q.Enqueue(ctx, m, strings.NewReader(body))
					if err == nil {
						break
					}
					if !c.retry || try == 100 {
						errs <- fmt.Errorf("Enqueue %d: %w", i, err)
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
}

// distinct returns how many expected recipients were delivered (k.mu held).
func (c *clusterRun) distinct() int { return len(c.sink.got) }

// finish waits until every recipient was delivered and the store is empty
// (every completion recorded), then stops the live nodes.
func (c *clusterRun) finish(ctx context.Context) {
	t := c.t
	if !c.sink.waitFor(3*time.Minute, func() bool { return c.distinct() >= c.total }) {
		c.sink.mu.Lock()
		d := c.distinct()
		c.sink.mu.Unlock()
		c.dumpNodes()
		t.Fatalf("after 3 minutes %d of %d recipients were delivered", d, c.total)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		msgs, err := c.store.List(ctx, queue.Filter{Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			c.dumpNodes()
			t.Fatalf("every recipient was delivered but %s is still queued: %+v", msgs[0].ID, msgs[0].Deliveries)
		}
		time.Sleep(100 * time.Millisecond) // polling the database for the last completions
	}
	for _, n := range c.nodes {
		if n.cmd.ProcessState != nil {
			continue // killed
		}
		n.stdin.Close()
		if err := n.cmd.Wait(); err != nil {
			t.Errorf("%s: %v\n%s", n.name, err, n.output.String())
		}
	}
}

func (c *clusterRun) dumpNodes() {
	for _, n := range c.nodes {
		out := n.output.String()
		if len(out) > 4000 {
			out = out[len(out)-4000:]
		}
		c.t.Logf("%s output:\n%s", n.name, out)
	}
}

// checkDelivered checks that every recipient was delivered and no unknown
// one was, and returns the keys delivered more than once.
func (c *clusterRun) checkDelivered() (dups []string) {
	c.sink.mu.Lock()
	defer c.sink.mu.Unlock()
	want := 0
	for i := range c.n {
		for _, r := range clusterRecipients(i) {
			key := fmt.Sprintf("%d/%s", i, r)
			hits := c.sink.got[key]
			if len(hits) == 0 {
				c.t.Errorf("%s was never delivered", key)
			}
			if len(hits) > 1 {
				dups = append(dups, key)
			}
			want++
		}
	}
	if len(c.sink.got) != want {
		c.t.Errorf("the sink saw %d distinct recipients, want %d", len(c.sink.got), want)
	}
	return dups
}

// TestClusterExactlyOnce runs three node processes on one database: every
// recipient is delivered exactly once, by whichever node claimed it.
func TestClusterExactlyOnce(t *testing.T) {
	c := newClusterRun(t, 30*time.Second)
	ctx := t.Context()
	start := time.Now()
	c.enqueue(ctx)
	c.finish(ctx)
	elapsed := time.Since(start)
	if dups := c.checkDelivered(); len(dups) > 0 {
		t.Errorf("%d recipients delivered more than once with no node crashing, e.g. %v", len(dups), dups[:min(5, len(dups))])
	}
	c.sink.mu.Lock()
	t.Logf("%d messages (%d recipients) delivered by 3 nodes in %v (%.0f recipients/s); per node: %v",
		c.n, c.total, elapsed.Round(time.Millisecond), float64(c.total)/elapsed.Seconds(), c.sink.nodes)
	c.sink.mu.Unlock()
}

// TestClusterNodeKilled kills one of three nodes with SIGKILL mid-run: every
// recipient is still delivered, the dead node's claims after their 2s
// leases expire, and a recipient is delivered twice only if the dead node
// had sent it before the kill (an attempt in flight whose completion was
// never recorded).
func TestClusterNodeKilled(t *testing.T) {
	c := newClusterRun(t, 2*time.Second)
	ctx := t.Context()
	start := time.Now()
	enqueued := make(chan struct{})
	go func() {
		defer close(enqueued)
		c.enqueue(ctx)
	}()
	victim := c.nodes[0]
	if !c.sink.waitFor(3*time.Minute, func() bool {
		return c.distinct() >= c.total/4 && c.sink.nodes[victim.name+".test"] > 0
	}) {
		c.dumpNodes()
		t.Fatalf("the nodes did not deliver a quarter of the messages in 3 minutes")
	}
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	victim.cmd.Wait()
	killedAt := time.Now()
	<-enqueued
	c.finish(ctx)
	elapsed := time.Since(start)
	dups := c.checkDelivered()
	c.sink.mu.Lock()
	defer c.sink.mu.Unlock()
	for _, key := range dups {
		hits := c.sink.got[key]
		// The killed node's deliveries all left it before the kill; the
		// sink may record the last ones a little later (data still in the
		// socket), so only who delivered first matters here.
		if hits[0].node != victim.name+".test" {
			t.Errorf("%s delivered %d times, first by %s at kill%+v: only the killed node's attempts in flight may be repeated",
				key, len(hits), hits[0].node, hits[0].at.Sub(killedAt))
		}
		for _, h := range hits[1:] {
			if h.at.Before(killedAt) {
				t.Errorf("%s delivered again before the kill, by %s", key, h.node)
			}
		}
	}
	if len(dups) > nodeWorkers {
		t.Errorf("%d recipients delivered twice, more than the killed node's %d workers could have had in flight", len(dups), nodeWorkers)
	}
	t.Logf("%d messages (%d recipients) in %v; node0 killed after %v; %d recipients delivered twice (in flight at the kill); per node: %v",
		c.n, c.total, elapsed.Round(time.Millisecond), killedAt.Sub(start).Round(time.Millisecond), len(dups), c.sink.nodes)
}

// TestDatabaseRestart cuts every database connection of the run (the
// parent's and the three nodes', as a PostgreSQL restart does) twice while
// messages are being enqueued and delivered: the nodes reconnect and carry
// on, and every acknowledged message is delivered. Enqueues that fail
// during a cut are retried by the client with their idempotency key.
func TestDatabaseRestart(t *testing.T) {
	c := newClusterRun(t, 2*time.Second)
	c.retry = true
	ctx := t.Context()
	admin := openTest(t, Config{DSN: testDSN(t), Schema: c.schema})
	enqueued := make(chan struct{})
	go func() {
		defer close(enqueued)
		c.enqueue(ctx)
	}()
	cut := func() int {
		var n int
		err := admin.pool.QueryRow(ctx,
			"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
			"pgstore-"+c.schema).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	cuts := 0
	for i, frac := range []int{5, 2} {
		if !c.sink.waitFor(3*time.Minute, func() bool { return c.distinct() >= c.total/frac }) {
			c.dumpNodes()
			t.Fatalf("the nodes did not deliver 1/%d of the messages in 3 minutes", frac)
		}
		n := cut()
		if n == 0 {
			t.Fatalf("cut %d: no connection of the run was found to terminate", i+1)
		}
		cuts += n
	}
	<-enqueued
	c.finish(ctx)
	dups := c.checkDelivered()
	t.Logf("%d messages (%d recipients) delivered across two cuts of %d connections in all; %d recipients delivered twice (attempts whose completion was cut)",
		c.n, c.total, cuts, len(dups))
}
