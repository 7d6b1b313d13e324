// Small pieces every page uses: error notes, status badges, pagination, an inline two-step confirm.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import type { ApiError } from "./api";

export function ErrorNote({ error }: { error: ApiError | undefined }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {error.message}
      {error.code && error.status ? <span class="code"> ({error.code})</span> : null}
    </p>
  );
}

export function Badge({ tone, children }: { tone: "good" | "warn" | "bad" | "quiet"; children: ComponentChildren }) {
  return <span class={`badge ${tone}`}>{children}</span>;
}

export function healthTone(state: string): "good" | "warn" | "bad" | "quiet" {
  if (["healthy", "active", "success", "reachable", "local", "ok", "connected"].includes(state)) return "good";
  if (["degraded", "disabled", "cooling down"].includes(state)) return "warn";
  if (["unavailable", "revoked", "error", "unreachable", "down"].includes(state)) return "bad";
  return "quiet";
}

export function Pager(props: { offset: number; limit: number; total: number; onOffset: (offset: number) => void; noun: string }) {
  const { offset, limit, total, onOffset, noun } = props;
  const last = Math.min(offset + limit, total);
  return (
    <div class="pager">
      <span>{total === 0 ? `No ${noun}` : `${offset + 1}–${last} of ${total} ${noun}`}</span>
      <button type="button" disabled={offset === 0} onClick={() => onOffset(Math.max(offset - limit, 0))}>
        Previous
      </button>
      <button type="button" disabled={last >= total} onClick={() => onOffset(offset + limit)}>
        Next
      </button>
    </div>
  );
}

/** A destructive action that asks once more inline (no window.confirm: it blocks the page). */
export function ConfirmButton(props: { label: string; confirm: string; onConfirm: () => void; disabled?: boolean }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return (
      <button type="button" class="danger" disabled={props.disabled} onClick={() => setAsking(true)}>
        {props.label}
      </button>
    );
  }
  return (
    <span class="confirm">
      <button
        type="button"
        class="danger solid"
        onClick={() => {
          setAsking(false);
          props.onConfirm();
        }}
      >
        {props.confirm}
      </button>
      <button type="button" onClick={() => setAsking(false)}>
        Cancel
      </button>
    </span>
  );
}
