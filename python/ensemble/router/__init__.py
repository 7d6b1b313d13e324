"""Choosing where a request goes (see docs/routing.md): candidate endpoints for a model, in the order to try them.

For each provider serving the model (lower `priority` first) the endpoints of its pool are ordered:

1. cache affinity (`strategy: session_affinity` with `cache.enable_session_affinity`): the
   endpoints that hold the prompt prefix (see `affinity`; the one holding the most first) go first
   when the share of the input cost a cache hit saves (`value`, 0..1) makes it worth it: at or
   above `high_value_threshold` a holder is kept even when busier (until admission finds it at its
   limit); below `low_value_threshold` affinity is ignored; in between a holder is kept while its
   utilisation is at most `stickiness_factor * (value - low) / (high - low)` above the least
   utilised endpoint's. A request that leaves the endpoint holding the most of its prompt (that
   endpoint busy, cooling down, at its limit or failing) goes to the next holder if any, and the
   move is logged with the request id;
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
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ensemble.config.schema import CacheConfig
from ensemble.errors import NotFound, Overloaded
from ensemble.providers.base import Endpoint, Provider, Target
from ensemble.ratelimit import Admission, EndpointLimits, now_ms
from ensemble.router.affinity import AffinityTable, PromptKeys, prompt_keys
from ensemble.router.cache_hits import CacheHits
from ensemble.router.value import CacheValue
from ensemble.types import InferenceRequest

__all__ = ["CacheHits", "Candidate", "RouteDecision", "RoutePlan", "Router"]

log = logging.getLogger("ensemble.router")


class Candidate:
    """One (provider, endpoint, model): the Target handed to the adapter plus its capacity state."""

    __slots__ = ("endpoint", "index", "limits", "target", "ttl_ms", "value", "weight")

    def __init__(self, target: Target, limits: EndpointLimits, ttl_ms: int, index: int = 0) -> None:
        self.target = target
        self.endpoint = target.endpoint  # hoisted: read for every candidate of every request
        self.limits = limits
        self.ttl_ms = ttl_ms
        self.index = index  # the endpoint's number in the affinity table (`Router._endpoint_ids`)
        self.weight = max(target.endpoint.weight, 1)
        self.value = CacheValue(target.model.pricing)  # what a cache hit is worth on this model


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
    affinity_endpoint: str = ""  # the endpoint holding the most of the prompt
    value: float = 0.0  # the share of the input cost a hit there saves (what the thresholds compare)


@dataclass(slots=True)
class RoutePlan:
    candidates: list[Candidate]  # in the order to try
    decision: RouteDecision
    cooling_wait_ms: int  # soonest end of a skipped rate-limit cool-down (0: none skipped)
    failing_wait_ms: int  # soonest end of a skipped cool-down after repeated failures (0: none)
    keys: PromptKeys | None
    # Endpoints holding the prompt prefix, (endpoint number, cached tokens), the most tokens first.
    holders: list[tuple[int, int]] | None = None
    # The holder affinity wanted (number; -1: affinity not in force), and why the plan did not
    # put it first when it did not (a move the router decided; the gateway's own skips are read
    # from `attempted` when the request succeeds).
    home: int = -1
    passed_over: str = ""
    attempted: int = 0  # bit n: endpoint n was admitted for an attempt (see `Router.decision_for`)
    # soonest end of a skipped cool-down after the provider said it is overloaded (529; 0: none)
    overloaded_wait_ms: int = 0


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
        # The Endpoint of each number (None: no longer configured, after a reload).
        self._endpoints: list[Endpoint | None] = [None] * len(self._endpoint_ids)
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
                        self._endpoints.append(e)
                    else:
                        self._endpoints[numbers[e.id]] = e
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
        self.stuck = 0  # requests planned onto an endpoint holding their prompt
        self.unstuck_low_value = 0  # affinity ignored: the hit was worth too little
        self.unstuck_busy = 0  # no holder planned first: busy, cooling down or not serving
        self.moved = 0  # served elsewhere than the endpoint holding the most of the prompt
        self.moved_to_holder = 0  # ... by another endpoint holding part of it
        if previous is not None:
            self.stuck, self.unstuck_low_value = previous.stuck, previous.unstuck_low_value
            self.unstuck_busy = previous.unstuck_busy
            self.moved, self.moved_to_holder = previous.moved, previous.moved_to_holder
        # What the providers reported: cached prompt tokens per endpoint (is affinity working?).
        self.cache_hits: CacheHits = CacheHits(
            self._endpoint_ids, previous.cache_hits if previous is not None else None
        )

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
            "moved": self.moved,
            "moved_to_holder": self.moved_to_holder,
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
        holders: list[tuple[int, int]] | None = None
        home = -1
        passed_over = ""
        if request is not None:
            tag = self._affinity_tags.get(model)
            if tag is not None:
                keys = prompt_keys(tag, request.session_id, request.messages)
                holders = self.affinity.lookup(keys, now)
        ordered: list[Candidate] = []
        wait = _NO_WAIT
        failing_wait = _NO_WAIT
        overloaded_wait = _NO_WAIT
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
                        if e.cooling_for_limit and e.cooling_overloaded:
                            overloaded_wait = min(overloaded_wait, left)
                        elif e.cooling_for_limit:
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
            if holders is not None and decision is None and group.affinity:
                assert keys is not None
                decision, home, passed_over = self._apply_affinity(
                    ranked, utils, holders, keys.full_tokens, now_s
                )
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
            holders,
            home,
            passed_over,
            overloaded_wait_ms=0 if overloaded_wait == _NO_WAIT else overloaded_wait,
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
        self,
        ranked: list[Candidate],
        utils: list[float],
        holders: list[tuple[int, int]],
        prompt_tokens: int,
        now_s: float,
    ) -> tuple[RouteDecision | None, int, str]:
        """Move the holders of the prompt that are worth it to the front of `ranked` (`utils`
        follows `ranked`), the one holding the most first. Returns the decision, the number of
        the endpoint holding the most (-1 when affinity is not worth it) and, when that endpoint
        is not first, why."""
        home, home_tokens = holders[0]
        worth = ranked[0].value  # one provider serving one model: one price for the whole group
        value = worth.fraction(home_tokens, prompt_tokens)
        if value < self._low:
            self.unstuck_low_value += 1
            if not value:
                return self._worthless[home], -1, ""
            usd = worth.usd(home_tokens)
            return RouteDecision("least_used", usd, 0.0, self._endpoint_ids[home], value), -1, ""
        usd = worth.usd(home_tokens)
        home_id = self._endpoint_ids[home]
        low, high = self._low, self._high
        chosen: list[int] = []  # positions in `ranked`, in the order they go first
        in_place = True  # chosen == [0, 1, ...]: nothing to move
        lead_tokens = 0
        reason = ""
        why = ""
        v, last = value, home_tokens  # holders often hold the same prefix: value it once
        for index, tokens in holders:
            pos = -1
            for i, c in enumerate(ranked):
                if c.index == index:
                    pos = i
                    break
            if pos < 0:
                why = why or self._not_serving(index, now_s)
                continue
            if tokens != last:
                v, last = worth.fraction(tokens, prompt_tokens), tokens
                if v < low:
                    break  # holders come with fewer tokens from here on: worth even less
            if v < high:
                allowance = self.cache.stickiness_factor * (v - low) / self._span
                if utils[pos] - utils[0] > allowance:
                    why = why or (
                        f"busier than the least used endpoint (utilisation {utils[pos]:.2f} vs "
                        f"{utils[0]:.2f}, allowed {allowance:.2f} more at value {v:.2f})"
                    )
                    continue
            if not chosen:
                reason = "affinity_high_value" if v >= high else "affinity"
                lead_tokens = tokens
            in_place = in_place and pos == len(chosen)
            chosen.append(pos)
        if not chosen:
            self.unstuck_busy += 1
            return RouteDecision("least_used", usd, usd, home_id, value), home, why
        if not in_place:
            front = [ranked[p] for p in chosen]
            ranked[:] = front + [c for i, c in enumerate(ranked) if i not in chosen]
        self.stuck += 1
        if ranked[0].index == home:
            return RouteDecision(reason, usd, 0.0, home_id, value), home, ""
        penalty = max(usd - worth.usd(lead_tokens), 0.0)
        return RouteDecision(reason, usd, penalty, home_id, value), home, why

    def _not_serving(self, index: int, now_s: float) -> str:
        e = self._endpoints[index]
        if e is None:
            return "it is no longer configured"
        if not e.has_credential:
            return "it has no credential"
        if e.cooldown_until > now_s:
            cause = "a rate limit (429/529)" if e.cooling_for_limit else "repeated upstream failures"
            return f"it is cooling down after {cause}"
        return "a provider of higher priority serves the model"

    def decision_for(self, plan: RoutePlan, chosen: Candidate) -> RouteDecision:
        """The routing decision of an attempt on `chosen`, the candidate admission let through:
        the plan's own for its first candidate, else a failover that gives up the part of the
        cache value `chosen` does not hold."""
        plan.attempted |= 1 << chosen.index
        decision = plan.decision
        if chosen is plan.candidates[0]:
            return decision
        lost = 0.0
        if decision.affinity_endpoint and decision.affinity_endpoint != chosen.endpoint.id:
            held = next((t for i, t in plan.holders or () if i == chosen.index), 0)
            lost = max(decision.cache_value - chosen.value.usd(held), 0.0)
        return RouteDecision(
            "failover", decision.cache_value, lost, decision.affinity_endpoint, decision.value
        )

    def remember(self, plan: RoutePlan, chosen: Candidate, request_id: str = "") -> None:
        """The request succeeded on `chosen`: its prompt is now in that endpoint's cache (the
        endpoints that held it before keep their copies as fallbacks)."""
        if plan.keys is not None:
            self.affinity.remember(plan.keys, chosen.index, self.clock(), chosen.ttl_ms)
        if plan.home >= 0 and chosen.index != plan.home:
            self._moved(plan, chosen, request_id)

    def _moved(self, plan: RoutePlan, chosen: Candidate, request_id: str) -> None:
        """Count and log a request that left the endpoint holding the most of its prompt."""
        self.moved += 1
        home = plan.home
        held = next((t for i, t in plan.holders or () if i == chosen.index), 0)
        if held:
            self.moved_to_holder += 1
        # When the plan put it first, the gateway went on to the next candidate: admission
        # refused it, or its upstream call (admitted: `attempted`) failed.
        why = plan.passed_over or (
            "its upstream call failed" if plan.attempted >> home & 1 else "it is at its RPM/TPM limit"
        )
        if not log.isEnabledFor(logging.INFO):
            return
        prompt = plan.keys.full_tokens if plan.keys is not None else 0
        if held:
            there = f"{chosen.endpoint.id} holds ~{held} of the ~{prompt} prompt tokens"
        else:
            there = f"{chosen.endpoint.id} holds none of the ~{prompt} prompt tokens"
        log.info(
            "affinity move %s: %s -> %s because %s; %s",
            request_id or "-",
            self._endpoint_ids[home],
            chosen.endpoint.id,
            why,
            there,
        )
