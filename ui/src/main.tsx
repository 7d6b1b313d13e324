// The dashboard shell: sign-in, navigation between pages (hash routes), sign-out.
import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, api, gatewayState, onKeyRefused, signIn, signOut } from "./api";
import { useRoute } from "./hooks";
import { CustomersPage } from "./pages/customers";
import { KeysPage } from "./pages/keys";
import { LogsPage } from "./pages/logs";
import { OverviewPage } from "./pages/overview";
import { ProvidersPage } from "./pages/providers";
import "./styles.css";

const PAGES = [
  { route: "overview", title: "Overview", Page: OverviewPage },
  { route: "keys", title: "Keys", Page: KeysPage },
  { route: "customers", title: "Customers", Page: CustomersPage },
  { route: "logs", title: "Logs", Page: LogsPage },
  { route: "providers", title: "Providers", Page: ProvidersPage },
] as const;

type Phase = "loading" | "disabled" | "signed-out" | "signed-in";

function App() {
  const [phase, setPhase] = useState<Phase>("loading");
  const [version, setVersion] = useState("");
  const [notice, setNotice] = useState("");
  const current = useRef(phase);
  current.current = phase;

  useEffect(() => {
    gatewayState().then(
      (s) => {
        setVersion(s.version);
        setPhase(s.admin_api === "enabled" ? "signed-out" : "disabled");
      },
      () => setPhase("signed-out"),
    );
    // A key refused while signed in (rotated, say); a wrong key at sign-in is the form's to report.
    return onKeyRefused((message) => {
      if (current.current !== "signed-in") return;
      setNotice(`Signed out: the gateway refused the admin key (${message}).`);
      setPhase("signed-out");
    });
  }, []);

  if (phase === "loading") return <main class="center">Loading…</main>;
  if (phase === "disabled") return <Disabled />;
  if (phase === "signed-out") {
    return (
      <SignIn
        version={version}
        notice={notice}
        onSignedIn={() => {
          setNotice("");
          setPhase("signed-in");
        }}
        onDisabled={() => setPhase("disabled")}
      />
    );
  }
  return (
    <Shell
      version={version}
      onSignOut={() => {
        signOut();
        setNotice("Signed out.");
        setPhase("signed-out");
      }}
    />
  );
}

function Disabled() {
  return (
    <main class="center">
      <section class="card narrow" role="alert">
        <h1>The admin API is disabled</h1>
        <p>
          This gateway was started without <code>ENSEMBLE_ADMIN_KEY</code>, so its admin API answers 503 and there is
          nothing to sign in to. Set the variable (a long random secret) and restart the gateway to use the dashboard.
        </p>
      </section>
    </main>
  );
}

function SignIn(props: { version: string; notice: string; onSignedIn: () => void; onDisabled: () => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event: Event) {
    event.preventDefault();
    setBusy(true);
    setError("");
    signIn(key.trim());
    try {
      await api.status();
      setKey("");
      props.onSignedIn();
    } catch (e) {
      signOut();
      if (e instanceof ApiError && e.code === "admin_disabled") props.onDisabled();
      else if (e instanceof ApiError && e.status === 401) setError(`That admin key was refused: ${e.message}.`);
      else setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="center">
      <form class="card narrow" onSubmit={submit}>
        <h1>Ensemble</h1>
        <p class="quiet">Admin dashboard{props.version ? ` · gateway ${props.version}` : ""}</p>
        {props.notice && <p class="notice">{props.notice}</p>}
        <label>
          Admin key
          <input
            type="password"
            autocomplete="off"
            spellcheck={false}
            required
            value={key}
            onInput={(e) => setKey(e.currentTarget.value)}
          />
        </label>
        <p class="hint">
          The value of <code>ENSEMBLE_ADMIN_KEY</code>. It stays in this tab's memory: reloading or closing the tab forgets
          it.
        </p>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy || key.trim() === ""}>
          Sign in
        </button>
      </form>
    </main>
  );
}

function Shell(props: { version: string; onSignOut: () => void }) {
  const route = useRoute("overview");
  const page = PAGES.find((p) => p.route === route) ?? PAGES[0];
  useEffect(() => {
    document.title = `${page.title} · Ensemble`;
  }, [page]);
  return (
    <div class="shell">
      <nav aria-label="Pages">
        <div class="brand">Ensemble</div>
        <ul>
          {PAGES.map((p) => (
            <li key={p.route}>
              <a href={`#/${p.route}`} aria-current={p === page ? "page" : undefined}>
                {p.title}
              </a>
            </li>
          ))}
        </ul>
        <div class="foot">
          <span class="quiet">{props.version}</span>
          <button type="button" onClick={props.onSignOut}>
            Sign out
          </button>
        </div>
      </nav>
      <main>
        <page.Page />
      </main>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
