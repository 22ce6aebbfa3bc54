package limittest_test

import (
	"fmt"
	"time"

	"github.com/mtakit/mta/ratelimit/limittest"
)

func ExampleClock() {
	clk := limittest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	clk.Advance(1500 * time.Millisecond)
	fmt.Println(clk.Now().UTC().Format(time.RFC3339Nano))
	// Output: 2026-01-01T00:00:01.5Z
}
