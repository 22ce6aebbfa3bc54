// Command spfcheck evaluates SPF (RFC 7208) for a stream of connections.
//
// It reads JSON lines from standard input, one check per line:
//
//	{"ip":"192.0.2.1","helo":"mail.example.com","sender":"alice@example.com"}
//
// and writes one JSON line per input line, in the same order:
//
//	{"result":"pass","domain":"example.com","mechanism":"ip4:192.0.2.0/24"}
//	{"result":"fail","explanation":"...","domain":"example.com","mechanism":"-all"}
//
// "sender" is the MAIL FROM address; empty means the null reverse-path,
// which checks postmaster@<helo>. With "scope":"helo" the HELO identity is
// checked instead. "result" is one of none, neutral, pass, fail, softfail,
// temperror, permerror; "error" explains none, temperror and permerror. A
// line that cannot be checked (bad JSON, bad IP address) gets an empty
// result and an "error" starting with "input:".
//
// Flags:
//
//	-dns host:port   DNS server to query (default: the servers of /etc/resolv.conf)
//	-hostname name   this host's name, for the %{r} macro of explanations
//	-timeout d       limit for one check (default 20s)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"

	"github.com/mtakit/mta/auth/spf"
	"github.com/mtakit/mta/resolver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(realMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// realMain runs the command with args (without the program name) and
// returns its exit status: 0 on success, 1 on I/O errors, 2 on bad flags.
func realMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("spfcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("dns", "", "DNS server `host:port` (default: from /etc/resolv.conf)")
	hostname := fs.String("hostname", "", "this host's `name`, for the %{r} macro")
	timeout := fs.Duration("timeout", spf.DefaultTimeout, "time limit for one check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "spfcheck: unexpected arguments:", strings.Join(fs.Args(), " "))
		return 2
	}
	var cfg resolver.Config
	if *server != "" {
		cfg.Servers = []string{*server}
	}
	r, err := resolver.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "spfcheck:", err)
		return 1
	}
	c := &spf.Checker{Resolver: r, Hostname: *hostname, Timeout: *timeout}
	if err := run(ctx, c, stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "spfcheck:", err)
		return 1
	}
	return 0
}

// request is one input line.
type request struct {
	IP     string `json:"ip"`
	HELO   string `json:"helo"`
	Sender string `json:"sender"`
	Scope  string `json:"scope,omitempty"` // "mailfrom" (default) or "helo"
}

// response is one output line.
type response struct {
	Result      string `json:"result"`
	Explanation string `json:"explanation,omitempty"`
	Domain      string `json:"domain,omitempty"`
	Mechanism   string `json:"mechanism,omitempty"`
	Error       string `json:"error,omitempty"`
}

// run checks every JSON line of in and writes one JSON line per input line
// to out. Blank lines are skipped. It stops at the end of input, on a read
// or write error, or when ctx ends.
func run(ctx context.Context, c *spf.Checker, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	for n := 1; sc.Scan(); n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if err := enc.Encode(check(ctx, c, line)); err != nil {
			return err
		}
		// Flush per line so a caller can pipe requests interactively.
		if err := w.Flush(); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading input: %w", err)
	}
	return nil
}

// check evaluates one input line.
func check(ctx context.Context, c *spf.Checker, line string) response {
	var req request
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return response{Error: "input: " + err.Error()}
	}
	ip, err := netip.ParseAddr(req.IP)
	if err != nil {
		return response{Error: fmt.Sprintf("input: ip %q: %v", req.IP, err)}
	}
	var res spf.Result
	switch req.Scope {
	case "", string(spf.ScopeMailFrom):
		if req.Sender == "" && req.HELO == "" {
			return response{Error: "input: need a sender or a helo"}
		}
		res = c.CheckMailFrom(ctx, ip, req.HELO, req.Sender)
	case string(spf.ScopeHELO):
		res = c.CheckHELO(ctx, ip, req.HELO)
	default:
		return response{Error: fmt.Sprintf("input: unknown scope %q", req.Scope)}
	}
	resp := response{
		Result:      res.Status.String(),
		Explanation: res.Explanation,
		Domain:      res.Domain,
		Mechanism:   res.Mechanism,
	}
	if res.Err != nil {
		resp.Error = res.Err.Error()
	}
	return resp
}
