package bounce_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mta/bounce"
)

func ExampleClassify() {
	c := bounce.DefaultClassifier()
	for _, reply := range []*smtp.SMTPError{
		{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "The email account that you tried to reach does not exist."},
		{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Client host [192.0.2.1] blocked using zen.spamhaus.org"},
		{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full"},
		{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many messages, try again later"},
	} {
		cl := c.Classify(reply)
		fmt.Printf("%d %s permanent=%v bad_address=%v\n", reply.Code, cl.Category, cl.Permanent, cl.BadAddress)
	}
	// Output:
	// 550 bad_mailbox permanent=true bad_address=true
	// 550 reputation permanent=true bad_address=false
	// 552 mailbox_full permanent=false bad_address=false
	// 421 rate_limited permanent=false bad_address=false
}

func ExampleNewDSN() {
	var buf bytes.Buffer
	err := bounce.NewDSN(&buf, &bounce.DSN{
		ReportingMTA: "mx.example.com",
		To:           "sender@example.com",
		Date:         time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		MessageID:    "dsn-1@mx.example.com",
		Recipients: []bounce.DSNRecipient{{
			FinalRecipient: "bob@example.net",
			Diagnostic:     &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"},
		}},
		Original: strings.NewReader("Subject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nbody\r\n"),
	})
	if err != nil {
		panic(err)
	}
	rep, err := bounce.Parse(&buf)
	if err != nil {
		panic(err)
	}
	r := rep.Recipients[0]
	fmt.Println(rep.Kind, r.Recipient, r.Action, r.Status, r.ReplyCode, rep.OriginalMessageID)
	// Output: dsn bob@example.net failed [5 1 1] 550 m1@example.com
}

func ExampleVERP() {
	v := &bounce.VERP{
		Keys:   [][]byte{[]byte("a secret key of 32 bytes or so..")},
		Domain: "bounce.example.com",
		Now:    func() time.Time { return time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC) },
	}
	addr, err := v.Encode("q1234", "bob@example.net", 0)
	if err != nil {
		panic(err)
	}
	rp, err := v.Decode(addr)
	if err != nil {
		panic(err)
	}
	fmt.Println(rp.MessageID, rp.Recipient)
	// Output: q1234 bob@example.net
}

func ExampleSuppressionPolicy_Decide() {
	ctx := context.Background()
	list := bounce.NewMemorySuppressions(nil)
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	reply := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	if e, ok := bounce.DefaultSuppressionPolicy().Decide("Bob@Example.NET", bounce.Classify(reply), reply.Message, now); ok {
		if err := list.Add(ctx, e); err != nil {
			panic(err)
		}
	}
	e, found, _ := list.Lookup(ctx, "bob@example.net")
	fmt.Println(found, e.Address, e.Category, e.Expires.IsZero())
	// Output: true Bob@example.net bad_mailbox true
}
