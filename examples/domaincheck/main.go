// Command domaincheck checks a sending domain's DNS setup and prints, in
// plain language, what is right, what is wrong, and the exact records to
// publish to fix it:
//
//	domaincheck -domain example.com -ip 192.0.2.10 -ip 2001:db8::25 \
//	    -selector mail2026=mail2026.pem -selector ed2026=ed2026.pem
//
// It checks SPF (one record, every -ip authorized, within the 10-lookup
// limit), DKIM (each selector's key published and matching its private
// key), DMARC (a valid policy, found by the RFC 9989 DNS Tree Walk), MX
// (present and resolvable) and MTA-STS (the _mta-sts record well-formed).
//
// Flags:
//
//	-domain d              the sending domain, required
//	-ip addr               a source IP mail is sent from (repeatable)
//	-selector sel=keyfile  a DKIM selector and its private key PEM (repeatable)
//	-dns host:port         DNS server to query (default: /etc/resolv.conf)
//	-timeout d             limit for all checks (default 60s)
//
// Exit status: 0 when no problem was found, 1 when some was, 2 on bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/mtakit/mta/auth"
	"github.com/mtakit/mta/auth/dkim"
	"github.com/mtakit/mta/resolver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(realMain(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type ipList []netip.Addr

func (l *ipList) String() string { return fmt.Sprint(*l) }
func (l *ipList) Set(s string) error {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return err
	}
	*l = append(*l, ip)
	return nil
}

type selectorList []auth.DomainKey

func (l *selectorList) String() string { return fmt.Sprint(len(*l)) }
func (l *selectorList) Set(s string) error {
	sel, file, ok := strings.Cut(s, "=")
	if !ok || sel == "" || file == "" {
		return errors.New("want selector=keyfile")
	}
	pemData, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	key, err := dkim.ParsePrivateKeyPEM(pemData)
	if err != nil {
		return err
	}
	*l = append(*l, auth.DomainKey{Selector: sel, Key: key})
	return nil
}

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("domaincheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "sending domain")
	var ips ipList
	var sels selectorList
	fs.Var(&ips, "ip", "source IP (repeatable)")
	fs.Var(&sels, "selector", "selector=keyfile (repeatable)")
	dnsServer := fs.String("dns", "", "DNS server host:port (default: /etc/resolv.conf)")
	timeout := fs.Duration("timeout", 60*time.Second, "limit for all checks")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *domain == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "domaincheck: -domain is required")
		fs.Usage()
		return 2
	}
	var servers []string
	if *dnsServer != "" {
		servers = []string{*dnsServer}
	}
	res, err := resolver.New(resolver.Config{Servers: servers})
	if err != nil {
		fmt.Fprintln(stderr, "domaincheck:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := auth.CheckDomain(ctx, res, auth.DomainSetup{Domain: *domain, IPs: ips, DKIM: sels})
	if err != nil {
		fmt.Fprintln(stderr, "domaincheck:", err)
		return 1
	}
	fmt.Fprint(stdout, rep)
	if !rep.OK() {
		return 1
	}
	return 0
}
