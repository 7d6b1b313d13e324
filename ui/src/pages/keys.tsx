// Keys: create one (shown once, with a copy button), list them, disable, enable, revoke.
import { useRef, useState } from "preact/hooks";
import { type ApiError, api, type KeyFields, type KeyRecord, type NewKey, PERIODS } from "../api";
import { count, when } from "../format";
import { useLoad } from "../hooks";
import { Badge, ConfirmButton, ErrorNote, healthTone, Pager } from "../widgets";

const PAGE = 50;

// The create form, field by field; `toBody` passes every field that has a value. A budget is a
// decimal string of dollars (the admin API's `budget_usd`), reset every `budget_period` (UTC).
type FieldKind = "text" | "customer" | "limit" | "models" | "usd" | "period";
const FIELDS: { name: keyof KeyFields; label: string; kind: FieldKind; hint?: string }[] = [
  { name: "name", label: "Name", kind: "text" },
  { name: "customer_id", label: "Customer", kind: "customer" },
  { name: "rate_limit_rpm", label: "Requests per minute", kind: "limit", hint: "empty or 0: the gateway's default" },
  { name: "rate_limit_tpm", label: "Tokens per minute", kind: "limit", hint: "empty or 0: the gateway's default" },
  { name: "allowed_models", label: "Allowed models", kind: "models", hint: "comma-separated; empty: every model" },
  { name: "budget_usd", label: "Budget (USD)", kind: "usd", hint: "spend ceiling per period; empty: none" },
  { name: "budget_period", label: "Budget period", kind: "period" },
];

type Draft = Record<keyof KeyFields, string>;
const EMPTY: Draft = {
  name: "",
  customer_id: "",
  rate_limit_rpm: "",
  rate_limit_tpm: "",
  allowed_models: "",
  budget_usd: "",
  budget_period: "month",
};

function toBody(draft: Draft): KeyFields {
  const body: KeyFields = { name: draft.name.trim() };
  for (const field of FIELDS) {
    const raw = draft[field.name].trim();
    if (raw === "" || field.name === "name") continue;
    if (field.kind === "limit") Object.assign(body, { [field.name]: Number(raw) });
    else if (field.kind === "models") Object.assign(body, { [field.name]: raw.split(",").map((m) => m.trim()).filter(Boolean) });
    else Object.assign(body, { [field.name]: raw });
  }
  return body;
}

export function KeysPage() {
  const [offset, setOffset] = useState(0);
  const keys = useLoad(() => api.keys(PAGE, offset), [offset]);
  const customers = useLoad(() => api.customers(1000, 0), []);
  const [created, setCreated] = useState<(NewKey & { name: string }) | null>(null);
  const [actionError, setActionError] = useState<ApiError | undefined>(undefined);
  const customerNames = new Map((customers.value?.customers ?? []).map((c) => [c.customer_id, c.name]));

  async function act(action: () => Promise<unknown>) {
    setActionError(undefined);
    try {
      await action();
    } catch (e) {
      setActionError(e as ApiError);
    }
    keys.reload();
  }

  return (
    <>
      <header class="page-head">
        <h1>Keys</h1>
      </header>
      <CreateKey
        customers={customers.value?.customers ?? []}
        onCreated={(key) => {
          setCreated(key);
          keys.reload();
        }}
      />
      {created && <NewKeyPanel created={created} onDone={() => setCreated(null)} />}
      <section class="card">
        <h2>All keys</h2>
        <ErrorNote error={keys.error ?? actionError} />
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Key id</th>
              <th>Prefix</th>
              <th>Customer</th>
              <th>Status</th>
              <th class="num">RPM</th>
              <th class="num">TPM</th>
              <th>Models</th>
              <th class="num">Budget</th>
              <th class="num">Spent</th>
              <th>Created</th>
              <th>Actions</th>
            </tr>
          </thead>
          <tbody>
            {(keys.value?.keys ?? []).map((k) => (
              <KeyRow key={k.key_id} record={k} customer={customerNames.get(k.customer_id) ?? k.customer_id} act={act} />
            ))}
          </tbody>
        </table>
        {keys.value && <Pager offset={offset} limit={PAGE} total={keys.value.total} onOffset={setOffset} noun="keys" />}
      </section>
    </>
  );
}

