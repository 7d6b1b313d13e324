"""Screenshots of every dashboard page for the docs: `make ui-screenshots` (writes docs/ui/*.png).

A real `ensemble serve` with the tests' traffic (tests/support/dashboard.py: requests through the
mock provider and the fake upstream), seen in headless Chromium. Real traffic can only be made now,
so a day of earlier history is written into the request log first (and into the daily usage table,
so the two agree) to give the charts something to draw; everything else on the pages is live.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.browser import chromium  # noqa: E402
from support.dashboard import ADMIN_KEY, DashboardStack  # noqa: E402

# model, provider, endpoint, key name, requests per hour at the busiest, input/output tokens, USD per 1M in/out
TRAFFIC = [
    ("mock-1", "mock", "mock-local", "checkout-service", 40, (900, 120), (1.0, 2.0)),
    ("gpt-4o", "openai", "openai-primary", "nightly-batch", 18, (2400, 400), (2.5, 10.0)),
]


def backfill(db_path: Path, key_ids: dict[str, str], hours: int = 23) -> None:
    """Hourly traffic over the day before now: busier in the afternoon, a few errors."""
    rand = random.Random(20)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    logs: list[tuple[object, ...]] = []
    usage: dict[tuple[str, str, str], list[int]] = {}
    for h in range(hours, 0, -1):
        hour = now - timedelta(hours=h)
        load = 0.35 + 0.65 * max(0.0, 1 - abs(hour.hour - 15) / 9)
        for model, provider, endpoint, key, peak, (inp, out), (p_in, p_out) in TRAFFIC:
            for n in range(round(peak * load * rand.uniform(0.7, 1.1))):
                failed = rand.random() < 0.04
                tokens_in = 0 if failed else int(inp * rand.uniform(0.5, 1.5))
                tokens_out = 0 if failed else int(out * rand.uniform(0.3, 1.2))
                cached = int(tokens_in * rand.uniform(0.2, 0.7)) if provider == "openai" else 0
                cost = round((tokens_in - cached) * p_in + cached * p_in / 2 + tokens_out * p_out)
                at = hour + timedelta(seconds=rand.uniform(0, 3599))
                created = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                status = ("error", 502) if failed else ("success", 200)
                request_id = f"req_history{h:02d}{n:03d}{provider[0]}"
                latency = rand.uniform(300, 2500)
                logs.append(
                    (
                        request_id,
                        key_ids[key],
                        model,
                        provider,
                        endpoint,
                        *status,
                        tokens_in,
                        tokens_out,
                        cached,
                        cost,
                        latency,
                        created,
                    )
                )
                row = usage.setdefault((key_ids[key], created[:10], model), [0] * 6)
                for i, v in enumerate((1, int(failed), tokens_in, tokens_out, cached, cost)):
                    row[i] += v
    with sqlite3.connect(db_path) as db:
        db.executemany(
            "INSERT INTO request_log (request_id, key_id, model, provider, endpoint_id, status, http_status, "
            "input_tokens, output_tokens, cached_tokens, cost_micro_dollars, latency_ms, created_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            logs,
        )
        db.executemany(
            "INSERT INTO usage_daily (key_id, day, model, requests, errors, input_tokens, output_tokens, "
            "cached_tokens, cost_micro_dollars) VALUES (?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (key_id, day, model) DO UPDATE SET requests = requests + excluded.requests, "
            "errors = errors + excluded.errors, input_tokens = input_tokens + excluded.input_tokens, "
            "output_tokens = output_tokens + excluded.output_tokens, "
            "cached_tokens = cached_tokens + excluded.cached_tokens, "
            "cost_micro_dollars = cost_micro_dollars + excluded.cost_micro_dollars",
            [(*k, *v) for k, v in usage.items()],
        )


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ensemble-screenshots-") as work:
        stack = DashboardStack(Path(work))
        try:
            seeded = stack.seed()
            backfill(stack.server.dir / "data" / "ensemble.db", {n: k for n, (k, _) in seeded.keys.items()})
            with chromium() as browser:
                page, problems = browser.page()
                page.goto(stack.url + "/ui/")
                page.get_by_label("Admin key").fill("not-the-real-key")  # masked by the password field anyway
                page.screenshot(path=out / "sign-in.png")
                page.get_by_label("Admin key").fill(ADMIN_KEY)
                page.get_by_role("button", name="Sign in").click()
                page.get_by_role("img", name="Spend by model").locator("rect.bar").first.wait_for()
                page.screenshot(path=out / "overview.png", full_page=True)

                page.get_by_role("link", name="Keys").click()
                form = page.get_by_role("form", name="Create a key")
                form.get_by_label("Name", exact=True).fill("support-bot")
                form.get_by_label("Requests per minute").fill("60")
                form.get_by_label("Allowed models").fill("mock-1")
                form.get_by_role("button", name="Create").click()
                secret = page.get_by_label("New API key")
                secret.wait_for()
                page.screenshot(path=out / "keys.png", full_page=True, mask=[secret])

                for name, ready in (
                    ("customers", "tbody tr"),
                    ("logs", "table.logs tbody tr"),
                    ("providers", "meter"),
                ):
                    page.get_by_role("link", name=name.capitalize()).click()
                    page.locator(ready).first.wait_for()
                    page.screenshot(
                        path=out / f"{name}.png", clip={"x": 0, "y": 0, "width": 1360, "height": 900}
                    )
                if problems.all():
                    raise SystemExit("the page reported errors:\n" + "\n".join(problems.all()))
        finally:
            stack.stop()
    for png in sorted(out.glob("*.png")):
        print(f"{png} ({png.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "ui"))
