// The client against a real `ensemble serve` started by clients/with_gateway.py (mock provider,
// plus OpenAI-format "lanes" on the project's fake upstream for failures). Time is injected.
package ensemble_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ensemble "github.com/ensemble-gateway/ensemble/clients/go"
)

const (
	hello      = "Hello there, gateway"
	mockAnswer = "This is a mock answer from Ensemble. You said: Hello there, gateway"
)

var gatewayURL, apiKey, fakeURL, plainLanesVar, guardedLanesVar string

var plainLanes, guardedLanes int

func TestMain(m *testing.M) {
	vars := map[string]*string{
		"ENSEMBLE_URL": &gatewayURL, "ENSEMBLE_API_KEY": &apiKey, "ENSEMBLE_FAKE_URL": &fakeURL,
		"ENSEMBLE_FAKE_LANES": &plainLanesVar, "ENSEMBLE_FAKE_GUARDED_LANES": &guardedLanesVar,
	}
	for name, dst := range vars {
		if *dst = os.Getenv(name); *dst == "" {
			fmt.Fprintf(os.Stderr, "%s is not set: run the suite through clients/with_gateway.py (make test-clients-go)\n", name)
			os.Exit(2)
		}
	}
	var err1, err2 error
	plainLanes, err1 = strconv.Atoi(plainLanesVar)
	guardedLanes, err2 = strconv.Atoi(guardedLanesVar)
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// fakeClock is the injected clock and sleep: sleeping advances the clock and is recorded.
// nudge makes each sleep take that much real time: the gateway's Retry-After is the cool-down
// left in whole seconds rounded up, counting one millisecond more, so a retry in the same
// millisecond as the answer that started a 1 s cool-down would be told 2 s. Ten real
// milliseconds make the expected Retry-After exact.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
	real   bool
	nudge  time.Duration
}

func newClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (f *fakeClock) Now() time.Time { return f.now }

func (f *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	f.sleeps = append(f.sleeps, d)
	f.now = f.now.Add(d)
	if f.real {
		time.Sleep(d)
	} else if f.nudge > 0 {
		time.Sleep(f.nudge)
	}
	return nil
}

// newRecordedClock sleeps really (and records it): for the few tests where the gateway's
// cool-down, which runs on real time, must pass before the client's retry. Keep such waits short.
func newRecordedClock() *fakeClock {
	clk := newClock()
	clk.real = true
	return clk
}

func newClient(clk *fakeClock, mod func(*ensemble.Options)) *ensemble.Client {
	opts := ensemble.Options{
		BaseURL: gatewayURL, APIKey: apiKey, Clock: clk.Now, Sleep: clk.Sleep,
		Getenv: func(string) string { return "" },
	}
	if mod != nil {
		mod(&opts)
	}
	return ensemble.New(opts)
}

func req(model string) ensemble.Request {
	return ensemble.Request{Model: model, Messages: []ensemble.Message{ensemble.User(hello)}}
}

var weather = ensemble.Tool{Name: "get_weather", Parameters: map[string]any{
	"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}},
}}

func control(t *testing.T, path string, body any) {
	t.Helper()
	data, _ := json.Marshal(body)
	resp, err := http.Post(fakeURL+"/_fake/"+path, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("fake %s: %d %s", path, resp.StatusCode, b)
	}
}

// A lane is one OpenAI-format provider on the fake upstream with its own endpoint and model. The
// gateway keeps per-endpoint state (a failure count, cool-downs), so every test that makes its
// upstream fail takes a lane no other test has used. Plain lanes never cool down after failures
// (the client's retries and breaker are under test); guarded lanes keep the gateway's default
// cool-down after 3 failures in a row (its own protection is under test).
type lane struct{ provider, endpoint, model string }

var (
	lanesMu                sync.Mutex
	plainUsed, guardedUsed int
)

func takeLane(t *testing.T, guarded bool) lane {
	t.Helper()
	lanesMu.Lock()
	defer lanesMu.Unlock()
	used, limit, prefix := &plainUsed, plainLanes, ""
	if guarded {
		used, limit, prefix = &guardedUsed, guardedLanes, "g"
	}
	if *used >= limit {
		t.Fatal("all client lanes are used: raise the count in tests/support/client_lanes.py")
	}
	tag := fmt.Sprintf("%s%d", prefix, *used)
	*used++
	return lane{provider: "fake-" + tag, endpoint: "client-ep-" + tag, model: "fake-gpt-" + tag}
}

