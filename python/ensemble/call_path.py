"""The two steps of a request that an observer may wrap: planning it, and each upstream call.

The gateway runs them through `Gateway.calls`, a `CallPath`. `DirectCalls` runs them as they are;
tracing replaces it with a wrapper around it that opens a span per step (telemetry/tracing.py), so
with tracing off the request path holds no tracer code and nothing is patched at run time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from ensemble.gateway import CallContext
    from ensemble.providers.base import CallOptions, Target
    from ensemble.router import RoutePlan
    from ensemble.types import (
        EmbeddingRequest,
        EmbeddingResult,
        InferenceRequest,
        ProviderResult,
        StreamDelta,
    )

# What one call asks for: an answer, or embeddings (each has its own `prepare`).
R = TypeVar("R", "InferenceRequest", "EmbeddingRequest")
Prepare = Callable[[R, "CallContext"], "RoutePlan"]


class CallPath(Protocol):
    def plan(self, prepare: Prepare[R], request: R, ctx: CallContext) -> RoutePlan:
        """Validation, admission and candidate selection (`prepare`) for one request."""
        ...

    def complete(
        self, request: InferenceRequest, target: Target, opts: CallOptions
    ) -> Awaitable[ProviderResult]:
        """One upstream attempt for a whole answer (failovers make more)."""
        ...

    def stream(
        self,
        request: InferenceRequest,
        target: Target,
        opts: CallOptions,
        raw: bool = False,
    ) -> AsyncIterator[list[StreamDelta]]:
        """One upstream attempt for a stream; it ends when the iterator does. `raw`: the
        same-format fast path (`Provider.stream`)."""
        ...

    def embed(
        self, request: EmbeddingRequest, target: Target, opts: CallOptions
    ) -> Awaitable[EmbeddingResult]:
        """One upstream attempt for embeddings."""
        ...


class DirectCalls:
    def plan(self, prepare: Prepare[R], request: R, ctx: CallContext) -> RoutePlan:
        return prepare(request, ctx)

    def complete(
        self, request: InferenceRequest, target: Target, opts: CallOptions
    ) -> Awaitable[ProviderResult]:
        return target.provider.complete(request, target, opts)

    def stream(
        self,
        request: InferenceRequest,
        target: Target,
        opts: CallOptions,
        raw: bool = False,
    ) -> AsyncIterator[list[StreamDelta]]:
        return target.provider.stream(request, target, opts, raw)

    def embed(
        self, request: EmbeddingRequest, target: Target, opts: CallOptions
    ) -> Awaitable[EmbeddingResult]:
        return target.provider.embed(request, target, opts)
