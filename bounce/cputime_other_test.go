//go:build !unix

package bounce

import "time"

func cpuTime() time.Duration { return 0 }