// upstream takes a fresh plain lane and queues behaviours for its next requests.
func upstream(t *testing.T, behaviors ...map[string]any) lane {
	t.Helper()
	up := takeLane(t, false)
	up.enqueue(t, behaviors...)
	return up
}

func (l lane) enqueue(t *testing.T, behaviors ...map[string]any) {
	t.Helper()
	if len(behaviors) > 0 {
		control(t, "enqueue", map[string]any{"endpoint": l.endpoint, "behaviors": behaviors})
	}
}

func (l lane) calls(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(fakeURL + "/_fake/requests?endpoint=" + l.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Requests []json.RawMessage `json:"requests"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return len(out.Requests)
}

func closedPortURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func asError(t *testing.T, err error) *ensemble.Error {
	t.Helper()
	var e *ensemble.Error
	if !errors.As(err, &e) {
		t.Fatalf("want *ensemble.Error, got %T %v", err, err)
	}
	return e
}

func wantSleeps(t *testing.T, clk *fakeClock, want ...time.Duration) {
	t.Helper()
	if len(want) == 0 && len(clk.sleeps) == 0 {
		return
	}
	if !reflect.DeepEqual(clk.sleeps, want) {
		t.Fatalf("sleeps %v, want %v", clk.sleeps, want)
	}
}

// -- every method on the mock provider -----------------------------------------------------------

func TestGenerate(t *testing.T) {
	r := req("mock-1")
	r.MaxTokens, r.RequestID = 100, "go-gen-1"
	resp, err := newClient(newClock(), nil).Generate(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Content != mockAnswer || resp.ID != "go-gen-1" || resp.FinishReason != "stop" || resp.Provider != "mock" {
		t.Fatalf("unexpected response %+v", resp)
	}
	if len(resp.Blocks) != 1 || resp.Blocks[0].Type != "text" || resp.Blocks[0].Text != mockAnswer {
		t.Fatalf("blocks %+v", resp.Blocks)
	}
	if want := int64(resp.InputTokens*1 + resp.OutputTokens*2); resp.CostMicroDollars != want {
		t.Fatalf("cost %d µ$, want %d", resp.CostMicroDollars, want)
	}
	if cost, _ := resp.Cost.Float64(); int64(cost*1e6+0.5) != resp.CostMicroDollars {
		t.Fatalf("cost %s vs %d µ$", resp.Cost, resp.CostMicroDollars)
	}
}

func TestGenerateWithATool(t *testing.T) {
	r := req("mock-1")
	r.Tools = []ensemble.Tool{weather}
	resp, err := newClient(newClock(), nil).Generate(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	calls := resp.ToolCalls()
	if resp.FinishReason != "tool_use" || len(calls) != 1 || calls[0].Name != "get_weather" ||
		!reflect.DeepEqual(calls[0].Arguments, map[string]any{"city": "test"}) {
		t.Fatalf("tool call %+v", resp)
	}
}

func TestStreamBlocksThenResponse(t *testing.T) {
	s, err := newClient(newClock(), nil).Stream(context.Background(), req("mock-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var text strings.Builder
	n := 0
	for s.Next() {
		b := s.Block()
		if b.Type != "text" || b.Index == nil || *b.Index != 0 {
			t.Fatalf("block %+v", b)
		}
		text.WriteString(b.Text)
		n++
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 2 || text.String() != mockAnswer {
		t.Fatalf("%d blocks, text %q", n, text.String())
	}
	if s.Response() == nil || s.Response().Content != mockAnswer || s.Response().ID != s.RequestID() {
		t.Fatalf("response %+v", s.Response())
	}
}

func TestStreamOfAToolCall(t *testing.T) {
	r := req("mock-1")
	r.Tools = []ensemble.Tool{weather}
	s, err := newClient(newClock(), nil).Stream(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	var raw, name string
	for s.Next() {
		b := s.Block()
		if b.Type != "tool_call" || b.ToolCall == nil {
			t.Fatalf("block %+v", b)
		}
		if name == "" {
			name = b.ToolCall.Name
		}
		raw += b.ToolCall.RawArguments
	}
	if s.Err() != nil || name != "get_weather" || raw != `{"city": "test"}` && raw != `{"city":"test"}` {
		t.Fatalf("err %v name %q raw %q", s.Err(), name, raw)
	}
	if s.Response().FinishReason != "tool_use" || s.Response().ToolCalls()[0].RawArguments != raw {
		t.Fatalf("response %+v", s.Response())
	}
}

func TestGenerateStreamIsText(t *testing.T) {
	ts, err := newClient(newClock(), nil).GenerateStream(context.Background(), req("mock-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	body, err := io.ReadAll(ts)
	if err != nil || string(body) != mockAnswer || ts.RequestID() == "" {
		t.Fatalf("text %q err %v", body, err)
	}
}

func TestGetStatusAndRetrieve(t *testing.T) {
	c := newClient(newClock(), nil)
	ctx := context.Background()
	made, err := c.Generate(ctx, req("mock-1"))
	if err != nil {
		t.Fatal(err)
	}
	status, err := c.GetStatus(ctx, made.ID)
	if err != nil || status.Status != "completed" || status.RequestID != made.ID || *status.Model != "mock-1" {
		t.Fatalf("status %+v err %v", status, err)
	}
	stored, err := c.Retrieve(ctx, made.ID)
	if err != nil || !reflect.DeepEqual(stored, made) {
		t.Fatalf("stored %+v err %v", stored, err)
	}
}

func TestModels(t *testing.T) {
	models, err := newClient(newClock(), nil).Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, m := range models {
		ids[m.ID] = true
	}
	want := map[string]bool{"mock-1": true}
	for i := 0; i < plainLanes; i++ {
		want[fmt.Sprintf("fake-gpt-%d", i)] = true
	}
	for i := 0; i < guardedLanes; i++ {
		want[fmt.Sprintf("fake-gpt-g%d", i)] = true
	}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("models %v", ids)
	}
}

func TestIsHealthy(t *testing.T) {
	ctx := context.Background()
	if !newClient(newClock(), nil).IsHealthy(ctx) {
		t.Fatal("gateway not healthy")
	}
	down := ensemble.New(ensemble.Options{BaseURL: closedPortURL(t), APIKey: "ens_x"})
	if down.IsHealthy(ctx) {
		t.Fatal("closed port reported healthy")
	}
}

func TestHealthTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0") // accepts (backlog), never answers
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := ensemble.New(ensemble.Options{BaseURL: "http://" + l.Addr().String(), APIKey: "ens_x", Timeouts: ensemble.Timeouts{Health: 200 * time.Millisecond}})
	start := time.Now()
	_, err = c.Health(context.Background())
	if !errors.Is(err, ensemble.ErrTimeout) || time.Since(start) > 2*time.Second {
		t.Fatalf("err %v after %s", err, time.Since(start))
	}
}

// -- typed errors -------------------------------------------------------------------------------

func TestNotFound(t *testing.T) {
	clk := newClock()
	_, err := newClient(clk, nil).Retrieve(context.Background(), "req_does_not_exist")
	e := asError(t, err)
	if !errors.Is(err, ensemble.ErrNotFound) || e.Status != 404 || e.Type != "not_found" || e.Code != "request_not_found" || e.RequestID == "" || e.Retryable {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk)
}

func TestBadParameter(t *testing.T) {
	r := req("mock-1")
	r.Temperature = ensemble.Float(5)
	_, err := newClient(newClock(), nil).Generate(context.Background(), r)
	e := asError(t, err)
	if !errors.Is(err, ensemble.ErrBadRequest) || e.Status != 400 || !strings.Contains(e.Message, "temperature") {
		t.Fatalf("%+v", e)
	}
}

func TestWrongKey(t *testing.T) {
	clk := newClock()
	c := newClient(clk, func(o *ensemble.Options) { o.APIKey = "ens_" + strings.Repeat("x", 40) })
	_, err := c.Models(context.Background())
	e := asError(t, err)
	if !errors.Is(err, ensemble.ErrAuthentication) || e.Status != 401 || e.Retryable || c.Breaker().State() != ensemble.StateClosed {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk)
}

func TestURLWithoutKey(t *testing.T) {
	var logs bytes.Buffer
	c := ensemble.New(ensemble.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Getenv: func(k string) string { return map[string]string{"ENSEMBLE_URL": gatewayURL}[k] },
	})
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "ENSEMBLE_API_KEY") {
		t.Fatalf("no start-up warning: %q", logs.String())
	}
	_, err := c.Generate(context.Background(), req("mock-1"))
	if !errors.Is(err, ensemble.ErrMissingAPIKey) || !strings.Contains(err.Error(), "ENSEMBLE_API_KEY") {
		t.Fatalf("err %v", err)
	}
	if !c.IsHealthy(context.Background()) {
		t.Fatal("health needs no key")
	}
}

func TestSettingsFromEnvironment(t *testing.T) {
	env := map[string]string{"ENSEMBLE_URL": gatewayURL, "ENSEMBLE_API_KEY": apiKey}
	c := ensemble.New(ensemble.Options{Getenv: func(k string) string { return env[k] }})
	if resp, err := c.Generate(context.Background(), req("mock-1")); err != nil || resp.Content != mockAnswer {
		t.Fatalf("%v %v", resp, err)
	}
	if got := ensemble.New(ensemble.Options{Getenv: func(string) string { return "" }}).BaseURL(); got != "http://localhost:5180" {
		t.Fatal(got)
	}
}

// -- retries, Retry-After, timeouts (fake upstream) --------------------------------------------

func TestRetriesWithBackoff(t *testing.T) {
	up := upstream(t, map[string]any{"status": 500, "count": 2})
	clk := newClock()
	resp, err := newClient(clk, nil).Generate(context.Background(), req(up.model))
	if err != nil || resp.Provider != up.provider {
		t.Fatalf("%v %v", resp, err)
	}
	wantSleeps(t, clk, time.Second, 2*time.Second)
	if n := up.calls(t); n != 3 {
		t.Fatalf("%d upstream calls", n)
	}
}

func TestRetriesGiveUp(t *testing.T) {
	up := upstream(t, map[string]any{"status": 500, "count": 3})
	clk := newClock()
	_, err := newClient(clk, nil).Generate(context.Background(), req(up.model))
	e := asError(t, err)
	if !errors.Is(err, ensemble.ErrProvider) || e.Status != 502 || e.Type != "provider_error" || !e.Retryable || e.RequestID == "" {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk, time.Second, 2*time.Second)
	if n := up.calls(t); n != 3 {
		t.Fatalf("%d upstream calls", n)
	}
}

func TestBackoffDoublesToFourSeconds(t *testing.T) {
	up := upstream(t, map[string]any{"status": 500, "count": 3})
	clk := newClock()
	policy := ensemble.DefaultRetryPolicy()
	policy.MaxRetries = 3
	if _, err := newClient(clk, func(o *ensemble.Options) { o.Retry = policy }).Generate(context.Background(), req(up.model)); err != nil {
		t.Fatal(err)
	}
	wantSleeps(t, clk, time.Second, 2*time.Second, 4*time.Second)
}

func TestRetryAfterHonoured(t *testing.T) {
	// An upstream 529 with retry-after 1 cools the endpoint for 1 s (on real time) and the gateway
	// answers 429 with Retry-After: 1; the client really waits that long, then reaches the upstream.
	up := upstream(t, map[string]any{"status": 529, "retry_after": 1})
	clk := newRecordedClock()
	resp, err := newClient(clk, nil).Generate(context.Background(), req(up.model))
	if err != nil || resp.Provider != up.provider {
		t.Fatalf("%v %v", resp, err)
	}
	wantSleeps(t, clk, time.Second)
	if n := up.calls(t); n != 2 {
		t.Fatalf("%d upstream calls", n)
	}
}

func TestRetriesInsideRateLimitCooldownStayAtTheGateway(t *testing.T) {
	// With the injected clock the 1 s waits are instant: both retries arrive while the endpoint
	// still cools down after the 529, and the gateway answers them itself.
	up := upstream(t, map[string]any{"status": 529, "retry_after": 1})
	clk := newClock()
	clk.nudge = 10 * time.Millisecond
	_, err := newClient(clk, nil).Generate(context.Background(), req(up.model))
	e := asError(t, err)
	if !errors.Is(err, ensemble.ErrRateLimited) || e.Status != 429 || e.Type != "rate_limited" ||
		e.Code != "all_endpoints_exhausted" || !e.Retryable || e.RetryAfter != time.Second {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk, time.Second, time.Second)
	if n := up.calls(t); n != 1 {
		t.Fatalf("%d upstream calls", n)
	}
}

func TestGatewayAnswers503AfterRepeatedUpstreamFailures(t *testing.T) {
	// The gateway's own protection end to end (a guarded lane: cool-down after 3 failures, 2 s).
	up := takeLane(t, true)
	up.enqueue(t, map[string]any{"status": 500, "count": 3})
	clk := newClock()
	clk.nudge = 10 * time.Millisecond
	breaker := &ensemble.CircuitBreaker{FailureThreshold: 10, Cooldown: 30 * time.Second, Clock: clk.Now} // not the breaker's answer
	c := newClient(clk, func(o *ensemble.Options) { o.Breaker = breaker })
	_, err := c.Generate(context.Background(), req(up.model))
	if e := asError(t, err); !errors.Is(err, ensemble.ErrProvider) || e.Status != 502 {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk, time.Second, 2*time.Second)
	if n := up.calls(t); n != 3 {
		t.Fatalf("%d upstream calls", n)
	}
	time.Sleep(10 * time.Millisecond) // not in the millisecond the cool-down started (see fakeClock)
	_, err = c.Generate(context.Background(), req(up.model))
	e := asError(t, err)
	if !errors.Is(err, ensemble.ErrOverloaded) || e.Status != 503 || e.Type != "overloaded" ||
		e.Code != "all_endpoints_failing" || !e.Retryable || e.RetryAfter != 2*time.Second || e.RequestID == "" {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk, time.Second, 2*time.Second, 2*time.Second, 2*time.Second) // waits as told
	// the retries inside the cool-down never reach the upstream
	if n := up.calls(t); n != 3 {
		t.Fatalf("%d upstream calls", n)
	}
}

func TestRetryAfterBeyondLimit(t *testing.T) {
	up := upstream(t, map[string]any{"status": 529, "retry_after": 30})
	clk := newClock()
	policy := ensemble.DefaultRetryPolicy()
	policy.MaxRetryAfter = 10 * time.Second
	_, err := newClient(clk, func(o *ensemble.Options) { o.Retry = policy }).Generate(context.Background(), req(up.model))
	e := asError(t, err)
	if !errors.Is(err, ensemble.ErrRateLimited) || e.Status != 429 || !e.Retryable || e.RetryAfter != 30*time.Second {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk)
}

func TestProvider4xxNotRetried(t *testing.T) {
	up := upstream(t, map[string]any{"status": 400, "message": "bad thing"})
	clk := newClock()
	c := newClient(clk, nil)
	_, err := c.Generate(context.Background(), req(up.model))
	if e := asError(t, err); e.Status != 400 || e.Retryable || c.Breaker().ConsecutiveFailures() != 0 {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk)
	if n := up.calls(t); n != 1 {
		t.Fatalf("%d upstream calls", n)
	}
}

func TestStreamOpeningIsRetried(t *testing.T) {
	up := upstream(t, map[string]any{"status": 503})
	clk := newClock()
	s, err := newClient(clk, nil).Stream(context.Background(), req(up.model))
	if err != nil {
		t.Fatal(err)
	}
	text, err := s.Text()
	if err != nil || text == "" || s.Response().Content != text {
		t.Fatalf("text %q err %v", text, err)
	}
	wantSleeps(t, clk, time.Second)
}

func TestErrorAfterStreamStarted(t *testing.T) {
	up := upstream(t, map[string]any{"error_event_after_chunks": 2})
	clk := newClock()
	s, err := newClient(clk, nil).Stream(context.Background(), req(up.model))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for s.Next() {
		n++
	}
	e := asError(t, s.Err())
	if !errors.Is(s.Err(), ensemble.ErrStream) || e.Type == "" || e.Status != 0 || e.RequestID != s.RequestID() || n == 0 {
		t.Fatalf("%+v after %d blocks", e, n)
	}
	wantSleeps(t, clk)
	if c := up.calls(t); c != 1 {
		t.Fatalf("%d upstream calls", c)
	}
}

func TestConnectionErrorsRetriedThenTyped(t *testing.T) {
	clk := newClock()
	c := newClient(clk, func(o *ensemble.Options) { o.BaseURL = closedPortURL(t) })
	_, err := c.Generate(context.Background(), req("mock-1"))
	e := asError(t, err)
	if !errors.Is(err, ensemble.ErrConnection) || errors.Is(err, ensemble.ErrTimeout) || !e.Retryable || e.Status != 0 {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk, time.Second, 2*time.Second)
	if c.Breaker().ConsecutiveFailures() != 3 {
		t.Fatal(c.Breaker().ConsecutiveFailures())
	}
}

func TestGenerateTimeoutNotRetried(t *testing.T) {
	up := upstream(t, map[string]any{"stall_before_first_byte_ms": 3000})
	clk := newClock()
	c := newClient(clk, func(o *ensemble.Options) { o.Timeouts.Generate = 500 * time.Millisecond })
	_, err := c.Generate(context.Background(), req(up.model))
	if e := asError(t, err); !errors.Is(err, ensemble.ErrTimeout) || e.Retryable {
		t.Fatalf("%+v", e)
	}
	wantSleeps(t, clk)
	if n := up.calls(t); n != 1 {
		t.Fatalf("%d upstream calls", n)
	}
}

func TestQuietStreamTimesOut(t *testing.T) {
	up := upstream(t, map[string]any{"stall_after_chunks": 2, "stall_ms": 2000})
	clk := newClock()
	c := newClient(clk, func(o *ensemble.Options) { o.Timeouts.Stream = 500 * time.Millisecond })
	s, err := c.Stream(context.Background(), req(up.model))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for s.Next() {
		n++
	}
	e := asError(t, s.Err())
	if !errors.Is(s.Err(), ensemble.ErrStream) || !strings.Contains(e.Message, "timed out") || n == 0 {
		t.Fatalf("%+v after %d blocks", e, n)
	}
	wantSleeps(t, clk)
}

func TestCallerCancellation(t *testing.T) {
	up := upstream(t, map[string]any{"stall_before_first_byte_ms": 3000})
	clk := newClock()
	c := newClient(clk, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Generate(ctx, req(up.model))
	if !errors.Is(err, context.DeadlineExceeded) || c.Breaker().ConsecutiveFailures() != 0 {
		t.Fatalf("err %v", err)
	}
	wantSleeps(t, clk)
}

// -- the circuit breaker ------------------------------------------------------------------------

func TestBreakerOpensProbesAndCloses(t *testing.T) {
	up := upstream(t, map[string]any{"status": 500, "count": 5})
	clk := newClock()
	c := newClient(clk, func(o *ensemble.Options) { o.Retry = ensemble.NoRetries() })
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := c.Generate(ctx, req(up.model)); !errors.Is(err, ensemble.ErrProvider) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if c.Breaker().State() != ensemble.StateOpen {
		t.Fatal(c.Breaker().State())
	}
	_, err := c.Generate(ctx, req(up.model))
	if e := asError(t, err); !errors.Is(err, ensemble.ErrCircuitOpen) || e.RetryAfter != 30*time.Second {
		t.Fatalf("%+v", e)
	}
	if _, err := c.Stream(ctx, req(up.model)); !errors.Is(err, ensemble.ErrCircuitOpen) {
		t.Fatal(err)
	}
	if n := up.calls(t); n != 5 {
		t.Fatalf("%d upstream calls while open", n)
	}
	clk.now = clk.now.Add(29900 * time.Millisecond)
	if _, err := c.Models(ctx); !errors.Is(err, ensemble.ErrCircuitOpen) {
		t.Fatal(err)
	}

	clk.now = clk.now.Add(100 * time.Millisecond) // cool-down over: a probe, which fails
	if c.Breaker().State() != ensemble.StateHalfOpen {
		t.Fatal(c.Breaker().State())
	}
	up.enqueue(t, map[string]any{"status": 500})
	if _, err := c.Generate(ctx, req(up.model)); !errors.Is(err, ensemble.ErrProvider) {
		t.Fatal(err)
	}
	if c.Breaker().State() != ensemble.StateOpen || up.calls(t) != 6 {
		t.Fatal("probe failure must re-open the breaker")
	}

	clk.now = clk.now.Add(30 * time.Second) // the next probe succeeds
	if resp, err := c.Generate(ctx, req(up.model)); err != nil || resp.Provider != up.provider {
		t.Fatal(err)
	}
	if c.Breaker().State() != ensemble.StateClosed || c.Breaker().ConsecutiveFailures() != 0 {
		t.Fatal(c.Breaker().State())
	}
}

func TestBreakerConfigurableAndStopsRetries(t *testing.T) {
	up := upstream(t, map[string]any{"status": 500, "count": 3})
	clk := newClock()
	breaker := &ensemble.CircuitBreaker{FailureThreshold: 2, Cooldown: 5 * time.Second, Clock: clk.Now}
	c := newClient(clk, func(o *ensemble.Options) { o.Breaker = breaker })
	_, err := c.Generate(context.Background(), req(up.model))
	if !errors.Is(err, ensemble.ErrProvider) {
		t.Fatal(err)
	}
	wantSleeps(t, clk, time.Second)
	if n := up.calls(t); n != 2 {
		t.Fatalf("%d upstream calls", n)
	}
	_, err = c.Generate(context.Background(), req(up.model))
	if e := asError(t, err); !errors.Is(err, ensemble.ErrCircuitOpen) || e.RetryAfter != 5*time.Second {
		t.Fatalf("%+v", e)
	}
}
