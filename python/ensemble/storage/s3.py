"""Completed responses in S3, so any instance can answer status/retrieve (see docs/scale-out.md).

With `persistence.s3.bucket` set, every completed response is written as
`{prefix}{YYYY}/{MM}/{DD}/{request_id}.json` (the date is the request's UTC creation day). The body
is the InferenceResponse JSON exactly as /api/v1/retrieve returns it; the object's metadata carries
what /api/v1/status needs and the owning key id, so only the key that made the request can read it.

Nothing here runs on the request path: `submit()` puts the record on a bounded in-memory queue
(full: the oldest is dropped and counted, like the request log); a background task hands batches to
a thread pool where boto3 uploads them (boto3 is blocking), retrying with backoff. The local
SQLite copy is written as before, so the instance that served a request answers from it; S3 is the
fallback for the others. Credentials and region come from the usual AWS_* environment (the
config's `region` / `endpoint_url` override them).

Lookup by request id needs the day it was created; the ids carry no date, so a lookup tries today
and the previous LOOKUP_DAYS - 1 days (one GET each, newest first, stopping at the first hit).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from ensemble.config.schema import S3Config
from ensemble.usage.request_log import LogRecord

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("ensemble.s3")

LOOKUP_DAYS = 7
MAX_ATTEMPTS = 20  # ours (about 90 s of backoff), around boto3's own retries of throttling and 5xx
BATCH = 32


@dataclass(slots=True)
class StoredResponse:
    request_id: str
    key_id: str
    status: str
    created_at: str
    completed_at: str
    model: str
    provider: str
    body: bytes


def object_key(prefix: str, key_id: str, request_id: str, created_at: str) -> str:
    """Named by key *and* request id: an X-Request-ID another key reuses is another object, so no key
    can overwrite another's answer."""
    day = created_at[:10]  # YYYY-MM-DD of an ISO-8601 UTC timestamp
    return f"{prefix}{day[:4]}/{day[5:7]}/{day[8:10]}/{key_id}/{request_id}.json"


def conversation_key(prefix: str, key_id: str, request_id: str, created_at: str) -> str:
    """Where a Responses answer's conversation is kept: beside its answer's name, under
    `conversations/` (which never collides with a year)."""
    return object_key(prefix + "conversations/", key_id, request_id, created_at)


def _legacy_object_key(prefix: str, request_id: str, day: str) -> str:
    """Where answers stored before the key id was in the name are (still read, never written)."""
    return f"{prefix}{day[:4]}/{day[5:7]}/{day[8:10]}/{request_id}.json"


