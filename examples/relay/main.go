// Command relay is a complete mail transfer agent built from this module's
// packages: it accepts mail over SMTP (package submit), stores it durably
// in the embedded queue store (queue/logstore), signs it with DKIM, and
// delivers it by MX, over static routes, or into a sandbox folder, with
// retries, DSNs and queue inspection.
//
// Quick start (a sandbox: nothing leaves the machine):
//
//	go run ./examples/relay -sandbox /tmp/mta-sandbox -listen 127.0.0.1:2525 \
//	    -queue-dir /tmp/mta-queue -dkim-domain example.test -dkim-selector demo
//	go run ./examples/relay send -server 127.0.0.1:2525 -from me@example.test -to you@example.test
//
// The first run makes a DKIM key in the queue directory and prints the DNS
// record to publish; the second command submits a message, which lands,
// signed, as an .eml file in /tmp/mta-sandbox.
//
// # Listeners
//
// -listen is repeatable. Its value is [MODE://]HOST:PORT[?OPTIONS]:
//
//	127.0.0.1:2525                 plain SMTP (MODE smtp, the default)
//	starttls://0.0.0.0:587?auth    STARTTLS; AUTH required (no trusted-network relay)
//	tls://0.0.0.0:465?auth         implicit TLS (RFC 8314)
//	smtp://127.0.0.1:2587?insecure-auth   AUTH offered without TLS (loopback tests only)
//
// Clients in -trusted networks (default 127.0.0.0/8 and ::1) relay without
// AUTH on listeners without "auth". Everyone else must authenticate
// (users from -users; AUTH is offered only over TLS unless "insecure-auth")
// or is refused. -listen-submission ADDR is short for
// starttls://ADDR?auth. STARTTLS and TLS listeners use -tls-cert and
// -tls-key, or a self-signed certificate made at start-up when those are
// not given.
//
// # Delivery
//
// -sandbox DIR delivers nothing: every message is written to DIR as a
// file. Otherwise -route DOMAIN=HOST:PORT (repeatable; DOMAIN is a domain,
// ".parent" for its subdomains, or "*") sends mail to fixed hosts;
// -smarthost HOST:PORT is -route '*=HOST:PORT'. Recipients no route
// covers are delivered by MX, resolving with -dns servers (default:
// /etc/resolv.conf) to -mx-port (default 25). With a "*" route to an IP
// address the relay makes no DNS lookups at all.
//
// # Queue inspection
//
//	relay queue -queue-dir DIR list [-domain D] [-state queued|deferred|held|active]
//	relay queue -queue-dir DIR show|hold|release|retry|delete ID
//
// The embedded store is locked by the running relay, so these work while
// it is stopped (they say so otherwise). "relay hash-password" reads a
// password on standard input and prints its bcrypt hash for a -users file:
// one "name:hash[:sender,sender...]" per line, where senders are
// addresses or @domains the user may send as (none: any).
//
// The relay stays in the foreground, logs to standard error, and on
// SIGINT or SIGTERM stops accepting, finishes the deliveries in flight
// (up to 20 s), and exits. A message acknowledged with 250 is on disk
// (fsynced) and is delivered after a restart, even after SIGKILL.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// dispatch runs a subcommand or the relay and returns the exit status.
func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var err error
	if len(args) > 0 {
		switch args[0] {
		case "queue":
			err = queueCmd(ctx, args[1:], stdout)
		case "send":
			err = sendCmd(ctx, args[1:], stdout)
		case "hash-password":
			err = hashPassword(stdin, stdout)
		default:
			err = runRelay(ctx, args, stdout, stderr)
		}
	} else {
		err = runRelay(ctx, args, stdout, stderr)
	}
	if err == errUsage {
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "relay:", err)
		return 1
	}
	return 0
}
