import {
  APIConnectionError,
  APITimeoutError,
  CircuitOpenError,
  ConfigurationError,
  EnsembleError,
  StreamError,
  errorFromResponse,
  streamError,
} from "./errors.js";
import { type BreakerOptions, CircuitBreaker, type RetryOptions, RetryPolicy } from "./resilience.js";
import { events, lines } from "./sse.js";
import type {
  CallOptions,
  EventBlock,
  GenerateRequest,
  Health,
  InferenceResponse,
  Model,
  RequestStatus,
} from "./types.js";

export const DEFAULT_URL = "http://localhost:5180";
export const VERSION = "0.1.0";

export interface Timeouts {
  /** A whole answer (generate, getStatus, retrieve, models): default 60 s. */
  generateMs: number;
  /** A stream: the longest silence between chunks (and before the first): default 120 s. */
  streamMs: number;
  /** isHealthy/health: default 2 s. */
  healthMs: number;
}

export interface ClientOptions {
  /** Default: $ENSEMBLE_URL, else http://localhost:5180. */
  baseUrl?: string;
  /** Default: $ENSEMBLE_API_KEY. */
  apiKey?: string;
  timeouts?: Partial<Timeouts>;
  retry?: RetryOptions | RetryPolicy;
  breaker?: BreakerOptions | CircuitBreaker;
  /** Monotonic milliseconds for the breaker (default performance.now). */
  clock?: () => number;
  /** Waits between retries (default setTimeout). */
  sleep?: (ms: number) => Promise<void>;
  fetch?: typeof fetch;
  headers?: Record<string, string>;
  /** Where ENSEMBLE_URL / ENSEMBLE_API_KEY are read (default process.env where there is one). */
  env?: Record<string, string | undefined>;
  /** The start-up warning for a URL without a key (default console.warn). */
  warn?: (message: string) => void;
}

const MARK_TIMEOUT = Symbol("ensemble-timeout");

/** A timer that aborts an attempt after `ms` of inactivity; `touch` restarts it. */
class Deadline {
  private handle: ReturnType<typeof setTimeout> | undefined;
  readonly controller = new AbortController();
  private readonly onAbort: (() => void) | undefined;

  constructor(
    private readonly ms: number,
    private readonly signal: AbortSignal | undefined,
  ) {
    if (signal) {
      this.onAbort = () => this.controller.abort(signal.reason);
      if (signal.aborted) this.onAbort();
      else signal.addEventListener("abort", this.onAbort, { once: true });
    }
    this.touch();
  }

  touch(): void {
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.handle = setTimeout(() => this.controller.abort(MARK_TIMEOUT), this.ms);
  }

  clear(): void {
    if (this.handle !== undefined) clearTimeout(this.handle);
    this.handle = undefined;
    if (this.onAbort) this.signal?.removeEventListener("abort", this.onAbort);
  }

  get timedOut(): boolean {
    return this.controller.signal.aborted && this.controller.signal.reason === MARK_TIMEOUT;
  }

  get callerAborted(): boolean {
    return this.controller.signal.aborted && !this.timedOut;
  }
}

interface Opened {
  response: Response;
  deadline: Deadline;
}

