"""Encrypted reasoning across turns: a signature goes back only to the kind of provider that made it.

Providers hand out opaque proof of their model's reasoning that the next turn must carry back
unchanged (OpenAI Responses `encrypted_content`, Anthropic thinking `signature`, Gemini
`thoughtSignature`). The gateway stamps each answer's thinking blocks with the provider type that
made them (`origin`); when a conversation moves to another provider type, those signatures mean
nothing there (and some APIs refuse them), so adapters drop them, with a log line saying so.
"""

from __future__ import annotations

import logging

from ensemble.types import EventBlock, ThinkingBlock, ThinkingContent

log = logging.getLogger("ensemble.reasoning")


def stamp(blocks: list[EventBlock], provider_type: str) -> None:
    """Mark the thinking blocks of an answer as made by `provider_type` (where not already)."""
    for block in blocks:
        if isinstance(block, ThinkingBlock) and block.origin is None and block.signature:
            block.origin = provider_type


def handed_back(block: ThinkingContent, provider_type: str) -> bool:
    """Whether `block`'s signature may go to a provider of `provider_type` (unknown origins may)."""
    if block.origin is None or block.origin == provider_type or not block.signature:
        return True
    log.info(
        "dropping %s reasoning (encrypted by a %s provider) from a request to a %s provider",
        "signed" if block.signature else "unsigned",
        block.origin,
        provider_type,
    )
    return False
