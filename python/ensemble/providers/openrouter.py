"""OpenRouter (`type: openrouter`): OpenAI's Chat Completions at openrouter.ai/api, in front of many
vendors. It takes `max_tokens` and `top_k` (passed on to the model's vendor), wants an `X-Title`
naming the calling app, and reports what each call really cost in `usage.cost` (USD), which wins
over the configured price list. Reasoning comes as `reasoning_details` (text with signatures,
summaries, encrypted data): read into thinking blocks, and sent back on later assistant turns.
"""

from __future__ import annotations

from ensemble.providers.openai import FOREIGN_KEYS, OpenAIDialect, OpenAIWire
from ensemble.providers.registry import ProviderKind, register

OPENROUTER = OpenAIDialect(
    drop_keys=FOREIGN_KEYS,
    headers={"X-Title": "Ensemble"},
    reports_cost=True,
    embeddings_base64=True,
    reasoning_details=True,
)

KIND = register(
    ProviderKind(
        type="openrouter",
        wire=lambda _config: OpenAIWire(OPENROUTER),
        default_base_url="https://openrouter.ai/api",
        cache_ttl=300.0,
        embeds=True,
    )
)