/** A client of the Ensemble native API with retries, a circuit breaker and per-call timeouts. */
export class EnsembleClient {
  readonly baseUrl: string;
  readonly breaker: CircuitBreaker;
  readonly retry: RetryPolicy;
  readonly timeouts: Timeouts;
  private readonly apiKey: string;
  private readonly urlWasSet: boolean;
  private readonly headers: Record<string, string>;
  private readonly fetchImpl: typeof fetch;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(options: ClientOptions = {}) {
    const env = options.env ?? (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {};
    const envUrl = (env.ENSEMBLE_URL ?? "").trim();
    this.baseUrl = (options.baseUrl || envUrl || DEFAULT_URL).replace(/\/+$/, "");
    this.apiKey = (options.apiKey ?? env.ENSEMBLE_API_KEY ?? "").trim();
    this.urlWasSet = Boolean(options.baseUrl || envUrl);
    if (this.urlWasSet && !this.apiKey) {
      // A start-up warning, so a misconfigured deployment shows up in logs before the first call.
      (options.warn ?? ((m: string) => console.warn(m)))(this.missingKeyMessage());
    }
    this.timeouts = { generateMs: 60_000, streamMs: 120_000, healthMs: 2_000, ...options.timeouts };
    this.retry = options.retry instanceof RetryPolicy ? options.retry : new RetryPolicy(options.retry);
    this.breaker =
      options.breaker instanceof CircuitBreaker
        ? options.breaker
        : new CircuitBreaker({ clock: options.clock, ...options.breaker } as BreakerOptions);
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.headers = { ...options.headers };
    if (this.apiKey) this.headers.authorization = `Bearer ${this.apiKey}`;
  }

  // -- the API ---------------------------------------------------------------------------------

  /** POST /api/v1/generate. */
  async generate(request: GenerateRequest, options: CallOptions = {}): Promise<InferenceResponse> {
    return this.json("POST", "/api/v1/generate", this.timeouts.generateMs, body(request), options);
  }

  /** POST /api/v1/stream: EventBlock deltas; `response` is set when the stream is done. */
  async stream(request: GenerateRequest, options: CallOptions = {}): Promise<BlockStream> {
    const opened = await this.open("/api/v1/stream", { ...body(request), stream: true }, options);
    return new BlockStream(opened.response, opened.deadline);
  }

  /**
   * POST /api/v1/generate/stream: the answer's text as it arrives. Errors before the stream starts
   * reject the promise; the plain-text route has no error frame, so a later failure just ends the text.
   */
  async generateStream(request: GenerateRequest, options: CallOptions = {}): Promise<ReadableStream<string>> {
    const { response, deadline } = await this.open("/api/v1/generate/stream", { ...body(request), stream: true }, options);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    const requestId = response.headers.get("x-request-id") ?? undefined;
    return new ReadableStream<string>({
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          deadline.touch();
          if (done) {
            deadline.clear();
            const tail = decoder.decode();
            if (tail) controller.enqueue(tail);
            controller.close();
            return;
          }
          const text = decoder.decode(value, { stream: true });
          if (text) controller.enqueue(text);
        } catch (e) {
          deadline.clear();
          controller.error(broken(e, deadline, requestId));
        }
      },
      async cancel(reason) {
        deadline.clear();
        await reader.cancel(reason);
      },
    });
  }

  async getStatus(requestId: string, options: CallOptions = {}): Promise<RequestStatus> {
    return this.json("GET", `/api/v1/status/${encodeURIComponent(requestId)}`, this.timeouts.generateMs, undefined, options);
  }

  async retrieve(requestId: string, options: CallOptions = {}): Promise<InferenceResponse> {
    return this.json("GET", `/api/v1/retrieve/${encodeURIComponent(requestId)}`, this.timeouts.generateMs, undefined, options);
  }

  async models(options: CallOptions = {}): Promise<Model[]> {
    const list = await this.json<{ models: Model[] }>("GET", "/api/v1/models", this.timeouts.generateMs, undefined, options);
    return list.models;
  }

  /** GET /health once: no retries, no breaker, no key needed. Throws on failure. */
  async health(): Promise<Health> {
    const deadline = new Deadline(this.timeouts.healthMs, undefined);
    try {
      const response = await this.fetchImpl(`${this.baseUrl}/health`, { signal: deadline.controller.signal });
      const text = await response.text();
      if (response.status !== 200) throw errorFromResponse(response.status, response.headers, text, false);
      return JSON.parse(text) as Health;
    } catch (e) {
      if (e instanceof EnsembleError) throw e;
      throw deadline.timedOut
        ? new APITimeoutError(`health check of ${this.baseUrl} timed out`, { cause: e })
        : new APIConnectionError(`health check of ${this.baseUrl} failed: ${describe(e)}`, { cause: e });
    } finally {
      deadline.clear();
    }
  }

  /** True when GET /health answers 200 within the health timeout. */
  async isHealthy(): Promise<boolean> {
    try {
      await this.health();
      return true;
    } catch {
      return false;
    }
  }

  // -- resilience ------------------------------------------------------------------------------

  private missingKeyMessage(): string {
    return (
      `Ensemble URL is set (${this.baseUrl}) but no API key was given: set ENSEMBLE_API_KEY ` +
      "(or pass apiKey) to a client key from `ensemble keys create`"
    );
  }

  private async json<T>(method: string, path: string, timeoutMs: number, payload: unknown, options: CallOptions): Promise<T> {
    return this.withRetries(async () => {
      const { response, deadline } = await this.attempt(method, path, timeoutMs, payload, options);
      try {
        return JSON.parse(await response.text()) as T;
      } catch (e) {
        throw this.transportError(e, deadline);
      } finally {
        deadline.clear();
      }
    });
  }

  private async open(path: string, payload: unknown, options: CallOptions): Promise<Opened> {
    return this.withRetries(() => this.attempt("POST", path, this.timeouts.streamMs, payload, options));
  }

  private async withRetries<T>(call: () => Promise<T>): Promise<T> {
    if (this.urlWasSet && !this.apiKey) throw new ConfigurationError(this.missingKeyMessage());
    for (let retry = 0; ; retry++) {
      try {
        return await call();
      } catch (e) {
        if (!(e instanceof EnsembleError) || e instanceof CircuitOpenError) throw e; // abort; breaker
        // Once this failure has opened the breaker, the real error goes out now.
        const delay = this.breaker.state === "open" ? undefined : this.retry.delayMs(retry, e);
        if (delay === undefined) throw e;
        await this.sleep(delay);
      }
    }
  }

  /** One HTTP exchange up to the response headers, accounted in the breaker. */
  private async attempt(method: string, path: string, timeoutMs: number, payload: unknown, options: CallOptions): Promise<Opened> {
    const probe = this.breaker.acquire();
    const deadline = new Deadline(timeoutMs, options.signal);
    const headers: Record<string, string> = { ...this.headers };
    if (payload !== undefined) headers["content-type"] = "application/json";
    if (options.requestId) headers["x-request-id"] = options.requestId;
    let response: Response;
    try {
      response = await this.fetchImpl(this.baseUrl + path, {
        method,
        headers,
        body: payload === undefined ? undefined : JSON.stringify(payload),
        signal: deadline.controller.signal,
      });
    } catch (e) {
      deadline.clear();
      if (deadline.callerAborted) {
        this.breaker.release(probe);
        throw e;
      }
      throw this.transportError(e, deadline);
    }
    if (response.status < 400) {
      this.breaker.success();
      return { response, deadline };
    }
    let text = "";
    try {
      text = await response.text();
    } catch {
      // the error body is a courtesy; the status says enough
    } finally {
      deadline.clear();
    }
    if (response.status >= 500) this.breaker.failure();
    else this.breaker.success(); // 4xx: the gateway is up and answering
    throw errorFromResponse(response.status, response.headers, text, this.retry.retryStatuses.has(response.status));
  }

  /**
   * No HTTP answer: a breaker failure. Connection errors are retried; a timeout is not (the gateway
   * may still be working, and billing, on the request).
   */
  private transportError(e: unknown, deadline: Deadline): EnsembleError {
    if (deadline.callerAborted) throw e;
    this.breaker.failure();
    if (deadline.timedOut) return new APITimeoutError(`request to ${this.baseUrl} timed out`, { cause: e });
    return new APIConnectionError(`connection to ${this.baseUrl} failed: ${describe(e)}`, { retryable: true, cause: e });
  }
}

