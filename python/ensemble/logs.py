"""Logging setup: JSON (or text) lines on stderr, with secrets redacted from every message.

Redaction happens in the formatter, so it covers every logger, including libraries': client keys
(`ens_…`), provider keys (`sk-…`, `sk-ant-…`, `xai-…`, `AIza…`) and bearer tokens never reach a log line.
"""

from __future__ import annotations

import logging
import re
import sys
import time

import orjson

_SECRETS = re.compile(
    r"(ens_[A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]+"
    r"|(sk-(?:ant-|or-|proj-)?[A-Za-z0-9]{2})[A-Za-z0-9_\-]{6,}"
    r"|(xai-[A-Za-z0-9]{2})[A-Za-z0-9_\-]{6,}"
    r"|(AIza[A-Za-z0-9]{2})[A-Za-z0-9_\-]{10,}"
    r"|((?i:bearer)\s+)[^\s\"',]+"
)


# Secrets this process knows verbatim (provider keys from config or the credential store, the admin
# key): masked wherever they appear, whatever their shape, since not every provider key has a prefix.
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    global _known_pattern
    if len(value) < 8 or value in _known:
        return  # too short to mask without mangling ordinary text
    _known.add(value)
    _known_pattern = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))


def redact(text: str) -> str:
    def mask(m: re.Match[str]) -> str:
        keep = next(g for g in m.groups() if g is not None)
        return keep + "…redacted"

    if _known_pattern is not None:
        text = _known_pattern.sub("…redacted", text)
    return _SECRETS.sub(mask, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ("request_id", "key_id", "model", "provider", "endpoint_id", "status", "latency_ms"):
            value = getattr(record, key, None)
            if value is not None:
                # Fields carry client input too (a "model" may be anything the client sent).
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
