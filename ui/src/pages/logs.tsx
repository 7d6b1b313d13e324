// Logs: the request log with /admin/logs's filters, newest first, a page at a time.
import { useState } from "preact/hooks";
import { api } from "../api";
import { count, moment, usdExact } from "../format";
import { useLoad } from "../hooks";
import { Badge, ErrorNote, Pager } from "../widgets";

const PAGE = 50;
const STATUSES = ["", "success", "error", "400", "401", "403", "404", "429", "500", "502", "503", "504"];

interface Filters {
  model: string;
  provider: string;
  status: string;
  since: string; // a datetime-local value, in the reader's time zone
  key_id: string;
}
const NONE: Filters = { model: "", provider: "", status: "", since: "", key_id: "" };

export function LogsPage() {
  const [draft, setDraft] = useState<Filters>(NONE);
  const [filters, setFilters] = useState<Filters>(NONE);
  const [offset, setOffset] = useState(0);
  const logs = useLoad(
    () =>
      api.logs({
        limit: PAGE,
        offset,
        model: filters.model.trim(),
        provider: filters.provider.trim(),
        status: filters.status,
        key_id: filters.key_id.trim(),
        since: filters.since ? new Date(filters.since).toISOString() : undefined,
      }),
    [filters, offset],
  );
  const set = (name: keyof Filters, value: string) => setDraft((d) => ({ ...d, [name]: value }));

  function apply(next: Filters) {
    setFilters(next);
    setOffset(0);
  }

  return (
    <>
      <header class="page-head">
        <h1>Logs</h1>
        <div class="controls">
          <button type="button" onClick={logs.reload}>
            Refresh
          </button>
        </div>
      </header>
      <form
        class="card filters"
        aria-label="Filters"
        onSubmit={(e) => {
          e.preventDefault();
          apply(draft);
        }}
      >
        <label>
          Model
          <input value={draft.model} onInput={(e) => set("model", e.currentTarget.value)} />
        </label>
        <label>
          Provider
          <input value={draft.provider} onInput={(e) => set("provider", e.currentTarget.value)} />
        </label>
        <label>
          Status
          <select value={draft.status} onChange={(e) => set("status", e.currentTarget.value)}>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </label>
        <label>
          Since
          <input type="datetime-local" step={1} value={draft.since} onInput={(e) => set("since", e.currentTarget.value)} />
        </label>
        <label>
          Key id
          <input value={draft.key_id} onInput={(e) => set("key_id", e.currentTarget.value)} />
        </label>
        <div class="buttons">
          <button type="submit" class="primary">
            Filter
          </button>
          <button
            type="button"
            onClick={() => {
              setDraft(NONE);
              apply(NONE);
            }}
          >
            Clear
          </button>
        </div>
      </form>
      <section class="card">
        <ErrorNote error={logs.error} />
        <table class="logs">
          <thead>
            <tr>
              <th>Time</th>
              <th>Request id</th>
              <th>Key id</th>
              <th>Model</th>
              <th>Provider</th>
              <th>Status</th>
              <th class="num">In</th>
              <th class="num">Cached</th>
              <th class="num">Out</th>
              <th class="num">Cost</th>
              <th class="num">Latency</th>
            </tr>
          </thead>
          <tbody>
            {(logs.value?.logs ?? []).map((entry) => (
              <tr key={entry.request_id + entry.created_at} data-request-id={entry.request_id}>
                <td class="time" title={entry.created_at}>{moment(entry.created_at)}</td>
                <td>
                  <code>{entry.request_id}</code>
                </td>
                <td>
                  <code>{entry.key_id}</code>
                </td>
                <td>{entry.model}</td>
                <td>
                  {entry.provider || <span class="quiet">–</span>}
                  {entry.endpoint_id && <div class="quiet">{entry.endpoint_id}</div>}
                </td>
                <td title={entry.error ?? entry.route_reason}>
                  <Badge tone={entry.status === "success" ? "good" : "bad"}>{entry.http_status}</Badge>
                  {entry.error && <div class="quiet clip">{entry.error}</div>}
                </td>
                <td class="num">{count(entry.input_tokens)}</td>
                <td class="num">{count(entry.cached_tokens)}</td>
                <td class="num">{count(entry.output_tokens)}</td>
                <td class="num">{usdExact(entry.cost)}</td>
                <td class="num">{Math.round(entry.latency_ms)} ms</td>
              </tr>
            ))}
          </tbody>
        </table>
        {logs.value && <Pager offset={offset} limit={PAGE} total={logs.value.total} onOffset={setOffset} noun="requests" />}
      </section>
    </>
  );
}
