package ratelimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/mtakit/mta/ratelimit"
)

func Example() {
	ctx := context.Background()
	policy, err := ratelimit.ParsePolicy(`
# At most 10 connections and 600 messages/min per site and source IP...
limit per=site,source rate=600/min burst=20 connections=10
# ...but 20 connections and 3,000/min to gmail.com's site from each IP.
limit site=gmail.com per=source rate=3000/min burst=2 connections=20 messages-per-connection=100
`)
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // a controlled clock
	l, err := ratelimit.New(ratelimit.Config{Policy: policy, Now: func() time.Time { return now }})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()

	key := ratelimit.Key{Domain: "googlemail.com", Site: "gmail.com", Source: "192.0.2.1"}
	lease, err := l.Acquire(ctx, key) // a connection slot
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lease.Release(ctx)
	for range 3 {
		r, err := l.Reserve(ctx, key, 1) // one message; sleep r.Delay, then send
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("send after", r.Delay, "on this connection:", lease.Message())
	}

	// The site answers with a throttling reply: back off.
	st, _ := l.Feedback(ctx, key, ratelimit.Outcome{
		Code: 421, Enhanced: [3]int{4, 7, 28},
		Text: "Our system has detected an unusual rate of unsolicited mail",
	})
	fmt.Println("rate factor", st.Factor, "connections", st.MaxConnections, "suspended for", st.SuspendedUntil.Sub(now))
	r, _ := l.Reserve(ctx, key, 1)
	fmt.Println(r.OK, r.Reason, "retry in", r.Delay)
	// Output:
	// send after 0s on this connection: true
	// send after 0s on this connection: true
	// send after 20ms on this connection: true
	// rate factor 0.5 connections 2 suspended for 2m0s
	// false suspended retry in 2m0s
}

func ExampleParsePolicy() {
	p, err := ratelimit.ParsePolicy(`limit site=gmail.com per=source rate=3000/min connections=20`)
	if err != nil {
		fmt.Println(err)
		return
	}
	r := p.Rules[0]
	fmt.Println(r.Match.Site, r.Per, r.Rate, r.Rate.Interval(), r.MaxConnections)
	fmt.Print(p)
	// Output:
	// gmail.com [source] 3000/min 20ms 20
	// limit site=gmail.com per=source rate=3000/min connections=20
}
