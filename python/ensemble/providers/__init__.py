"""Provider adapters, one module per vendor, all behind `Provider` (see base.py)."""

from __future__ import annotations

from collections.abc import Callable

from ensemble.config.schema import ProviderConfig
from ensemble.providers.anthropic import AnthropicProvider
from ensemble.providers.base import CallOptions, Endpoint, Provider, Target
from ensemble.providers.gemini import GeminiProvider
from ensemble.providers.mock import MockProvider
from ensemble.providers.openai import OpenAIProvider
from ensemble.upstream import UpstreamClient

_FACTORIES: dict[str, Callable[[ProviderConfig, UpstreamClient], Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "xai": OpenAIProvider,
    "openrouter": OpenAIProvider,
    "mock": lambda config, _client: MockProvider(config),
}


def supported_types() -> frozenset[str]:
    return frozenset(_FACTORIES)


def build_provider(config: ProviderConfig, client: UpstreamClient) -> Provider | None:
    """The adapter for a provider config, or None when this build has no adapter for its type."""
    factory = _FACTORIES.get(config.type)
    return factory(config, client) if factory else None


__all__ = ["CallOptions", "Endpoint", "Provider", "Target", "build_provider", "supported_types"]
