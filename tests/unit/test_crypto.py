"""Credential encryption: AES-256-GCM round trips; anything tampered with or misplaced is refused."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import aiosqlite
import pytest

from ensemble import logs
from ensemble.storage import credentials, database
from ensemble.storage.crypto import Cipher, CryptoError, decode_key, key_version, mask

SECRET = "sk-live-0123456789abcdefghijklmnop"


def test_round_trip_with_a_fresh_nonce_per_value() -> None:
    cipher = Cipher(os.urandom(32))
    a = cipher.encrypt("ep-1", SECRET)
    b = cipher.encrypt("ep-1", SECRET)
    assert a[1] != b[1] and a[0] != b[0]  # same value, different nonce and ciphertext
    assert len(a[1]) == 12
    assert SECRET.encode() not in a[0]
    assert cipher.decrypt("ep-1", *a) == SECRET == cipher.decrypt("ep-1", *b)


@pytest.mark.parametrize("part", ["ciphertext", "tag", "nonce"])
def test_a_flipped_bit_anywhere_is_refused(part: str) -> None:
    cipher = Cipher(os.urandom(32))
    ciphertext, nonce, version = cipher.encrypt("ep-1", SECRET)
    if part == "ciphertext":
        ciphertext = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    elif part == "tag":
        ciphertext = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x80])
    else:
        nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    with pytest.raises(CryptoError, match="failed authentication"):
        cipher.decrypt("ep-1", ciphertext, nonce, version)


def test_a_ciphertext_moved_to_another_endpoint_is_refused() -> None:
    cipher = Cipher(os.urandom(32))
    sealed = cipher.encrypt("ep-1", SECRET)
    with pytest.raises(CryptoError, match="failed authentication"):
        cipher.decrypt("ep-2", *sealed)


def test_truncated_values_and_wrong_keys_are_refused() -> None:
    cipher = Cipher(os.urandom(32))
    ciphertext, nonce, version = cipher.encrypt("ep-1", SECRET)
    with pytest.raises(CryptoError):
        cipher.decrypt("ep-1", ciphertext[:10], nonce, version)
    with pytest.raises(CryptoError, match="malformed nonce"):
        cipher.decrypt("ep-1", ciphertext, nonce[:8], version)
    with pytest.raises(CryptoError, match="not configured"):
        Cipher(os.urandom(32)).decrypt("ep-1", ciphertext, nonce, version)


def test_rotation_decrypts_with_a_previous_key_and_encrypts_with_the_current() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed = Cipher(old).encrypt("ep-1", SECRET)
    rotated = Cipher(new, previous=[old])
    assert rotated.version == key_version(new) != key_version(old)
    assert rotated.decrypt("ep-1", *sealed) == SECRET
    assert rotated.encrypt("ep-1", SECRET)[2] == key_version(new)


def test_keys_from_the_environment() -> None:
    current, old = os.urandom(32), os.urandom(32)
    env = {
        "ENSEMBLE_ENCRYPTION_KEY": base64.b64encode(current).decode(),
        "ENSEMBLE_ENCRYPTION_KEY_PREVIOUS": base64.b64encode(old).decode(),
    }
    cipher = Cipher.from_environment(env)
    assert cipher is not None and cipher.version == key_version(current)
    assert cipher.decrypt("e", *Cipher(old).encrypt("e", "v4lue-secret")) == "v4lue-secret"
    assert Cipher.from_environment({}) is None
    with pytest.raises(CryptoError, match="32 bytes"):
        decode_key(base64.b64encode(b"short").decode())
    with pytest.raises(CryptoError, match="base64"):
        decode_key("not base64!!")


def test_hints_never_hold_the_secret() -> None:
    assert mask(SECRET) == "sk-l…mnop"
    assert SECRET not in mask(SECRET)
    assert mask("short") == "…"


def test_registered_secrets_are_redacted_whatever_their_shape() -> None:
    odd = "zzPLANTED-" + os.urandom(8).hex()  # no known provider prefix
    logs.register_secret(odd)
    assert odd not in logs.redact(f"upstream said: bad key {odd}!")
    assert "bad key" in logs.redact(f"upstream said: bad key {odd}!")


async def test_the_credential_cache_re_encrypts_rows_under_the_current_key(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    sync = database.connect_sync(path)
    database.migrate(sync)
    sync.close()
    old, new = os.urandom(32), os.urandom(32)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await credentials.put(conn, Cipher(old), "ep-1", SECRET)
        cache = credentials.CredentialCache(Cipher(new, previous=[old]))
        assert await cache.sync(conn) is True
        assert cache.values == {"ep-1": SECRET} and cache.errors == {}
        async with conn.execute("SELECT key_version, hint FROM provider_credentials") as cur:
            assert await cur.fetchone() == (key_version(new), mask(SECRET))
        # The rewritten row (new nonce) is picked up again and still decrypts, now without the old key.
        assert await credentials.CredentialCache(Cipher(new)).sync(conn) is True
        fresh = credentials.CredentialCache(Cipher(new))
        await fresh.sync(conn)
        assert fresh.values == {"ep-1": SECRET}
        assert await fresh.sync(conn) is False  # nothing changed since
        # Without the old key and before rotation, the row is refused, not guessed at.
        await credentials.put(conn, Cipher(old), "ep-2", SECRET)
        await fresh.sync(conn)
        assert "ep-2" not in fresh.values and "not configured" in fresh.errors["ep-2"]
        assert await credentials.delete(conn, "ep-2") is True
        await fresh.sync(conn)
        assert "ep-2" not in fresh.errors
    finally:
        await conn.close()
