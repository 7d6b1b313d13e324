"""Logging setup: JSON (or text) lines on stderr, with secrets redacted from every message.

Redaction happens in the formatter, so it covers every logger, including libraries': client keys
(`ens_…`), provider keys (`sk-…`, `sk-ant-…`, `xai-…`, `AIza…`), bearer tokens, and any 8-character
piece of a secret this process knows never reach a log line.
"""

from __future__ import annotations

import logging
import re
import sys
import time

import ahocorasick
import orjson

_SECRETS = re.compile(
    r"(ens_[A-Za-z0-9_\-]{6})[A-Za-z0-9_\-]+"
    r"|(sk-(?:ant-|or-|proj-)?[A-Za-z0-9]{2})[A-Za-z0-9_\-]{6,}"
    r"|(xai-[A-Za-z0-9]{2})[A-Za-z0-9_\-]{6,}"
    r"|(AIza[A-Za-z0-9]{2})[A-Za-z0-9_\-]{10,}"
    r"|((?i:bearer)\s+)[^\s\"',]+"
)


# Secrets this process knows verbatim (provider keys from config or the credential store, the admin
# key): masked wherever they appear, whatever their shape, since not every provider key has a prefix;
# and so is any FRAGMENT-character run of one (an upstream that echoes a key in two halves, or
# truncated). Every FRAGMENT-long piece of every known secret is a word of one Aho-Corasick automaton,
# so a text is scanned once in C whatever the number of secrets (measured: ~3 us for a 150-byte log
# line, ~200 us for a 10 KB error body; a Python scan took 5-8x that).
FRAGMENT = 8
_known: set[str] = set()
_fragments: ahocorasick.Automaton | None = None


def register_secret(value: str) -> None:
    global _fragments
    if len(value) < FRAGMENT or value in _known:
        return  # too short to mask without mangling ordinary text
    _known.add(value)
    automaton = ahocorasick.Automaton()
    for secret in _known:
        for i in range(len(secret) - FRAGMENT + 1):
            automaton.add_word(secret[i : i + FRAGMENT], None)
    automaton.make_automaton()
    _fragments = automaton  # swapped whole: a reader never sees a half-built automaton


def _looks_random(run: str) -> bool:
    """A piece of a real (random) key mixes letters and digits or both cases almost always (8 random
    base62 characters of one class: ~0.2%); an ordinary word in a key ("upstream" in
    `sk-test-upstream-key`) does not, and is left alone. A long run is masked whatever it is."""
    if len(run) >= 12:
        return True
    classes = (any(c.islower() for c in run), any(c.isupper() for c in run), any(c.isdigit() for c in run))
    return sum(classes) >= 2


def _mask_fragments(text: str, automaton: ahocorasick.Automaton) -> str:
    """Each maximal run of overlapping known-secret fragments becomes one `…redacted`."""
    runs: list[list[int]] = []
    for end, _ in automaton.iter(text):  # end: index of a match's last character, ascending
        start = end - FRAGMENT + 1
        if runs and start <= runs[-1][1]:
            runs[-1][1] = end + 1
        else:
            runs.append([start, end + 1])
    spans = [r for r in runs if _looks_random(text[r[0] : r[1]])]
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, stop in spans:
        out.append(text[last:start])
        out.append("…redacted")
        last = stop
    out.append(text[last:])
    return "".join(out)


def redact(text: str) -> str:
    def mask(m: re.Match[str]) -> str:
        keep = next(g for g in m.groups() if g is not None)
        return keep + "…redacted"

    automaton = _fragments
    if automaton is not None and len(text) >= FRAGMENT:
        text = _mask_fragments(text, automaton)
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
