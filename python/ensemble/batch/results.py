"""The stored result of one batch item, the JSON both batch APIs render their result lines from."""

from __future__ import annotations

import msgspec

from ensemble import error_types
from ensemble.api import native
from ensemble.errors import EnsembleError


def succeeded(response_json: bytes) -> bytes:
    return b'{"type":"succeeded","response":' + response_json + b"}"


def errored(error: EnsembleError, request_id: str) -> bytes:
    body = native.error_payload(error, request_id, error_types.resolve(error)[0])["error"]
    return msgspec.json.encode({"type": "errored", "error": body})
