// Command dkimverify verifies the DKIM signatures of a message read from
// standard input and prints one line per signature:
//
//	dkimverify -dns 127.0.0.1:53 < msg.eml
//	signature 1: pass d=example.com s=mail2026 a=ed25519-sha256 i=@example.com
//	signature 2: fail d=example.com s=old a=rsa-sha256 i=@example.com: body hash did not verify
//
// A message without signatures prints "no DKIM signatures".
//
// Flags:
//
//	-dns host:port   DNS server to query (default: the servers of /etc/resolv.conf)
//	-timeout d       limit for the whole verification (default 30s)
//
// Exit status: 0 when there is at least one signature and all pass, 1 when
// any does not pass or there is none, 2 on bad flags or unreadable input.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/resolver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(realMain(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func realMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dkimverify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dnsServer := fs.String("dns", "", "DNS server host:port (default: /etc/resolv.conf)")
	timeout := fs.Duration("timeout", 30*time.Second, "limit for the verification")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return 2
	}
	var servers []string
	if *dnsServer != "" {
		servers = []string{*dnsServer}
	}
	res, err := resolver.New(resolver.Config{Servers: servers})
	if err != nil {
		fmt.Fprintln(stderr, "dkimverify:", err)
		return 2
	}
	v, err := dkim.NewVerifier(dkim.VerifierConfig{Resolver: res})
	if err != nil {
		fmt.Fprintln(stderr, "dkimverify:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	results, err := v.Verify(ctx, stdin)
	if err != nil {
		fmt.Fprintln(stderr, "dkimverify:", err)
		return 2
	}
	if len(results) == 0 {
		fmt.Fprintln(stdout, "no DKIM signatures")
		return 1
	}
	status := 0
	for i, r := range results {
		line := fmt.Sprintf("signature %d: %s d=%s s=%s a=%s i=%s", i+1, r.Status, r.Domain, r.Selector, r.Algorithm, r.Identifier)
		if r.BodyLength >= 0 {
			line += fmt.Sprintf(" l=%d", r.BodyLength)
		}
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		fmt.Fprintln(stdout, strings.Map(printable, line))
		if r.Status != dkim.StatusPass {
			status = 1
		}
	}
	return status
}

// printable keeps terminal control characters from the message out of
// the output.
func printable(r rune) rune {
	if r < 0x20 || r == 0x7f {
		return '?'
	}
	return r
}
