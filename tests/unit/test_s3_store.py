"""S3Store against moto's S3 server over HTTP: layout, ownership, and retries while S3 is away."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import msgspec
import pytest

from ensemble.config.schema import S3Config
from ensemble.storage.keys import now_iso
from ensemble.storage.s3 import S3Store, object_key
from ensemble.usage.request_log import LogRecord
from support.processes import free_port
from support.shared import S3_ENV, MotoS3

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield


def record(request_id: str, key_id: str = "key_owner", status: str = "success") -> LogRecord:
    return LogRecord(
        request_id=request_id,
        key_id=key_id,
        model="mock-1",
        provider="mock",
        endpoint_id="mock-local",
        status=status,
        http_status=200,
        input_tokens=1,
        output_tokens=2,
        cached_tokens=0,
        cache_creation_tokens=0,
        reasoning_tokens=0,
        cost_micro_dollars=5,
        latency_ms=1.0,
        error="",
        created_at="2026-11-24T04:00:00.000Z",
        response_body=b'{"id": "%s"}' % request_id.encode(),
    )


def test_object_key_layout() -> None:
    assert (
        object_key("responses/", "key_a", "req_1", "2026-01-02T03:04:05Z")
        == "responses/2026/01/02/key_a/req_1.json"
    )


async def test_uploads_retry_until_s3_is_back() -> None:
    port = free_port()
    store = S3Store(S3Config(bucket="retry-bucket", prefix="p/", endpoint_url=f"http://127.0.0.1:{port}"))
    store.start()
    store.submit(record("req_late"))
    store.submit(record("req_failed", status="error"))  # only completed responses are stored
    for _ in range(100):
        await asyncio.sleep(0.05)
        if not store.healthy:
            break
    assert not store.healthy and store.written == 0 and store.last_error
    server = await asyncio.to_thread(MotoS3, "retry-bucket", port)
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            if store.written:
                break
        assert store.written == 1 and store.failed == 0
        assert await asyncio.to_thread(server.keys) == ["p/2026/11/24/key_owner/req_late.json"]
        await store.close(limit_s=5)
        assert store.view()["state"] == "ok"
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_request_id_reused_by_another_key_is_another_object() -> None:
    """Answers are named by key and request id: a second key reusing an X-Request-ID neither
    overwrites the first key's answer nor is dropped; each key reads back its own."""
    server = await asyncio.to_thread(MotoS3, "reuse-bucket")
    store = S3Store(S3Config(bucket="reuse-bucket", prefix="r/", endpoint_url=server.url))
    store.start()
    try:
        today = now_iso()
        for key_id in ("key_victim", "key_other"):
            rec = msgspec.structs.replace(
                record("req_shared", key_id=key_id), created_at=today, response_body=key_id.encode()
            )
            store.submit(rec)
        await store.close(limit_s=10)
        assert store.written == 2
        keys = await asyncio.to_thread(server.keys, "r/")
        assert sorted(k.rsplit("/", 2)[-2] for k in keys) == ["key_other", "key_victim"]
        reader = S3Store(S3Config(bucket="reuse-bucket", prefix="r/", endpoint_url=server.url))
        for key_id in ("key_victim", "key_other"):
            found = await reader.fetch("req_shared", key_id)
            assert found is not None and found.body == key_id.encode() and found.key_id == key_id
        assert await reader.fetch("req_shared", "key_third") is None
        await reader.close(limit_s=1)
    finally:
        await asyncio.to_thread(server.stop)
