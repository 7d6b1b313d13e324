// A stacked bar chart drawn as SVG: one bar per time bucket, one coloured segment per series.
// Colours are SVG presentation attributes, not style attributes, so the strict CSP holds.

export const PALETTE = ["#2f5bd3", "#e8833a", "#2a9d8f", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"];

export interface ChartSeries {
  name: string;
  values: number[];
}

interface Props {
  title: string;
  labels: string[]; // one per bucket
  series: ChartSeries[];
  format: (value: number) => string;
}

const W = 640;
const H = 220;
const M = { top: 10, right: 8, bottom: 24, left: 60 };

/** 1, 2 or 5 times a power of ten, at least `value`: axis steps that read as round numbers. */
function niceStep(value: number): number {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return ([1, 2, 5, 10].find((m) => m * power >= value) ?? 10) * power;
}

const TICKS = 4; // at most this many gridlines above zero

export function StackedBars({ title, labels, series, format }: Props) {
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] ?? 0), 0));
  const highest = Math.max(0, ...totals);
  const step = niceStep(highest / TICKS);
  const steps = Math.max(1, Math.ceil(highest / step));
  const top = steps * step;
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const band = plotW / Math.max(labels.length, 1);
  const barW = Math.max(band * 0.72, 1);
  const y = (v: number) => M.top + plotH - (v / top) * plotH;
  const ticks = Array.from({ length: steps + 1 }, (_, i) => i * step);
  const labelEvery = Math.max(1, Math.ceil(labels.length / 8));
  const empty = totals.every((t) => t === 0);

  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={title}>
        {ticks.map((t) => (
          <g key={t}>
            <line class="grid" x1={M.left} x2={W - M.right} y1={y(t)} y2={y(t)} />
            <text class="axis" x={M.left - 6} y={y(t) + 4} text-anchor="end">
              {format(t)}
            </text>
          </g>
        ))}
        {labels.map((label, i) => {
          let base = 0;
          const x = M.left + i * band + (band - barW) / 2;
          return (
            <g key={label + i}>
              {series.map((s, k) => {
                const v = s.values[i] ?? 0;
                if (v <= 0) return null;
                const y0 = y(base);
                base += v;
                return (
                  <rect
                    key={s.name}
                    class="bar"
                    x={x}
                    y={y(base)}
                    width={barW}
                    height={Math.max(y0 - y(base), 0.5)}
                    fill={PALETTE[k % PALETTE.length]}
                  >
                    <title>{`${label} · ${s.name}: ${format(v)}`}</title>
                  </rect>
                );
              })}
              {i % labelEvery === 0 && (
                <text class="axis" x={M.left + i * band + band / 2} y={H - 6} text-anchor="middle">
                  {label}
                </text>
              )}
            </g>
          );
        })}
        {empty && (
          <text class="empty" x={M.left + plotW / 2} y={M.top + plotH / 2} text-anchor="middle">
            Nothing in this range
          </text>
        )}
      </svg>
      <Legend names={series.map((s) => s.name)} />
    </figure>
  );
}

export function Legend({ names }: { names: string[] }) {
  return (
    <ul class="legend">
      {names.map((name, k) => (
        <li key={name}>
          <svg class="swatch" viewBox="0 0 10 10" aria-hidden="true">
            <rect width="10" height="10" rx="2" fill={PALETTE[k % PALETTE.length]} />
          </svg>
          {name}
        </li>
      ))}
    </ul>
  );
}
