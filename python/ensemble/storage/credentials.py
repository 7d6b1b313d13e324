"""Provider credentials stored through the admin API, encrypted at rest (see crypto.py).

The database holds only ciphertext, nonce, key version and a masked hint. Each server process keeps
the decrypted values in memory (`CredentialCache`), loaded at start-up and re-read when a row
changes: every process polls a cheap `(endpoint_id, nonce)` listing once a second, and since every
write draws a fresh nonce, any change made by another worker or instance is noticed within that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiosqlite

from ensemble.storage.crypto import Cipher, CryptoError, mask
from ensemble.storage.keys import now_iso

log = logging.getLogger("ensemble.credentials")


@dataclass(frozen=True, slots=True)
class StoredCredential:
    endpoint_id: str
    hint: str
    key_version: int
    updated_at: str


async def put(conn: aiosqlite.Connection, cipher: Cipher, endpoint_id: str, api_key: str) -> StoredCredential:
    ciphertext, nonce, version = cipher.encrypt(endpoint_id, api_key)
    stored = StoredCredential(endpoint_id, mask(api_key), version, now_iso())
    await conn.execute(
        """
        INSERT INTO provider_credentials (endpoint_id, ciphertext, nonce, key_version, hint, updated_at)
        VALUES (?,?,?,?,?,?)
        ON CONFLICT (endpoint_id) DO UPDATE SET ciphertext = excluded.ciphertext, nonce = excluded.nonce,
            key_version = excluded.key_version, hint = excluded.hint, updated_at = excluded.updated_at
        """,
        (endpoint_id, ciphertext, nonce, version, stored.hint, stored.updated_at),
    )
    return stored


async def get(conn: aiosqlite.Connection, endpoint_id: str) -> StoredCredential | None:
    async with conn.execute(
        "SELECT endpoint_id, hint, key_version, updated_at FROM provider_credentials WHERE endpoint_id = ?",
        (endpoint_id,),
    ) as cur:
        row = await cur.fetchone()
    return StoredCredential(str(row[0]), str(row[1]), int(row[2]), str(row[3])) if row else None


async def delete(conn: aiosqlite.Connection, endpoint_id: str) -> bool:
    cur = await conn.execute("DELETE FROM provider_credentials WHERE endpoint_id = ?", (endpoint_id,))
    return cur.rowcount > 0


class CredentialCache:
    """Decrypted credentials of this process, by endpoint id; `errors` names rows that failed to decrypt."""

    def __init__(self, cipher: Cipher | None) -> None:
        self.cipher = cipher
        self.values: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self._seen: dict[str, bytes] = {}  # endpoint id -> nonce of the row last loaded

    async def sync(self, conn: aiosqlite.Connection) -> bool:
        """Re-read rows that changed since the last call; True when anything changed."""
        async with conn.execute("SELECT endpoint_id, nonce FROM provider_credentials") as cur:
            listing = {str(r[0]): bytes(r[1]) for r in await cur.fetchall()}
        if listing == self._seen:
            return False
        for gone in set(self._seen) - set(listing):
            self.values.pop(gone, None)
            self.errors.pop(gone, None)
        for endpoint_id, nonce in listing.items():
            if self._seen.get(endpoint_id) != nonce:
                await self._load(conn, endpoint_id)
        self._seen = listing
        return True

    async def _load(self, conn: aiosqlite.Connection, endpoint_id: str) -> None:
        async with conn.execute(
            "SELECT ciphertext, nonce, key_version FROM provider_credentials WHERE endpoint_id = ?",
            (endpoint_id,),
        ) as cur:
            row = await cur.fetchone()
        self.values.pop(endpoint_id, None)
        self.errors.pop(endpoint_id, None)
        if row is None:
            return
        if self.cipher is None:
            self.errors[endpoint_id] = "ENSEMBLE_ENCRYPTION_KEY is not set; stored credentials cannot be used"
            return
        ciphertext, nonce, version = bytes(row[0]), bytes(row[1]), int(row[2])
        try:
            value = self.cipher.decrypt(endpoint_id, ciphertext, nonce, version)
        except CryptoError as e:
            self.errors[endpoint_id] = str(e)
            log.error("stored credential refused: %s; the endpoint is unavailable until it is set again", e)
            return
        self.values[endpoint_id] = value
        if version != self.cipher.version:
            # Rotation: rewrite under the current key; the next poll sees the new nonce and reloads.
            await put(conn, self.cipher, endpoint_id, value)
            log.info(
                "credential for %s re-encrypted from key version %d to %d",
                endpoint_id,
                version,
                self.cipher.version,
            )
