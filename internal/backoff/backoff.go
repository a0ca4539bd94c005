// Package backoff computes capped exponential waits with full jitter and
// waits them in a way that honours a context.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is capped exponential backoff with full jitter: the n-th wait is
// drawn uniformly from [0, min(Max, Base*2^n)). Full jitter spreads a
// storm of pods that failed together across the whole window.
type Backoff struct {
	// Base is the ceiling of the first wait.
	Base time.Duration
	// Max caps every wait.
	Max time.Duration
	// Jitter disables randomness when false: every wait is its ceiling.
	Jitter bool

	attempt int
}

// Ceiling is the upper bound of the next wait, before jitter.
func (b *Backoff) Ceiling() time.Duration {
	d := b.Base
	for i := 0; i < b.attempt && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Next returns the next wait and advances the attempt count.
func (b *Backoff) Next() time.Duration {
	d := b.Ceiling()
	b.attempt++
	if b.Jitter && d > 0 {
		d = rand.N(d)
	}
	return d
}

// Reset starts again from Base, after a success or a stable run.
func (b *Backoff) Reset() { b.attempt = 0 }

// Sleep waits d or until ctx is done; it reports whether the full wait
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
