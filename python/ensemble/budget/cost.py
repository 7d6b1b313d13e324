"""The worst-case cost a request is reserved at: every prompt token and every allowed output token
at the dearest rate of any endpoint it may be routed or failed over to (see docs/budgets.md)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import msgspec

from ensemble.types import (
    AudioContent,
    DocumentContent,
    EmbeddingRequest,
    ImageContent,
    InferenceRequest,
    TextContent,
)

if TYPE_CHECKING:  # (importing pricing here would close an import cycle through config)
    from ensemble.usage.pricing import Price

# Tokens are never fewer than the characters they encode in practice, so characters bound them;
# each message adds a few framing tokens; a non-text part (an image, a document page) is counted
# at the most a provider bills for one.
MESSAGE_OVERHEAD = 8
MEDIA_PART_TOKENS = 1600
# Without max_tokens in the request or max_output_tokens in the model's catalogue entry.
UNKNOWN_MAX_OUTPUT = 8192

_encode = msgspec.json.encode


def prompt_tokens_bound(request: InferenceRequest) -> int:
    tokens = 16
    for m in request.messages:
        tokens += MESSAGE_OVERHEAD
        if isinstance(m.content, str):
            tokens += len(m.content)
        else:
            for part in m.content:
                if isinstance(part, TextContent):
                    tokens += len(part.text)
                elif isinstance(part, ImageContent | DocumentContent | AudioContent):
                    tokens += MEDIA_PART_TOKENS
                else:  # thinking and the like: their serialised size bounds them
                    tokens += len(_encode(part))
        if m.tool_calls:
            tokens += len(_encode(m.tool_calls))
    if request.tools:
        tokens += len(_encode(request.tools))
    return tokens


class Rates:
    """The dearest rates (micro-dollars per token) and output allowance of one model over every
    provider serving it: built once per model and config, read by every request."""

    __slots__ = ("catalogue_max", "input", "output")

    def __init__(self, prices: Iterable[Price], catalogue_max: int) -> None:
        self.input = self.output = 0.0
        for p in prices:
            self.input = max(self.input, p.worst_input)
            self.output = max(self.output, p.output_rate)
        self.catalogue_max = catalogue_max


def worst_case_micro(request: InferenceRequest, rates: Rates) -> int:
    """Micro-dollars (prices are USD per million tokens, so a price is micro-dollars per token)."""
    out = request.max_tokens or rates.catalogue_max or UNKNOWN_MAX_OUTPUT
    return math.ceil(prompt_tokens_bound(request) * rates.input + out * rates.output)


def embedding_worst_case_micro(request: EmbeddingRequest, rates: Rates) -> int:
    """Every input token at the dearest input rate (characters bound a text's tokens; a
    pre-tokenised input is its ids); embeddings have no output to pay for."""
    tokens = 16
    for item in request.inputs:
        tokens += len(item) + MESSAGE_OVERHEAD
    return math.ceil(tokens * rates.input)
