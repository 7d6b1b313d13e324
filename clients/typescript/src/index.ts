export { BlockStream, type ClientOptions, DEFAULT_URL, EnsembleClient, type Timeouts, VERSION } from "./client.js";
export * from "./errors.js";
export { type BreakerOptions, type BreakerState, CircuitBreaker, type RetryOptions, RetryPolicy } from "./resilience.js";
export type * from "./types.js";