class S3Store:
    def __init__(self, config: S3Config, *, capacity: int = 10_000, threads: int = 4) -> None:
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.capacity = capacity
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            region_name=config.region or None,
            endpoint_url=config.endpoint_url or None,
            config=botocore.config.Config(
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=2,
                read_timeout=10,
                max_pool_connections=threads * 2,
            ),
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="s3")
        self._queue: collections.deque[tuple[LogRecord, int]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self.last_error = ""
        self.healthy = True

    # -- writing --------------------------------------------------------------------------------

    def submit(self, record: LogRecord) -> None:
        """Non-blocking: queue a finished request's response for upload."""
        if record.response_body is None or record.status != "success":
            return
        if len(self._queue) >= self.capacity:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("S3 upload queue full: %d responses dropped so far", self.dropped)
        self._queue.append((record, 0))
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="s3-writer")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            results = await asyncio.gather(
                *(loop.run_in_executor(self._pool, self._put, rec) for rec, _ in batch),
                return_exceptions=True,
            )
            retry = False
            for (rec, attempts), result in zip(batch, results, strict=True):
                if not isinstance(result, BaseException):
                    self.written += 1
                    continue
                self.last_error = f"{type(result).__name__}: {result}"[:300]
                if attempts + 1 < MAX_ATTEMPTS:
                    self._queue.appendleft((rec, attempts + 1))
                    retry = True
                else:
                    self.failed += 1
                    log.error(
                        "S3 upload of response %s failed %d times (%s); it stays in local SQLite only",
                        rec.request_id,
                        MAX_ATTEMPTS,
                        self.last_error,
                    )
            if retry:
                if self.healthy:
                    log.warning("S3 uploads failing (%s); retrying with backoff", self.last_error)
                self.healthy = False
                await asyncio.sleep(min(5.0, 0.2 * 2 ** min(batch[0][1], 5)))
            else:
                self.healthy = True

    def _put(self, rec: LogRecord) -> None:
        assert rec.response_body is not None
        if rec.conversation is not None:  # first, so a visible answer always has its conversation
            self._client.put_object(
                Bucket=self.bucket,
                Key=conversation_key(self.prefix, rec.key_id, rec.request_id, rec.created_at),
                Body=rec.conversation,
                ContentType="application/json",
                Metadata={"key-id": rec.key_id},
            )
        self._client.put_object(
            Bucket=self.bucket,
            Key=object_key(self.prefix, rec.key_id, rec.request_id, rec.created_at),
            Body=rec.response_body,
            ContentType="application/json",
            Metadata={
                "key-id": rec.key_id,
                "status": "completed",
                "created-at": rec.created_at,
                "completed-at": rec.created_at,
                "model": rec.model,
                "provider": rec.provider,
            },
        )

    async def close(self, limit_s: float = 10.0) -> None:
        """Upload what is queued (bounded by `limit_s`), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, limit_s)
            except TimeoutError:
                log.error("S3 writer stopped with %d response(s) not uploaded", len(self._queue))
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- reading --------------------------------------------------------------------------------

    async def fetch(self, request_id: str, key_id: str) -> StoredResponse | None:
        """The stored response if it exists *and* belongs to `key_id` (else None: no leak)."""
        if not request_id or "/" in request_id or len(request_id) > 200:
            return None
        loop = asyncio.get_running_loop()
        if "/" in key_id:
            return None
        found = await loop.run_in_executor(self._pool, self._find, request_id, key_id)
        if found is None or found.key_id != key_id:
            return None
        return found

    async def fetch_conversation(self, request_id: str, key_id: str) -> tuple[StoredResponse, bytes] | None:
        """A Responses answer and its conversation, if both exist and belong to `key_id`."""
        found = await self.fetch(request_id, key_id)
        if found is None:
            return None
        loop = asyncio.get_running_loop()
        key = conversation_key(self.prefix, key_id, request_id, found.created_at)
        obj = await loop.run_in_executor(self._pool, self._get, key)
        if obj is None:
            return None
        body: bytes = await loop.run_in_executor(self._pool, obj["Body"].read)
        return found, body

    async def delete(self, key_id: str, request_id: str, created_at: str) -> None:
        """Remove an answer and its conversation (a missing object is no error)."""
        keys = [
            object_key(self.prefix, key_id, request_id, created_at),
            conversation_key(self.prefix, key_id, request_id, created_at),
        ]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._pool,
            lambda: self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            ),
        )

    def _find(self, request_id: str, key_id: str) -> StoredResponse | None:
        today = datetime.now(UTC)
        for back in range(LOOKUP_DAYS):
            day = (today - timedelta(days=back)).strftime("%Y-%m-%d")
            for key in (
                object_key(self.prefix, key_id, request_id, day),
                _legacy_object_key(self.prefix, request_id, day),
            ):
                obj = self._get(key)
                if obj is not None and obj.get("Metadata", {}).get("key-id") == key_id:
                    break
            else:
                continue
            meta = obj.get("Metadata", {})
            return StoredResponse(
                request_id=request_id,
                key_id=meta.get("key-id", ""),
                status=meta.get("status", "completed"),
                created_at=meta.get("created-at", ""),
                completed_at=meta.get("completed-at", ""),
                model=meta.get("model", ""),
                provider=meta.get("provider", ""),
                body=obj["Body"].read(),
            )
        return None

    def _get(self, key: str) -> Any:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def view(self) -> dict[str, Any]:
        return {
            "configured": True,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "state": "ok" if self.healthy else "degraded",
            "queued": len(self._queue),
            "written": self.written,
            "dropped": self.dropped,
            "failed": self.failed,
            "last_error": self.last_error or None,
            "checked_at": round(time.time(), 3),
        }
