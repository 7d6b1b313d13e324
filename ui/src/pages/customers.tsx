// Customers: the accounts keys belong to (a key's customer is charged with its requests, and its
// budget caps what all its keys spend together).
import { useState } from "preact/hooks";
import { type ApiError, api, type BudgetPeriod, PERIODS } from "../api";
import { when } from "../format";
import { useLoad } from "../hooks";
import { ErrorNote, Pager } from "../widgets";

const PAGE = 50;

export function CustomersPage() {
  const [offset, setOffset] = useState(0);
  const customers = useLoad(() => api.customers(PAGE, offset), [offset]);
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [budget, setBudget] = useState("");
  const [period, setPeriod] = useState<BudgetPeriod>("month");
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const [created, setCreated] = useState("");

  async function submit(event: Event) {
    event.preventDefault();
    setError(undefined);
    try {
      const fields = { name: name.trim(), email: email.trim(), budget_period: period };
      const customer = await api.createCustomer(budget.trim() ? { ...fields, budget_usd: budget.trim() } : fields);
      setCreated(`Created ${customer.name} (${customer.customer_id}).`);
      setName("");
      setEmail("");
      setBudget("");
      customers.reload();
    } catch (e) {
      setError(e as ApiError);
    }
  }

  return (
    <>
      <header class="page-head">
        <h1>Customers</h1>
      </header>
      <form class="card" onSubmit={submit} aria-label="Create a customer">
        <h2>Create a customer</h2>
        <div class="fields">
          <label>
            Name
            <input required maxLength={200} value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </label>
          <label>
            Email
            <input type="email" maxLength={320} value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
          </label>
          <label>
            Budget (USD)
            <input
              type="text"
              inputMode="decimal"
              pattern="[0-9]+(\.[0-9]{1,6})?"
              maxLength={40}
              value={budget}
              onInput={(e) => setBudget(e.currentTarget.value)}
            />
            <span class="hint">what all its keys may spend per period; empty: none</span>
          </label>
          <label>
            Budget period
            <select value={period} onChange={(e) => setPeriod(e.currentTarget.value as BudgetPeriod)}>
              {PERIODS.map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
          </label>
        </div>
        <ErrorNote error={error} />
        {created && <p class="notice">{created}</p>}
        <button type="submit" class="primary">
          Create
        </button>
      </form>
      <section class="card">
        <h2>All customers</h2>
        <ErrorNote error={customers.error} />
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Customer id</th>
              <th>Email</th>
              <th class="num">Budget</th>
              <th class="num">Spent</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {(customers.value?.customers ?? []).map((c) => (
              <tr key={c.customer_id}>
                <td>{c.name}</td>
                <td>
                  <code>{c.customer_id}</code>
                </td>
                <td>{c.email || <span class="quiet">–</span>}</td>
                <td class="num">
                  {c.budget_usd !== null ? `$${c.budget_usd} / ${c.budget_period}` : <span class="quiet">none</span>}
                </td>
                <td class="num" title={c.budget_resets_at ? `resets ${c.budget_resets_at}` : "never resets"}>
                  ${c.spent_usd}
                </td>
                <td class="time">{when(c.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {customers.value && (
          <Pager offset={offset} limit={PAGE} total={customers.value.total} onOffset={setOffset} noun="customers" />
        )}
      </section>
    </>
  );
}
