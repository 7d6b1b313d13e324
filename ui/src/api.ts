// The admin API (docs/admin-api.md) as the dashboard calls it. The admin key lives in this module's
// memory only: never in a URL, a cookie or Web Storage, so closing or reloading the tab forgets it.

let adminKey: string | null = null;

export function signIn(key: string): void {
  adminKey = key;
}

export function signOut(): void {
  adminKey = null;
}

const refusedListeners = new Set<(message: string) => void>();

/** Called when the gateway refuses the key (401), e.g. after the admin key was rotated. */
export function onKeyRefused(listener: (message: string) => void): () => void {
  refusedListeners.add(listener);
  return () => refusedListeners.delete(listener);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

type Query = Record<string, string | number | undefined>;

function url(path: string, query?: Query): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function call<T>(method: string, path: string, options: { query?: Query; body?: unknown } = {}): Promise<T> {
  if (adminKey === null) throw new ApiError(401, "signed_out", "Sign in with the admin key first.");
  const headers: Record<string, string> = { authorization: `Bearer ${adminKey}` };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(url(path, options.query), {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiError(0, "network", "The gateway did not answer. Is it running?");
  }
  const text = await response.text();
  if (!response.ok) {
    let code = "http_" + response.status;
    let message = `${method} ${path} answered ${response.status}`;
    try {
      const error = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
      code = error?.code ?? code;
      message = error?.message ?? message;
    } catch {
      // not the native error shape: keep the status line
    }
    if (response.status === 401) {
      signOut();
      for (const listener of refusedListeners) listener(message);
    }
    throw new ApiError(response.status, code, message);
  }
  return (path === "/metrics" ? text : JSON.parse(text)) as T;
}

// -- shapes ---------------------------------------------------------------------------------------

export interface Usage {
  requests: number;
  errors: number;
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cache_creation_tokens: number;
  reasoning_tokens: number;
  cost: string;
  cost_micro_dollars: number;
}

export interface Series {
  bucket: "hour" | "day";
  group: string;
  since: string;
  until: string;
  buckets: string[];
  series: { name: string; totals: Usage; points: Usage[] }[];
  totals: Usage;
}

export interface KeyRecord {
  key_id: string;
  prefix: string;
  name: string;
  customer_id: string;
  status: "active" | "disabled" | "revoked";
  rate_limit_rpm: number;
  rate_limit_tpm: number;
  allowed_models: string[];
  created_at: string;
  budget_usd: string | null;
  budget_period: BudgetPeriod;
  spent_usd: string;
  remaining_usd?: string;
  budget_resets_at: string | null;
}

export type BudgetPeriod = "day" | "week" | "month" | "total";
export const PERIODS: BudgetPeriod[] = ["day", "week", "month", "total"];

export interface NewKey {
  key: string;
  key_id: string;
  prefix: string;
}

export interface Customer {
  customer_id: string;
  name: string;
  email: string;
  created_at: string;
  budget_usd: string | null;
  budget_period: BudgetPeriod;
  spent_usd: string;
  remaining_usd?: string;
  budget_resets_at: string | null;
}

export interface CustomerFields {
  name: string;
  email: string;
  budget_usd?: string;
  budget_period?: BudgetPeriod;
}

export interface LogEntry {
  request_id: string;
  key_id: string;
  model: string;
  provider: string;
  endpoint_id: string;
  status: "success" | "error";
  http_status: number;
  input_tokens: number;
  output_tokens: number;
  cached_tokens: number;
  cost: string;
  latency_ms: number;
  error: string | null;
  created_at: string;
  route_reason: string;
}

export interface EndpointStatus {
  id: string;
  base_url: string | null;
  credential: "config" | "stored" | "none";
  available: boolean;
  in_flight: number;
  cooling_down: boolean;
  cooldown_remaining_s: number;
  rpm_limit: number;
  tpm_limit: number;
  utilisation: number | null;
  reachability: { state: string; connect_ms?: number; error?: string };
}

export interface Status {
  status: string;
  version: string;
  uptime: number;
  worker_pid: number;
  providers: Record<string, { type: string; health: string; endpoints: EndpointStatus[]; note?: string }>;
  affinity: Record<string, unknown>;
  redis: { configured: boolean; state?: string } | null;
  s3: { configured: boolean; state?: string } | null;
  request_log: { buffered: number; capacity: number; dropped: number; written: number } | null;
  keys_loaded: number;
}

export interface Credential {
  endpoint_id: string;
  provider: string;
  stored: boolean;
  hint: string | null;
  key_version: number | null;
  updated_at: string | null;
  source: "config" | "stored" | "none";
  error: string | null;
}

// -- calls ----------------------------------------------------------------------------------------

export interface KeyFields {
  name: string;
  customer_id?: string;
  rate_limit_rpm?: number;
  rate_limit_tpm?: number;
  allowed_models?: string[];
  budget_usd?: string;
  budget_period?: string;
}

const id = encodeURIComponent;

export const api = {
  status: () => call<Status>("GET", "/admin/status"),
  series: (query: Query) => call<Series>("GET", "/admin/usage/series", { query }),
  metrics: () => call<string>("GET", "/metrics"),
  keys: (limit: number, offset: number) =>
    call<{ keys: KeyRecord[]; total: number }>("GET", "/admin/keys", { query: { limit, offset } }),
  createKey: (fields: KeyFields) => call<NewKey>("POST", "/admin/keys", { body: fields }),
  setKeyStatus: (keyId: string, status: "active" | "disabled") =>
    call<KeyRecord>("POST", `/admin/keys/${id(keyId)}/status`, { body: { status } }),
  revokeKey: (keyId: string) => call<KeyRecord>("POST", `/admin/keys/${id(keyId)}/revoke`),
  customers: (limit: number, offset: number) =>
    call<{ customers: Customer[]; total: number }>("GET", "/admin/customers", { query: { limit, offset } }),
  createCustomer: (fields: CustomerFields) => call<Customer>("POST", "/admin/customers", { body: fields }),
  logs: (query: Query) => call<{ logs: LogEntry[]; total: number }>("GET", "/admin/logs", { query }),
  credential: (endpointId: string) => call<Credential>("GET", `/admin/endpoints/${id(endpointId)}/credential`),
  putCredential: (endpointId: string, apiKey: string) =>
    call<Credential>("PUT", `/admin/endpoints/${id(endpointId)}/credential`, { body: { api_key: apiKey } }),
  deleteCredential: (endpointId: string) =>
    call<Credential>("DELETE", `/admin/endpoints/${id(endpointId)}/credential`),
};

/** Whether the gateway has an admin API at all (ENSEMBLE_ADMIN_KEY set); needs no key. */
export async function gatewayState(): Promise<{ admin_api: "enabled" | "disabled"; version: string }> {
  const response = await fetch("/ui/state", { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new ApiError(response.status, "state", `GET /ui/state answered ${response.status}`);
  return (await response.json()) as { admin_api: "enabled" | "disabled"; version: string };
}
