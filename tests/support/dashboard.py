"""A gateway with traffic, for the dashboard's browser tests and its screenshots: the mock provider,
an OpenAI-format provider on the fake upstream, an endpoint whose credential is set through the
admin API, a customer, named keys, and real requests through all of it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from support.ensemble import MOCK_PROVIDER, Ensemble, openai_provider
from support.fake import FakeUpstream

ADMIN_KEY = "adm_" + secrets.token_urlsafe(24)


@dataclass
class Seeded:
    customer_id: str = ""
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (key_id, key)
    requests: int = 0
    errors: int = 0


class DashboardStack:
    def __init__(self, directory: Path, *, admin: bool = True) -> None:
        self.fake = FakeUpstream()
        # Some of every prompt is reported as read from the provider's cache: a cache hit rate to show.
        self.fake.configure("openai", cached_tokens=6, chunks=12)
        providers = [
            MOCK_PROVIDER,
            openai_provider(self.fake.endpoint_url("openai"), models=["gpt-4o"]),
            openai_provider(
                self.fake.endpoint_url("vault"),
                name="vault",
                models=["gpt-vault"],
                endpoints=[{"id": "vault-1"}],  # no api_key: uses the one stored through the admin API
            ),
        ]
        try:
            self.server = Ensemble(
                directory, providers=providers, env={"ENSEMBLE_ADMIN_KEY": ADMIN_KEY} if admin else {}
            )
        except BaseException:
            self.fake.stop()
            raise
        self.url = self.server.url

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def generate(self, key: str, model: str, text: str = "Hello there") -> httpx.Response:
        return httpx.post(
            self.url + "/api/v1/generate",
            json={"model": model, "messages": [{"role": "user", "content": text}]},
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )

    def create_key(self, name: str, **fields: Any) -> tuple[str, str]:
        r = self.admin("POST", "/admin/keys", json={"name": name, **fields})
        assert r.status_code == 201, r.text
        key_id, key = r.json()["key_id"], r.json()["key"]
        self.server.wait_for_key(key)
        return key_id, key

    def seed(self) -> Seeded:
        """A customer, two named keys, and 53 requests (3 of them failed) over two providers."""
        seeded = Seeded()
        r = self.admin("POST", "/admin/customers", json={"name": "Acme Corp", "email": "ops@acme.example"})
        assert r.status_code == 201, r.text
        seeded.customer_id = r.json()["customer_id"]
        seeded.keys["checkout-service"] = self.create_key(
            "checkout-service", customer_id=seeded.customer_id, rate_limit_rpm=600
        )
        seeded.keys["nightly-batch"] = self.create_key("nightly-batch", allowed_models=["gpt-4o"])
        checkout, nightly = seeded.keys["checkout-service"][1], seeded.keys["nightly-batch"][1]
        for i in range(36):
            assert self.generate(checkout, "mock-1", f"Order {i}: where is it?").status_code == 200
        for i in range(14):
            assert self.generate(nightly, "gpt-4o", f"Summarise report {i}").status_code == 200
        # Failures that leave the endpoint usable: the upstream refuses two requests (returned as
        # is) and a client asks for a model it may not use.
        self.fake.enqueue("openai", {"status": 400, "message": "bad request", "count": 2})
        for _ in range(2):
            assert self.generate(nightly, "gpt-4o").status_code == 400
        assert self.generate(nightly, "mock-1").status_code == 403
        seeded.requests, seeded.errors = 53, 3
        return seeded

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.fake.stop()
