/**
 * Typed errors. Every failure a call can end in is one of these:
 *
 *   EnsembleError                  status?, type?, code?, requestId?, retryable, retryAfterMs?
 *   ├── ConfigurationError         ENSEMBLE_URL is set but ENSEMBLE_API_KEY is empty
 *   ├── CircuitOpenError           the breaker is open; nothing was sent (retryAfterMs = cool-down left)
 *   ├── APIConnectionError         no HTTP answer (refused, reset, closed)            retryable
 *   │   └── APITimeoutError        the per-call timeout ran out                       not retried
 *   ├── StreamError                an `event: error` (or a broken body) after the stream started
 *   └── APIStatusError             an HTTP error answer from the gateway
 *       ├── BadRequestError 400 (and unlisted 4xx) · AuthenticationError 401 · PermissionDeniedError 403
 *       ├── NotFoundError 404 · RequestTooLargeError 413 · RateLimitError 429 (retryable)
 *       └── InternalServerError 500 · ProviderError 502 · OverloadedError 503 · GatewayTimeoutError 504
 *                                                          (502/503/504 retryable)
 */

export interface ErrorFields {
  status?: number | undefined;
  type?: string | undefined;
  code?: string | undefined;
  requestId?: string | undefined;
  retryable?: boolean;
  retryAfterMs?: number | undefined;
  cause?: unknown;
}

export class EnsembleError extends Error {
  readonly status: number | undefined;
  readonly type: string | undefined;
  readonly code: string | undefined;
  readonly requestId: string | undefined;
  /** Whether the client's retry policy retries this error (it already has, when you see it). */
  readonly retryable: boolean;
  /** The wait the gateway asked for (Retry-After), in milliseconds. */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, fields: ErrorFields = {}) {
    super(message, fields.cause === undefined ? undefined : { cause: fields.cause });
    this.name = new.target.name;
    this.status = fields.status;
    this.type = fields.type;
    this.code = fields.code;
    this.requestId = fields.requestId;
    this.retryable = fields.retryable ?? false;
    this.retryAfterMs = fields.retryAfterMs;
  }
}

export class ConfigurationError extends EnsembleError {}
export class CircuitOpenError extends EnsembleError {}
export class APIConnectionError extends EnsembleError {}
export class APITimeoutError extends APIConnectionError {}
export class StreamError extends EnsembleError {}
export class APIStatusError extends EnsembleError {
  declare readonly status: number;
}
export class BadRequestError extends APIStatusError {}
export class AuthenticationError extends APIStatusError {}
export class PermissionDeniedError extends APIStatusError {}
export class NotFoundError extends APIStatusError {}
export class RequestTooLargeError extends APIStatusError {}
export class RateLimitError extends APIStatusError {}
export class InternalServerError extends APIStatusError {}
export class ProviderError extends APIStatusError {}
export class OverloadedError extends APIStatusError {}
export class GatewayTimeoutError extends APIStatusError {}

const BY_STATUS: Record<number, typeof APIStatusError> = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  413: RequestTooLargeError,
  429: RateLimitError,
  500: InternalServerError,
  502: ProviderError,
  503: OverloadedError,
  504: GatewayTimeoutError,
};

/** Milliseconds from a Retry-After header: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, nowMs: number = Date.now()): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed) * 1000;
  const when = Date.parse(trimmed);
  return Number.isNaN(when) ? undefined : Math.max(when - nowMs, 0);
}

function str(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/** Map an error answer (`{"error": {type, message, code, request_id}}`) to its class. */
export function errorFromResponse(status: number, headers: Headers, body: string, retryable: boolean): APIStatusError {
  let detail: Record<string, unknown> = {};
  try {
    const data: unknown = JSON.parse(body);
    const inner = (data as { error?: unknown } | null)?.error;
    if (inner && typeof inner === "object") detail = inner as Record<string, unknown>;
  } catch {
    // not JSON: the message falls back to the body text below
  }
  const message = str(detail.message) || `HTTP ${status}${body ? `: ${body.slice(0, 200)}` : ""}`;
  const Cls = BY_STATUS[status] ?? (status >= 400 && status < 500 ? BadRequestError : InternalServerError);
  return new Cls(message, {
    status,
    type: str(detail.type),
    code: str(detail.code),
    requestId: str(detail.request_id) ?? headers.get("x-request-id") ?? undefined,
    retryable,
    retryAfterMs: parseRetryAfter(headers.get("retry-after")),
  });
}

/** An `event: error` frame: `{"error": {type, message, code, retryable}}`. */
export function streamError(payload: unknown, requestId: string | undefined): StreamError {
  const inner = (payload as { error?: unknown } | null)?.error;
  const detail = (inner && typeof inner === "object" ? inner : {}) as Record<string, unknown>;
  return new StreamError(str(detail.message) ?? "the stream failed after it started", {
    type: str(detail.type),
    code: str(detail.code),
    requestId: str(detail.request_id) ?? requestId,
    retryable: detail.retryable === true,
  });
}
