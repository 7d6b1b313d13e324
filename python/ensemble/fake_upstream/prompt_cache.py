"""A provider-side prompt cache per virtual endpoint (endpoint config ``prompt_cache: true``).

Each endpoint stands for a separate account, so a separate cache: a prefix one endpoint has seen
is a hit there only. What the real providers do, as far as routing can tell:

* OpenAI (automatic): any prompt prefix of 1024+ tokens that the endpoint served within the TTL is
  read from the cache, counted in 128-token steps from 1024; writing is free.
* Gemini (implicit caching): the same, without the 128-token steps.
* Anthropic: only prefixes ending at a ``cache_control`` breakpoint are cached (system blocks, or
  any block of a message); a hit reads the longest cached breakpoint prefix and the tokens up to the
  last breakpoint beyond it are written (reported as ``cache_creation_input_tokens``).

Prefixes are whole segments (a system block, a message) fingerprinted cumulatively; tokens are
characters / 4 as everywhere in the fake. The usage numbers are then split so the formats' own
formulas hold (``content.py``): the plan's ``prompt_tokens`` becomes the uncached part.
"""

from __future__ import annotations

import hashlib

from .behavior import EndpointState
from .content import Conversation, Plan

MIN_TOKENS = 1024
OPENAI_STEP = 128
_PRUNE_AT = 10_000  # entries per endpoint before expired ones are swept


def apply(plan: Plan, conv: Conversation, endpoint: EndpointState, provider: str, now: float) -> None:
    """Serve `conv` from `endpoint`'s cache (when it has one) and set the plan's cache usage."""
    cfg = endpoint.config
    if not cfg.prompt_cache:
        return
    cache = endpoint.prompt_cache
    ttl = cfg.prompt_cache_ttl_ms / 1000
    h = hashlib.blake2b(digest_size=16)
    chars = 0
    points: list[tuple[bytes, int]] = []  # (fingerprint, tokens) of each cacheable prefix
    for role, text, breakpoint in conv.segments:
        h.update(f"{role}\0{text}\0".encode())
        chars += len(text)
        if provider != "anthropic" or breakpoint:
            points.append((h.digest(), chars // 4))
    read = 0
    for digest, tokens in points:
        if tokens >= MIN_TOKENS and cache.get(digest, 0.0) > now:
            read = tokens
    if provider == "openai" and read:
        read = MIN_TOKENS + (read - MIN_TOKENS) // OPENAI_STEP * OPENAI_STEP
    written = 0
    if provider == "anthropic" and points and points[-1][1] >= MIN_TOKENS:
        written = max(points[-1][1] - read, 0)
    for digest, tokens in points:
        if tokens >= MIN_TOKENS:
            cache[digest] = now + ttl  # written, or refreshed by the hit
    if len(cache) > _PRUNE_AT:
        for digest in [d for d, until in cache.items() if until <= now]:
            del cache[digest]
    total = plan.prompt_tokens
    read = min(read, total)
    written = min(written, total - read)
    plan.cached_tokens = read
    plan.cache_creation_tokens = written
    # OpenAI and Gemini report prompt = uncached + cached; Anthropic input = uncached only.
    plan.prompt_tokens = total - read - (written if provider == "anthropic" else 0)
