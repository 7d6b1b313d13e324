"""Any API that speaks OpenAI's Chat Completions (`type: openai_compatible`): Mistral, DeepSeek, Groq,
Together, Fireworks, a local vLLM or Ollama, … One provider file with a `base_url` is enough; the
`openai_compatible:` block covers the ways these APIs differ (see docs/providers.md and
config/examples/providers/):

    openai_compatible:
      max_tokens_field: max_tokens     # or max_completion_tokens (OpenAI, Groq)
      stream_usage: true               # false where stream_options is refused (Mistral)
      path: /v1/chat/completions       # e.g. /chat/completions for APIs not under /v1
      headers: {}                      # sent with every request
      drop_keys: [top_k]               # provider_config keys never forwarded
      requires_api_key: true           # false for local servers that take no key

Models marked `kind: embedding` are called at the embeddings route beside `path` (`/v1/embeddings`
for the default), asking for float vectors, which every such API returns.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ensemble.config.schema import ProviderConfig
from ensemble.providers.openai import FOREIGN_KEYS, OpenAIDialect, OpenAIWire
from ensemble.providers.registry import ProviderKind, register

# Headers the gateway sets itself (the credential, the body's type, what it accepts).
RESERVED_HEADERS = frozenset({"authorization", "content-type", "accept", "content-length", "host"})


class OpenAICompatibleOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    stream_usage: bool = True
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    drop_keys: list[str] = msgspec.field(default_factory=lambda: ["top_k"])
    requires_api_key: bool = True


def options(config: ProviderConfig) -> OpenAICompatibleOptions:
    found = config.options
    return found if isinstance(found, OpenAICompatibleOptions) else OpenAICompatibleOptions()


def dialect(config: ProviderConfig) -> OpenAIDialect:
    o = options(config)
    return OpenAIDialect(
        max_tokens_field=o.max_tokens_field,
        stream_usage=o.stream_usage,
        drop_keys=FOREIGN_KEYS | frozenset(o.drop_keys),
        headers=dict(o.headers),
        path=o.path,
        embeddings_path=embeddings_path(o.path),
    )


def embeddings_path(chat_path: str) -> str:
    """The embeddings route beside the chat route: /v1/chat/completions → /v1/embeddings."""
    root = chat_path.removesuffix("/chat/completions")
    return (root if root != chat_path else "/v1") + "/embeddings"


def check(config: ProviderConfig) -> list[tuple[str, str]]:
    o = options(config)
    problems = []
    if not o.path.startswith("/"):
        problems.append(("openai_compatible.path", f"must start with / (got {o.path!r})"))
    for name, value in o.headers.items():
        if name.lower() in RESERVED_HEADERS:
            problems.append(
                (f"openai_compatible.headers.{name}", "is set by the gateway and cannot be overridden")
            )
        elif any(c in name + value for c in "\r\n") or not name.strip():
            problems.append(
                (f"openai_compatible.headers.{name}", "names and values must be non-empty single lines")
            )
    return problems


KIND = register(
    ProviderKind(
        type="openai_compatible",
        wire=lambda config: OpenAIWire(dialect(config)),
        options=OpenAICompatibleOptions,
        needs_credential=lambda config: options(config).requires_api_key,
        check=check,
        embeds=True,
    )
)
