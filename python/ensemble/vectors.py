"""Embedding vectors as the gateway carries them: packed little-endian float32.

That is the byte layout OpenAI's `encoding_format: base64` encodes, so base64 answers pass through
without a float ever being built; JSON numbers are made only for a client that asked for them.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from collections.abc import Iterable

_SWAP = sys.byteorder != "little"


def pack(values: Iterable[float]) -> bytes:
    """Floats (e.g. a JSON `values` list) as little-endian float32 bytes."""
    packed = array("f", values)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def unpack(vector: bytes) -> list[float]:
    """The floats of a packed vector (float32 precision, as the provider computed them)."""
    values = array("f")
    values.frombytes(vector)
    if _SWAP:
        values.byteswap()
    return values.tolist()


def from_base64(text: str) -> bytes:
    """OpenAI's base64 `embedding`, checked to hold whole float32 values."""
    raw = binascii.a2b_base64(text, strict_mode=True)  # validating, without b64decode's regex pass
    if len(raw) % 4:
        raise ValueError(f"a base64 embedding of {len(raw)} bytes is not a list of float32 values")
    return raw


def to_base64(vector: bytes) -> str:
    return base64.b64encode(vector).decode("ascii")


def dimensions(vector: bytes) -> int:
    return len(vector) // 4
