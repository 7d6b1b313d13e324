"""Provider adapters, one module per vendor, all behind `Provider` (see base.py); each module
registers its type in `registry` (see docs/providers.md)."""

from __future__ import annotations

from ensemble.providers.base import CallOptions, Endpoint, Provider, Target
from ensemble.providers.registry import ProviderKind, build_provider, kind, kinds, register, supported_types

__all__ = [
    "CallOptions",
    "Endpoint",
    "Provider",
    "ProviderKind",
    "Target",
    "build_provider",
    "kind",
    "kinds",
    "register",
    "supported_types",
]
