"""Choosing where a request goes (see docs/routing.md): candidate endpoints for a model, in the order to try them.

For each provider serving the model (lower `priority` first) the endpoints of its pool are ordered:

1. cache affinity (`strategy: session_affinity` with `cache.enable_session_affinity`): the endpoint
   that most likely holds the prompt prefix (see `affinity`) goes first when the estimated dollars
   a cache hit saves (`cached tokens * (input - cache_read price)`) make it worth it:
   at or above `high_value_threshold` it is kept even when busier; below `low_value_threshold`
   affinity is ignored; in between it is kept while its utilisation is at most
   `stickiness_factor * (value - low) / (high - low)` above the least utilised endpoint's;
2. endpoints cooling down after an upstream 429/5xx are left out (their wait is kept for the
   client's `Retry-After`); endpoints at their RPM/TPM limit are refused by admission in the
   gateway's failover loop, and sort last here because they are the most utilised;
3. the rest: least utilised first (`session_affinity`, `least_used`; utilisation is the fullest of
   RPM/TPM against the endpoint's limits and the provider's own rate-limit headers, or for an
   endpoint with no known limit its share of the pool's recent requests, divided by `weight`), or
   weighted rotation (`round_robin`).

Everything that can be is built once per (model, provider, endpoint): no per-request lookups by name.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ensemble.config.schema import CacheConfig
from ensemble.errors import NotFound, Overloaded
from ensemble.providers.base import Provider, Target
from ensemble.ratelimit import Admission, EndpointLimits, now_ms
from ensemble.router.affinity import MIN_CACHEABLE_TOKENS, AffinityTable, PromptKeys, prompt_keys
from ensemble.types import InferenceRequest

__all__ = ["Candidate", "RouteDecision", "RoutePlan", "Router"]


class Candidate:
    """One (provider, endpoint, model): the Target handed to the adapter plus its capacity state."""

    __slots__ = ("endpoint", "index", "limits", "saving_per_token", "target", "ttl_ms", "weight")

    def __init__(self, target: Target, limits: EndpointLimits, ttl_ms: int, index: int = 0) -> None:
        self.target = target
        self.endpoint = target.endpoint  # hoisted: read for every candidate of every request
        self.limits = limits
        self.ttl_ms = ttl_ms
        self.index = index  # the endpoint's number in the affinity table (`Router._endpoint_ids`)
        self.weight = max(target.endpoint.weight, 1)
        pricing = target.model.pricing
        # Dollars saved per prompt token read from the cache instead of sent fresh.
        self.saving_per_token = max(pricing.input - pricing.cache_read, 0.0) / 1_000_000


class _Group:
    """The endpoints of one provider serving one model."""

    __slots__ = (
        "affinity",
        "candidates",
        "cycle",
        "provider",
        "rotation",
        "scopes",
        "strategy",
        "unlimited",
        "weights",
    )

    def __init__(self, provider: Provider, candidates: list[Candidate], affinity: bool) -> None:
        self.provider = provider
        self.candidates = candidates
        self.strategy = provider.config.strategy
        self.affinity = affinity and self.strategy == "session_affinity"
        # What the native ranking needs when every candidate is ready, built once: the limiter
        # scopes, the weights (empty: all 1), and whether any endpoint has no configured limit
        # (then requests in flight count towards relative load).
        self.scopes = [c.limits.scope for c in candidates]
        self.weights = [c.weight for c in candidates] if any(c.weight != 1 for c in candidates) else []
        self.unlimited = any(not (c.limits.rpm or c.limits.tpm) for c in candidates)
        # Weighted round robin: an endpoint of weight w appears w times, interleaved.
        order: list[int] = []
        remaining = [c.weight for c in candidates]
        while any(remaining):
            for i, left in enumerate(remaining):
                if left:
                    order.append(i)
                    remaining[i] -= 1
        self.cycle = order
        self.rotation = itertools.count()


class RouteDecision(NamedTuple):
    """Why a request went where it went: logged with the request (request_log.route_reason,
    cache_value_usd, cost_penalty_usd) and returned in `x-ensemble-route-reason`. A tuple: built
    on every affinity decision, and immutable so the ones without numbers are shared."""

    # affinity_high_value | affinity | least_used | round_robin | failover | cooling_down | provider_batch
    reason: str
    cache_value: float = 0.0  # estimated USD a cache hit saves on the affinity endpoint
    cost_penalty: float = 0.0  # estimated USD of that saving given up by going elsewhere
    affinity_endpoint: str = ""


@dataclass(slots=True)
class RoutePlan:
    candidates: list[Candidate]  # in the order to try
    decision: RouteDecision
    cooling_wait_ms: int  # soonest end of a skipped rate-limit cool-down (0: none skipped)
    failing_wait_ms: int  # soonest end of a skipped cool-down after repeated failures (0: none)
    keys: PromptKeys | None


_NO_WAIT = 1 << 62
# Decisions without numbers are shared.
_LEAST_USED = RouteDecision("least_used")
_ROUND_ROBIN = RouteDecision("round_robin")
_COOLING = RouteDecision("cooling_down")
_ONE = [0.0]
_NONE: list[Any] = []  # an empty list passed to the native ranking (never mutated)


class Router:
    def __init__(
        self,
        providers: list[Provider],
        cache: CacheConfig | None = None,
        admission: Admission | None = None,
        clock: Callable[[], int] = now_ms,
        previous: Router | None = None,
    ) -> None:
        """`previous`: the router this one replaces (a config reload). Endpoints and models keep
        their numbers in the affinity table, which carries over with its counters."""
        self.cache = cache or CacheConfig()
        self.admission = admission or Admission(window_s=60, default_rpm=0, default_tpm=0, clock=clock)
        self.clock = clock
        self.providers = sorted(providers, key=lambda p: p.config.priority)
        self._by_model: dict[str, list[Provider]] = {}
        for p in self.providers:
            for name in p.models:
                self._by_model.setdefault(name, []).append(p)
        ttls = {k: int(v * 1000) for k, v in self.cache.ttls.items()}
        self._groups: dict[str, list[_Group]] = {}
        # The affinity table stores endpoints by number: `_endpoint_ids[n]` is endpoint n.
        self._endpoint_ids: list[str] = list(previous._endpoint_ids) if previous is not None else []
        numbers: dict[str, int] = {e: n for n, e in enumerate(self._endpoint_ids)}
        tags = dict(previous._tags) if previous is not None else {}
        for model, serving in self._by_model.items():
            tags.setdefault(model, len(tags))
            groups = []
            for p in serving:
                ttl = ttls.get(p.type, ttls.get(p.name, int(p.cache_ttl * 1000)))
                cands = []
                for e in p.endpoints:
                    if e.id not in numbers:
                        numbers[e.id] = len(self._endpoint_ids)
                        self._endpoint_ids.append(e.id)
                    cands.append(
                        Candidate(
                            Target(provider=p, endpoint=e, model=p.models[model], price=p.prices[model]),
                            self.admission.endpoint(e.id, model, e.rpm_limit, e.tpm_limit),
                            ttl,
                            numbers[e.id],
                        )
                    )
                groups.append(_Group(p, cands, self.cache.enable_session_affinity))
            self._groups[model] = groups
        self._tags: dict[str, int] = tags  # every model's tag in its prompt fingerprints
        # The tags of the models that use affinity at all.
        self._affinity_tags = {m: tags[m] for m, gs in self._groups.items() if any(g.affinity for g in gs)}
        table: AffinityTable | None = previous.affinity if previous is not None else None
        if table is None or table.max_entries != self.cache.max_cache_entries:
            table = AffinityTable(self.cache.max_cache_entries)
        self.affinity: AffinityTable = table
        # The decision for a hit worth nothing (a prompt below the providers' cache minimum, e.g.
        # a short chat with a session id), per endpoint: common, so shared rather than rebuilt.
        self._worthless = [RouteDecision("least_used", 0.0, 0.0, eid) for eid in self._endpoint_ids]
        self._high = self.cache.high_value_threshold
        self._low = self.cache.low_value_threshold
        self._span = max(self._high - self._low, 1e-12)
        self.stuck = 0  # requests sent to their affinity endpoint
        self.unstuck_low_value = 0  # affinity ignored: the hit was worth too little
        self.unstuck_busy = 0  # affinity endpoint skipped: busy, cooling down or not serving
        if previous is not None:
            self.stuck, self.unstuck_low_value = previous.stuck, previous.unstuck_low_value
            self.unstuck_busy = previous.unstuck_busy

    def models(self) -> dict[str, list[Provider]]:
        return self._by_model

    def knows(self, model: str) -> bool:
        return model in self._by_model

    def stats(self) -> dict[str, int]:
        """Cache-affinity counters for the admin status page (this process only)."""
        return {
            "entries": len(self.affinity),
            "max_entries": self.affinity.max_entries,
            "hits": self.affinity.hits,
            "misses": self.affinity.misses,
            "evictions": self.affinity.evictions,
            "stuck": self.stuck,
            "ignored_low_value": self.unstuck_low_value,
            "overridden_busy": self.unstuck_busy,
        }

    def candidates(self, model: str) -> list[Target]:
        """Targets in try order, without affinity (kept for callers that only need the pool)."""
        return [c.target for c in self.plan(model, None).candidates]

    def plan(self, model: str, request: InferenceRequest | None) -> RoutePlan:
        # Runs for every request: the common case (all endpoints ready, one provider) takes the
        # fewest Python steps; the fingerprints, the affinity table and the endpoint counters are
        # native, one call each.
        groups = self._groups.get(model)
        if not groups:
            raise NotFound(
                f"model {model!r} is not served by this gateway; GET /api/v1/models lists the models",
                code="model_not_found",
            )
        now = self.clock()
        now_s = now / 1000
        keys: PromptKeys | None = None
        hit: tuple[int, int] | None = None
        if request is not None:
            tag = self._affinity_tags.get(model)
            if tag is not None:
                keys = prompt_keys(tag, request.session_id, request.messages)
                hit = self.affinity.lookup(keys, now)
        ordered: list[Candidate] = []
        wait = _NO_WAIT
        failing_wait = _NO_WAIT
        usable_any = False
        decision: RouteDecision | None = None
        for group in groups:
            cands = group.candidates
            ready = [c for c in cands if c.endpoint.cooldown_until <= now_s and c.endpoint.has_credential]
            n = len(ready)
            if n < len(cands):
                # Some left out: note whether any could serve at all, and when the cooling ones end.
                for c in cands:
                    e = c.endpoint
                    if not e.has_credential:
                        continue
                    usable_any = True
                    if e.cooldown_until > now_s:
                        left = int((e.cooldown_until - now_s) * 1000) + 1
                        if e.cooling_for_limit:
                            wait = min(wait, left)
                        else:
                            failing_wait = min(failing_wait, left)
            if not n:
                continue
            usable_any = True
            if group.strategy == "round_robin":
                start = next(group.rotation)
                first = cands[group.cycle[start % len(group.cycle)]]
                if first not in ready:
                    first = ready[start % n]
                ordered.append(first)
                ordered.extend(c for c in ready if c is not first)
                if decision is None:
                    decision = _ROUND_ROBIN
                continue
            if n == 1:
                ranked, utils = ready, _ONE
            else:
                order, utils = self._rank(group, ready, n == len(cands), now)
                ranked = [ready[i] for i in order]
            if hit is not None and decision is None and group.affinity:
                decision = self._apply_affinity(ranked, utils, hit)
            ordered.extend(ranked)
            if decision is None:
                decision = _LEAST_USED
        if not usable_any:
            raise Overloaded(
                f"no endpoint serving {model!r} has a usable credential; set the provider's API key",
                code="no_available_endpoint",
            )
        return RoutePlan(
            ordered,
            decision or _COOLING,
            0 if wait == _NO_WAIT else wait,
            0 if failing_wait == _NO_WAIT else failing_wait,
            keys,
        )

    def _rank(
        self, group: _Group, ready: list[Candidate], all_ready: bool, now: int
    ) -> tuple[list[int], list[float]]:
        """Order of the ready candidates (at least two), least utilised first, and their
        utilisations in that order (native `RateLimiter.rank`, see rust/src/rank.rs).

        Utilisation is the fullest of RPM/TPM against the endpoint's limits and the provider's own
        rate-limit headers, divided by `weight`; an endpoint with no known limit gets its weighted
        share of the pool's recent requests (in the window, plus those in flight). The pool is
        rotated before the (stable) sort so equal utilisation spreads over the pool instead of
        always picking the first endpoint."""
        adm = self.admission
        shift = next(group.rotation)
        if all_ready:
            scopes, weights = group.scopes, group.weights
        else:
            scopes = [c.limits.scope for c in ready]
            weights = [c.weight for c in ready] if group.weights else _NONE
        floors = _NONE
        if now < adm.views_until:  # some provider stated its limits recently
            floors = [
                c.limits.upstream.used_fraction() if c.limits.upstream.reset_at_ms > now else -1.0
                for c in ready
            ]
        in_flight = [c.endpoint.in_flight for c in ready] if group.unlimited else _NONE
        return adm.limiter.rank(scopes, floors, weights, in_flight, shift, now)

    def _apply_affinity(
        self, ranked: list[Candidate], utils: list[float], hit: tuple[int, int]
    ) -> RouteDecision | None:
        """Move the affinity endpoint first when the hit is worth it (`utils` follows `ranked`)."""
        index, tokens = hit
        pos = -1
        for i, c in enumerate(ranked):
            if c.index == index:
                pos = i
                break
        if pos < 0:  # remembered endpoint is not serving now (cooling down, no credential)
            self.unstuck_busy += 1
            return None
        value = tokens * ranked[pos].saving_per_token if tokens >= MIN_CACHEABLE_TOKENS else 0.0
        if value < self._low:
            self.unstuck_low_value += 1
            if not value:
                return self._worthless[index]
            return RouteDecision("least_used", value, 0.0, self._endpoint_ids[index])
        endpoint_id = self._endpoint_ids[index]
        if value >= self._high:
            reason = "affinity_high_value"
        else:
            allowance = self.cache.stickiness_factor * (value - self._low) / self._span
            if utils[pos] - utils[0] > allowance:
                self.unstuck_busy += 1
                return RouteDecision("least_used", value, value, endpoint_id)
            reason = "affinity"
        if pos:
            ranked.insert(0, ranked.pop(pos))
        self.stuck += 1
        return RouteDecision(reason, value, 0.0, endpoint_id)

    def remember(self, plan: RoutePlan, chosen: Candidate) -> None:
        """The request succeeded on `chosen`: its prompt is now in that endpoint's cache."""
        if plan.keys is not None:
            self.affinity.remember(plan.keys, chosen.index, self.clock(), chosen.ttl_ms)
