// The client against a real `ensemble serve` started by clients/with_gateway.py (mock provider,
// plus OpenAI-format "lanes" on the project's fake upstream for failures). Time is injected.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { describe, test } from "node:test";

import {
  APIConnectionError,
  APITimeoutError,
  AuthenticationError,
  BadRequestError,
  CircuitBreaker,
  CircuitOpenError,
  ConfigurationError,
  EnsembleClient,
  type EventBlock,
  NotFoundError,
  OverloadedError,
  ProviderError,
  RateLimitError,
  StreamError,
  type ClientOptions,
} from "../src/index.js";

function need(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the suite through clients/with_gateway.py (make test-clients-ts)`);
  return value;
}

const URL = need("ENSEMBLE_URL");
const KEY = need("ENSEMBLE_API_KEY");
const FAKE = need("ENSEMBLE_FAKE_URL");
const PLAIN_LANES = Number(need("ENSEMBLE_FAKE_LANES"));
const GUARDED_LANES = Number(need("ENSEMBLE_FAKE_GUARDED_LANES"));
const HELLO = "Hello there, gateway";
const MOCK_ANSWER = "This is a mock answer from Ensemble. You said: Hello there, gateway";
const WEATHER = { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } };

// The gateway keeps per-endpoint state (a failure count, cool-downs), so every test that makes its
// upstream fail takes a lane (provider + endpoint + model) no other test has used. Plain lanes never
// cool down after failures (the client's retries and breaker are under test); guarded lanes keep the
// gateway's default cool-down after 3 failures in a row (its own protection is under test).
let plainUsed = 0;
let guardedUsed = 0;

class Lane {
  constructor(
    readonly provider: string,
    readonly endpoint: string,
    readonly model: string,
  ) {}

  enqueue(...behaviors: object[]): Promise<unknown> {
    return control("enqueue", { endpoint: this.endpoint, behaviors });
  }

  async calls(): Promise<number> {
    const r = await fetch(`${FAKE}/_fake/requests?endpoint=${this.endpoint}`);
    return ((await r.json()) as { requests: unknown[] }).requests.length;
  }
}

function lane(guarded = false): Lane {
  const i = guarded ? guardedUsed++ : plainUsed++;
  if (i >= (guarded ? GUARDED_LANES : PLAIN_LANES)) throw new Error("all client lanes are used: raise the count in tests/support/client_lanes.py");
  const tag = guarded ? `g${i}` : `${i}`;
  return new Lane(`fake-${tag}`, `client-ep-${tag}`, `fake-gpt-${tag}`);
}

function allLaneModels(): string[] {
  const models = [];
  for (let i = 0; i < PLAIN_LANES; i++) models.push(`fake-gpt-${i}`);
  for (let i = 0; i < GUARDED_LANES; i++) models.push(`fake-gpt-g${i}`);
  return models;
}

// `nudgeMs` makes each sleep take that much real time: the gateway's Retry-After is the cool-down
// left in whole seconds rounded up, counting one millisecond more, so a retry in the same
// millisecond as the answer that started a 1 s cool-down would be told 2 s. Ten real milliseconds
// make the expected Retry-After exact.
class FakeClock {
  now = 1_000_000;
  sleeps: number[] = [];
  constructor(readonly nudgeMs = 0) {}
  clock = (): number => this.now;
  sleep = async (ms: number): Promise<void> => {
    this.sleeps.push(ms);
    this.now += ms;
    if (this.nudgeMs) await realSleep(this.nudgeMs);
  };
}

const realSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// Sleeps really (and records it): for the few tests where the gateway's cool-down, which runs on
// real time, must pass before the client's retry. Keep these waits to a second or two.
class RecordedClock extends FakeClock {
  override sleep = async (ms: number): Promise<void> => {
    this.sleeps.push(ms);
    this.now += ms;
    await realSleep(ms);
  };
}

function client(clock = new FakeClock(), extra: ClientOptions = {}): EnsembleClient {
  return new EnsembleClient({ baseUrl: URL, apiKey: KEY, clock: clock.clock, sleep: clock.sleep, env: {}, ...extra });
}

async function control(path: string, body: unknown): Promise<unknown> {
  const r = await fetch(`${FAKE}/_fake/${path}`, { method: "POST", body: JSON.stringify(body) });
  assert.equal(r.status, 200, await r.clone().text());
  return r.json();
}


async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return out;
    out.push(value);
  }
}

describe("every method on the mock provider", () => {
  test("generate", async () => {
    const r = await client().generate({ model: "mock-1", messages: HELLO, max_tokens: 100 }, { requestId: "ts-gen-1" });
    assert.equal(r.content, MOCK_ANSWER);
    assert.equal(r.id, "ts-gen-1");
    assert.deepEqual(r.blocks, [{ type: "text", text: MOCK_ANSWER }]);
    assert.equal(r.finish_reason, "stop");
    assert.equal(r.cost_micro_dollars, r.input_tokens * 1 + r.output_tokens * 2);
    assert.equal(Number(r.cost) * 1e6, r.cost_micro_dollars);
  });

  test("generate with a tool", async () => {
    const r = await client().generate({ model: "mock-1", messages: [{ role: "user", content: HELLO }], tools: [WEATHER] });
    assert.equal(r.finish_reason, "tool_use");
    const block = r.blocks[0];
    assert.ok(block?.type === "tool_call");
    assert.deepEqual(block.tool_call.arguments, { city: "test" });
  });

  test("stream yields block deltas then the response", async () => {
    const s = await client().stream({ model: "mock-1", messages: HELLO });
    const blocks: EventBlock[] = [];
    for await (const b of s) blocks.push(b);
    assert.ok(blocks.length > 1 && blocks.every((b) => b.type === "text" && b.index === 0));
    assert.equal(blocks.map((b) => (b.type === "text" ? b.text : "")).join(""), MOCK_ANSWER);
    assert.equal(s.response?.content, MOCK_ANSWER);
    assert.equal(s.response?.id, s.requestId);
  });

  test("stream of a tool call", async () => {
    const s = await client().stream({ model: "mock-1", messages: HELLO, tools: [WEATHER] });
    let raw = "";
    let name: string | undefined;
    for await (const b of s) {
      assert.equal(b.type, "tool_call");
      if (b.type === "tool_call") {
        name ??= b.tool_call.name;
        raw += b.tool_call.raw_arguments ?? "";
      }
    }
    assert.equal(name, "get_weather");
    assert.deepEqual(JSON.parse(raw), { city: "test" });
    assert.equal(s.response?.finish_reason, "tool_use");
  });

  test("generateStream is a ReadableStream of text", async () => {
    const chunks = await collect(await client().generateStream({ model: "mock-1", messages: HELLO }));
    assert.ok(chunks.every((c) => typeof c === "string" && c.length > 0)); // chunking is the network's
    assert.equal(chunks.join(""), MOCK_ANSWER);
  });

  test("getStatus and retrieve", async () => {
    const c = client();
    const made = await c.generate({ model: "mock-1", messages: HELLO });
    const status = await c.getStatus(made.id);
    assert.equal(status.status, "completed");
    assert.equal(status.model, "mock-1");
    assert.deepEqual(await c.retrieve(made.id), made);
  });

  test("models", async () => {
    const ids = (await client().models()).map((m) => m.id).sort();
    assert.deepEqual(ids, [...allLaneModels(), "mock-1"].sort());
  });

  test("isHealthy", async () => {
    assert.equal(await client().isHealthy(), true);
    assert.equal((await client().health()).providers.mock, "healthy");
    const down = new EnsembleClient({ baseUrl: `http://127.0.0.1:${await closedPort()}`, apiKey: "ens_x", env: {} });
    assert.equal(await down.isHealthy(), false);
  });

  test("health times out after the health timeout", async () => {
    const sockets: import("node:net").Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket)); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    try {
      const port = (silent.address() as { port: number }).port;
      const c = new EnsembleClient({ baseUrl: `http://127.0.0.1:${port}`, apiKey: "ens_x", env: {}, timeouts: { healthMs: 200 } });
      const started = performance.now();
      assert.equal(await c.isHealthy(), false);
      await assert.rejects(c.health(), APITimeoutError);
      assert.ok(performance.now() - started < 2000);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

describe("typed errors", () => {
  test("unknown request is NotFoundError", async () => {
    const clock = new FakeClock();
    const e = await client(clock).retrieve("req_does_not_exist").catch((e: unknown) => e);
    assert.ok(e instanceof NotFoundError);
    assert.equal(e.status, 404);
    assert.equal(e.type, "not_found");
    assert.equal(e.code, "request_not_found");
    assert.ok(e.requestId);
    assert.equal(e.retryable, false);
    assert.deepEqual(clock.sleeps, []);
  });

  test("bad parameter is BadRequestError naming the field", async () => {
    const e = await client().generate({ model: "mock-1", messages: HELLO, temperature: 5 }).catch((e: unknown) => e);
    assert.ok(e instanceof BadRequestError);
    assert.equal(e.status, 400);
    assert.match(e.message, /temperature/);
  });

  test("wrong key is AuthenticationError, not retried, breaker closed", async () => {
    const clock = new FakeClock();
    const c = new EnsembleClient({ baseUrl: URL, apiKey: "ens_" + "x".repeat(40), clock: clock.clock, sleep: clock.sleep, env: {} });
    const e = await c.models().catch((e: unknown) => e);
    assert.ok(e instanceof AuthenticationError);
    assert.equal(e.status, 401);
    assert.equal(e.retryable, false);
    assert.equal(c.breaker.state, "closed");
    assert.deepEqual(clock.sleeps, []);
  });

  test("URL without a key warns at start-up and fails clearly", async () => {
    const warnings: string[] = [];
    const c = new EnsembleClient({ env: { ENSEMBLE_URL: URL, ENSEMBLE_API_KEY: "" }, warn: (m) => warnings.push(m) });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /ENSEMBLE_API_KEY/);
    await assert.rejects(c.generate({ model: "mock-1", messages: HELLO }), (e: unknown) => e instanceof ConfigurationError && /ENSEMBLE_API_KEY/.test(e.message));
    assert.equal(await c.isHealthy(), true); // health needs no key
  });

  test("settings come from the environment", async () => {
    const warnings: string[] = [];
    const c = new EnsembleClient({ env: { ENSEMBLE_URL: URL, ENSEMBLE_API_KEY: KEY }, warn: (m) => warnings.push(m) });
    assert.equal((await c.generate({ model: "mock-1", messages: HELLO })).content, MOCK_ANSWER);
    assert.equal(new EnsembleClient({ env: {} }).baseUrl, "http://localhost:5180");
    assert.deepEqual(warnings, []);
  });
});

