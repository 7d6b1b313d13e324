"""HTTP/2 to the provider through a real `ensemble serve`: providers with `http: "2"` (h2c to the
fake upstream) and over TLS with `http: auto` (ALPN), the CA trusted through SSL_CERT_FILE.

`cancel`: the client hangs up and the upstream *stream* is reset within 100 ms (the fake records
when its stream ended) while the connection stays up: the next call rides the same connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.ensemble import Ensemble, openai_provider
from support.fake import FakeUpstream
from support.tls import LocalCA
from support.waiting import wait_until

from .conftest import HELLO, log_row, make_server
from .rawhttp import RawRequest
from .test_disconnect import CANCEL_WITHIN, SETUPS

pytestmark = pytest.mark.integration

KEY = [{"id": "", "api_key": "sk-test-upstream-key-000000"}]


def provider(fake: FakeUpstream, name: str, **extra: Any) -> dict[str, Any]:
    return openai_provider(
        fake.endpoint_url(name),
        name=name,
        models=[f"m-{name}"],
        endpoints=[{**KEY[0], "id": name}],
        **extra,
    )


NAMES = ["flow", "silent", "first", "reuse"]


@pytest.fixture(scope="module")
def h2_server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    s = make_server(
        Path(tmp_path_factory.mktemp("h2cancel")),
        [provider(fake, f"h2-{n}", http="2") for n in NAMES],
        on_client_disconnect="cancel",
    )
    yield s
    s.stop()


@pytest.mark.parametrize("when", list(SETUPS))
def test_cancel_resets_the_upstream_stream_within_100ms(
    h2_server: Ensemble, fake: FakeUpstream, when: str
) -> None:
    endpoint = f"h2-{when}"
    setup = SETUPS[when]
    if "config" in setup:
        fake.configure(endpoint, **setup["config"])
    else:
        fake.enqueue(endpoint, setup["behavior"])
    rid = f"req-h2-cancel-{when}"
    req = RawRequest(
        h2_server.url, "/v1/chat/completions", h2_server.key,
        {"model": f"m-{endpoint}", "messages": HELLO, "stream": True}, rid,
    )  # fmt: skip
    if when == "first":
        wait_until(lambda: fake.requests(endpoint), what="the upstream request")
        time.sleep(0.2)  # the upstream stream is open and silent
    else:
        req.read_until(b"data: ")
        if when == "silent":
            time.sleep(0.3)
    closed_at = req.close()
    rec = wait_until(
        lambda: (r := fake.requests(endpoint)[-1])["disconnected_at"] and r,
        timeout=5,
        what="the upstream stream to be reset",
    )
    delay = float(rec["disconnected_at"]) - closed_at
    print(f"h2 cancel {when}: upstream stream reset {delay * 1000:.1f} ms after the client")
    assert rec["http_version"] == "2"
    assert delay < CANCEL_WITHIN, f"upstream stream reset {delay * 1000:.1f} ms after the client"
    assert log_row(h2_server, rid)["http_status"] == 499
    # The reset was the stream's alone: the connection carries the next call.
    fake.configure(endpoint, chunk_gap_ms=0, chunks=5)
    with h2_server.client() as c:
        r = c.post("/v1/chat/completions", json={"model": f"m-{endpoint}", "messages": HELLO})
    assert r.status_code == 200
    assert fake.requests(endpoint)[-1]["peer"] == rec["peer"]


def test_concurrent_calls_share_one_connection(h2_server: Ensemble, fake: FakeUpstream) -> None:
    import concurrent.futures

    fake.configure("h2-reuse", chunk_gap_ms=20, chunks=10)

    def call(_: int) -> int:
        with h2_server.client() as c:
            return c.post(
                "/v1/chat/completions", json={"model": "m-h2-reuse", "messages": HELLO, "stream": True}
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        assert list(pool.map(call, range(20))) == [200] * 20
    assert fake.connections("h2-reuse") == {"2": 1}  # 20 concurrent streams, one connection


def tls_server(tmp: Path, tls_fake: FakeUpstream, ca_file: Path) -> Ensemble:
    return Ensemble(
        tmp,
        providers=[
            provider(tls_fake, "tls-auto"),  # http: auto → HTTP/2 through ALPN
            provider(tls_fake, "tls-h1", http="1.1"),
        ],
        # `auto` is under test, not what the suite-wide ENSEMBLE_UPSTREAM_HTTP switch makes of it.
        env={"SSL_CERT_FILE": str(ca_file), "ENSEMBLE_UPSTREAM_HTTP": ""},
    )


def test_tls_to_the_provider_with_the_trusted_ca(
    tls_fake: FakeUpstream, local_ca: LocalCA, tmp_path: Path
) -> None:
    server = tls_server(tmp_path, tls_fake, local_ca.ca_file)
    try:
        with server.client() as c:
            for name in ("tls-auto", "tls-h1"):
                r = c.post("/v1/chat/completions", json={"model": f"m-{name}", "messages": HELLO})
                assert r.status_code == 200, r.text
                s = c.post(
                    "/v1/chat/completions", json={"model": f"m-{name}", "messages": HELLO, "stream": True}
                )
                assert s.status_code == 200 and s.text.rstrip().endswith("data: [DONE]")
    finally:
        server.stop()
    assert {r["http_version"] for r in tls_fake.requests("tls-auto")} == {"2"}
    assert {r["http_version"] for r in tls_fake.requests("tls-h1")} == {"1.1"}


def test_a_wrong_certificate_is_refused(tls_fake: FakeUpstream, tmp_path: Path) -> None:
    other = LocalCA(tmp_path / "other-ca")
    server = tls_server(tmp_path / "gw", tls_fake, other.ca_file)
    before = {n: len(tls_fake.requests(n)) for n in ("tls-auto", "tls-h1")}
    try:
        with server.client() as c:
            for name in ("tls-auto", "tls-h1"):
                r = c.post("/v1/chat/completions", json={"model": f"m-{name}", "messages": HELLO})
                assert r.status_code == 502, r.text
                assert "certificate" in r.json()["error"]["message"].lower()
    finally:
        server.stop()
    assert {n: len(tls_fake.requests(n)) for n in before} == before  # nothing reached the fake
