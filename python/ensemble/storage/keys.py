"""Client API keys: generation, storage as SHA-256 digests, and the record the server looks up."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import aiosqlite
import msgspec

KEY_PREFIX = "ens_"
KeyStatus = Literal["active", "disabled", "revoked"]


class KeyRecord(msgspec.Struct, frozen=True):
    """What the server knows about a client key once its digest matched."""

    key_id: str
    prefix: str
    name: str
    customer_id: str
    status: KeyStatus
    rate_limit_rpm: int
    rate_limit_tpm: int
    allowed_models: tuple[str, ...]
    created_at: str

    def allows(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models

    def as_json(self) -> dict[str, Any]:
        """The key record as the admin API and `ensemble keys list --json` show it (see docs/admin-api.md)."""
        return {
            "key_id": self.key_id,
            "prefix": self.prefix,
            "name": self.name,
            "customer_id": self.customer_id,
            "status": self.status,
            "rate_limit_rpm": self.rate_limit_rpm,
            "rate_limit_tpm": self.rate_limit_tpm,
            "allowed_models": list(self.allowed_models),
            "created_at": self.created_at,
        }


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


_second_cache: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """UTC now as `YYYY-MM-DDTHH:MM:SS.mmmZ`; the seconds part is formatted once per second."""
    global _second_cache
    now = time.time()
    second = int(now)
    cached_second, text = _second_cache
    if second != cached_second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, text)
    return f"{text}.{int((now - second) * 1000):03d}Z"


_COLUMNS = "id, prefix, name, customer_id, status, rate_limit_rpm, rate_limit_tpm, allowed_models, created_at"


def _record(row: tuple[object, ...]) -> KeyRecord:
    return KeyRecord(
        key_id=str(row[0]),
        prefix=str(row[1]),
        name=str(row[2]),
        customer_id=str(row[3]),
        status=row[4],  # type: ignore[arg-type]
        rate_limit_rpm=int(row[5]),  # type: ignore[call-overload]
        rate_limit_tpm=int(row[6]),  # type: ignore[call-overload]
        allowed_models=tuple(msgspec.json.decode(str(row[7]), type=list[str])),
        created_at=str(row[8]),
    )


def create_key(
    conn: sqlite3.Connection,
    *,
    name: str,
    customer_id: str = "",
    rpm: int = 0,
    tpm: int = 0,
    models: list[str] | None = None,
) -> tuple[str, KeyRecord]:
    """Insert a new key; returns the plaintext key (shown once) and its record."""
    key = generate_key()
    record = KeyRecord(
        key_id="key_" + uuid.uuid4().hex[:16],
        prefix=key[:12],
        name=name,
        customer_id=customer_id,
        status="active",
        rate_limit_rpm=rpm,
        rate_limit_tpm=tpm,
        allowed_models=tuple(models or ()),
        created_at=now_iso(),
    )
    conn.execute(
        f"INSERT INTO api_keys (digest, {_COLUMNS}, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            digest(key),
            record.key_id,
            record.prefix,
            record.name,
            record.customer_id,
            record.status,
            record.rate_limit_rpm,
            record.rate_limit_tpm,
            msgspec.json.encode(list(record.allowed_models)).decode(),
            record.created_at,
            int(time.time() * 1000),
        ),
    )
    return key, record


def list_keys(conn: sqlite3.Connection) -> list[KeyRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at").fetchall()
    return [_record(r) for r in rows]


def count_usable_keys(conn: sqlite3.Connection) -> int:
    (n,) = conn.execute("SELECT count(*) FROM api_keys WHERE status != 'revoked'").fetchone()
    return int(n)


def set_status(conn: sqlite3.Connection, key_id: str, status: KeyStatus) -> bool:
    cur = conn.execute(
        "UPDATE api_keys SET status = ?, updated_at = ? WHERE id = ?",
        (status, int(time.time() * 1000), key_id),
    )
    return cur.rowcount > 0


Versioned = tuple[bytes, KeyRecord, int]  # digest, record, version (ms of the change)


async def load_changed(conn: aiosqlite.Connection, since_ms: int) -> tuple[list[Versioned], int]:
    """Keys changed at or after `since_ms` (all keys when 0) with their versions (`updated_at`), and
    the newest change time seen."""
    async with conn.execute(
        f"SELECT digest, {_COLUMNS}, updated_at FROM api_keys WHERE updated_at >= ?", (since_ms,)
    ) as cur:
        rows = await cur.fetchall()
    newest = since_ms
    out: list[Versioned] = []
    for row in rows:
        version = int(row[10])
        out.append((bytes(row[0]), _record(tuple(row[1:10])), version))
        newest = max(newest, version)
    return out, newest


async def store_shared(conn: aiosqlite.Connection, changes: list[Versioned]) -> None:
    """Keep key changes learnt from other instances in this instance's SQLite too (the local store
    is what a restart without Redis serves from); an older version never replaces a newer row."""
    await conn.executemany(
        f"INSERT INTO api_keys (digest, {_COLUMNS}, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (digest) DO UPDATE SET status = excluded.status, name = excluded.name, "
        "customer_id = excluded.customer_id, rate_limit_rpm = excluded.rate_limit_rpm, "
        "rate_limit_tpm = excluded.rate_limit_tpm, allowed_models = excluded.allowed_models, "
        "updated_at = excluded.updated_at WHERE excluded.updated_at > api_keys.updated_at",
        [
            (
                d,
                r.key_id,
                r.prefix,
                r.name,
                r.customer_id,
                r.status,
                r.rate_limit_rpm,
                r.rate_limit_tpm,
                msgspec.json.encode(list(r.allowed_models)).decode(),
                r.created_at,
                v,
            )
            for d, r, v in changes
        ],
    )


async def fetch_key(conn: aiosqlite.Connection, key_id: str) -> KeyRecord | None:
    """One key as stored now, on an async connection (the batch runner's)."""
    async with conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)) as cur:
        row = await cur.fetchone()
    return _record(tuple(row)) if row is not None else None


