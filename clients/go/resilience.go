package ensemble

import (
	"fmt"
	"sync"
	"time"
)

// RetryPolicy retries retryable errors with exponential back-off: BaseDelay * 2^n (1 s, 2 s, 4 s…)
// capped at MaxDelay. A Retry-After from the gateway replaces the back-off for that wait; one longer
// than MaxRetryAfter is not waited for (the error goes to the caller).
type RetryPolicy struct {
	MaxRetries    int
	BaseDelay     time.Duration
	MaxDelay      time.Duration
	MaxRetryAfter time.Duration
	// RetryStatuses are the HTTP statuses retried; connection errors are always retried.
	RetryStatuses map[int]bool
}

// DefaultRetryPolicy: 2 retries, 1 s then 2 s (4 s cap), statuses 429/502/503/504.
func DefaultRetryPolicy() *RetryPolicy {
	return &RetryPolicy{
		MaxRetries: 2, BaseDelay: time.Second, MaxDelay: 4 * time.Second, MaxRetryAfter: 60 * time.Second,
		RetryStatuses: map[int]bool{429: true, 502: true, 503: true, 504: true},
	}
}

// NoRetries is a policy that never retries.
func NoRetries() *RetryPolicy {
	p := DefaultRetryPolicy()
	p.MaxRetries = 0
	return p
}

// Backoff is the wait before retry number n (0-based) when the gateway asked for none.
func (p *RetryPolicy) Backoff(n int) time.Duration {
	d := p.BaseDelay << n
	if d > p.MaxDelay || d <= 0 {
		d = p.MaxDelay
	}
	return d
}

// Delay is the wait before retry number n for err, and false to give up.
func (p *RetryPolicy) Delay(n int, err *Error) (time.Duration, bool) {
	if !err.Retryable || n >= p.MaxRetries {
		return 0, false
	}
	if err.RetryAfter > 0 {
		return err.RetryAfter, err.RetryAfter <= p.MaxRetryAfter
	}
	return p.Backoff(n), true
}

// BreakerState is closed, open or half-open.
type BreakerState string

const (
	StateClosed   BreakerState = "closed"
	StateOpen     BreakerState = "open"
	StateHalfOpen BreakerState = "half_open"
)

// CircuitBreaker counts every HTTP attempt: a connection error, a timeout or a 5xx answer is a
// failure; any other answer (2xx, and 4xx including 429: the gateway is up and talking) is a
// success. After FailureThreshold consecutive failures it opens: calls fail at once with
// ErrCircuitOpen and nothing is sent. After Cooldown one call goes through as a probe (half-open;
// other calls keep failing fast): its success closes the breaker, its failure re-opens it.
type CircuitBreaker struct {
	FailureThreshold int
	Cooldown         time.Duration
	Clock            func() time.Time

	mu       sync.Mutex
	failures int
	openedAt time.Time
	open     bool
	probing  bool
}

// NewCircuitBreaker: 5 failures, 30 s cool-down; clock nil means time.Now.
func NewCircuitBreaker(clock func() time.Time) *CircuitBreaker {
	return &CircuitBreaker{FailureThreshold: 5, Cooldown: 30 * time.Second, Clock: clock}
}

func (b *CircuitBreaker) now() time.Time {
	if b.Clock != nil {
		return b.Clock()
	}
	return time.Now()
}

// State reports the breaker's state now.
func (b *CircuitBreaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return StateClosed
	}
	if b.probing || b.now().Sub(b.openedAt) >= b.Cooldown {
		return StateHalfOpen
	}
	return StateOpen
}

// ConsecutiveFailures is the current failure count.
func (b *CircuitBreaker) ConsecutiveFailures() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures
}

// acquire is called before an attempt; true means the attempt is the half-open probe.
func (b *CircuitBreaker) acquire() (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return false, nil
	}
	left := b.openedAt.Add(b.Cooldown).Sub(b.now())
	if left > 0 || b.probing {
		msg := "a probe call is in flight"
		if left > 0 {
			msg = fmt.Sprintf("next probe in %.1fs", left.Seconds())
		} else {
			left = 0
		}
		return false, &Error{
			Kind:    KindCircuitOpen,
			Message: fmt.Sprintf("circuit breaker open after %d consecutive failures; %s", b.failures, msg),
			// Retryable later, not by this call's retry loop.
			Retryable: true, RetryAfter: left,
		}
	}
	b.probing = true
	return true, nil
}

func (b *CircuitBreaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.open, b.probing = 0, false, false
}

func (b *CircuitBreaker) failure() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	threshold := b.FailureThreshold
	if threshold < 1 {
		threshold = 1
	}
	if b.probing || b.failures >= threshold {
		b.open, b.openedAt = true, b.now()
	}
	b.probing = false
}

// release frees the probe slot of an attempt that ended with neither outcome (cancelled).
func (b *CircuitBreaker) release(probe bool) {
	if probe {
		b.mu.Lock()
		b.probing = false
		b.mu.Unlock()
	}
}
