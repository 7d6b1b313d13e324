"""Choosing where a request goes: candidate endpoints for a model, in the order to try them."""

from __future__ import annotations

import itertools
import time

from ensemble.errors import NotFound, Overloaded
from ensemble.providers.base import Provider, Target


class Router:
    """Candidates are the endpoints of every provider listing the model, by provider priority
    (lower first); within a provider, endpoints rotate so load spreads (cache affinity and
    utilisation-aware strategies refine this order)."""

    def __init__(self, providers: list[Provider]) -> None:
        self.providers = sorted(providers, key=lambda p: p.config.priority)
        self._by_model: dict[str, list[Provider]] = {}
        for p in self.providers:
            for name in p.models:
                self._by_model.setdefault(name, []).append(p)
        self._rotation = {p.name: itertools.count() for p in self.providers}

    def models(self) -> dict[str, list[Provider]]:
        return self._by_model

    def knows(self, model: str) -> bool:
        return model in self._by_model

    def candidates(self, model: str) -> list[Target]:
        providers = self._by_model.get(model)
        if not providers:
            raise NotFound(
                f"model {model!r} is not served by this gateway; GET /api/v1/models lists the models",
                code="model_not_found",
            )
        now = time.monotonic()
        ready: list[Target] = []
        cooling: list[Target] = []
        for p in providers:
            usable = [e for e in p.endpoints if e.has_credential]
            if not usable:
                continue
            start = next(self._rotation[p.name]) % len(usable)
            for e in usable[start:] + usable[:start]:
                target = Target(provider=p, endpoint=e, model=p.models[model], price=p.prices[model])
                (cooling if e.cooling_down(now) else ready).append(target)
        if not ready and not cooling:
            raise Overloaded(
                f"no endpoint serving {model!r} has a usable credential; set the provider's API key",
                code="no_available_endpoint",
            )
        # Endpoints cooling down after a 429/5xx go last rather than nowhere: better a likely
        # failure than a certain one when nothing else is left.
        return ready + cooling