/** EventBlock deltas of one /api/v1/stream call. Iterate it once; then `response` is set. */
export class BlockStream implements AsyncIterable<EventBlock> {
  readonly requestId: string | undefined;
  response: InferenceResponse | undefined;

  constructor(
    private readonly http: Response,
    private readonly deadline: Deadline,
  ) {
    this.requestId = http.headers.get("x-request-id") ?? undefined;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<EventBlock> {
    const deadline = this.deadline;
    try {
      for await (const { event, data } of events(lines(this.http.body!, () => deadline.touch()))) {
        if (event === "block") yield JSON.parse(data) as EventBlock;
        else if (event === "done") {
          this.response = JSON.parse(data) as InferenceResponse;
          return;
        } else if (event === "error") throw streamError(JSON.parse(data), this.requestId);
      }
    } catch (e) {
      if (e instanceof EnsembleError) throw e;
      throw broken(e, deadline, this.requestId);
    } finally {
      deadline.clear();
      await this.http.body?.cancel().catch(() => undefined);
    }
    throw new StreamError("the stream ended without a done event", { requestId: this.requestId });
  }

  /** Reads the rest of the stream; the final InferenceResponse. */
  async finalResponse(): Promise<InferenceResponse> {
    for await (const _ of this) {
      // drain
    }
    return this.response!;
  }

  /** Reads the rest of the stream; the text of its text blocks. */
  async text(): Promise<string> {
    let text = "";
    for await (const block of this) if (block.type === "text") text += block.text;
    return text;
  }

  /** Stops reading (closes the connection). */
  async cancel(): Promise<void> {
    this.deadline.clear();
    await this.http.body?.cancel().catch(() => undefined);
  }
}

function broken(e: unknown, deadline: Deadline, requestId: string | undefined): unknown {
  if (deadline.callerAborted) return e;
  const kind = deadline.timedOut ? "timed out" : "broke";
  return new StreamError(`the stream ${kind} after it started: ${describe(e)}`, { requestId, cause: e });
}

function body(request: GenerateRequest): Record<string, unknown> {
  const { messages, ...rest } = request;
  return { ...rest, messages: typeof messages === "string" ? [{ role: "user", content: messages }] : messages };
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message} (${cause.message})` : e.message;
  }
  return String(e);
}
