// Overview: traffic, errors, tokens and spend over time, by model, provider or key; the gateway's state.
import { useState } from "preact/hooks";
import { api, type Series, type Usage } from "../api";
import { type ChartSeries, StackedBars } from "../chart";
import { bucketLabel, count, duration, percent, usd } from "../format";
import { useLoad } from "../hooks";
import { Badge, ErrorNote, healthTone } from "../widgets";

const RANGES = {
  "24h": { label: "Last 24 hours", bucket: "hour", hours: 24 },
  "7d": { label: "Last 7 days", bucket: "hour", hours: 24 * 7 },
  "30d": { label: "Last 30 days", bucket: "day", hours: 24 * 30 },
} as const;
type Range = keyof typeof RANGES;

const GROUPS = { model: "model", provider: "provider", key_id: "key" } as const;
type Group = keyof typeof GROUPS;

const MAX_SERIES = 7; // beyond this the smallest are summed into "other", so colours stay readable

/** The `ensemble_open_streams` gauge from /metrics (summed over workers by the exporter). */
function openStreams(metrics: string): number {
  let total = 0;
  for (const line of metrics.split("\n")) {
    const match = /^ensemble_open_streams(?:\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (match) total += Number(match[1]);
  }
  return total;
}

function chartSeries(series: Series, value: (u: Usage) => number, names: (n: string) => string): ChartSeries[] {
  const out = series.series.slice(0, MAX_SERIES).map((s) => ({ name: names(s.name), values: s.points.map(value) }));
  const rest = series.series.slice(MAX_SERIES);
  if (rest.length > 0) {
    out.push({
      name: `other (${rest.length})`,
      values: series.buckets.map((_, i) => rest.reduce((sum, s) => sum + value(s.points[i]!), 0)),
    });
  }
  return out;
}

function tokenKinds(series: Series): ChartSeries[] {
  const sum = (i: number, f: (u: Usage) => number) => series.series.reduce((t, s) => t + f(s.points[i]!), 0);
  const per = (f: (u: Usage) => number) => series.buckets.map((_, i) => sum(i, f));
  return [
    { name: "input (uncached)", values: per((u) => u.input_tokens - u.cached_tokens - u.cache_creation_tokens) },
    { name: "input read from cache", values: per((u) => u.cached_tokens) },
    { name: "input written to cache", values: per((u) => u.cache_creation_tokens) },
    { name: "output", values: per((u) => u.output_tokens) },
  ];
}

export function OverviewPage() {
  const [range, setRange] = useState<Range>("24h");
  const [group, setGroup] = useState<Group>("model");
  const spec = RANGES[range];
  const series = useLoad(
    () =>
      api.series({
        bucket: spec.bucket,
        group,
        since: new Date(Date.now() - spec.hours * 3600_000).toISOString(),
      }),
    [range, group],
    30_000,
  );
  const status = useLoad(() => api.status(), [], 30_000);
  const streams = useLoad(() => api.metrics().then(openStreams), [], 30_000);
  const keys = useLoad(() => (group === "key_id" ? api.keys(1000, 0) : Promise.resolve(undefined)), [group]);
  const keyNames = new Map((keys.value?.keys ?? []).map((k) => [k.key_id, k.name]));
  const name = (n: string) => (n === "" ? "(none)" : group === "key_id" && keyNames.has(n) ? `${keyNames.get(n)} (${n})` : n);

  const s = series.value;
  const t = s?.totals;
  const labels = s ? s.buckets.map((b) => bucketLabel(b, s.bucket)) : [];
  const by = GROUPS[group];

  return (
    <>
      <header class="page-head">
        <h1>Overview</h1>
        <div class="controls">
          <label>
            Range
            <select value={range} onChange={(e) => setRange(e.currentTarget.value as Range)}>
              {Object.entries(RANGES).map(([value, r]) => (
                <option key={value} value={value}>
                  {r.label}
                </option>
              ))}
            </select>
          </label>
          <label>
            Group by
            <select value={group} onChange={(e) => setGroup(e.currentTarget.value as Group)}>
              {Object.entries(GROUPS).map(([value, label]) => (
                <option key={value} value={value}>
                  {label}
                </option>
              ))}
            </select>
          </label>
          <button type="button" onClick={() => (series.reload(), status.reload(), streams.reload())}>
            Refresh
          </button>
        </div>
      </header>
      <ErrorNote error={series.error ?? status.error} />

      <section class="stats" aria-label="Totals">
        <Stat label="Requests" value={t ? count(t.requests) : "…"} />
        <Stat label="Errors" value={t ? count(t.errors) : "…"} note={t ? percent(t.errors, t.requests) + " of requests" : ""} />
        <Stat
          label="Tokens"
          value={t ? count(t.input_tokens + t.output_tokens) : "…"}
          note={t ? `${count(t.input_tokens)} in · ${count(t.output_tokens)} out` : ""}
        />
        <Stat label="Spend" value={t ? usd(t.cost_micro_dollars) : "…"} note={t ? `$${t.cost} exactly` : ""} />
        <Stat
          label="Cache hit rate"
          value={t ? percent(t.cached_tokens, t.input_tokens) : "…"}
          note="of prompt tokens read from a provider's cache"
        />
        <Stat
          label="Open streams"
          value={streams.value !== undefined ? count(streams.value) : streams.error ? "n/a" : "…"}
          note={streams.error ? "metrics are off (telemetry.prometheus)" : "streaming responses in progress"}
        />
      </section>

      {s && (
        <section class="charts">
          <StackedBars title={`Requests by ${by}`} labels={labels} series={chartSeries(s, (u) => u.requests, name)} format={count} />
          <StackedBars title={`Errors by ${by}`} labels={labels} series={chartSeries(s, (u) => u.errors, name)} format={count} />
          <StackedBars title="Tokens by kind" labels={labels} series={tokenKinds(s)} format={count} />
          <StackedBars
            title={`Spend by ${by}`}
            labels={labels}
            series={chartSeries(s, (u) => u.cost_micro_dollars, name)}
            format={usd}
          />
        </section>
      )}

      {s && (
        <section class="card">
          <h2>By {by}</h2>
          <table>
            <thead>
              <tr>
                <th>{by}</th>
                <th class="num">Requests</th>
                <th class="num">Errors</th>
                <th class="num">Input tokens</th>
                <th class="num">Cache hit rate</th>
                <th class="num">Output tokens</th>
                <th class="num">Spend</th>
              </tr>
            </thead>
            <tbody>
              {s.series.map((row) => (
                <tr key={row.name}>
                  <td>{name(row.name)}</td>
                  <td class="num">{count(row.totals.requests)}</td>
                  <td class="num">{count(row.totals.errors)}</td>
                  <td class="num">{count(row.totals.input_tokens)}</td>
                  <td class="num">{percent(row.totals.cached_tokens, row.totals.input_tokens)}</td>
                  <td class="num">{count(row.totals.output_tokens)}</td>
                  <td class="num">{usd(row.totals.cost_micro_dollars)}</td>
                </tr>
              ))}
              {s.series.length === 0 && (
                <tr>
                  <td colSpan={7} class="quiet">
                    No requests in this range.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </section>
      )}

      {status.value && (
        <section class="card">
          <h2>Gateway</h2>
          <dl class="facts">
            <dt>Status</dt>
            <dd>
              <Badge tone={healthTone(status.value.status)}>{status.value.status}</Badge>
            </dd>
            <dt>Version</dt>
            <dd>{status.value.version}</dd>
            <dt>Up for</dt>
            <dd>{duration(status.value.uptime)}</dd>
            <dt>Keys loaded</dt>
            <dd>{count(status.value.keys_loaded)}</dd>
            <dt>Request log</dt>
            <dd>
              {status.value.request_log
                ? `${count(status.value.request_log.written)} written, ${count(status.value.request_log.buffered)} buffered, ${count(status.value.request_log.dropped)} dropped`
                : "off"}
            </dd>
            <dt>Redis</dt>
            <dd>{status.value.redis?.configured ? (status.value.redis.state ?? "configured") : "not configured"}</dd>
            <dt>S3</dt>
            <dd>{status.value.s3?.configured ? (status.value.s3.state ?? "configured") : "not configured"}</dd>
            <dt>Answered by</dt>
            <dd>worker {status.value.worker_pid} (counters are per worker)</dd>
          </dl>
        </section>
      )}
    </>
  );
}

function Stat({ label, value, note }: { label: string; value: string; note?: string }) {
  return (
    <div class="stat" role="group" aria-label={label}>
      <div class="label">{label}</div>
      <div class="value">{value}</div>
      {note && <div class="note">{note}</div>}
    </div>
  );
}
