package ratelimit

import (
	"fmt"
	"time"
)

// Limit is one policy: Requests per Per on average, with bursts up to Burst.
// As a token bucket: the bucket holds Burst tokens and refills at
// Requests/Per tokens per second; each admitted request takes one token.
type Limit struct {
	Requests int           `mapstructure:"requests"`
	Per      time.Duration `mapstructure:"per"`
	Burst    int           `mapstructure:"burst"`
}

func (l Limit) String() string {
	return fmt.Sprintf("%d req/%s (burst %d)", l.Requests, l.Per, l.Burst)
}

// Result is the decision for one request.
type Result struct {
	Allowed bool
	Limit   Limit
	// Remaining is how many requests could be admitted right now.
	Remaining int
	// RetryAfter is how long until the next request can be admitted; zero
	// when Allowed. It is rounded up, never down.
	RetryAfter time.Duration
	// ResetAfter is how long until the bucket is full again.
	ResetAfter time.Duration

	// pol carries the header values prepared for Limit at start-up, so
	// that WriteHeaders formats only the numbers that change.
	pol *policy
}
