// How numbers, money and times read on the dashboard.

const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat("en");

export function count(n: number): string {
  return Math.abs(n) >= 10_000 ? compact.format(n) : whole.format(n);
}

/** USD from micro-dollars: cents when it is a sum worth reading in cents, more digits below. */
export function usd(micro: number): string {
  const dollars = micro / 1_000_000;
  if (dollars === 0) return "$0";
  if (Math.abs(dollars) >= 100) return "$" + whole.format(Math.round(dollars));
  if (Math.abs(dollars) >= 0.01) return "$" + dollars.toFixed(2);
  return "$" + dollars.toPrecision(2);
}

/** USD from the API's exact decimal string, as is (it is already the exact figure). */
export function usdExact(cost: string): string {
  return "$" + cost;
}

export function percent(part: number, whole: number): string {
  if (whole === 0) return "–";
  return (100 * (part / whole)).toFixed(part === whole || part === 0 ? 0 : 1) + "%";
}

export function duration(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

/** A stored UTC timestamp in the reader's local time, to the second. */
export function when(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" });
}

/** A log line's time: day, month and the time to the second, local. */
export function moment(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const day = date.toLocaleDateString("en-GB", { day: "numeric", month: "short" });
  return `${day} ${date.toLocaleTimeString("en-GB", { hour12: false })}`;
}

/** A chart bucket's label: the hour (hourly buckets) or the day. */
export function bucketLabel(iso: string, bucket: "hour" | "day"): string {
  const date = new Date(iso);
  return bucket === "hour"
    ? date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString("en-GB", { day: "numeric", month: "short" });
}
