// Providers: each endpoint's health, utilisation, cool-down and credential; set or delete a stored key.
import { Fragment } from "preact";
import { useState } from "preact/hooks";
import { type ApiError, api, type Credential, type EndpointStatus } from "../api";
import { count, percent, when } from "../format";
import { useLoad } from "../hooks";
import { Badge, ConfirmButton, ErrorNote, healthTone } from "../widgets";

async function statusWithCredentials() {
  const status = await api.status();
  const ids = Object.values(status.providers)
    .filter((p) => p.type !== "mock")
    .flatMap((p) => p.endpoints.map((e) => e.id));
  const views = await Promise.all(ids.map((id) => api.credential(id)));
  return { status, credentials: new Map(views.map((v) => [v.endpoint_id, v])) };
}

function endpointState(e: EndpointStatus): string {
  if (!e.available) return "unavailable";
  if (e.cooling_down) return "cooling down";
  return "healthy";
}

export function ProvidersPage() {
  const data = useLoad(statusWithCredentials, [], 15_000);
  const affinity = data.value?.status.affinity;
  return (
    <>
      <header class="page-head">
        <h1>Providers</h1>
        <div class="controls">
          <button type="button" onClick={data.reload}>
            Refresh
          </button>
        </div>
      </header>
      <ErrorNote error={data.error} />
      {data.value &&
        Object.entries(data.value.status.providers).map(([name, provider]) => (
          <section class="card" key={name} aria-label={`Provider ${name}`}>
            <h2>
              {name} <span class="quiet">{provider.type}</span> <Badge tone={healthTone(provider.health)}>{provider.health}</Badge>
            </h2>
            {provider.note && <p class="quiet">{provider.note}</p>}
            <table>
              <thead>
                <tr>
                  <th>Endpoint</th>
                  <th>State</th>
                  <th>Reachability</th>
                  <th class="num">In flight</th>
                  <th>Utilisation</th>
                  <th class="num">Cool-down</th>
                  <th class="num">RPM / TPM limit</th>
                  <th>Credential</th>
                </tr>
              </thead>
              <tbody>
                {provider.endpoints.map((e) => (
                  <tr key={e.id} data-endpoint-id={e.id}>
                    <td>
                      <code>{e.id}</code>
                      {e.base_url && <div class="quiet clip">{e.base_url}</div>}
                    </td>
                    <td>
                      <Badge tone={healthTone(endpointState(e))}>{endpointState(e)}</Badge>
                    </td>
                    <td class="time">
                      <Badge tone={healthTone(e.reachability.state)}>{e.reachability.state}</Badge>
                      {e.reachability.connect_ms !== undefined && <span class="quiet"> {e.reachability.connect_ms} ms</span>}
                    </td>
                    <td class="num">{count(e.in_flight)}</td>
                    <td>
                      {e.utilisation === null ? (
                        <span class="quiet">not tracked</span>
                      ) : (
                        <span class="meter">
                          <meter min={0} max={1} low={0.7} high={0.9} optimum={0} value={e.utilisation} />
                          {percent(e.utilisation, 1)}
                        </span>
                      )}
                    </td>
                    <td class="num">{e.cooling_down ? `${e.cooldown_remaining_s.toFixed(1)} s` : <span class="quiet">–</span>}</td>
                    <td class="num">
                      {e.rpm_limit ? count(e.rpm_limit) : "–"} / {e.tpm_limit ? count(e.tpm_limit) : "–"}
                    </td>
                    <td>
                      {provider.type === "mock" ? (
                        <span class="quiet">not needed (answers locally)</span>
                      ) : (
                        <CredentialCell view={data.value!.credentials.get(e.id)} onChanged={data.reload} />
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
        ))}
      {affinity && (
        <section class="card">
          <h2>Cache affinity</h2>
          <dl class="facts">
            {Object.entries(affinity).map(([k, v]) => (
              <Fragment key={k}>
                <dt>{k.replace(/_/g, " ")}</dt>
                <dd>{typeof v === "number" ? count(v) : String(v)}</dd>
              </Fragment>
            ))}
          </dl>
          <p class="quiet">Counters of the worker that answered (per process).</p>
        </section>
      )}
    </>
  );
}

function CredentialCell({ view, onChanged }: { view: Credential | undefined; onChanged: () => void }) {
  const [editing, setEditing] = useState(false);
  const [value, setValue] = useState("");
  const [error, setError] = useState<ApiError | undefined>(undefined);
  if (!view) return null;

  async function run(action: () => Promise<unknown>) {
    setError(undefined);
    try {
      await action();
      setEditing(false);
      setValue("");
      onChanged();
    } catch (e) {
      setError(e as ApiError);
    }
  }

  const source = { config: "from the config", stored: "stored", none: "none" }[view.source];
  return (
    <div class="credential">
      <div>
        <Badge tone={view.source === "none" ? "bad" : "good"}>{source}</Badge>
        {view.hint && <code class="hint-value"> {view.hint}</code>}
        {view.stored && view.source === "config" && <span class="quiet"> (a stored key is overridden by the config)</span>}
      </div>
      {view.updated_at && <div class="quiet">stored {when(view.updated_at)}</div>}
      {view.error && <div class="error">{view.error}</div>}
      {editing ? (
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            run(() => api.putCredential(view.endpoint_id, value.trim()));
          }}
        >
          <label>
            API key for {view.endpoint_id}
            <input type="password" autocomplete="off" required value={value} onInput={(e) => setValue(e.currentTarget.value)} />
          </label>
          <button type="submit" class="primary">
            Save
          </button>
          <button type="button" onClick={() => setEditing(false)}>
            Cancel
          </button>
        </form>
      ) : (
        <div class="actions">
          <button type="button" onClick={() => setEditing(true)}>
            {view.stored ? "Replace key" : "Set key"}
          </button>
          {view.stored && (
            <ConfirmButton
              label="Delete stored key"
              confirm="Delete for good"
              onConfirm={() => run(() => api.deleteCredential(view.endpoint_id))}
            />
          )}
        </div>
      )}
      <ErrorNote error={error} />
    </div>
  );
}