function KeyRow({ record: k, customer, act }: { record: KeyRecord; customer: string; act: (a: () => Promise<unknown>) => void }) {
  return (
    <tr data-key-id={k.key_id}>
      <td>{k.name}</td>
      <td>
        <code>{k.key_id}</code>
      </td>
      <td>
        <code>{k.prefix}…</code>
      </td>
      <td>{customer || <span class="quiet">–</span>}</td>
      <td>
        <Badge tone={healthTone(k.status)}>{k.status}</Badge>
      </td>
      <td class="num">{k.rate_limit_rpm ? count(k.rate_limit_rpm) : <span class="quiet">default</span>}</td>
      <td class="num">{k.rate_limit_tpm ? count(k.rate_limit_tpm) : <span class="quiet">default</span>}</td>
      <td>{k.allowed_models.length ? k.allowed_models.join(", ") : <span class="quiet">all</span>}</td>
      <td class="num">
        {k.budget_usd !== null ? `$${k.budget_usd} / ${k.budget_period}` : <span class="quiet">none</span>}
      </td>
      <td class="num" title={k.budget_resets_at ? `resets ${k.budget_resets_at}` : "never resets"}>
        ${k.spent_usd}
      </td>
      <td class="time">{when(k.created_at)}</td>
      <td class="row-actions">
        {k.status === "active" && (
          <button type="button" onClick={() => act(() => api.setKeyStatus(k.key_id, "disabled"))}>
            Disable
          </button>
        )}
        {k.status === "disabled" && (
          <button type="button" onClick={() => act(() => api.setKeyStatus(k.key_id, "active"))}>
            Enable
          </button>
        )}
        {k.status !== "revoked" && (
          <ConfirmButton label="Revoke" confirm="Revoke for good" onConfirm={() => act(() => api.revokeKey(k.key_id))} />
        )}
      </td>
    </tr>
  );
}

function CreateKey(props: { customers: { customer_id: string; name: string }[]; onCreated: (k: NewKey & { name: string }) => void }) {
  const [draft, setDraft] = useState<Draft>(EMPTY);
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const set = (name: keyof KeyFields, value: string) => setDraft((d) => ({ ...d, [name]: value }));

  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const body = toBody(draft);
      const created = await api.createKey(body);
      props.onCreated({ ...created, name: body.name });
      setDraft(EMPTY);
    } catch (e) {
      setError(e as ApiError);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="card" onSubmit={submit} aria-label="Create a key">
      <h2>Create a key</h2>
      <div class="fields">
        {FIELDS.map((f) => (
          <label key={f.name}>
            {f.label}
            {f.kind === "customer" ? (
              <select value={draft[f.name]} onChange={(e) => set(f.name, e.currentTarget.value)}>
                <option value="">(none)</option>
                {props.customers.map((c) => (
                  <option key={c.customer_id} value={c.customer_id}>
                    {c.name} ({c.customer_id})
                  </option>
                ))}
              </select>
            ) : f.kind === "period" ? (
              <select value={draft[f.name]} onChange={(e) => set(f.name, e.currentTarget.value)}>
                {PERIODS.map((p) => (
                  <option key={p} value={p}>
                    {p}
                  </option>
                ))}
              </select>
            ) : f.kind === "usd" ? (
              <input
                type="text"
                inputMode="decimal"
                pattern="[0-9]+(\.[0-9]{1,6})?"
                maxLength={40}
                value={draft[f.name]}
                onInput={(e) => set(f.name, e.currentTarget.value)}
              />
            ) : f.kind === "limit" ? (
              <input
                type="number"
                min={0}
                step={1}
                value={draft[f.name]}
                onInput={(e) => set(f.name, e.currentTarget.value)}
              />
            ) : (
              <input
                type="text"
                required={f.name === "name"}
                maxLength={f.kind === "models" ? 4000 : 200}
                value={draft[f.name]}
                onInput={(e) => set(f.name, e.currentTarget.value)}
              />
            )}
            {f.hint && <span class="hint">{f.hint}</span>}
          </label>
        ))}
      </div>
      <ErrorNote error={error} />
      <button type="submit" class="primary" disabled={busy}>
        Create
      </button>
    </form>
  );
}

function NewKeyPanel({ created, onDone }: { created: NewKey & { name: string }; onDone: () => void }) {
  const field = useRef<HTMLInputElement>(null);
  const [copied, setCopied] = useState("");

  async function copy() {
    try {
      await navigator.clipboard.writeText(created.key);
      setCopied("Copied.");
    } catch {
      // No clipboard API (a plain-http origin other than localhost): select it for Ctrl+C instead.
      field.current?.select();
      setCopied("Selected: press Ctrl+C (or ⌘C) to copy.");
    }
  }

  return (
    <section class="card new-key" role="status" aria-label="New key">
      <h2>New key “{created.name}”</h2>
      <p>
        This is the only time the key is shown: the gateway keeps only its digest. Copy it now and give it to the client.
      </p>
      <div class="secret">
        <input ref={field} readOnly value={created.key} aria-label="New API key" spellcheck={false} />
        <button type="button" class="primary" onClick={copy}>
          Copy
        </button>
        <button type="button" onClick={onDone}>
          Done
        </button>
      </div>
      <p class="quiet">
        {copied || `Key id ${created.key_id}, prefix ${created.prefix}.`}
      </p>
    </section>
  );
}
