// Command customstore shows a queue on a user's own store: JSONStore keeps
// messages as JSON files in a directory, in about 400 lines, and passes the
// queue/queuetest conformance suite (see jsonstore_test.go).
//
// The program enqueues one message on a JSONStore in a temporary directory
// and delivers it through a transport that prints what it was given.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mta/deliver"
	"github.com/mtakit/mta/event"
	"github.com/mtakit/mta/queue"
)

func main() {
	dir, err := os.MkdirTemp("", "customstore")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(dir); err != nil {
		log.Fatal(err)
	}
}

func run(dir string) error {
	store, err := OpenJSONStore(dir)
	if err != nil {
		return err
	}
	defer store.Close()

	done := make(chan event.Event, 1)
	q, err := queue.New(queue.Config{
		Store:    store,
		Hostname: "mta.example.test",
		Transport: deliver.TransportFunc(func(ctx context.Context, env *deliver.Envelope, body deliver.Body) []deliver.Result {
			fmt.Printf("delivering %d bytes from <%s> to %d recipient(s)\n", body.Size(), env.From, len(env.Recipients))
			res := make([]deliver.Result, len(env.Recipients))
			for i, r := range env.Recipients {
				res[i] = deliver.Result{Recipient: r.Address, Reply: &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "ok"}}
			}
			return res
		}),
		Events: event.SinkFunc(func(e event.Event) {
			if e.Type == event.Delivered {
				select {
				case done <- e:
				default:
				}
			}
		}),
	})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		return err
	}
	defer q.Shutdown(ctx)

	id, err := q.Enqueue(ctx, &queue.NewMessage{
		From:       "app@example.test",
		Recipients: []deliver.Recipient{{Address: "user@example.test"}},
	}, strings.NewReader("Subject: hi\r\n\r\nstored as JSON\r\n"))
	if err != nil {
		return err
	}
	fmt.Println("queued", len(id) == 20)
	select {
	case e := <-done:
		fmt.Println("delivered to", e.Recipient)
	case <-time.After(time.Minute):
		return fmt.Errorf("not delivered")
	}
	return nil
}
