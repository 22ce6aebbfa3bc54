package logstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/queue"
)

// The crash test re-executes the test binary as a child (TestMain sees
// crashEnvDir) that enqueues messages and delivers them to a go-smtp sink in
// the parent over loopback, and kills it with SIGKILL at random moments.

const (
	crashEnvDir   = "LOGSTORE_CRASH_DIR"
	crashEnvAddr  = "LOGSTORE_CRASH_SMTP"
	crashEnvRun   = "LOGSTORE_CRASH_RUN"
	crashEnvDrain = "LOGSTORE_CRASH_DRAIN"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnvDir); dir != "" {
		os.Exit(crashChild(dir, os.Getenv(crashEnvAddr), os.Getenv(crashEnvRun), os.Getenv(crashEnvDrain) != ""))
	}
	os.Exit(m.Run())
}

// crashChild is the child's main: it prints "ACK id" once an Enqueue
// returned nil and "DONE id" once a Complete returned nil. In drain mode it
// only delivers, and exits once the store is empty.
func crashChild(dir, addr, run string, drain bool) int {
	s, err := Open(dir, &Config{SegmentSize: 256 << 10, LargeBody: 8 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		outMu.Unlock()
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	var producing sync.WaitGroup
	if !drain {
		for p := range 4 {
			producing.Add(1)
			wg.Go(func() {
				defer producing.Done()
				rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(p)))
				for i := range 50 {
					id := fmt.Sprintf("r%s-p%d-%03d", run, p, i)
					body := fmt.Sprintf("X-Queue-ID: %s\r\nSubject: crash test\r\n\r\n%s\r\n", id, strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", rng.IntN(300)))
					m := &queue.Message{ID: id, From: "sender@example.test", Created: time.Now(), Deliveries: []queue.Delivery{{
						Domain: "sink.test", NextAttempt: time.Now(), Recipients: []queue.Recipient{{Address: "rcpt@sink.test"}},
					}}}
					if err := s.Enqueue(ctx, m, strings.NewReader(body)); err != nil {
						fmt.Fprintln(os.Stderr, "enqueue:", err)
						return
					}
					say("ACK %s", id)
				}
			})
		}
	}
	allEnqueued := make(chan struct{})
	go func() { producing.Wait(); close(allEnqueued) }()
	for w := range 4 {
		wg.Go(func() {
			for {
				now := time.Now()
				cl, err := s.Claim(ctx, queue.ClaimRequest{Owner: fmt.Sprintf("w%d", w), Now: now, Until: now.Add(3 * time.Second)}) // short: a killed run's leases must expire before the drain gives up
				if errors.Is(err, queue.ErrNoneReady) {
					select {
					case <-allEnqueued:
						if msgs, err := s.List(ctx, queue.Filter{Limit: 1}); err == nil && len(msgs) == 0 {
							return
						}
					default:
					}
					time.Sleep(2 * time.Millisecond)
					continue
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "claim:", err)
					return
				}
				res := queue.RecipientResult{Address: "rcpt@sink.test", State: queue.RecipientDelivered, Attempted: now}
				if err := crashSend(ctx, s, addr, run, cl); err != nil {
					res.State = queue.RecipientPending
				}
				if err := s.Complete(ctx, &queue.Completion{Lease: cl.Lease, Now: time.Now(), Results: []queue.RecipientResult{res}, NextAttempt: time.Now()}); err != nil {
					fmt.Fprintln(os.Stderr, "complete:", err)
					return
				}
				if res.State == queue.RecipientDelivered {
					say("DONE %s", cl.Lease.MessageID)
				}
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 2
	}
	return 0
}

// crashSend delivers a claimed message to the sink, adding an X-Run header.
func crashSend(ctx context.Context, s *Store, addr, run string, cl *queue.Claim) error {
	b, err := s.OpenBody(ctx, cl.Lease.MessageID)
	if err != nil {
		return err
	}
	defer b.Close()
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("child.test"); err != nil {
		return err
	}
	if err := c.Mail(cl.Message.From, nil); err != nil {
		return err
	}
	if err := c.Rcpt(cl.Delivery.Recipients[0].Address, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, "X-Run: "+run+"\r\n"); err != nil {
		return err
	}
	if _, err := io.Copy(w, io.NewSectionReader(b, 0, b.Size())); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// sink is the parent's SMTP server: it records which run delivered which ID.
type sink struct {
	mu   sync.Mutex
	got  map[string][]int // ID -> runs that delivered it
	bad  []string
	seen int
}

type sinkSession struct{ s *sink }

func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return sinkSession{s}, nil }
func (sinkSession) Reset()                                  {}
func (sinkSession) Logout() error                           { return nil }
func (sinkSession) Mail(string, *smtp.MailOptions) error    { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error    { return nil }
func (ss sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	var id string
	run := -1
	for line := range strings.SplitSeq(string(data), "\r\n") {
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "X-Queue-ID: "); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(line, "X-Run: "); ok {
			run, _ = strconv.Atoi(v)
		}
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.s.seen++
	if id == "" || run < 0 || !bytes.HasSuffix(data, []byte("\r\n")) {
		ss.s.bad = append(ss.s.bad, fmt.Sprintf("%.80q", data))
		return nil
	}
	ss.s.got[id] = append(ss.s.got[id], run)
	return nil
}

// TestCrashKill9 kills a child process that enqueues and delivers, with
// SIGKILL at random moments, many times; then lets a last child drain the
// queue. Every acknowledged message must be delivered at least once, no
// message may be delivered again after its completion was acknowledged, and
// duplicates are counted (they can only come from attempts in flight at a
// kill).
func TestCrashKill9(t *testing.T) {
	kills := 15
	if v, err := strconv.Atoi(os.Getenv("LOGSTORE_KILLS")); err == nil && v > 0 {
		kills = v
	}
	sk := &sink{got: map[string][]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(sk)
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true
	srv.ErrorLog = log.New(io.Discard, "", 0) // children are killed mid-session
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()

	acked := map[string]int{} // ID -> run
	done := map[string]int{}  // ID -> run whose Complete was acknowledged
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	runChild := func(run int, drain bool, killAfter time.Duration) (killed bool) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvAddr+"="+ln.Addr().String(), crashEnvRun+"="+strconv.Itoa(run))
		if drain {
			cmd.Env = append(cmd.Env, crashEnvDrain+"=1")
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var timer *time.Timer
		var killedFlag sync.Mutex
		didKill := false
		if killAfter > 0 {
			timer = time.AfterFunc(killAfter, func() {
				killedFlag.Lock()
				didKill = true
				killedFlag.Unlock()
				if drain {
					// A stuck drain: get the child's goroutine dump.
					cmd.Process.Signal(syscall.SIGQUIT)
					return
				}
				cmd.Process.Signal(syscall.SIGKILL)
			})
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if id, ok := strings.CutPrefix(line, "ACK "); ok {
				acked[id] = run
			} else if id, ok := strings.CutPrefix(line, "DONE "); ok {
				done[id] = run
			}
		}
		err = cmd.Wait()
		if timer != nil {
			timer.Stop()
		}
		killedFlag.Lock()
		killed = didKill
		killedFlag.Unlock()
		if err != nil && !killed || drain && killed {
			t.Fatalf("child run %d failed: %v\n%s", run, err, stderr.String())
		}
		return killed
	}
	deadline := time.Now().Add(20 * time.Second)
	actualKills := 0
	run := 0
	for ; run < kills && time.Now().Before(deadline); run++ {
		if runChild(run, false, time.Duration(30+rng.IntN(400))*time.Millisecond) {
			actualKills++
		}
	}
	if runChild(run, true, 40*time.Second) {
		t.Fatal("the drain child did not finish within 40s")
	}

	sk.mu.Lock()
	defer sk.mu.Unlock()
	if len(sk.bad) > 0 {
		t.Errorf("%d malformed deliveries, e.g. %s", len(sk.bad), sk.bad[0])
	}
	missing, dups, afterDone := 0, 0, 0
	for id := range acked {
		if len(sk.got[id]) == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged message %s (run %d) was never delivered", id, acked[id])
			}
		}
	}
	for id, runs := range sk.got {
		dups += len(runs) - 1
		if d, ok := done[id]; ok {
			for _, r := range runs {
				if r > d {
					afterDone++
					t.Errorf("message %s delivered by run %d after its completion was acknowledged in run %d", id, r, d)
				}
			}
		}
		// Two deliveries in one run would mean a double claim.
		for i := 1; i < len(runs); i++ {
			if runs[i] == runs[i-1] {
				t.Errorf("message %s delivered twice by run %d", id, runs[i])
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged messages were never delivered", missing, len(acked))
	}
	t.Logf("%d child runs, %d killed with SIGKILL; %d messages acknowledged, %d deliveries, %d duplicates (attempts in flight at a kill)",
		run+1, actualKills, len(acked), sk.seen, dups)
	if actualKills == 0 {
		t.Errorf("no child was killed: the test did not test crashes")
	}
}
