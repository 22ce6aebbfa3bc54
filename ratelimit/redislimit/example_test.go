package redislimit_test

import (
	"context"
	"fmt"

	"github.com/mtakit/mta/ratelimit"
	"github.com/mtakit/mta/ratelimit/redislimit"
	"github.com/redis/go-redis/v9"
)

// Every node runs this with the same policy and Redis: they share one
// budget per key, and the decisions use the Redis server's clock.
func Example() {
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()

	store, err := redislimit.New(redislimit.Config{Client: client, Prefix: "mta:rl:"})
	if err != nil {
		fmt.Println(err)
		return
	}
	warm, err := redislimit.NewWarmupStore(redislimit.Config{Client: client, Prefix: "mta:rl:"})
	if err != nil {
		fmt.Println(err)
		return
	}
	policy, err := ratelimit.ParsePolicy(`
limit site=gmail.com per=source rate=3000/min burst=50 connections=20
warmup sources=192.0.2.10
`)
	if err != nil {
		fmt.Println(err)
		return
	}
	l, err := ratelimit.New(ratelimit.Config{Policy: policy, Store: store, WarmupStore: warm})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()

	key := ratelimit.Key{Domain: "gmail.com", Source: "192.0.2.10"}
	if err := l.Wait(ctx, key, 1); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("send now")
}
