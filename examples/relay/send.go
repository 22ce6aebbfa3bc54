package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

type toList []string

func (t *toList) String() string     { return strings.Join(*t, ",") }
func (t *toList) Set(s string) error { *t = append(*t, s); return nil }

// sendCmd submits one message: "relay send -server HOST:PORT -from A -to B
// [-subject S] [-body TEXT] [-starttls] [-user U -password P]". The
// relay completes Date and Message-ID itself.
func sendCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("relay send", flag.ContinueOnError)
	server := fs.String("server", "127.0.0.1:2525", "relay `HOST:PORT`")
	from := fs.String("from", "sender@example.test", "sender `address` (MAIL FROM and From)")
	var to toList
	fs.Var(&to, "to", "recipient `address` (repeatable)")
	subject := fs.String("subject", "Hello from the mta relay", "subject")
	body := fs.String("body", "This message went through the example relay.", "body text")
	startTLS := fs.Bool("starttls", false, "use STARTTLS (the certificate is not verified)")
	user := fs.String("user", "", "AUTH PLAIN user name")
	password := fs.String("password", "", "AUTH PLAIN password")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if len(to) == 0 {
		fmt.Fprintln(fs.Output(), "relay send: at least one -to is required")
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", *server)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var c *smtp.Client
	if *startTLS {
		host, _, _ := net.SplitHostPort(*server)
		// A development relay has a self-signed certificate.
		c, err = smtp.NewClientStartTLS(conn, &tls.Config{ServerName: host, InsecureSkipVerify: true}) //nolint:gosec
		if err != nil {
			return err
		}
	} else {
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	if err := c.Hello("relay-send.localhost"); err != nil {
		return err
	}
	if *user != "" {
		if err := c.Auth(sasl.NewPlainClient("", *user, *password)); err != nil {
			return err
		}
	}
	if err := c.Mail(*from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("From: <%s>\r\nTo: %s\r\nSubject: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		*from, "<"+strings.Join(to, ">, <")+">", *subject, strings.ReplaceAll(*body, "\n", "\r\n"))
	if _, err := io.WriteString(w, msg); err != nil {
		return err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "250 %s\n", resp.StatusText)
	return c.Quit()
}
