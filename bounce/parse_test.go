package bounce

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseLimits(t *testing.T) {
	deep := "Content-Type: multipart/mixed; boundary=b0\n\n"
	for i := 0; i < 40; i++ {
		deep += fmt.Sprintf("--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i, i+1)
	}
	many := "Content-Type: multipart/mixed; boundary=x\n\n" + strings.Repeat("--x\nContent-Type: text/plain\n\nhi\n", 1000) + "--x--\n"
	hugeHeader := "Subject: " + strings.Repeat("a", 300<<10) + "\n\nbody\n"
	manyFields := strings.Repeat("X-A: b\n", 3000) + "\nbody\n"
	for _, tc := range []struct {
		name  string
		input string
		p     Parser
		want  error
	}{
		{"deep nesting", deep, Parser{}, ErrTooComplex},
		{"many parts", many, Parser{}, ErrTooComplex},
		{"huge header", hugeHeader, Parser{}, ErrTooLarge},
		{"many fields", manyFields, Parser{}, ErrTooLarge},
		{"input size", "Subject: x\n\n" + strings.Repeat("y", 5000), Parser{MaxBytes: 1000}, ErrTooLarge},
		{"no header", "just some words\n", Parser{}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.Parse(strings.NewReader(tc.input))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseAutoReply(t *testing.T) {
	for name, msg := range map[string]string{
		"rfc3834":    "From: alice@example.org\nTo: bob@example.com\nSubject: Re: hello\nAuto-Submitted: auto-replied\n\nI am away.\n",
		"x-autorep":  "From: alice@example.org\nSubject: Re: hello\nX-Autoreply: yes\n\nI am away until Monday.\n",
		"precedence": "From: alice@example.org\nSubject: Re: hello\nPrecedence: auto_reply\n\nOn leave.\n",
		"subject":    "From: alice@example.org\nSubject: Out of Office: hello\n\nI will be back on Monday.\n",
		"exchange":   "From: alice@example.org\nSubject: Automatic reply: hello\nX-Auto-Response-Suppress: All\n\nThanks for your mail.\n",
	} {
		t.Run(name, func(t *testing.T) {
			rep, err := Parse(strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			if rep.Kind != KindAutoReply || len(rep.Recipients) != 0 {
				t.Fatalf("kind %s, %d recipients", rep.Kind, len(rep.Recipients))
			}
		})
	}
	// A Postfix bounce also says Auto-Submitted: auto-replied; it is a bounce.
	bounce := "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\nSubject: Undelivered Mail Returned to Sender\n" +
		"Auto-Submitted: auto-replied\n\n<bob@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1\n    <bob@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command)\n"
	rep, err := Parse(strings.NewReader(bounce))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kind != KindDSN || len(rep.Recipients) != 1 || rep.Recipients[0].Command != "RCPT" || !rep.Recipients[0].Classification.BadAddress {
		t.Fatalf("postfix text bounce: %+v", rep)
	}
}

func TestParseUnknown(t *testing.T) {
	rep, err := Parse(strings.NewReader("From: alice@example.org\nSubject: lunch?\n\nShall we meet at noon?\n"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kind != KindUnknown {
		t.Fatalf("kind %s", rep.Kind)
	}
}

func TestParseTextFormats(t *testing.T) {
	for _, tc := range []struct {
		name, msg, rcpt, status string
		code                    int
		bad                     bool
	}{
		{"exim", "From: Mail Delivery System <Mailer-Daemon@mx.example.com>\nSubject: Mail delivery failed: returning message to sender\nX-Failed-Recipients: gone@example.net\n\n" +
			"This message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es) failed:\n\n" +
			"  gone@example.net\n    host mx.example.net [192.0.2.7]\n    SMTP error from remote mail server after RCPT TO:<gone@example.net>:\n    550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown\n",
			"gone@example.net", "5.1.1", 550, true},
		{"qmail", "From: MAILER-DAEMON@mx.example.com\nSubject: failure notice\n\nHi. This is the qmail-send program at mx.example.com.\nI'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n" +
			"<who@example.net>:\n192.0.2.3 does not like recipient.\nRemote host said: 550 No such user here\nGiving up on 192.0.2.3.\n\n--- Below this line is a copy of the message.\n\nReturn-Path: <me@example.com>\nTo: who@example.net\n",
			"who@example.net", "5.0.0", 550, true},
		{"sendmail", "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.com>\nSubject: Returned mail: see transcript for details\n\n   ----- The following addresses had permanent fatal errors -----\n<nobody@example.net>\n    (reason: 550 5.1.1 <nobody@example.net>... User unknown)\n\n   ----- Transcript of session follows -----\n... while talking to mx.example.net.:\n>>> RCPT To:<nobody@example.net>\n<<< 550 5.1.1 <nobody@example.net>... User unknown\n",
			"nobody@example.net", "5.1.1", 550, true},
		{"exchange-text", "From: postmaster@example.com\nSubject: Undeliverable: hello\n\nDelivery has failed to these recipients or groups:\n\n" +
			"gone@example.org<mailto:gone@example.org>\nThe email address you entered couldn't be found.\n\nDiagnostic information for administrators:\n\n" +
			"Generating server: ex1.example.com\n\ngone@example.org\nRemote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'\n\nOriginal message headers:\n\nReceived: from a by b\nTo: gone@example.org\n",
			"gone@example.org", "5.1.1", 550, true},
		{"zoho-style", "From: mailer-daemon@mail.example.com\nSubject: Undelivered Mail Returned to Sender\n\nThis message was created automatically by mail delivery software.\nA message that you sent could not be delivered to one or more of its recipients. This is a permanent error.\n\n" +
			"nobody@example.jp, ERROR_CODE :550, ERROR_CODE :Requested action not taken: mailbox unavailable\n",
			"nobody@example.jp", "5.0.0", 550, true},
		{"labelled", "From: postmaster@mail.example.com\nSubject: Undeliverable Mail\n\nUnknown user: nobody@example.com\n\nOriginal message follows.\n\nTo: nobody@example.com\n",
			"nobody@example.com", "5.0.0", 0, true},
		{"opensmtpd", "From: MAILER-DAEMON@mx.example.com\nSubject: Delivery status notification: error\n\nHi!\n\nThis is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n" +
			"An error has occurred while attempting to deliver a message for\nthe following list of recipients:\n\nkijitora@example.jp: 550 5.1.1 Mailbox not found\n\nBelow is a copy of the original message:\n",
			"kijitora@example.jp", "5.1.1", 550, true},
		{"gmx", "From: mailer-daemon@gmx.net\nSubject: Mail delivery failed: returning message to sender\n\nThis message was created automatically by mail delivery software.\n\n" +
			"A message that you sent could not be delivered to one or more of\nits recipients. This is a permanent error. The following address(es)\nfailed:\n\n\"shironeko@example.jp\":\nSMTP error from remote server after RCPT command:\nhost: mx.example.jp\n5.1.1 <shironeko@example.jp>... User Unknown\n",
			"shironeko@example.jp", "5.1.1", 0, true},
		{"crlf-quoted", "From: me@example.com\r\nSubject: Fwd: Undelivered Mail\r\n\r\n> From: MAILER-DAEMON@example.com\r\n> Subject: Undelivered Mail Returned to Sender\r\n>\r\n> <x@example.net>: host mx.example.net[192.0.2.1] said: 552 5.2.2 Mailbox full (in reply to RCPT TO command)\r\n",
			"x@example.net", "5.2.2", 552, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Parse(strings.NewReader(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if rep.Kind != KindDSN || len(rep.Recipients) != 1 {
				t.Fatalf("kind %s, recipients %+v", rep.Kind, rep.Recipients)
			}
			r := rep.Recipients[0]
			if r.Recipient != tc.rcpt || formatStatus(r.Status) != tc.status || r.ReplyCode != tc.code || r.Classification.BadAddress != tc.bad {
				t.Errorf("got %+v", r)
			}
		})
	}
}

func TestMaskForClassify(t *testing.T) {
	got := maskForClassify("550 <spam@example.org>: see https://www.spamhaus.org/query/ip/1.2.3.4 and http://x.example/#filtered")
	want := "550 <<addr>>: see https://www.spamhaus.org and http://x.example"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
