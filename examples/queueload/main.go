// Command queueload measures the embedded queue store (queue/logstore)
// under load: durable enqueue throughput with concurrent producers, the
// process's memory with every message queued, and recovery (reopen) time
// and memory.
//
//	go run ./examples/queueload -dir /var/tmp/queueload -n 1000000 -size 10240 -producers 64
//
// It enqueues n messages into logstore.Open(dir) from P producer
// goroutines calling Store.Enqueue directly (no scheduler), each call
// durable (fsynced, group commit), and prints:
//
//   - enqueue throughput in msgs/s and MB/s (10^6 bytes of body per
//     second) and the latency of one Enqueue (p50, p99, max);
//   - the resident memory with all n messages queued: VmRSS and VmHWM
//     from /proc/self/status (Linux only), and the Go heap in use;
//   - the size of the directory;
//   - after Close and reopen: the recovery time (logstore.Open replaying
//     the log), then, after runtime.GC, VmRSS and VmHWM again. VmHWM is
//     reset (via /proc/self/clear_refs) before the reopen, so it is the
//     peak of the recovery, when the kernel allows the reset;
//   - a check that the reopened store lists exactly n messages, each with
//     the right body size (Store.List, in pages), and how long that took.
//
// Each message has one recipient, spread over 100 domains, and a body of
// header lines and filler lines (CRLF, at most 78 characters) of exactly
// -size bytes (or just the header when -size is smaller).
//
// Flags:
//
//	-dir DIR        store directory; must be empty or not exist (default: a
//	                new directory under $TMPDIR). Use a directory on the
//	                disk you want to measure.
//	-n N            number of messages (default 100000)
//	-size BYTES     body size in bytes (default 10240)
//	-producers P    concurrent producer goroutines (default 64)
//	-keep           keep the directory afterwards (default: remove it)
//
// The exit status is 1 when anything fails, including a count mismatch
// after recovery.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/logstore"
)

func main() {
	if _, err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "queueload:", err)
		os.Exit(1)
	}
}

// result is what a run measured (for tests).
type result struct {
	Enqueued  int
	Recovered int
	Bytes     int64 // total body bytes recovered
}