describe("retries, Retry-After, timeouts and the breaker (fake upstream)", () => {
  test("retryable errors are retried with exponential back-off", async () => {
    const up = lane();
    await up.enqueue({ status: 500, count: 2 });
    const clock = new FakeClock();
    const r = await client(clock).generate({ model: up.model, messages: HELLO });
    assert.equal(r.provider, up.provider);
    assert.deepEqual(clock.sleeps, [1000, 2000]);
    assert.equal(await up.calls(), 3);
  });

  test("two retries, then the typed error", async () => {
    const up = lane();
    await up.enqueue({ status: 500, count: 3 });
    const clock = new FakeClock();
    const e = await client(clock).generate({ model: up.model, messages: HELLO }).catch((e: unknown) => e);
    assert.ok(e instanceof ProviderError);
    assert.equal(e.status, 502);
    assert.equal(e.type, "provider_error");
    assert.equal(e.retryable, true);
    assert.ok(e.requestId);
    assert.deepEqual(clock.sleeps, [1000, 2000]);
    assert.equal(await up.calls(), 3);
  });

  test("back-off doubles up to 4 s", async () => {
    const up = lane();
    await up.enqueue({ status: 500, count: 3 });
    const clock = new FakeClock();
    await client(clock, { retry: { maxRetries: 3 } }).generate({ model: up.model, messages: HELLO });
    assert.deepEqual(clock.sleeps, [1000, 2000, 4000]);
  });

  test("Retry-After is honoured", async () => {
    // An upstream 529 with retry-after 1 cools the endpoint for 1 s (on real time) and the gateway
    // answers 429 with Retry-After: 1; the client really waits that long, then reaches the upstream.
    const up = lane();
    await up.enqueue({ status: 529, retry_after: 1 });
    const clock = new RecordedClock();
    const r = await client(clock).generate({ model: up.model, messages: HELLO });
    assert.equal(r.provider, up.provider);
    assert.deepEqual(clock.sleeps, [1000]);
    assert.equal(await up.calls(), 2);
  });

  test("retries inside the gateway's 429 cool-down never reach the upstream", async () => {
    // With the injected clock the 1 s waits are instant: both retries arrive while the endpoint
    // still cools down after the 529, and the gateway answers them itself.
    const up = lane();
    await up.enqueue({ status: 529, retry_after: 1 });
    const clock = new FakeClock(10);
    const e = await client(clock).generate({ model: up.model, messages: HELLO }).catch((e: unknown) => e);
    assert.ok(e instanceof RateLimitError, String(e));
    assert.equal(e.status, 429);
    assert.equal(e.type, "rate_limited");
    assert.equal(e.code, "all_endpoints_exhausted");
    assert.equal(e.retryable, true);
    assert.equal(e.retryAfterMs, 1000);
    assert.deepEqual(clock.sleeps, [1000, 1000]);
    assert.equal(await up.calls(), 1);
  });

  test("after 3 upstream failures in a row the gateway answers 503 with Retry-After", async () => {
    // The gateway's own protection end to end (a guarded lane: cool-down after 3 failures, 2 s).
    const up = lane(true);
    await up.enqueue({ status: 500, count: 3 });
    const clock = new FakeClock(10);
    const breaker = new CircuitBreaker({ failureThreshold: 10, clock: clock.clock }); // not the breaker's answer
    const c = client(clock, { breaker });
    const failed = await c.generate({ model: up.model, messages: HELLO }).catch((e: unknown) => e);
    assert.ok(failed instanceof ProviderError, String(failed));
    assert.equal(failed.status, 502);
    assert.deepEqual(clock.sleeps, [1000, 2000]);
    assert.equal(await up.calls(), 3);
    await realSleep(10); // not in the millisecond the cool-down started (see FakeClock)
    const e = await c.generate({ model: up.model, messages: HELLO }).catch((e: unknown) => e);
    assert.ok(e instanceof OverloadedError, String(e));
    assert.equal(e.status, 503);
    assert.equal(e.type, "overloaded");
    assert.equal(e.code, "all_endpoints_failing");
    assert.equal(e.retryable, true);
    assert.equal(e.retryAfterMs, 2000);
    assert.ok(e.requestId);
    assert.deepEqual(clock.sleeps, [1000, 2000, 2000, 2000]); // the client waits as told
    assert.equal(await up.calls(), 3); // the retries inside the cool-down never reach the upstream
  });

  test("a Retry-After beyond the limit is not waited for", async () => {
    const up = lane();
    await up.enqueue({ status: 529, retry_after: 30 });
    const clock = new FakeClock();
    const e = await client(clock, { retry: { maxRetryAfterMs: 10_000 } })
      .generate({ model: up.model, messages: HELLO })
      .catch((e: unknown) => e);
    assert.ok(e instanceof RateLimitError);
    assert.equal(e.status, 429);
    assert.equal(e.retryable, true);
    assert.equal(e.retryAfterMs, 30_000);
    assert.deepEqual(clock.sleeps, []);
  });

  test("provider 4xx is not retried", async () => {
    const up = lane();
    await up.enqueue({ status: 400, message: "bad thing" });
    const clock = new FakeClock();
    const c = client(clock);
    await assert.rejects(c.generate({ model: up.model, messages: HELLO }), BadRequestError);
    assert.deepEqual(clock.sleeps, []);
    assert.equal(await up.calls(), 1);
    assert.equal(c.breaker.consecutiveFailures, 0);
  });

  test("opening a stream is retried", async () => {
    const up = lane();
    await up.enqueue({ status: 503 });
    const clock = new FakeClock();
    const s = await client(clock).stream({ model: up.model, messages: HELLO });
    const text = await s.text();
    assert.ok(text.length > 0);
    assert.equal(s.response?.content, text);
    assert.deepEqual(clock.sleeps, [1000]);
    const chunks = await collect(await client(clock).generateStream({ model: up.model, messages: HELLO }));
    assert.ok(chunks.join("").length > 0);
  });

  test("an error after the stream started is a StreamError", async () => {
    const up = lane();
    await up.enqueue({ error_event_after_chunks: 2 });
    const clock = new FakeClock();
    const s = await client(clock).stream({ model: up.model, messages: HELLO });
    const got: EventBlock[] = [];
    const e = await (async () => {
      for await (const b of s) got.push(b);
    })().catch((e: unknown) => e);
    assert.ok(e instanceof StreamError, String(e));
    assert.ok(e.type);
    assert.equal(e.status, undefined);
    assert.equal(e.requestId, s.requestId);
    assert.ok(got.length > 0);
    assert.deepEqual(clock.sleeps, []);
    assert.equal(await up.calls(), 1);
  });

  test("connection errors are retried, then typed", async () => {
    const clock = new FakeClock();
    const c = new EnsembleClient({ baseUrl: `http://127.0.0.1:${await closedPort()}`, apiKey: "ens_x", clock: clock.clock, sleep: clock.sleep, env: {} });
    const e = await c.generate({ model: "mock-1", messages: HELLO }).catch((e: unknown) => e);
    assert.ok(e instanceof APIConnectionError && !(e instanceof APITimeoutError), String(e));
    assert.equal(e.retryable, true);
    assert.equal(e.status, undefined);
    assert.deepEqual(clock.sleeps, [1000, 2000]);
    assert.equal(c.breaker.consecutiveFailures, 3);
  });

  test("a generate timeout is typed and not retried", async () => {
    const up = lane();
    await up.enqueue({ stall_before_first_byte_ms: 3000 });
    const clock = new FakeClock();
    const e = await client(clock, { timeouts: { generateMs: 500 } })
      .generate({ model: up.model, messages: HELLO })
      .catch((e: unknown) => e);
    assert.ok(e instanceof APITimeoutError, String(e));
    assert.equal(e.retryable, false);
    assert.deepEqual(clock.sleeps, []);
    assert.equal(await up.calls(), 1);
  });

  test("a stream that goes quiet longer than the stream timeout ends with a StreamError", async () => {
    const up = lane();
    await up.enqueue({ stall_after_chunks: 2, stall_ms: 2000 });
    const clock = new FakeClock();
    const s = await client(clock, { timeouts: { streamMs: 500 } }).stream({ model: up.model, messages: HELLO });
    const got: EventBlock[] = [];
    const e = await (async () => {
      for await (const b of s) got.push(b);
    })().catch((e: unknown) => e);
    assert.ok(e instanceof StreamError, String(e));
    assert.match(e.message, /timed out/);
    assert.ok(got.length > 0);
    assert.deepEqual(clock.sleeps, []);
  });

  test("the caller's abort signal cancels without a retry", async () => {
    const up = lane();
    await up.enqueue({ stall_before_first_byte_ms: 3000 });
    const clock = new FakeClock();
    const c = client(clock);
    const e = await c.generate({ model: up.model, messages: HELLO }, { signal: AbortSignal.timeout(200) }).catch((e: unknown) => e);
    assert.ok(e instanceof Error && !(e instanceof APIConnectionError), String(e));
    assert.deepEqual(clock.sleeps, []);
    assert.equal(c.breaker.consecutiveFailures, 0);
  });

  test("the breaker opens after 5 failures, fails fast, then probes", async () => {
    const up = lane();
    await up.enqueue({ status: 500, count: 5 });
    const clock = new FakeClock();
    const c = client(clock, { retry: { maxRetries: 0 } });
    for (let i = 0; i < 5; i++) await assert.rejects(c.generate({ model: up.model, messages: HELLO }), ProviderError);
    assert.equal(c.breaker.state, "open");
    const open = await c.generate({ model: up.model, messages: HELLO }).catch((e: unknown) => e);
    assert.ok(open instanceof CircuitOpenError);
    assert.equal(open.retryAfterMs, 30_000);
    await assert.rejects(c.stream({ model: up.model, messages: HELLO }), CircuitOpenError);
    assert.equal(await up.calls(), 5); // nothing sent while open
    clock.now += 29_900;
    await assert.rejects(c.models(), CircuitOpenError);

    clock.now += 100; // cool-down over: one probe, which fails → open again
    assert.equal(c.breaker.state, "half_open");
    await up.enqueue({ status: 500 });
    await assert.rejects(c.generate({ model: up.model, messages: HELLO }), ProviderError);
    assert.equal(c.breaker.state, "open");
    assert.equal(await up.calls(), 6);

    clock.now += 30_000; // the next probe succeeds → closed
    assert.equal((await c.generate({ model: up.model, messages: HELLO })).provider, up.provider);
    assert.equal(c.breaker.state, "closed");
  });

  test("the breaker is configurable and stops retries once open", async () => {
    const up = lane();
    await up.enqueue({ status: 500, count: 3 });
    const clock = new FakeClock();
    const breaker = new CircuitBreaker({ failureThreshold: 2, cooldownMs: 5000, clock: clock.clock });
    const c = client(clock, { breaker });
    await assert.rejects(c.generate({ model: up.model, messages: HELLO }), ProviderError);
    assert.deepEqual(clock.sleeps, [1000]);
    assert.equal(await up.calls(), 2);
    const e = await c.generate({ model: up.model, messages: HELLO }).catch((e: unknown) => e);
    assert.ok(e instanceof CircuitOpenError);
    assert.equal(e.retryAfterMs, 5000);
  });
});
