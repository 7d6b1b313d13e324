"""xAI (`type: xai`): OpenAI's Chat Completions at api.x.ai, with `max_tokens` and no `top_k`.

xAI reports reasoning tokens beside completion_tokens rather than inside them; `usage_from_wire`
tells the two apart by the total, so no setting is needed for it.
"""

from __future__ import annotations

from ensemble.providers.openai import OpenAIDialect, OpenAIWire
from ensemble.providers.registry import ProviderKind, register

XAI = OpenAIDialect()

KIND = register(
    ProviderKind(
        type="xai",
        wire=lambda _config: OpenAIWire(XAI),
        default_base_url="https://api.x.ai",
        cache_ttl=600.0,
    )
)
