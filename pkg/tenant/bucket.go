package tenant

import (
	"sync"
	"time"
)

// Bucket is a token bucket of rows per second. It runs on debt: a take is
// granted whenever the balance is positive and may drive it negative, so a
// transaction larger than the burst still passes (transactions are never
// split to fit a rate), and the average stays at the rate. Time is passed
// in, so tests need no clock. Safe for concurrent use.
type Bucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second; <= 0 unlimited
	burst  float64
	tokens float64
	last   time.Time
}

// NewBucket returns a full bucket refilling at rate rows/s with a burst of
// one second's worth (at least one row).
func NewBucket(rate float64, now time.Time) *Bucket {
	b := &Bucket{last: now}
	b.setLocked(rate)
	b.tokens = b.burst
	return b
}

func (b *Bucket) setLocked(rate float64) {
	b.rate = rate
	b.burst = max(rate, 1)
	b.tokens = min(b.tokens, b.burst)
}

// SetRate changes the rate, keeping the balance (capped at the new burst).
func (b *Bucket) SetRate(rate float64, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if rate != b.rate {
		b.setLocked(rate)
	}
}

// Rate is the current rate (<= 0: unlimited).
func (b *Bucket) Rate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate
}

func (b *Bucket) refill(now time.Time) {
	if now.After(b.last) {
		if b.rate > 0 {
			b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		}
		b.last = now
	}
}

// Take takes n rows if the balance is positive and reports whether it did.
func (b *Bucket) Take(n int, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return true
	}
	b.refill(now)
	if b.tokens <= 0 {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// Wait is how long until a Take can succeed (0: now).
func (b *Bucket) Wait(now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return 0
	}
	b.refill(now)
	if b.tokens > 0 {
		return 0
	}
	// Until one row's worth is back: the smallest useful wait.
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}
