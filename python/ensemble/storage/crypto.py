"""Encryption of stored provider credentials: AES-256-GCM from the `cryptography` package.

Every value gets a fresh random 96-bit nonce. The associated data binds a ciphertext to the endpoint
it belongs to (and to its key version), so a ciphertext copied onto another endpoint's row, or any
flipped bit in ciphertext, nonce or tag, fails authentication instead of decrypting to garbage.

Rotation: the *key version* of a key is a 31-bit fingerprint of it (SHA-256, first 4 bytes), stored
next to each ciphertext. `ENSEMBLE_ENCRYPTION_KEY` is the current key; old keys listed in
`ENSEMBLE_ENCRYPTION_KEY_PREVIOUS` (comma-separated, base64) can still decrypt, and the credential
store re-encrypts such rows under the current key when it loads them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "ENSEMBLE_ENCRYPTION_KEY"
PREVIOUS_KEYS_ENV = "ENSEMBLE_ENCRYPTION_KEY_PREVIOUS"
NONCE_BYTES = 12


class CryptoError(Exception):
    """A key that is not usable, or a ciphertext that does not authenticate."""


def key_version(key: bytes) -> int:
    """A stable, non-secret identifier of a key (31 bits, so it fits any SQLite INTEGER column)."""
    return int.from_bytes(hashlib.sha256(b"ensemble-key-version:" + key).digest()[:4], "big") & 0x7FFFFFFF


def decode_key(value: str) -> bytes:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("encryption key is not valid base64") from None
    if len(key) != 32:
        raise CryptoError(f"encryption key must be 32 bytes, got {len(key)}")
    return key


def _aad(endpoint_id: str, version: int) -> bytes:
    return f"ensemble/provider-credential/v{version}/{endpoint_id}".encode()


class Cipher:
    """The current key plus any previous ones still accepted for decryption."""

    def __init__(self, current: bytes, previous: list[bytes] | None = None) -> None:
        self.version = key_version(current)
        self._keys: dict[int, AESGCM] = {self.version: AESGCM(current)}
        for old in previous or []:
            self._keys.setdefault(key_version(old), AESGCM(old))

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Cipher | None:
        """The cipher `ensemble serve` configured, or None when no key is set (credentials disabled)."""
        env = os.environ if environ is None else environ
        value = env.get(KEY_ENV, "")
        if not value:
            return None
        previous = [decode_key(v) for v in env.get(PREVIOUS_KEYS_ENV, "").split(",") if v.strip()]
        return cls(decode_key(value), previous)

    def encrypt(self, endpoint_id: str, plaintext: str) -> tuple[bytes, bytes, int]:
        """(ciphertext with tag, nonce, key version)."""
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._keys[self.version].encrypt(
            nonce, plaintext.encode(), _aad(endpoint_id, self.version)
        )
        return ciphertext, nonce, self.version

    def decrypt(self, endpoint_id: str, ciphertext: bytes, nonce: bytes, version: int) -> str:
        aead = self._keys.get(version)
        if aead is None:
            raise CryptoError(
                f"credential for {endpoint_id!r} was encrypted with key version {version}, which is not "
                f"configured (set it in {PREVIOUS_KEYS_ENV} to rotate)"
            )
        if len(nonce) != NONCE_BYTES:
            raise CryptoError(f"credential for {endpoint_id!r} has a malformed nonce")
        try:
            plaintext = aead.decrypt(nonce, ciphertext, _aad(endpoint_id, version))
        except InvalidTag:
            raise CryptoError(
                f"credential for {endpoint_id!r} failed authentication (tampered, or stored for another "
                "endpoint)"
            ) from None
        try:
            return plaintext.decode()
        except UnicodeDecodeError:
            raise CryptoError(f"credential for {endpoint_id!r} is not text") from None


def mask(secret: str) -> str:
    """A hint that lets an operator recognise a key without revealing it: `sk-p…1234`."""
    if len(secret) <= 12:
        return "…" + secret[-2:] if len(secret) > 6 else "…"
    return f"{secret[:4]}…{secret[-4:]}"
