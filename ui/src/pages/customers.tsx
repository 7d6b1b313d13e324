// Customers: the accounts keys belong to (a key's customer is charged with its requests).
import { useState } from "preact/hooks";
import { type ApiError, api } from "../api";
import { when } from "../format";
import { useLoad } from "../hooks";
import { ErrorNote, Pager } from "../widgets";

const PAGE = 50;

export function CustomersPage() {
  const [offset, setOffset] = useState(0);
  const customers = useLoad(() => api.customers(PAGE, offset), [offset]);
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const [created, setCreated] = useState("");

  async function submit(event: Event) {
    event.preventDefault();
    setError(undefined);
    try {
      const customer = await api.createCustomer(name.trim(), email.trim());
      setCreated(`Created ${customer.name} (${customer.customer_id}).`);
      setName("");
      setEmail("");
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
