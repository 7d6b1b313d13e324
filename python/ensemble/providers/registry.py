"""Provider types: each adapter module registers everything the gateway needs to know about its type.

A module of this package calls `register(ProviderKind(...))` when it is imported, and `kinds()`
imports every module of the package once, so a new provider is one new file here (see
docs/providers.md). Installed packages can add types too, through the `ensemble.providers` entry
point group (the entry point names a module that registers, or a `ProviderKind`).

What reads a kind: config validation (`type:` and the provider file's `<type>:` options block,
`base_url` defaults), the router (cache TTL default), credentials (whether an endpoint needs a
key) and `build_provider`. Nothing else in the gateway names provider types.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.metadata
import logging
import pkgutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ensemble.providers.base import DEFAULT_CACHE_TTL, HttpProvider

if TYPE_CHECKING:
    import msgspec

    from ensemble.config.schema import ProviderConfig
    from ensemble.providers.base import Provider, WireFormat
    from ensemble.upstream import UpstreamClient

log = logging.getLogger("ensemble.providers")

ENTRY_POINT_GROUP = "ensemble.providers"


def _always(_config: ProviderConfig) -> bool:
    return True


def _no_problems(_config: ProviderConfig) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True, kw_only=True, eq=False)
class ProviderKind:
    """One provider type (`type:` in a provider file)."""

    type: str
    # HTTP providers give their wire format (built per provider config); HttpProvider does the rest.
    wire: Callable[[ProviderConfig], WireFormat] | None = None
    # Providers that are not plain HTTP (the local mock) build their adapter themselves.
    build: Callable[[ProviderConfig, UpstreamClient], Provider] | None = None
    # Used when the provider file gives no base_url; "" makes base_url required (unless local).
    default_base_url: str = ""
    # Seconds the provider keeps a prompt prefix cached: how long cache affinity remembers an
    # endpoint. `cache.ttls.<type>` (or `.<provider name>`) in the config overrides it.
    cache_ttl: float = DEFAULT_CACHE_TTL
    # Answers in-process: no base_url, and one endpoint `<name>-local` when the file lists none.
    local: bool = False
    # The `<type>:` block of a provider file (a msgspec Struct with defaults), e.g. `mock: {latency}`.
    options: builtins.type[msgspec.Struct] | None = None
    # Whether an endpoint without an api_key is unavailable (per config: some types make it optional).
    needs_credential: Callable[[ProviderConfig], bool] = _always
    # The API has an embeddings endpoint the adapter speaks: models of this type may be `kind: embedding`.
    embeds: bool = False
    # Rules the options' types cannot say: (key path inside the provider file, problem) pairs.
    check: Callable[[ProviderConfig], list[tuple[str, str]]] = _no_problems

    def create(self, config: ProviderConfig, client: UpstreamClient) -> Provider:
        if self.build is not None:
            return self.build(config, client)
        if self.wire is None:
            raise TypeError(
                f"provider type {self.type!r} registers neither a wire format nor a build function"
            )
        return HttpProvider(
            config,
            client,
            self.wire(config),
            needs_key=self.needs_credential(config),
            cache_ttl=self.cache_ttl,
        )


_kinds: dict[str, ProviderKind] = {}
_failed: dict[str, str] = {}  # entry point name -> why it could not be loaded
_discovered = False


def register(kind: ProviderKind) -> ProviderKind:
    """Make `kind.type` a valid provider type (called by the module implementing it, at import)."""
    existing = _kinds.get(kind.type)
    if existing is not None and existing is not kind:
        raise ValueError(f"provider type {kind.type!r} is registered twice")
    _kinds[kind.type] = kind
    return kind


def discover() -> None:
    """Import every module of this package and every `ensemble.providers` entry point (idempotent:
    modules already imported are not imported again, so calling it after adding one picks it up)."""
    global _discovered
    package = sys.modules[__package__]  # ensemble.providers, loaded before any of its modules
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _failed:
            continue
        try:
            loaded: Any = entry.load()
        except Exception as e:  # a broken plugin must not take the built-in providers down
            _failed[entry.name] = f"{type(e).__name__}: {e}"
            log.error(
                "provider plugin %s (%s) could not be loaded: %s",
                entry.name,
                entry.value,
                _failed[entry.name],
            )
            continue
        if isinstance(loaded, ProviderKind):
            register(loaded)
    _discovered = True


def kinds() -> Mapping[str, ProviderKind]:
    """Every known provider type, by name."""
    if not _discovered:
        discover()
    return _kinds


def kind(provider_type: str) -> ProviderKind:
    found = kinds().get(provider_type)
    if found is None:
        raise KeyError(unknown_type(provider_type))
    return found


def unknown_type(provider_type: object) -> str:
    """The problem to report for a `type:` no module registers."""
    known = ", ".join(sorted(kinds()))
    text = f"unknown provider type {provider_type!r} (expected one of: {known})"
    if _failed:
        text += "; provider plugins that failed to load: " + ", ".join(
            f"{n} ({e})" for n, e in _failed.items()
        )
    return text + "; any OpenAI-compatible API is `type: openai_compatible` with its base_url"


def supported_types() -> frozenset[str]:
    return frozenset(kinds())


def build_provider(config: ProviderConfig, client: UpstreamClient) -> Provider:
    """The adapter for a (validated) provider config."""
    return kind(config.type).create(config, client)
