/** Shapes of the native API (see the README's routes). Requests are snake_case, as the gateway speaks them. */

export type Role = "system" | "user" | "assistant" | "tool";

export type ContentPart =
  | { type: "text"; text: string }
  | {
      type: "image" | "document" | "audio";
      source: { type: "base64" | "url"; media_type?: string; data?: string; url?: string };
    };

export interface Message {
  role: Role;
  content: string | ContentPart[];
  tool_calls?: { id: string; name: string; arguments: Record<string, unknown> | string }[];
  tool_call_id?: string;
}

export interface ToolDefinition {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
  strict?: boolean;
}

export interface GenerateRequest {
  model: string;
  /** A plain string is one user message. */
  messages: string | Message[];
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  stop_sequences?: string[];
  tools?: ToolDefinition[];
  tool_choice?: "auto" | "none" | "required" | { name: string };
  session_id?: string;
  provider_config?: Record<string, unknown>;
  [field: string]: unknown;
}

export interface CallOptions {
  /** Sent as X-Request-ID (the storage key for getStatus/retrieve). */
  requestId?: string;
  /** Cancels the call (not retried). */
  signal?: AbortSignal;
}

export interface ToolCall {
  id: string;
  name: string;
  arguments: Record<string, unknown>;
  raw_arguments: string;
}

/** A whole block (in InferenceResponse.blocks) or, in a stream, a delta of block `index`. */
export type EventBlock =
  | {
      type: "text";
      text: string;
      citations?: Record<string, unknown>[]; // the provider's sources for this text, verbatim
      citation?: Record<string, unknown>; // on a stream delta: one more source
      index?: number;
    }
  | { type: "tool_call"; tool_call: Partial<ToolCall> & { raw_arguments?: string }; index?: number }
  | { type: "thinking"; thinking: string; signature?: string; index?: number }
  | { type: "redacted_thinking"; data: string; index?: number }
  | { type: "server_tool"; block: Record<string, unknown>; index?: number }
  | { type: "error"; error: string; index?: number };

export type FinishReason = "stop" | "length" | "tool_use" | "content_filter" | "error";

export interface InferenceResponse {
  id: string;
  model: string;
  provider: string;
  endpoint_id: string;
  blocks: EventBlock[];
  content: string;
  finish_reason: FinishReason;
  input_tokens: number;
  output_tokens: number;
  cached_prompt_tokens: number;
  cache_creation_tokens: number;
  reasoning_tokens: number;
  /** USD as an exact decimal string. */
  cost: string;
  cost_micro_dollars: number;
  usage: {
    inputTokens: number;
    outputTokens: number;
    cachedTokens: number;
    cacheCreationTokens: number;
    reasoningTokens: number;
  };
  processing_time_ms: number;
  performance: { ttft_ms: number; upstream_ms: number; overhead_ms: number };
  rate_limit?: {
    limit_requests: number;
    remaining_requests: number;
    limit_tokens: number;
    remaining_tokens: number;
  } | null;
}

export interface RequestStatus {
  request_id: string;
  status: "pending" | "streaming" | "completed" | "failed";
  created_at: string | null;
  completed_at: string | null;
  model: string | null;
  provider: string | null;
}

export interface Model {
  id: string;
  provider: string;
  providers: string[];
  context_window: number | null;
  max_output_tokens: number | null;
  pricing: Record<string, number>;
  capabilities: { streaming: boolean; tools: boolean; thinking: boolean; vision: boolean };
}

export interface Health {
  status: "healthy" | "degraded" | string;
  version: string;
  uptime: number;
  providers: Record<string, string>;
}