func run(args []string, out io.Writer) (res result, err error) {
	fl := flag.NewFlagSet("queueload", flag.ContinueOnError)
	fl.SetOutput(out)
	dir := fl.String("dir", "", "store directory: empty or absent (default: a new temporary directory)")
	n := fl.Int("n", 100000, "number of messages")
	size := fl.Int("size", 10240, "body size in bytes")
	producers := fl.Int("producers", 64, "concurrent producers")
	keep := fl.Bool("keep", false, "keep the directory afterwards")
	if err := fl.Parse(args); err != nil {
		return res, err
	}
	if fl.NArg() > 0 {
		return res, fmt.Errorf("unexpected arguments: %q", fl.Args())
	}
	if *n <= 0 || *size < 0 || *producers <= 0 {
		return res, errors.New("-n and -producers must be positive, -size not negative")
	}

	if *dir == "" {
		d, err := os.MkdirTemp("", "queueload")
		if err != nil {
			return res, err
		}
		*dir = d
	} else {
		ents, err := os.ReadDir(*dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, err
		}
		if len(ents) > 0 {
			return res, fmt.Errorf("directory %s is not empty", *dir)
		}
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return res, err
		}
	}
	if !*keep {
		defer func() {
			if rerr := os.RemoveAll(*dir); rerr != nil && err == nil {
				err = rerr
			}
		}()
	}
	ctx := context.Background()
	fmt.Fprintf(out, "queueload: dir %s, n %d, size %d, producers %d, GOMAXPROCS %d\n",
		*dir, *n, *size, *producers, runtime.GOMAXPROCS(0))

	// Enqueue.
	s, err := logstore.Open(*dir, nil)
	if err != nil {
		return res, err
	}
	defer func() {
		if s != nil {
			s.Close()
		}
	}()
	start := time.Now()
	var (
		next     atomic.Int64
		done     atomic.Int64
		bodyLen  atomic.Int64
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		hists    = make([]latHist, *producers)
	)
	stopProgress := progress(out, *n, &done, start)
	for p := range *producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var g bodyGen
			h := &hists[p]
			for {
				i := int(next.Add(1)) - 1
				if i >= *n {
					return
				}
				msg, body := g.message(i, *size)
				t0 := time.Now()
				err := s.Enqueue(ctx, msg, bytes.NewReader(body))
				h.add(time.Since(t0))
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("enqueue %s: %w", msg.ID, err) })
					next.Store(int64(*n))
					return
				}
				bodyLen.Add(int64(len(body)))
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if firstErr != nil {
		return res, firstErr
	}
	res.Enqueued = int(done.Load())
	var lat latHist
	for i := range hists {
		lat.merge(&hists[i])
	}
	fmt.Fprintf(out, "enqueue:  %d messages, %d body bytes in %v: %.0f msgs/s, %.1f MB/s\n",
		res.Enqueued, bodyLen.Load(), elapsed.Round(time.Millisecond),
		float64(res.Enqueued)/elapsed.Seconds(), float64(bodyLen.Load())/1e6/elapsed.Seconds())
	fmt.Fprintf(out, "latency:  Enqueue p50 %v, p99 %v, max %v\n", lat.quantile(0.5), lat.quantile(0.99), lat.max.Round(time.Microsecond))
	printMem(out, "memory:   all queued:")
	runtime.GC()
	printMem(out, "memory:   all queued, after GC:")
	if du, files, err := dirSize(*dir); err == nil {
		fmt.Fprintf(out, "disk:     %.1f MB in %d files\n", float64(du)/1e6, files)
	}

	// Close and recover.
	t0 := time.Now()
	err = s.Close()
	s = nil
	if err != nil {
		return res, fmt.Errorf("close: %w", err)
	}
	fmt.Fprintf(out, "close:    %v\n", time.Since(t0).Round(time.Microsecond))
	debug.FreeOSMemory()
	hwmReset := resetHWM()
	printMem(out, "memory:   closed, before reopen:")
	t0 = time.Now()
	s, err = logstore.Open(*dir, nil)
	if err != nil {
		return res, fmt.Errorf("reopen: %w", err)
	}
	fmt.Fprintf(out, "recovery: logstore.Open took %v\n", time.Since(t0).Round(time.Millisecond))
	runtime.GC()
	label := "memory:   after reopen, after GC (VmHWM since the reset before reopen):"
	if !hwmReset {
		label = "memory:   after reopen, after GC (VmHWM could not be reset: peak of the whole run):"
	}
	printMem(out, label)

	// Verify.
	t0 = time.Now()
	f := queue.Filter{Limit: 50000}
	for {
		page, err := s.List(ctx, f)
		if err != nil {
			return res, fmt.Errorf("list: %w", err)
		}
		for _, m := range page {
			res.Recovered++
			res.Bytes += m.Size
			if int(m.Size) != *size && *size >= headerLen {
				return res, fmt.Errorf("message %s: body size %d, want %d", m.ID, m.Size, *size)
			}
			if len(m.Deliveries) != 1 || len(m.Deliveries[0].Recipients) != 1 {
				return res, fmt.Errorf("message %s: %d deliveries, want 1 with 1 recipient", m.ID, len(m.Deliveries))
			}
		}
		if len(page) < f.Limit {
			break
		}
		f.After = page[len(page)-1].ID
	}
	fmt.Fprintf(out, "verify:   %d messages, %d body bytes listed after reopen in %v\n",
		res.Recovered, res.Bytes, time.Since(t0).Round(time.Millisecond))
	err = s.Close()
	s = nil
	if err != nil {
		return res, fmt.Errorf("close: %w", err)
	}
	if res.Recovered != res.Enqueued || res.Bytes != bodyLen.Load() {
		return res, fmt.Errorf("recovered %d messages (%d bytes), enqueued %d (%d bytes)",
			res.Recovered, res.Bytes, res.Enqueued, bodyLen.Load())
	}
	fmt.Fprintln(out, "ok:       every enqueued message recovered")
	if *keep {
		fmt.Fprintf(out, "kept:     %s\n", *dir)
	}
	return res, nil
}

