package deliver_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/deliver/smtptest"
)

// A static route sends everything to one host: here a loopback test
// server standing in for a smarthost.
func ExampleStatic() {
	srv, err := smtptest.Start(smtptest.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	tr, err := deliver.NewStatic(deliver.StaticConfig{
		ClientConfig: deliver.ClientConfig{Hostname: "mta.example.test"},
		Routes:       []deliver.StaticRoute{{Domain: "*", Host: srv.Addr()}},
	})
	if err != nil {
		panic(err)
	}
	defer tr.Close()

	msg := "From: <a@example.test>\r\nTo: <b@example.test>\r\nSubject: hi\r\n\r\nHello.\r\n"
	env := &deliver.Envelope{
		From:       "a@example.test",
		Recipients: []deliver.Recipient{{Address: "b@example.test"}},
	}
	for _, r := range tr.Deliver(context.Background(), env, deliver.NewBody(strings.NewReader(msg), int64(len(msg)))) {
		fmt.Println(r.Recipient, r.Reply.Code, r.Delivered())
	}
	fmt.Println(len(srv.Messages()), "message received")
	// Output:
	// b@example.test 250 true
	// 1 message received
}

// The sandbox keeps messages instead of sending them.
func ExampleSandbox() {
	sb, err := deliver.NewSandbox(deliver.SandboxConfig{})
	if err != nil {
		panic(err)
	}
	msg := "Subject: test\r\n\r\nbody\r\n"
	env := &deliver.Envelope{From: "a@example.test", Recipients: []deliver.Recipient{{Address: "b@example.test"}}}
	res := sb.Deliver(context.Background(), env, deliver.NewBody(strings.NewReader(msg), int64(len(msg))))
	fmt.Println(res[0].Reply.Code, len(sb.Messages()), sb.Messages()[0].Envelope.Recipients[0].Address)
	// Output: 250 1 b@example.test
}

func ExampleCleanText() {
	fmt.Printf("%q\n", deliver.CleanText("550 no\r\nsuch\x00user", 12))
	// Output: "550 no  such"
}
