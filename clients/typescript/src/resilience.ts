/**
 * Retry policy and circuit breaker. Time is injected (`clock` for the breaker, `sleep` for back-off)
 * so tests need not wait.
 *
 * The breaker counts every HTTP attempt: a connection error, a timeout or a 5xx answer is a failure;
 * any other answer (2xx, and 4xx including 429: the gateway is up and talking) is a success. After
 * `failureThreshold` consecutive failures it opens: calls fail at once with CircuitOpenError and
 * nothing is sent. After `cooldownMs` one call goes through as a probe (half-open; other calls keep
 * failing fast): its success closes the breaker, its failure re-opens it for another cool-down.
 */
import { CircuitOpenError, EnsembleError } from "./errors.js";

export interface RetryOptions {
  /** Retries after the first attempt (default 2). */
  maxRetries?: number;
  /** Back-off before retry n (0-based) is baseDelayMs * 2^n, capped at maxDelayMs (1 s, 2 s, 4 s). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** A Retry-After longer than this is not waited for: the error goes to the caller (default 60 s). */
  maxRetryAfterMs?: number;
  /** HTTP statuses retried (default 429, 502, 503, 504); connection errors are always retried. */
  retryStatuses?: number[];
}

export class RetryPolicy {
  readonly maxRetries: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly maxRetryAfterMs: number;
  readonly retryStatuses: ReadonlySet<number>;

  constructor(options: RetryOptions = {}) {
    this.maxRetries = options.maxRetries ?? 2;
    this.baseDelayMs = options.baseDelayMs ?? 1000;
    this.maxDelayMs = options.maxDelayMs ?? 4000;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 60_000;
    this.retryStatuses = new Set(options.retryStatuses ?? [429, 502, 503, 504]);
  }

  backoffMs(retry: number): number {
    return Math.min(this.baseDelayMs * 2 ** retry, this.maxDelayMs);
  }

  /** Milliseconds to wait before retry number `retry` (0-based), or undefined to give up. */
  delayMs(retry: number, error: EnsembleError): number | undefined {
    if (!error.retryable || retry >= this.maxRetries) return undefined;
    if (error.retryAfterMs !== undefined) {
      return error.retryAfterMs <= this.maxRetryAfterMs ? error.retryAfterMs : undefined;
    }
    return this.backoffMs(retry);
  }
}

export type BreakerState = "closed" | "open" | "half_open";

export interface BreakerOptions {
  failureThreshold?: number;
  cooldownMs?: number;
  /** Milliseconds, monotonic (default performance.now). */
  clock?: () => number;
}

export class CircuitBreaker {
  readonly failureThreshold: number;
  readonly cooldownMs: number;
  private readonly clock: () => number;
  private failures = 0;
  private openedAt: number | undefined;
  private probing = false;

  constructor(options: BreakerOptions = {}) {
    this.failureThreshold = options.failureThreshold ?? 5;
    this.cooldownMs = options.cooldownMs ?? 30_000;
    this.clock = options.clock ?? (() => performance.now());
    if (this.failureThreshold < 1) throw new RangeError("failureThreshold must be at least 1");
  }

  get state(): BreakerState {
    if (this.openedAt === undefined) return "closed";
    if (this.probing || this.clock() - this.openedAt >= this.cooldownMs) return "half_open";
    return "open";
  }

  get consecutiveFailures(): number {
    return this.failures;
  }

  /** Before an attempt: throws CircuitOpenError when it may not be sent; true when it is the probe. */
  acquire(): boolean {
    if (this.openedAt === undefined) return false;
    const left = this.openedAt + this.cooldownMs - this.clock();
    if (left > 0 || this.probing) {
      throw new CircuitOpenError(
        `circuit breaker open after ${this.failures} consecutive failures; ` +
          (left > 0 ? `next probe in ${(left / 1000).toFixed(1)}s` : "a probe call is in flight"),
        { retryable: true, retryAfterMs: Math.max(left, 0) },
      );
    }
    this.probing = true;
    return true;
  }

  success(): void {
    this.failures = 0;
    this.openedAt = undefined;
    this.probing = false;
  }

  failure(): void {
    this.failures += 1;
    if (this.probing || this.failures >= this.failureThreshold) this.openedAt = this.clock();
    this.probing = false;
  }

  /** An attempt ended with neither outcome (e.g. aborted by the caller): free the probe slot. */
  release(probe: boolean): void {
    if (probe) this.probing = false;
  }
}
