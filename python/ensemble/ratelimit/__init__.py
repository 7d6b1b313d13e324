"""Rate-limit admission on the native counters (see docs/routing.md): per key first, then per (endpoint, model).

Both levels reserve at admission (1 request + estimated tokens) and are reconciled with the real
usage when the response ends. Endpoint capacity has two sources: our own sliding-window counters
against the endpoint's configured `rpm_limit`/`tpm_limit`, and what the provider last told us in
its rate-limit headers (`upstream.py`), which also covers traffic we do not see (other gateways,
other tools sharing the provider key).

With `server.workers > 1` every worker process has its own counters; they agree across processes
(and instances) only when the Redis sync is configured, which feeds `RateLimiter.set_global` from
the `drain_deltas` of every instance (scope-agnostic: key and endpoint scopes alike).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ensemble._native import RateLimiter, monotonic_ms
from ensemble.errors import InvalidRequest, RateLimited
from ensemble.ratelimit.lease import Leases
from ensemble.ratelimit.upstream import UpstreamView, parse_headers
from ensemble.storage.keys import KeyRecord
from ensemble.types import RateLimitInfo

__all__ = ["Admission", "EndpointLimits", "Reservation", "UpstreamView", "now_ms", "parse_headers"]


def _python_now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


# The admission clock is read several times per request. Where Python's monotonic clock is
# CLOCK_MONOTONIC (Linux), the native reading of that same clock is one C call instead of a
# Python function; cool-downs compare it with time.monotonic(), so elsewhere Python's is kept.
now_ms: Callable[[], int] = (
    monotonic_ms
    if time.get_clock_info("monotonic").implementation == "clock_gettime(CLOCK_MONOTONIC)"
    else _python_now_ms
)


def slot_count(window_ms: int, wanted: int = 60) -> int:
    """The native counters split the window into equal slots: the most slots (up to `wanted`)
    that divide the window exactly, so any configured window works (1m → 60 slots of 1s)."""
    return next(n for n in range(min(wanted, window_ms), 0, -1) if window_ms % n == 0)


@dataclass(slots=True)
class Reservation:
    scopes: list[str]
    tokens: int
    at_ms: int


class EndpointLimits:
    """Capacity state of one (endpoint, model): built once, reused by every request."""

    __slots__ = ("endpoint_id", "model", "rpm", "scope", "scopes", "tpm", "upstream")

    def __init__(self, endpoint_id: str, model: str, rpm: int, tpm: int) -> None:
        self.endpoint_id = endpoint_id
        self.model = model
        self.rpm = rpm
        self.tpm = tpm
        # docs/scale-out.md names the shared counter `{namespace}:ratelimit:{endpoint_id}:{model}`; the Redis
        # sync adds the prefix, so the local scope is the tail of that name.
        self.scope = f"ep:{endpoint_id}:{model}"
        self.scopes = [self.scope]  # hoisted: admit/reconcile take a list
        self.upstream = UpstreamView()

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.upstream.limit_requests or self.upstream.limit_tokens)


class Admission:
    def __init__(
        self, *, window_s: float, default_rpm: int, default_tpm: int, clock: Callable[[], int] = now_ms
    ) -> None:
        self.clock = clock
        self.window_ms = max(int(window_s * 1000), 1)
        self.limiter = RateLimiter(self.window_ms, slot_count(self.window_ms))
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self._configured: dict[str, tuple[int, int]] = {}
        self._keys: dict[str, tuple[int, int, list[str]]] = {}
        self._endpoints: dict[tuple[str, str], EndpointLimits] = {}
        # Scale-out (Redis): quota leased from the shared window gates limited key scopes (see
        # lease.py); `on_endpoint` lets the sync pull the shared view of each endpoint scope.
        self.leases: Leases | None = None
        self.on_endpoint: Callable[[str], None] | None = None
        # The latest `reset_at_ms` of any endpoint's upstream view (views are only set by
        # `observe`): before it, routers must fold the provider's own numbers into utilisation.
        self.views_until = 0

    # -- per key ---------------------------------------------------------------------------------

    @staticmethod
    def key_scope(key_id: str) -> str:
        return f"key:{key_id}"

    def limits_for(self, key: KeyRecord) -> tuple[int, int]:
        return (key.rate_limit_rpm or self.default_rpm, key.rate_limit_tpm or self.default_tpm)

    def configure_key(self, key: KeyRecord) -> None:
        limits = self.limits_for(key)
        scope = self.key_scope(key.key_id)
        if self._configured.get(scope) != limits:
            self.limiter.configure(scope, *limits)
            self._configured[scope] = limits

    def admit_key(self, key: KeyRecord, tokens: int) -> Reservation:
        rpm = key.rate_limit_rpm or self.default_rpm
        tpm = key.rate_limit_tpm or self.default_tpm
        # Per key id: the limits last seen and the scope list (shared by its reservations, which
        # only read it), so a request builds neither the scope name nor the list.
        known = self._keys.get(key.key_id)
        if known is None or known[0] != rpm or known[1] != tpm:
            self.configure_key(key)
            known = self._keys[key.key_id] = (rpm, tpm, [self.key_scope(key.key_id)])
        scopes = known[2]
        scope = scopes[0]
        if tpm and tokens > tpm:
            # Waiting would never help: say what to change instead of answering 429 forever.
            raise InvalidRequest(
                f"max_tokens: this request needs an estimated {tokens} tokens (prompt + max_tokens), more than "
                f"this API key's limit of {tpm} tokens per window; lower max_tokens or shorten the prompt",
                param="max_tokens",
                code="exceeds_token_limit",
            )
        at = self.clock()
        lease_wait = self.leases.take(scope, tokens) if self.leases is not None else None
        if lease_wait is not None:
            ok, retry_after_ms = False, int(lease_wait * 1000)
        else:
            ok, retry_after_ms, _ = self.limiter.admit(scopes, tokens, at)
            if not ok and self.leases is not None:
                self.leases.give_back(scope, 1, tokens)
        if not ok:
            rpm, tpm = self.limits_for(key)
            raise RateLimited(
                f"rate limit exceeded for this API key ({rpm or 'unlimited'} requests, "
                f"{tpm or 'unlimited'} tokens per window); retry after {retry_after_ms / 1000:.1f}s",
                retry_after_s=retry_after_ms / 1000,
                code="key_rate_limited",
            )
        return Reservation(scopes, tokens, at)

    def reconcile(self, r: Reservation, actual_tokens: int) -> None:
        self.limiter.reconcile(r.scopes, r.tokens, actual_tokens, r.at_ms, self.clock())
        if self.leases is not None and actual_tokens != r.tokens:
            for scope in r.scopes:
                self.leases.give_back(scope, 0, r.tokens - actual_tokens)

    def release(self, r: Reservation) -> None:
        """Undo an admission entirely (the request was refused before any upstream call)."""
        self.limiter.release(r.scopes, r.tokens, r.at_ms, self.clock())
        if self.leases is not None:
            for scope in r.scopes:
                self.leases.give_back(scope, 1, r.tokens)

    def info(self, key: KeyRecord) -> RateLimitInfo:
        limit_req, rem_req, limit_tok, rem_tok, _reset = self.limiter.snapshot(
            self.key_scope(key.key_id), self.clock()
        )
        return RateLimitInfo(
            limit_requests=limit_req,
            remaining_requests=rem_req,
            limit_tokens=limit_tok,
            remaining_tokens=rem_tok,
        )

    # -- per (endpoint, model) -------------------------------------------------------------------

    def endpoint(self, endpoint_id: str, model: str, rpm: int = 0, tpm: int = 0) -> EndpointLimits:
        """The capacity state of `endpoint_id` serving `model` (created and configured once)."""
        lim = self._endpoints.get((endpoint_id, model))
        if lim is None:
            lim = EndpointLimits(endpoint_id, model, rpm, tpm)
            # Configured even when unlimited (0, 0): the counters then still measure utilisation.
            self.limiter.configure(lim.scope, rpm, tpm)
            self._endpoints[(endpoint_id, model)] = lim
            if self.on_endpoint is not None:
                self.on_endpoint(lim.scope)
        return lim

    def find(self, endpoint_id: str, model: str) -> EndpointLimits | None:
        """The capacity state of `endpoint_id` serving `model`, if it is configured."""
        return self._endpoints.get((endpoint_id, model))

    def retain_endpoints(self, wanted: Mapping[tuple[str, str], tuple[int, int]]) -> None:
        """A reloaded config: (endpoint, model) pairs that stay take their new RPM/TPM limits and
        keep their counters; pairs no longer configured are forgotten (their counters run out with
        the window). New pairs are created by `endpoint` as the router is built."""
        for pair, lim in list(self._endpoints.items()):
            limits = wanted.get(pair)
            if limits is None:
                del self._endpoints[pair]
            elif limits != (lim.rpm, lim.tpm):
                lim.rpm, lim.tpm = limits
                self.limiter.configure(lim.scope, *limits)

    def endpoints(self) -> list[EndpointLimits]:
        return list(self._endpoints.values())

    def admit_endpoint(self, lim: EndpointLimits, tokens: int, now: int) -> int:
        """Reserve 1 request + `tokens` on the endpoint: 0 when admitted, else the wait in ms
        until it should have room (from our counters or the provider's own headers)."""
        view = lim.upstream
        if view.reset_at_ms > now and (
            view.remaining_requests == 0
            or (view.remaining_tokens is not None and view.remaining_tokens < tokens)
        ):
            return view.reset_at_ms - now
        ok, retry_after_ms, _ = self.limiter.admit(lim.scopes, tokens, now)
        if not ok:
            return max(retry_after_ms, 1)
        if view.remaining_requests is not None or view.remaining_tokens is not None:
            view.consume(tokens)  # (without a provider statement there is nothing to spend from)
        return 0

    def upstream_wait(self, lim: EndpointLimits, now: int) -> int:
        """Ms until the provider's own statement (its headers) lets this endpoint take a request
        again; 0 when it does now."""
        view = lim.upstream
        if view.reset_at_ms > now and (view.remaining_requests == 0 or view.remaining_tokens == 0):
            return view.reset_at_ms - now
        return 0

    def reconcile_endpoint(self, lim: EndpointLimits, reserved: int, actual: int, at_ms: int) -> None:
        self.limiter.reconcile(lim.scopes, reserved, actual, at_ms, self.clock())

    def utilisation(self, lim: EndpointLimits, now: int) -> float:
        """0..1 for an endpoint with known limits (the fullest of RPM, TPM and the provider's view);
        -1 when nothing limits it, so callers fall back to relative load."""
        util = -1.0
        if lim.rpm or lim.tpm:
            requests, tokens = self.limiter.usage(lim.scope, now)
            if lim.rpm:
                util = requests / lim.rpm
            if lim.tpm:
                util = max(util, tokens / lim.tpm)
        view = lim.upstream
        if view.reset_at_ms > now:
            util = max(util, view.used_fraction())
        return util

    def requests_in_window(self, lim: EndpointLimits, now: int) -> int:
        return self.limiter.usage(lim.scope, now)[0]

    def endpoint_status(self, now: int | None = None) -> list[dict[str, object]]:
        """Per (endpoint, model) utilisation for the admin status page (this process's counters,
        plus other instances' once the Redis sync feeds `set_global`)."""
        now = self.clock() if now is None else now
        out: list[dict[str, object]] = []
        for lim in self._endpoints.values():
            requests, tokens = self.limiter.usage(lim.scope, now)
            view = lim.upstream
            out.append(
                {
                    "endpoint_id": lim.endpoint_id,
                    "model": lim.model,
                    "rpm_limit": lim.rpm,
                    "tpm_limit": lim.tpm,
                    "requests_in_window": requests,
                    "tokens_in_window": tokens,
                    "utilisation": max(self.utilisation(lim, now), 0.0),
                    "upstream_remaining_requests": view.remaining_requests
                    if view.reset_at_ms > now
                    else None,
                    "upstream_remaining_tokens": view.remaining_tokens if view.reset_at_ms > now else None,
                }
            )
        return out

    def observe(self, lim: EndpointLimits, headers: Mapping[str, str], now: int) -> None:
        """Take in the provider's rate-limit headers from any response of this endpoint."""
        view = lim.upstream
        parse_headers(headers, view, now, time.time())
        if view.reset_at_ms > self.views_until:
            self.views_until = view.reset_at_ms
