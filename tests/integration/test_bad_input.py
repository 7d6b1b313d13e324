"""Every client mistake gets its 4xx with a message naming the problem — never a 500."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from support.ensemble import Ensemble

pytestmark = pytest.mark.integration

GOOD = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}


def post(
    server: Ensemble,
    body: bytes | dict[str, object],
    path: str = "/api/v1/generate",
    key: str | None = None,
    **headers: str,
) -> httpx.Response:
    h = {
        "authorization": f"Bearer {server.key if key is None else key}",
        "content-type": "application/json",
        **headers,
    }
    if not h["authorization"].removeprefix("Bearer ").strip():
        del h["authorization"]
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx.post(server.url + path, headers=h, timeout=10, **kw)  # type: ignore[arg-type]


def error(r: httpx.Response, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["type"] == kind, body
    assert body["request_id"] == r.headers["x-request-id"]
    return str(body["message"])


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"model": "mock-1", "messages": [', "malformed JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"model": "mock-1", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "UTF-8"),
    ],
)
def test_malformed_bodies(mock_gateway: Ensemble, body: bytes, needle: str) -> None:
    assert needle in error(post(mock_gateway, body), 400, "invalid_request")


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"stream": "yes"}, "stream"),
        ({"tools": [{"description": "no name"}]}, "tools[0].name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"max_tokens": 10**12}, "max_tokens"),
        ({"surprise": 1}, "surprise"),
        ({"maxTokens": 1, "max_tokens": 2}, "max_tokens"),
    ],
)
def test_wrong_field_types_name_the_field(
    mock_gateway: Ensemble, patch: dict[str, object], field: str
) -> None:
    message = error(post(mock_gateway, {**GOOD, **patch}), 400, "invalid_request")
    assert field in message, message


def test_missing_model_and_messages(mock_gateway: Ensemble) -> None:
    assert "model" in error(post(mock_gateway, {"messages": GOOD["messages"]}), 400, "invalid_request")
    assert "messages" in error(post(mock_gateway, {"model": "mock-1"}), 400, "invalid_request")


def test_unknown_model(mock_gateway: Ensemble) -> None:
    assert "gpt-9" in error(post(mock_gateway, {**GOOD, "model": "gpt-9"}), 404, "not_found")


def test_missing_and_invalid_keys(mock_gateway: Ensemble) -> None:
    assert "missing API key" in error(post(mock_gateway, GOOD, key=""), 401, "authentication")
    assert "invalid API key" in error(
        post(mock_gateway, GOOD, key="ens_not_a_real_key_at_all_000000000"), 401, "authentication"
    )
    r = httpx.post(mock_gateway.url + "/api/v1/generate", json=GOOD, headers={"authorization": "Basic abc"})
    error(r, 401, "authentication")


def test_revoked_key_and_model_not_allowed(mock_gateway: Ensemble) -> None:
    limited = mock_gateway.create_key("limited", "--models", "some-other-model")
    mock_gateway.wait_for_key(limited)
    assert "mock-1" in error(post(mock_gateway, GOOD, key=limited), 403, "permission")
    listing = mock_gateway.cli("keys", "list", "--json").stdout
    key_id = next(k["key_id"] for k in httpx.Response(200, content=listing).json() if k["name"] == "limited")
    mock_gateway.cli("keys", "revoke", key_id)
    deadline = time.monotonic() + 1.5  # running servers apply a revocation within a second
    while (r := post(mock_gateway, GOOD, key=limited)).status_code != 401 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "revoked" in error(r, 401, "authentication")


def test_oversized_body_is_413(mock_gateway: Ensemble) -> None:
    big = (
        b'{"model": "mock-1", "messages": [{"role": "user", "content": "'
        + b"x" * (10 * 1024 * 1024)
        + b'"}]}'
    )
    message = error(post(mock_gateway, big), 413, "request_too_large")
    assert "limit" in message


def test_oversized_chunked_body_is_413(mock_gateway: Ensemble) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"model": "mock-1", "messages": [{"role": "user", "content": "'
        for _ in range(11):
            yield b"y" * (1024 * 1024)
        yield b'"}]}'

    r = httpx.post(
        mock_gateway.url + "/api/v1/generate",
        content=chunks(),
        headers={"authorization": f"Bearer {mock_gateway.key}"},
        timeout=30,
    )
    error(r, 413, "request_too_large")


def test_unknown_route_and_wrong_method(mock_gateway: Ensemble) -> None:
    r = httpx.get(mock_gateway.url + "/api/v1/nothing-here")
    assert "no route" in error(r, 404, "not_found")
    r = httpx.get(mock_gateway.url + "/api/v1/generate")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_invalid_request_id_header(mock_gateway: Ensemble) -> None:
    r = post(mock_gateway, GOOD, **{"x-request-id": "bad id with spaces"})
    assert "X-Request-ID" in error(r, 400, "invalid_request")


def test_truncated_body_does_not_crash(mock_gateway: Ensemble) -> None:
    """A client that promises more bytes than it sends, then hangs up."""
    with socket.create_connection(("127.0.0.1", mock_gateway.port)) as s:
        s.sendall(
            b"POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Authorization: Bearer " + mock_gateway.key.encode() + b'\r\n\r\n{"model":'
        )
    assert httpx.get(mock_gateway.url + "/health").status_code == 200


def test_openai_route_errors_use_openai_shape(mock_gateway: Ensemble) -> None:
    r = post(mock_gateway, b"{nope", path="/v1/chat/completions")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "malformed JSON" in err["message"]
    r = post(mock_gateway, {**GOOD, "model": "gpt-9"}, path="/v1/chat/completions")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = post(mock_gateway, GOOD, path="/v1/chat/completions", key="")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_a_request_id_reused_by_another_key_is_its_own_answer(mock_gateway: Ensemble) -> None:
    """Stored answers are keyed by (key, request id): another key reusing an X-Request-ID neither
    overwrites the first key's stored answer nor has its own dropped (docs/security.md)."""
    other = mock_gateway.create_key("reuser")
    mock_gateway.wait_for_key(other)
    rid = "req-reused-on-one-instance"
    made = {}
    for key, text in ((mock_gateway.key, "first"), (other, "second, longer question")):
        r = post(
            mock_gateway,
            {**GOOD, "messages": [{"role": "user", "content": text}]},
            key=key,
            **{"x-request-id": rid},
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == rid
        made[key] = r.json()
    assert made[mock_gateway.key] != made[other]
    for key in (mock_gateway.key, other):
        got = httpx.get(
            f"{mock_gateway.url}/api/v1/retrieve/{rid}", headers={"authorization": f"Bearer {key}"}
        )
        assert got.status_code == 200 and got.json() == made[key]
