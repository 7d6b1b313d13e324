package ensemble

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kind says what sort of failure an *Error is.
type Kind int

const (
	// KindStatus: the gateway answered with an HTTP error (Status, Type, Code are set).
	KindStatus Kind = iota
	// KindConnection: no HTTP answer (refused, reset, closed). Retried.
	KindConnection
	// KindTimeout: the per-call timeout ran out. Not retried: the gateway may still be working on it.
	KindTimeout
	// KindStream: an `event: error` (or a broken body) after the stream started.
	KindStream
	// KindCircuitOpen: the breaker is open; nothing was sent (RetryAfter = cool-down left).
	KindCircuitOpen
	// KindConfig: ENSEMBLE_URL is set but ENSEMBLE_API_KEY is empty.
	KindConfig
)

// Error is every error the client returns (use errors.As), matched by errors.Is against the
// sentinels below.
type Error struct {
	Kind      Kind
	Message   string
	Status    int    // HTTP status, 0 when there was no HTTP answer
	Type      string // the gateway's error type: invalid_request, rate_limited, provider_error, …
	Code      string
	RequestID string
	// Retryable says whether the retry policy retries this error (it already has, when you see it).
	Retryable  bool
	RetryAfter time.Duration // the wait the gateway asked for (Retry-After), 0 when none
	Err        error         // the underlying error, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("ensemble: ")
	b.WriteString(e.Message)
	if e.Status != 0 {
		fmt.Fprintf(&b, " (status %d", e.Status)
		if e.Code != "" {
			fmt.Fprintf(&b, ", code %s", e.Code)
		}
		b.WriteString(")")
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " [request %s]", e.RequestID)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Sentinels for errors.Is.
var (
	ErrBadRequest     = errors.New("ensemble: bad request")       // 400 (and 4xx not listed here)
	ErrAuthentication = errors.New("ensemble: authentication")    // 401
	ErrPermission     = errors.New("ensemble: permission denied") // 403
	ErrNotFound       = errors.New("ensemble: not found")         // 404
	ErrTooLarge       = errors.New("ensemble: request too large") // 413
	ErrRateLimited    = errors.New("ensemble: rate limited")      // 429
	ErrInternal       = errors.New("ensemble: internal error")    // 500
	ErrProvider       = errors.New("ensemble: provider error")    // 502
	ErrOverloaded     = errors.New("ensemble: overloaded")        // 503
	ErrGatewayTimeout = errors.New("ensemble: gateway timeout")   // 504
	ErrConnection     = errors.New("ensemble: connection failed")
	ErrTimeout        = errors.New("ensemble: timeout")
	ErrStream         = errors.New("ensemble: stream failed")
	ErrCircuitOpen    = errors.New("ensemble: circuit breaker open")
	ErrMissingAPIKey  = errors.New("ensemble: missing API key")
)

var byStatus = map[int]error{
	400: ErrBadRequest, 401: ErrAuthentication, 403: ErrPermission, 404: ErrNotFound,
	413: ErrTooLarge, 429: ErrRateLimited, 500: ErrInternal, 502: ErrProvider,
	503: ErrOverloaded, 504: ErrGatewayTimeout,
}

// Is matches the sentinel of the error's kind (and, for HTTP errors, of its status).
func (e *Error) Is(target error) bool {
	switch e.Kind {
	case KindStatus:
		s, ok := byStatus[e.Status]
		if !ok {
			if e.Status >= 400 && e.Status < 500 {
				s = ErrBadRequest
			} else {
				s = ErrInternal
			}
		}
		return target == s
	case KindConnection:
		return target == ErrConnection
	case KindTimeout:
		return target == ErrTimeout || target == ErrConnection
	case KindStream:
		return target == ErrStream
	case KindCircuitOpen:
		return target == ErrCircuitOpen
	case KindConfig:
		return target == ErrMissingAPIKey
	}
	return false
}

// parseRetryAfter reads delta-seconds or an HTTP date.
func parseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(value, 64); err == nil && secs >= 0 {
		return time.Duration(secs * float64(time.Second))
	}
	if when, err := http.ParseTime(value); err == nil && when.After(now) {
		return when.Sub(now)
	}
	return 0
}

type errorBody struct {
	Error struct {
		Type      string `json:"type"`
		Message   string `json:"message"`
		Code      string `json:"code"`
		RequestID string `json:"request_id"`
		Retryable bool   `json:"retryable"`
	} `json:"error"`
}

func errorFromResponse(status int, header http.Header, body []byte, retryable bool) *Error {
	var parsed errorBody
	_ = json.Unmarshal(body, &parsed) // not JSON: the message falls back to the body text
	message := parsed.Error.Message
	if message == "" {
		text := strings.TrimSpace(string(body))
		if len(text) > 200 {
			text = text[:200]
		}
		message = fmt.Sprintf("HTTP %d", status)
		if text != "" {
			message += ": " + text
		}
	}
	requestID := parsed.Error.RequestID
	if requestID == "" {
		requestID = header.Get("x-request-id")
	}
	return &Error{
		Kind: KindStatus, Message: message, Status: status, Type: parsed.Error.Type, Code: parsed.Error.Code,
		RequestID: requestID, Retryable: retryable, RetryAfter: parseRetryAfter(header.Get("retry-after"), time.Now()),
	}
}

func streamError(data []byte, requestID string) *Error {
	var parsed errorBody
	_ = json.Unmarshal(data, &parsed)
	e := &Error{
		Kind: KindStream, Message: parsed.Error.Message, Type: parsed.Error.Type, Code: parsed.Error.Code,
		RequestID: parsed.Error.RequestID, Retryable: parsed.Error.Retryable,
	}
	if e.Message == "" {
		e.Message = "the stream failed after it started"
	}
	if e.RequestID == "" {
		e.RequestID = requestID
	}
	return e
}
