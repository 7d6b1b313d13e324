"""Which endpoint most likely holds a prompt prefix in its provider's cache (docs/routing.md, step 1).

Keys: the client's session id, and CRC fingerprints (CRC32C, cumulative over the system prompt and
the messages, tagged with the model) of the prompt prefix. After a request succeeds on an endpoint
we remember, for that endpoint:

* the session id → the whole prompt (the next turn of the session re-sends it as its prefix),
* the fingerprint of the whole prompt (a client without session ids sends it again next turn,
  followed by the answer and a new user message),
* the fingerprint of the leading system prompt (other conversations sharing it hit that part).

Each entry lives for the provider's cache TTL (`cache.ttls`, refreshed on every use, as providers
refresh theirs) and the table is an LRU bounded by `cache.max_cache_entries`.

Both the fingerprints and the table are native (`rust/src/affinity.rs`): they run on every
request, and in Python they were most of the router's cost. Endpoints are stored as small
integers (the router's index of endpoint ids).
"""

from __future__ import annotations

from ensemble._native import AffinityTable, PromptKeys, prompt_keys

__all__ = [
    "CHARS_PER_TOKEN",
    "MIN_CACHEABLE_TOKENS",
    "AffinityTable",
    "PromptKeys",
    "prompt_keys",
]

# Providers only cache prompts from about this size on (Anthropic and OpenAI: 1024 tokens). The
# native table uses the same numbers (affinity::MIN_CACHEABLE_TOKENS, CHARS_PER_TOKEN).
MIN_CACHEABLE_TOKENS = 1024
CHARS_PER_TOKEN = 4
