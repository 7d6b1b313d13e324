"""The admin dashboard (docs/dashboard.md) in headless Chromium, against a real `ensemble serve` with
traffic through the mock provider and the fake upstream. Every test fails on any console error or
uncaught page error it did not expect, on an admin key in any URL the page requested, and on
anything the page left in cookies or Web Storage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from support.browser import Browser, Problems, chromium
from support.dashboard import ADMIN_KEY, DashboardStack, Seeded
from support.ensemble import Ensemble

pytestmark = pytest.mark.integration


@dataclass
class Tab:
    page: Page
    problems: Problems
    url: str
    requested: list[str] = field(default_factory=list)
    expected_console: list[tuple[str, str]] = field(default_factory=list)  # (text pattern, URL suffix)

    def open(self, route: str = "") -> None:
        self.page.goto(self.url + "/ui/" + (f"#/{route}" if route else ""))

    def sign_in(self, key: str = ADMIN_KEY) -> None:
        self.open()
        self.page.get_by_label("Admin key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()

    def go(self, title: str) -> None:
        self.page.get_by_role("navigation").get_by_role("link", name=title).click()
        expect(self.page.get_by_role("heading", level=1)).to_have_text(title)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DashboardStack, Seeded]]:
    stack = DashboardStack(Path(tmp_path_factory.mktemp("dashboard")))
    try:
        yield stack, stack.seed()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@contextmanager
def open_tab(browser: Browser, url: str) -> Iterator[Tab]:
    page, problems = browser.page()
    tab = Tab(page, problems, url)
    page.on("request", lambda request: tab.requested.append(request.url))
    try:
        yield tab
        # Nothing about the key outlives the tab, and it never travelled in a URL.
        assert page.evaluate("localStorage.length + sessionStorage.length") == 0
        assert page.evaluate("document.cookie") == ""
        assert page.context.cookies() == []
        assert not [u for u in tab.requested if ADMIN_KEY in u]
        unexpected = [
            (text, source)
            for text, source in problems.console
            if not any(re.search(p, text) and source.endswith(s) for p, s in tab.expected_console)
        ]
        assert not unexpected and not problems.page, problems.all()
        for pattern, suffix in tab.expected_console:  # and the errors it expected did happen
            assert any(re.search(pattern, t) and s.endswith(suffix) for t, s in problems.console), pattern
    finally:
        page.close()


@pytest.fixture
def tab(browser: Browser, stack: tuple[DashboardStack, Seeded]) -> Iterator[Tab]:
    with open_tab(browser, stack[0].url) as opened:
        yield opened


def test_sign_in_shows_the_charts_and_the_seeded_keys(tab: Tab, stack: tuple[DashboardStack, Seeded]) -> None:
    server, seeded = stack
    totals = server.admin("GET", "/admin/usage/series").json()["totals"]
    tab.sign_in()
    page = tab.page
    chart = page.get_by_role("img", name="Requests by model")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar").first).to_be_visible()
    assert chart.locator("rect.bar").count() >= 2  # this hour's bar: a segment per model
    legend = page.locator("figure.chart", has=chart).locator(".legend")
    expect(legend).to_contain_text("mock-1")
    expect(legend).to_contain_text("gpt-4o")
    for title in ("Errors by model", "Tokens by kind", "Spend by model"):
        expect(page.get_by_role("img", name=title).locator("rect.bar").first).to_be_visible()

    def stat(label: str, part: str = ".value") -> Locator:
        return page.get_by_role("region", name="Totals").get_by_role("group", name=label).locator(part)

    expect(stat("Requests")).to_have_text(str(totals["requests"]))
    expect(stat("Errors")).to_have_text(str(seeded.errors))
    expect(stat("Spend", ".note")).to_have_text(f"${totals['cost']} exactly")
    expect(stat("Cache hit rate")).to_have_text(
        f"{100 * totals['cached_tokens'] / totals['input_tokens']:.1f}%"
    )
    expect(stat("Open streams")).to_have_text("0")

    page.get_by_label("Group by").select_option("provider")
    by_provider = page.get_by_role("img", name="Requests by provider")
    expect(by_provider).to_be_visible()
    expect(page.locator("figure.chart", has=by_provider).locator(".legend")).to_contain_text("openai")

    tab.go("Keys")
    for name, (key_id, _) in seeded.keys.items():
        row = page.locator(f'tr[data-key-id="{key_id}"]')
        expect(row).to_contain_text(name)
        expect(row).to_contain_text("active")
    expect(page.locator(f'tr[data-key-id="{seeded.keys["checkout-service"][0]}"]')).to_contain_text(
        "Acme Corp"
    )


def test_create_a_key_through_the_form(tab: Tab, stack: tuple[DashboardStack, Seeded]) -> None:
    server, seeded = stack
    tab.sign_in()
    tab.go("Keys")
    page = tab.page
    form = page.get_by_role("form", name="Create a key")
    form.get_by_label("Name", exact=True).fill("made-in-the-browser")
    form.get_by_label("Customer").select_option(seeded.customer_id)
    form.get_by_label("Requests per minute").fill("120")
    form.get_by_label("Allowed models").fill("mock-1, gpt-4o")
    form.get_by_label("Budget (USD)").fill("12.5")
    form.get_by_label("Budget period").select_option("week")
    form.get_by_role("button", name="Create").click()

    panel = page.get_by_role("status", name="New key")
    field = panel.get_by_label("New API key")
    expect(field).to_have_value(re.compile(r"^ens_[A-Za-z0-9_-]{32,}$"))
    key = field.input_value()
    panel.get_by_role("button", name="Copy").click()
    expect(panel).to_contain_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == key

    # The admin API has it, as the form described it, and the key works.
    record = next(
        k for k in server.admin("GET", "/admin/keys").json()["keys"] if k["name"] == "made-in-the-browser"
    )
    assert record["customer_id"] == seeded.customer_id
    assert record["rate_limit_rpm"] == 120 and record["rate_limit_tpm"] == 0
    assert record["allowed_models"] == ["mock-1", "gpt-4o"]
    assert record["budget_usd"] == "12.5" and record["budget_period"] == "week"
    assert key.startswith(record["prefix"])
    server.server.wait_for_key(key)
    assert server.generate(key, "mock-1").status_code == 200
    row = page.locator(f'tr[data-key-id="{record["key_id"]}"]')
    expect(row).to_contain_text("made-in-the-browser")
    expect(row).to_contain_text("$12.5 / week")

    # Shown once: gone from the page when dismissed, and in no list.
    panel.get_by_role("button", name="Done").click()
    expect(panel).to_have_count(0)
    assert key not in page.content()
    assert key not in server.admin("GET", "/admin/keys").text


def test_an_invalid_key_form_shows_the_api_error(tab: Tab) -> None:
    tab.sign_in()
    tab.go("Keys")
    form = tab.page.get_by_role("form", name="Create a key")
    form.get_by_label("Name", exact=True).fill("too-fast")
    form.get_by_label("Requests per minute").fill("2000000000")  # over the API's maximum
    form.get_by_role("button", name="Create").click()
    expect(form.get_by_role("alert")).to_contain_text("rate_limit_rpm")
    tab.expected_console.append((r"status of 400", "/admin/keys"))


def test_disable_enable_and_revoke_a_key(tab: Tab, stack: tuple[DashboardStack, Seeded]) -> None:
    server, _ = stack
    key_id, key = server.create_key("to-be-revoked")
    tab.sign_in()
    tab.go("Keys")
    row = tab.page.locator(f'tr[data-key-id="{key_id}"]')

    row.get_by_role("button", name="Disable").click()
    expect(row).to_contain_text("disabled")
    assert server.admin("GET", f"/admin/keys/{key_id}/config").json()["status"] == "disabled"
    row.get_by_role("button", name="Enable").click()
    expect(row).to_contain_text("active")

    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Cancel").click()  # asking again, and taking no for an answer
    assert server.admin("GET", f"/admin/keys/{key_id}/config").json()["status"] == "active"
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Revoke for good").click()
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)  # nothing left to do with a revoked key
    assert server.admin("GET", f"/admin/keys/{key_id}/config").json()["status"] == "revoked"
    r = httpx.get(server.url + "/api/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 401


def test_logs_filters_and_pages(tab: Tab, stack: tuple[DashboardStack, Seeded]) -> None:
    server, seeded = stack
    tab.sign_in()
    tab.go("Logs")
    page = tab.page
    rows = page.locator("table.logs tbody tr")
    total = server.admin("GET", "/admin/logs").json()["total"]
    expect(page.locator(".pager")).to_contain_text(f"1\u201350 of {total} requests")
    expect(rows).to_have_count(50)
    newest = server.admin("GET", "/admin/logs", params={"limit": 1}).json()["logs"][0]
    expect(rows.first).to_have_attribute("data-request-id", newest["request_id"])

    page.get_by_role("button", name="Next").click()
    expect(page.locator(".pager")).to_contain_text(f"51\u2013{total} of {total}")
    expect(rows).to_have_count(total - 50)

    filters = page.get_by_role("form", name="Filters")
    filters.get_by_label("Status").select_option("error")
    filters.get_by_role("button", name="Filter").click()
    expect(page.locator(".pager")).to_contain_text(f"1\u2013{seeded.errors} of {seeded.errors}")
    expected = server.admin("GET", "/admin/logs", params={"status": "error"}).json()["logs"]
    expect(rows).to_have_count(len(expected))
    for row, entry in zip(rows.all(), expected, strict=True):
        expect(row).to_have_attribute("data-request-id", entry["request_id"])

    filters.get_by_label("Status").select_option("")
    filters.get_by_label("Model").fill("gpt-4o")
    filters.get_by_label("Key id").fill(seeded.keys["nightly-batch"][0])
    filters.get_by_role("button", name="Filter").click()
    gpt = server.admin(
        "GET", "/admin/logs", params={"model": "gpt-4o", "key_id": seeded.keys["nightly-batch"][0]}
    ).json()
    expect(page.locator(".pager")).to_contain_text(f"of {gpt['total']} requests")
    expect(rows).to_have_count(gpt["total"])
    for cell in rows.locator("td:nth-child(4)").all():
        expect(cell).to_have_text("gpt-4o")

    filters.get_by_label("Since").fill("2999-01-01T00:00:00")  # nothing logged after then
    filters.get_by_role("button", name="Filter").click()
    expect(page.locator(".pager")).to_contain_text("No requests")
    filters.get_by_role("button", name="Clear").click()
    expect(page.locator(".pager")).to_contain_text(f"of {total} requests")


def test_customers_list_and_create(tab: Tab, stack: tuple[DashboardStack, Seeded]) -> None:
    server, _ = stack
    tab.sign_in()
    tab.go("Customers")
    page = tab.page
    expect(page.locator("tbody")).to_contain_text("Acme Corp")
    form = page.get_by_role("form", name="Create a customer")
    form.get_by_label("Name").fill("Globex")
    form.get_by_label("Email").fill("billing@globex.example")
    form.get_by_label("Budget (USD)").fill("300")
    form.get_by_label("Budget period").select_option("month")
    form.get_by_role("button", name="Create").click()
    expect(page.locator("tbody")).to_contain_text("billing@globex.example")
    expect(page.locator("tbody")).to_contain_text("$300 / month")
    customers = server.admin("GET", "/admin/customers").json()["customers"]
    assert any(
        c["name"] == "Globex" and c["email"] == "billing@globex.example" and c["budget_usd"] == "300"
        for c in customers
    )


def test_providers_show_endpoints_and_manage_a_stored_credential(
    tab: Tab, stack: tuple[DashboardStack, Seeded]
) -> None:
    server, _ = stack
    tab.sign_in()
    tab.go("Providers")
    page = tab.page
    primary = page.locator('tr[data-endpoint-id="openai-primary"]')
    expect(primary).to_contain_text("healthy")
    expect(primary).to_contain_text("reachable")
    expect(primary).to_contain_text("from the config")
    expect(primary.locator("meter")).to_have_count(1)
    vault = page.locator('tr[data-endpoint-id="vault-1"]')
    expect(vault).to_contain_text("unavailable")
    expect(vault).to_contain_text("none")

    secret = "sk-vault-dashboard-test-9876"
    vault.get_by_role("button", name="Set key").click()
    vault.get_by_label("API key for vault-1").fill(secret)
    vault.get_by_role("button", name="Save").click()
    expect(vault).to_contain_text("stored")
    expect(vault.locator("code.hint-value")).to_have_text(re.compile(r"sk-v.*9876"))
    expect(vault).to_contain_text("healthy")
    assert secret not in page.content()
    view = server.admin("GET", "/admin/endpoints/vault-1/credential").json()
    assert view["stored"] is True and view["source"] == "stored"

    vault.get_by_role("button", name="Delete stored key").click()
    vault.get_by_role("button", name="Delete for good").click()
    expect(vault.get_by_role("button", name="Set key")).to_be_visible()
    expect(vault).to_contain_text("none")
    assert server.admin("GET", "/admin/endpoints/vault-1/credential").json()["stored"] is False


def test_a_wrong_admin_key_shows_an_error(tab: Tab) -> None:
    tab.sign_in(ADMIN_KEY + "-wrong")
    alert = tab.page.get_by_role("alert")
    expect(alert).to_contain_text("That admin key was refused")
    expect(alert).to_contain_text("invalid admin key")
    expect(tab.page.get_by_label("Admin key")).to_be_visible()
    expect(tab.page.get_by_role("navigation")).to_have_count(0)
    # The browser logs the refused call itself; that one is expected, nothing else is.
    tab.expected_console.append((r"status of 401", "/admin/status"))


def test_the_key_lives_in_the_tab_only(
    tab: Tab, browser: Browser, stack: tuple[DashboardStack, Seeded]
) -> None:
    tab.sign_in()
    expect(tab.page.get_by_role("navigation")).to_be_visible()
    # Every admin call carried the key in the Authorization header.
    with tab.page.expect_request(lambda r: r.url.endswith("/admin/status")) as request:
        tab.page.get_by_role("button", name="Refresh").click()
    assert request.value.all_headers()["authorization"] == f"Bearer {ADMIN_KEY}"
    tab.page.reload()
    expect(tab.page.get_by_label("Admin key")).to_be_visible()  # forgotten
    with open_tab(browser, stack[0].url) as other:  # another tab never had it
        other.open("keys")
        expect(other.page.get_by_label("Admin key")).to_be_visible()
    tab.sign_in()
    tab.page.get_by_role("button", name="Sign out").click()
    expect(tab.page.get_by_label("Admin key")).to_be_visible()


def test_with_the_admin_api_disabled_the_page_says_so(browser: Browser, tmp_path: Path) -> None:
    server = Ensemble(tmp_path, key=False)  # no ENSEMBLE_ADMIN_KEY
    try:
        with open_tab(browser, server.url) as tab:
            tab.open()
            alert = tab.page.get_by_role("alert")
            expect(alert).to_contain_text("The admin API is disabled")
            expect(alert).to_contain_text("ENSEMBLE_ADMIN_KEY")
            expect(tab.page.get_by_label("Admin key")).to_have_count(0)
    finally:
        server.stop()
