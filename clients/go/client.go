// Package ensemble is a client of the Ensemble LLM gateway's native API, with retries, a circuit
// breaker and per-call timeouts.
//
//	client := ensemble.New(ensemble.Options{}) // ENSEMBLE_URL, ENSEMBLE_API_KEY
//	resp, err := client.Generate(ctx, ensemble.Request{Model: "mock-1", Messages: []ensemble.Message{ensemble.User("Hi")}})
package ensemble

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultURL is used when neither Options.BaseURL nor ENSEMBLE_URL is set.
const DefaultURL = "http://localhost:5180"

// Version of this client (sent in User-Agent).
const Version = "0.1.0"

// Timeouts per attempt. Zero fields take the defaults.
type Timeouts struct {
	// Generate bounds a whole attempt of Generate, GetStatus, Retrieve and Models (default 60 s).
	Generate time.Duration
	// Stream is the longest silence allowed on a stream, before its first byte and between
	// chunks (default 120 s).
	Stream time.Duration
	// Health bounds a health check (default 2 s).
	Health time.Duration
}

// Options configure a Client. The zero value reads ENSEMBLE_URL and ENSEMBLE_API_KEY.
type Options struct {
	BaseURL  string // default $ENSEMBLE_URL, else DefaultURL
	APIKey   string // default $ENSEMBLE_API_KEY
	Timeouts Timeouts
	Retry    *RetryPolicy    // default DefaultRetryPolicy()
	Breaker  *CircuitBreaker // default NewCircuitBreaker(Clock)
	// Clock is the breaker's time source (default time.Now).
	Clock func() time.Time
	// Sleep waits between retries (default: a timer that honours ctx).
	Sleep      func(ctx context.Context, d time.Duration) error
	HTTPClient *http.Client
	// Logger receives the start-up warning for a URL without a key (default slog.Default()).
	Logger *slog.Logger
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
}

// Client is safe for concurrent use.
type Client struct {
	baseURL    string
	apiKey     string
	urlWasSet  bool
	timeouts   Timeouts
	retry      *RetryPolicy
	breaker    *CircuitBreaker
	sleep      func(ctx context.Context, d time.Duration) error
	http       *http.Client
	missingKey string
}

