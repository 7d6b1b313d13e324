"""Every client route of the table refuses a request without a valid key before doing anything else,
in its own API's error shape; open routes answer without one (see docs/security.md).

The route list comes from the table the dispatcher enforces, so a new route is covered unlisted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ensemble.server import app
from ensemble.server.routes import client_family
from support.ensemble import MOCK_PROVIDER, Ensemble

pytestmark = pytest.mark.integration

SAMPLE_PARAMS = {"request_id": "req_0", "batch_id": "batch_0", "model": "mock-1", "response_id": "resp_0"}
CLIENT_ROUTES = [r for r in app.ROUTES if r.auth == "client"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    srv = Ensemble(Path(tmp_path_factory.mktemp("route-auth")), providers=[MOCK_PROVIDER])
    yield srv
    srv.stop()


def refusal(family: str, r: httpx.Response) -> Any:
    """The error's type in the shape of `family`, asserting the shape."""
    body = r.json()
    if family == "anthropic":
        assert body["type"] == "error"
        return body["error"]["type"]
    if family == "gemini":
        assert body["error"]["code"] == 401
        return body["error"]["status"]
    return body["error"]["type"]


EXPECTED = {
    "native": "authentication",
    "openai": "authentication_error",
    "anthropic": "authentication_error",
    "gemini": "UNAUTHENTICATED",
}


@pytest.mark.parametrize("route", CLIENT_ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_client_routes_refuse_missing_and_wrong_keys(server: Ensemble, route: Any) -> None:
    url = server.url + route.path.format(**SAMPLE_PARAMS)
    body = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({}, {"authorization": "Bearer ens_not_a_key"}, {"x-api-key": "ens_not_a_key"}):
        r = httpx.request(route.method, url, headers=headers, json=body, timeout=10)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        # A path several SDKs share (/v1/models) answers in the shape of the one calling.
        family = client_family(headers) if route.shared else route.family
        assert refusal(family, r) == EXPECTED[family], r.text


@pytest.mark.parametrize("route", CLIENT_ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_client_routes_let_a_valid_key_through(server: Ensemble, route: Any) -> None:
    url = server.url + route.path.format(**SAMPLE_PARAMS)
    r = httpx.request(
        route.method, url, headers={"authorization": f"Bearer {server.key}"}, json={}, timeout=10
    )
    assert r.status_code != 401, r.text  # past the check: 200, or the handler's own 4xx for `{}`


def test_gemini_routes_also_take_the_key_from_the_query(server: Ensemble) -> None:
    url = f"{server.url}/v1beta/models/mock-1:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert httpx.post(url, params={"key": server.key}, json=body, timeout=10).status_code == 200
    assert httpx.post(url, params={"key": "ens_wrong"}, json=body, timeout=10).status_code == 401
    # Only Gemini's SDKs and REST examples put it there: elsewhere a query key is not a credential.
    native = httpx.post(f"{server.url}/api/v1/generate", params={"key": server.key}, json={}, timeout=10)
    assert native.status_code == 401


@pytest.mark.parametrize("path", ["/health", "/api/v1/health", "/ui/state"])
def test_open_routes_need_no_key(server: Ensemble, path: str) -> None:
    assert httpx.get(server.url + path, timeout=10).status_code == 200
