package event_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/event"
)

// A receiver verifies the signature over the raw body before parsing it.
func ExampleVerify() {
	secret := []byte("shared secret")
	body := []byte(`[{"id":"01JDQ3V4G0AAAAAAAAAAAAAAAA","type":"delivered","time":"2026-11-23T16:00:00.000Z"}]`)
	sent := time.Unix(1800000000, 0)
	header := event.Sign(secret, body, sent) // what the Webhook sink sends in Mta-Signature

	fmt.Println(event.Verify(secret, header, body, sent.Add(time.Minute), 5*time.Minute))
	fmt.Println(event.Verify(secret, header, body, sent.Add(time.Hour), 5*time.Minute))
	fmt.Println(event.Verify([]byte("wrong"), header, body, sent, 5*time.Minute))
	// Output:
	// <nil>
	// event: signature timestamp outside the replay window: signed at 1800000000, now 1800003600
	// event: signature mismatch
}

// A Fanout feeding a log sink; in a program it would also feed a Webhook
// and prom.Metrics, and be given to the queue as its event sink.
func ExampleFanout() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == "time" || a.Key == "id" {
				return slog.Attr{} // keep the example's output deterministic
			}
			return a
		},
	}))
	f := event.NewFanout(event.FanoutConfig{Sinks: []event.Sink{event.LogSink{Logger: logger}}})
	f.Emit(event.Event{
		Type:      event.Bounced,
		MessageID: "m1",
		Recipient: "bob@example.test",
		Attempt:   2,
		Reply:     &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
		Permanent: true,
		Category:  "bad_mailbox",
	})
	_ = f.Close(context.Background())
	// Output:
	// level=INFO msg=event type=bounced message_id=m1 recipient=bob@example.test attempt=2 reply.code=550 reply.enhanced=5.1.1 reply.text="no such user" permanent=true category=bad_mailbox
}
