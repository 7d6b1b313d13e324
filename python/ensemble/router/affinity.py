"""Which endpoint most likely holds a prompt prefix in its provider's cache (SPEC §6 step 1).

Keys: the client's session id, and CRC fingerprints (native `prefix_fingerprint`, cumulative over
the system prompt and the messages) of the prompt prefix. After a request succeeds on an endpoint
we remember, for that endpoint:

* the session id → the whole prompt (the next turn of the session re-sends it as its prefix),
* the fingerprint of the whole prompt (a client without session ids sends it again next turn,
  followed by the answer and a new user message),
* the fingerprint of the leading system prompt (other conversations sharing it hit that part).

Each entry lives for the provider's cache TTL (`cache.ttls`, refreshed on every use, as providers
refresh theirs) and the table is an LRU bounded by `cache.max_cache_entries`.
"""

from __future__ import annotations

from collections import OrderedDict

from ensemble._native import prefix_fingerprint
from ensemble.types import InferenceRequest

# Providers only cache prompts from about this size on (Anthropic and OpenAI: 1024 tokens).
MIN_CACHEABLE_TOKENS = 1024
CHARS_PER_TOKEN = 4


class Entry:
    __slots__ = ("endpoint_id", "expires_ms", "tokens")

    def __init__(self, endpoint_id: str, expires_ms: int, tokens: int) -> None:
        self.endpoint_id = endpoint_id
        self.expires_ms = expires_ms
        self.tokens = tokens


class PromptKeys:
    """The affinity keys of one request, computed once by `fingerprint`."""

    __slots__ = ("full", "full_tokens", "lead", "lead_tokens", "previous", "previous_tokens", "session")

    def __init__(self) -> None:
        self.session: str | None = None
        self.full = 0
        self.full_tokens = 0
        self.previous: int | None = None
        self.previous_tokens = 0
        self.lead: int | None = None
        self.lead_tokens = 0


def fingerprint(request: InferenceRequest, model_tag: int) -> PromptKeys:
    keys = PromptKeys()
    if request.session_id:
        keys.session = f"{model_tag}\x00{request.session_id}"
    messages = request.messages
    # Role byte + text + a separator, so ("ab","c") and ("a","bc") differ.
    parts: list[bytes] = []
    cumulative: list[int] = []
    size = 0
    for m in messages:
        part = (m.role[0] + m.text() + "\x00").encode()
        size += len(part)
        parts.append(part)
        cumulative.append(size)
    fps = prefix_fingerprint(parts)
    tag = model_tag << 32
    n = len(parts)
    keys.full = tag | fps[-1]
    keys.full_tokens = cumulative[-1] // CHARS_PER_TOKEN
    if n > 2:  # the previous turn's whole prompt: everything before the last answer + question
        keys.previous = tag | fps[n - 3]
        keys.previous_tokens = cumulative[n - 3] // CHARS_PER_TOKEN
    lead = 0
    while lead < n and messages[lead].role == "system":
        lead += 1
    if 0 < lead < n:
        keys.lead = tag | fps[lead - 1]
        keys.lead_tokens = cumulative[lead - 1] // CHARS_PER_TOKEN
    return keys


class AffinityTable:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(max_entries, 1)
        self._entries: OrderedDict[str | int, Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _get(self, key: str | int | None, now: int) -> Entry | None:
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_ms <= now:
            del self._entries[key]
            return None
        return entry

    def lookup(self, keys: PromptKeys, now: int) -> tuple[str, int] | None:
        """(endpoint id, estimated cached prompt tokens) of the best live entry, if any."""
        best: Entry | None = None
        best_tokens = 0
        for key, cap in (
            (keys.session, keys.full_tokens),
            (keys.previous, keys.previous_tokens),
            (keys.lead, keys.lead_tokens),
        ):
            entry = self._get(key, now)
            if entry is not None:
                tokens = min(entry.tokens, cap)
                if tokens > best_tokens:
                    best, best_tokens = entry, tokens
        if best is None:
            self.misses += 1
            return None
        self.hits += 1
        return best.endpoint_id, best_tokens

    def _put(self, key: str | int, endpoint_id: str, expires: int, tokens: int) -> None:
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = Entry(endpoint_id, expires, tokens)
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1
        else:
            entry.endpoint_id = endpoint_id
            entry.expires_ms = expires
            entry.tokens = tokens
            self._entries.move_to_end(key)

    def remember(self, keys: PromptKeys, endpoint_id: str, now: int, ttl_ms: int) -> None:
        expires = now + ttl_ms
        if keys.full_tokens < MIN_CACHEABLE_TOKENS and keys.session is None:
            return  # nothing the provider would cache, and no session to follow
        if keys.session is not None:
            self._put(keys.session, endpoint_id, expires, keys.full_tokens)
        if keys.full_tokens >= MIN_CACHEABLE_TOKENS:
            self._put(keys.full, endpoint_id, expires, keys.full_tokens)
        if keys.lead is not None and keys.lead_tokens >= MIN_CACHEABLE_TOKENS:
            self._put(keys.lead, endpoint_id, expires, keys.lead_tokens)