// progress prints how many messages are queued every 10 seconds until the
// returned function is called.
func progress(out io.Writer, n int, done *atomic.Int64, start time.Time) func() {
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				fmt.Fprintf(out, "progress: %d/%d queued, %.0f msgs/s so far\n", d, n, float64(d)/time.Since(start).Seconds())
			}
		}
	}()
	return func() { close(stop); <-finished }
}

// header is the body's header; %s are the recipient and the message ID.
const header = "From: Load Generator <sender@example.com>\r\n" +
	"To: <%s>\r\n" +
	"Subject: queueload test message\r\n" +
	"Date: Mon, 01 Jan 2030 00:00:00 +0000\r\n" +
	"Message-ID: <%s@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=us-ascii\r\n" +
	"\r\n"

// headerLen is about the longest header made (for the size check).
var headerLen = len(header) + 64

// created is every message's Created time.
var created = time.Now().UTC().Truncate(time.Second)

// bodyGen makes messages and bodies, reusing one buffer (one per producer).
type bodyGen struct{ buf []byte }

const filler = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"

// message returns message i (ID, one recipient in one of 100 domains) and
// its body of size bytes (valid until the next call).
func (g *bodyGen) message(i, size int) (*queue.Message, []byte) {
	id := fmt.Sprintf("ql%010d", i)
	domain := fmt.Sprintf("d%02d.example", i%100)
	rcpt := fmt.Sprintf("user%d@%s", i, domain)
	b := fmt.Appendf(g.buf[:0], header, rcpt, id)
	for line := 0; ; line++ {
		r := size - len(b)
		if r < 2 {
			break
		}
		n := min(r, 78) - 2 // a full line is 76 characters + CRLF
		if r > 78 && r <= 80 {
			n = r - 5 // leave room for a last line of at least one character
		}
		for j := range n {
			b = append(b, filler[(i+line+j)%len(filler)])
		}
		b = append(b, '\r', '\n')
	}
	g.buf = b
	return &queue.Message{
		ID:      id,
		From:    "sender@example.com",
		Created: created,
		Expires: created.Add(5 * 24 * time.Hour),
		Deliveries: []queue.Delivery{{
			Index:       0,
			Domain:      domain,
			NextAttempt: created,
			Recipients:  []queue.Recipient{{Address: rcpt}},
		}},
	}, b
}

// latHist is a latency histogram with buckets 2^(1/8) apart, from 1µs.
type latHist struct {
	counts [200]int64
	total  int64
	max    time.Duration
}

func latBucket(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	return min(int(math.Log2(us)*8)+1, 199)
}

func (h *latHist) add(d time.Duration) {
	h.counts[latBucket(d)]++
	h.total++
	h.max = max(h.max, d)
}

func (h *latHist) merge(o *latHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.max = max(h.max, o.max)
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *latHist) quantile(q float64) time.Duration {
	want := int64(math.Ceil(q * float64(h.total)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= want && c > 0 {
			d := time.Duration(math.Exp2(float64(i)/8) * float64(time.Microsecond))
			return min(d, h.max).Round(time.Microsecond)
		}
	}
	return h.max
}

// printMem prints VmRSS and VmHWM from /proc/self/status and the Go heap.
func printMem(out io.Writer, label string) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, hwm := procStatus("VmRSS"), procStatus("VmHWM")
	fmt.Fprintf(out, "%s VmRSS %s, VmHWM %s, Go heap in use %.1f MB, Go sys %.1f MB\n",
		label, rss, hwm, float64(ms.HeapInuse)/1e6, float64(ms.Sys)/1e6)
}

// procStatus returns a field of /proc/self/status in MB, or "n/a".
func procStatus(field string) string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "n/a"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		var kb int64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
			return strings.TrimSpace(v)
		}
		return fmt.Sprintf("%.1f MB", float64(kb)*1024/1e6)
	}
	return "n/a"
}

// resetHWM resets VmHWM to the current RSS (Linux: "5" to clear_refs).
func resetHWM() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// dirSize returns the total size and number of the files in dir.
func dirSize(dir string) (int64, int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	var total int64
	files := 0
	for _, e := range ents {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		total += fi.Size()
		files++
	}
	return total, files, nil
}