// New builds a client. When a URL is set (option or ENSEMBLE_URL) but the key is empty it logs a
// warning now, and every call except IsHealthy/Health fails with ErrMissingAPIKey.
func New(opts Options) *Client {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	envURL := strings.TrimSpace(getenv("ENSEMBLE_URL"))
	base := opts.BaseURL
	if base == "" {
		base = envURL
	}
	urlWasSet := base != ""
	if base == "" {
		base = DefaultURL
	}
	key := opts.APIKey
	if key == "" {
		key = getenv("ENSEMBLE_API_KEY")
	}
	c := &Client{
		baseURL: strings.TrimRight(base, "/"), apiKey: strings.TrimSpace(key), urlWasSet: urlWasSet,
		timeouts: opts.Timeouts, retry: opts.Retry, breaker: opts.Breaker, sleep: opts.Sleep, http: opts.HTTPClient,
	}
	if c.timeouts.Generate <= 0 {
		c.timeouts.Generate = 60 * time.Second
	}
	if c.timeouts.Stream <= 0 {
		c.timeouts.Stream = 120 * time.Second
	}
	if c.timeouts.Health <= 0 {
		c.timeouts.Health = 2 * time.Second
	}
	if c.retry == nil {
		c.retry = DefaultRetryPolicy()
	}
	if c.breaker == nil {
		c.breaker = NewCircuitBreaker(opts.Clock)
	}
	if c.sleep == nil {
		c.sleep = sleepCtx
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.urlWasSet && c.apiKey == "" {
		c.missingKey = fmt.Sprintf("Ensemble URL is set (%s) but no API key was given: set ENSEMBLE_API_KEY "+
			"(or Options.APIKey) to a client key from `ensemble keys create`", c.baseURL)
		logger := opts.Logger
		if logger == nil {
			logger = slog.Default()
		}
		// A start-up warning, so a misconfigured deployment shows up in logs before the first call.
		logger.Warn(c.missingKey)
	}
	return c
}

// BaseURL is the gateway address in use.
func (c *Client) BaseURL() string { return c.baseURL }

// Breaker is the client's circuit breaker.
func (c *Client) Breaker() *CircuitBreaker { return c.breaker }

// Generate calls POST /api/v1/generate.
func (c *Client) Generate(ctx context.Context, req Request) (*InferenceResponse, error) {
	var out InferenceResponse
	if err := c.call(ctx, http.MethodPost, "/api/v1/generate", req, req.RequestID, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetStatus calls GET /api/v1/status/{id}.
func (c *Client) GetStatus(ctx context.Context, requestID string) (*RequestStatus, error) {
	var out RequestStatus
	if err := c.call(ctx, http.MethodGet, "/api/v1/status/"+url.PathEscape(requestID), nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Retrieve calls GET /api/v1/retrieve/{id}: the stored answer.
func (c *Client) Retrieve(ctx context.Context, requestID string) (*InferenceResponse, error) {
	var out InferenceResponse
	if err := c.call(ctx, http.MethodGet, "/api/v1/retrieve/"+url.PathEscape(requestID), nil, "", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Models calls GET /api/v1/models.
func (c *Client) Models(ctx context.Context) ([]Model, error) {
	var out struct {
		Models []Model `json:"models"`
	}
	if err := c.call(ctx, http.MethodGet, "/api/v1/models", nil, "", &out); err != nil {
		return nil, err
	}
	return out.Models, nil
}

// Health calls GET /health once: no retries, no breaker, no key needed.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeouts.Health)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.baseURL+"/health", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		kind := KindConnection
		if errors.Is(err, context.DeadlineExceeded) {
			kind = KindTimeout
		}
		return nil, &Error{Kind: kind, Message: "health check of " + c.baseURL + " failed", Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &Error{Kind: KindConnection, Message: "health check of " + c.baseURL + " failed", Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorFromResponse(resp.StatusCode, resp.Header, data, false)
	}
	var h Health
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, &Error{Kind: KindConnection, Message: "health check answer is not JSON", Err: err}
	}
	return &h, nil
}

// IsHealthy reports whether GET /health answers 200 within the health timeout.
func (c *Client) IsHealthy(ctx context.Context) bool {
	_, err := c.Health(ctx)
	return err == nil
}

// -- resilience ---------------------------------------------------------------------------------

// exchange is one attempt that got an HTTP answer with a success status.
type exchange struct {
	resp     *http.Response
	body     []byte // the whole body, for non-streaming calls
	cancel   context.CancelFunc
	timer    *time.Timer
	timedOut *atomic.Bool
	idle     time.Duration
}

func (x *exchange) close() {
	x.timer.Stop()
	x.resp.Body.Close()
	x.cancel()
}

func (c *Client) call(ctx context.Context, method, path string, body any, requestID string, out any) error {
	x, err := c.send(ctx, method, path, body, requestID, c.timeouts.Generate, false)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(x.body, out); err != nil {
		return &Error{Kind: KindConnection, Message: "the gateway's answer is not the expected JSON", Err: err,
			RequestID: x.resp.Header.Get("x-request-id")}
	}
	return nil
}

// send runs attempts until one succeeds, the error is not retryable, retries are used up, or the
// breaker opens (then the real error is returned at once).
func (c *Client) send(ctx context.Context, method, path string, body any, requestID string, timeout time.Duration, stream bool) (*exchange, error) {
	if c.missingKey != "" {
		return nil, &Error{Kind: KindConfig, Message: c.missingKey}
	}
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("ensemble: encoding the request: %w", err)
		}
	}
	for n := 0; ; n++ {
		x, err := c.attempt(ctx, method, path, payload, requestID, timeout, stream)
		if err == nil {
			return x, nil
		}
		var e *Error
		if !errors.As(err, &e) || e.Kind == KindCircuitOpen || c.breaker.State() == StateOpen {
			return nil, err
		}
		delay, ok := c.retry.Delay(n, e)
		if !ok {
			return nil, err
		}
		if serr := c.sleep(ctx, delay); serr != nil {
			return nil, serr
		}
	}
}

func (c *Client) attempt(ctx context.Context, method, path string, payload []byte, requestID string, timeout time.Duration, stream bool) (*exchange, error) {
	probe, err := c.breaker.acquire()
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	timedOut := new(atomic.Bool)
	timer := time.AfterFunc(timeout, func() { timedOut.Store(true); cancel() })
	fail := func(err error) (*exchange, error) {
		timer.Stop()
		cancel()
		if ctx.Err() != nil { // the caller's cancellation: neither outcome, never retried
			c.breaker.release(probe)
			return nil, ctx.Err()
		}
		c.breaker.failure()
		if timedOut.Load() {
			// Not retried: the gateway may still be working (and billing) on the request.
			return nil, &Error{Kind: KindTimeout, Message: fmt.Sprintf("request to %s timed out after %s", c.baseURL, timeout), Err: err}
		}
		return nil, &Error{Kind: KindConnection, Message: "connection to " + c.baseURL + " failed", Retryable: true, Err: err}
	}
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, method, c.baseURL+path, reader)
	if err != nil {
		timer.Stop()
		cancel()
		c.breaker.release(probe)
		return nil, err
	}
	req.Header.Set("user-agent", "ensemble-go/"+Version)
	if c.apiKey != "" {
		req.Header.Set("authorization", "Bearer "+c.apiKey)
	}
	if payload != nil {
		req.Header.Set("content-type", "application/json")
	}
	if requestID != "" {
		req.Header.Set("x-request-id", requestID)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode >= 400 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20)) // the error body is a courtesy
		resp.Body.Close()
		timer.Stop()
		cancel()
		if resp.StatusCode >= 500 {
			c.breaker.failure()
		} else {
			c.breaker.success() // 4xx: the gateway is up and answering
		}
		return nil, errorFromResponse(resp.StatusCode, resp.Header, data, c.retry.RetryStatuses[resp.StatusCode])
	}
	x := &exchange{resp: resp, cancel: cancel, timer: timer, timedOut: timedOut, idle: timeout}
	if !stream {
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fail(err)
		}
		timer.Stop()
		cancel()
		x.body = data
	}
	c.breaker.success()
	return x, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
