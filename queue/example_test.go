package queue_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/queue"
	"github.com/mtakit/mta/queue/memstore"
)

// Enqueue one message and deliver it through a transport function.
func Example() {
	delivered := make(chan event.Event, 10)
	q, err := queue.New(queue.Config{
		Store:    memstore.New(),
		Hostname: "mta.example.test",
		Transport: deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
			res := make([]deliver.Result, len(env.Recipients))
			for i, r := range env.Recipients {
				res[i] = deliver.Result{Recipient: r.Address, Reply: &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "queued"}}
			}
			return res
		}),
		Events: event.SinkFunc(func(e event.Event) {
			if e.Type == event.Delivered {
				delivered <- e // buffered: observers must not block
			}
		}),
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		panic(err)
	}
	defer q.Shutdown(ctx)

	_, err = q.Enqueue(ctx, &queue.NewMessage{
		From:       "app@example.test",
		Recipients: []deliver.Recipient{{Address: "user@example.test"}},
		Priority:   queue.PriorityTransactional,
	}, strings.NewReader("Subject: hello\r\n\r\nHi!\r\n"))
	if err != nil {
		panic(err)
	}
	select {
	case e := <-delivered:
		fmt.Println(e.Type, e.Recipient, e.Reply.Code)
	case <-time.After(time.Minute):
		fmt.Println("timeout")
	}
	// Output: delivered user@example.test 250
}