def get_key(conn: sqlite3.Connection, key_id: str) -> KeyRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return _record(row) if row else None


def page_keys(conn: sqlite3.Connection, limit: int, offset: int) -> tuple[list[KeyRecord], int]:
    """One page of keys, oldest first, and the total count."""
    (total,) = conn.execute("SELECT count(*) FROM api_keys").fetchone()
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id LIMIT ? OFFSET ?", (limit, offset)
    ).fetchall()
    return [_record(r) for r in rows], int(total)


def update_config(
    conn: sqlite3.Connection,
    key_id: str,
    *,
    name: str | None = None,
    customer_id: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    models: list[str] | None = None,
) -> KeyRecord | None:
    """Change the given fields of a key (None leaves one as is); returns the new record."""
    changes: dict[str, object] = {}
    if name is not None:
        changes["name"] = name
    if customer_id is not None:
        changes["customer_id"] = customer_id
    if rpm is not None:
        changes["rate_limit_rpm"] = rpm
    if tpm is not None:
        changes["rate_limit_tpm"] = tpm
    if models is not None:
        changes["allowed_models"] = msgspec.json.encode(models).decode()
    changes["updated_at"] = int(time.time() * 1000)
    assignments = ", ".join(f"{column} = ?" for column in changes)  # column names are fixed above
    cur = conn.execute(f"UPDATE api_keys SET {assignments} WHERE id = ?", (*changes.values(), key_id))
    if cur.rowcount == 0:
        return None
    return get_key(conn, key_id)


def get_key_and_digest(conn: sqlite3.Connection, key_id: str) -> tuple[bytes, KeyRecord] | None:
    """The record with its digest: what a key change published to other instances carries."""
    row = conn.execute(f"SELECT digest, {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    return (bytes(row[0]), _record(tuple(row[1:]))) if row else None
