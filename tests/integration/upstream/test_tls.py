"""TLS to the provider: a fake upstream with a certificate from a CA made at test time, trusted
through SSL_CERT_FILE (the documented setting), over HTTP/1.1 and HTTP/2 (ALPN); a certificate
from another CA is refused by both clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from ensemble.errors import ProviderError
from ensemble.upstream.http1 import Http1Client
from ensemble.upstream.http2 import Http2Client
from support.fake import FakeUpstream
from support.tls import LocalCA

pytestmark = pytest.mark.integration

BODY = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
KINDS = {"1.1": Http1Client, "2": Http2Client}


@pytest.fixture
def loop_name() -> str:
    """A fresh endpoint suffix: every test runs on asyncio and on uvloop against one fake."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def http1_only_fake(local_ca: LocalCA) -> Iterator[FakeUpstream]:
    upstream = FakeUpstream("--http", "1", tls=local_ca)
    yield upstream
    upstream.stop()


@pytest.mark.parametrize("version", list(KINDS))
async def test_tls_with_the_trusted_ca(
    tls_fake: FakeUpstream, local_ca: LocalCA, version: str, monkeypatch: pytest.MonkeyPatch, loop_name: str
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(local_ca.ca_file))
    client = KINDS[version](connect_timeout=2, read_timeout=5)
    await client.start()
    try:
        endpoint = f"tls-{version}-{loop_name}"
        resp = await client.post(f"{tls_fake.url}/{endpoint}/v1/chat/completions", HEADERS, BODY)
        assert resp.status == 200 and orjson.loads(await resp.read())["object"] == "chat.completion"
    finally:
        await client.close()
    (record,) = tls_fake.requests(endpoint)
    assert record["http_version"] == version  # ALPN chose h2 for the HTTP/2 client


@pytest.mark.parametrize("version", list(KINDS))
async def test_a_certificate_from_another_ca_is_refused(
    tls_fake: FakeUpstream, tmp_path: Path, version: str, monkeypatch: pytest.MonkeyPatch, loop_name: str
) -> None:
    other = LocalCA(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.ca_file))
    client = KINDS[version](connect_timeout=2, read_timeout=5)
    await client.start()
    try:
        with pytest.raises(ProviderError) as e:
            await client.post(
                f"{tls_fake.url}/refused-{version}-{loop_name}/v1/chat/completions", HEADERS, BODY
            )
    finally:
        await client.close()
    assert e.value.code == "connect_error" and e.value.retryable  # the gateway fails over
    assert "certificate" in str(e.value).lower()
    assert not tls_fake.requests(f"refused-{version}-{loop_name}")


async def test_http2_falls_back_when_alpn_chooses_http1(
    http1_only_fake: FakeUpstream, local_ca: LocalCA, monkeypatch: pytest.MonkeyPatch, loop_name: str
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(local_ca.ca_file))
    client = Http2Client(connect_timeout=2, read_timeout=5)
    await client.start()
    try:
        for _ in range(2):
            resp = await client.post(
                f"{http1_only_fake.url}/fallback-{loop_name}/v1/chat/completions", HEADERS, BODY
            )
            assert resp.status == 200 and await resp.read()
        assert client.connections == 0
    finally:
        await client.close()
    assert [r["http_version"] for r in http1_only_fake.requests(f"fallback-{loop_name}")] == ["1.1", "1.1"]
