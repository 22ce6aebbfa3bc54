package ratelimit

// BackoffStates returns how many destinations have back-off state (for
// tests).
func BackoffStates(l *Limiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.states)
}
