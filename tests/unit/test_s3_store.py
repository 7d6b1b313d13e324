"""S3Store against moto's S3 server over HTTP: layout, ownership, and retries while S3 is away."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ensemble.config.schema import S3Config
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
    assert object_key("responses/", "req_1", "2026-01-02T03:04:05Z") == "responses/2026/01/02/req_1.json"


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
        assert await asyncio.to_thread(server.keys) == ["p/2026/11/24/req_late.json"]
        await store.close(limit_s=5)
        assert store.view()["state"] == "ok"
    finally:
        await asyncio.to_thread(server.stop)
