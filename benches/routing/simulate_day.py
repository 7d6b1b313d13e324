"""A day of mixed traffic over one capacity pool, routed by the real Router and Admission code on a
fake clock (no sockets), with cache affinity on and off. Deterministic (seeded).

Run: python benches/routing/simulate_day.py [--seed N] [--scale F]   (about 20 s; prints a table)

The provider side is simulated: each endpoint (a separate account, so a separate prompt cache)
caches the prompt prefixes it has seen for the provider's TTL (Anthropic: 5 minutes, refreshed on
every hit), only from 1024 tokens on; a request reads from the cache the longest prefix that
endpoint holds, and writes the rest (Anthropic bills writes at 1.25x input). The gateway side is
the product code: `Router.plan` (affinity, strategy, cool-downs), `Admission.admit_endpoint`
(per-endpoint RPM/TPM on the native counters), `Router.remember`, and reconcile.

Traffic (requests per minute follow a day curve peaking mid-afternoon):
* agent sessions: multi-turn conversations with `X-Session-ID` on one of three long system prompts
  (coding agent 6k tokens, support bot 3k, analyst 12k), 2-12 turns, 20-180 s between turns;
* one-shot calls without a session that share those system prompts (RAG answers, classifiers);
* short chats (< 1024 tokens: never cacheable), with and without a session.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from dataclasses import dataclass, field

from ensemble.config.schema import CacheConfig, EndpointConfig, ModelConfig, Pricing, ProviderConfig
from ensemble.providers.mock import MockProvider
from ensemble.ratelimit import Admission
from ensemble.router import Router
from ensemble.types import InferenceRequest, Message

PRICING = Pricing(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75)
MODEL = "claude-sonnet-4-5"
ENDPOINTS = 6
RPM_PER_ENDPOINT = 60
TPM_PER_ENDPOINT = 800_000
TTL_MS = 5 * 60_000  # Anthropic's prompt cache
MIN_CACHEABLE = 1024
CHARS = 4  # characters per token, as the gateway estimates

SYSTEM_PROMPTS = {"coding": 6_000, "support": 3_000, "analyst": 12_000}  # tokens


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


@dataclass
class Conversation:
    system: str
    session: str | None
    turns_left: int
    uid: int
    messages: list[tuple[str, int]] = field(default_factory=list)  # (role, tokens)


def text_of(tag: str, tokens: int) -> str:
    """A deterministic text of about `tokens` tokens whose content depends only on `tag`."""
    unit = f"<{tag}>"
    return (unit * (tokens * CHARS // len(unit) + 1))[: tokens * CHARS]


@dataclass
class Tally:
    requests: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    written_tokens: int = 0
    hits: int = 0  # requests with any cached tokens
    spend: float = 0.0
    per_endpoint: dict[str, int] = field(default_factory=dict)
    router: dict[str, int] = field(default_factory=dict)


class ProviderCache:
    """What each endpoint's provider-side prompt cache holds: prefix id -> (tokens, expiry)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, tuple[int, int]]] = {}

    def serve(self, endpoint: str, prefixes: list[tuple[str, int]], now: int) -> tuple[int, int]:
        """`prefixes`: (id, cumulative tokens) of the request, shortest first. Returns
        (cached tokens read, tokens written)."""
        cache = self.entries.setdefault(endpoint, {})
        read = 0
        for pid, tokens in prefixes:
            hit = cache.get(pid)
            if hit is not None and hit[1] > now:
                read = tokens
        total = prefixes[-1][1]
        for pid, tokens in prefixes:
            if tokens >= MIN_CACHEABLE:
                cache[pid] = (tokens, now + TTL_MS)  # written or refreshed
        written = total - read if total >= MIN_CACHEABLE else 0
        return read, written


def build(cache: CacheConfig, clock: Clock) -> tuple[Router, Admission]:
    affinity = cache.enable_session_affinity
    cfg = ProviderConfig(
        name="anthropic",
        type="anthropic",
        strategy="session_affinity" if affinity else "least_used",
        endpoints=[
            EndpointConfig(
                id=f"acct-{i}", api_key="sk-sim", rpm_limit=RPM_PER_ENDPOINT, tpm_limit=TPM_PER_ENDPOINT
            )
            for i in range(ENDPOINTS)
        ],
        models=[ModelConfig(name=MODEL, max_output_tokens=8192, pricing=PRICING)],
    )
    admission = Admission(window_s=60, default_rpm=0, default_tpm=0, clock=clock)
    return Router([MockProvider(cfg)], cache, admission, clock), admission


def rate_per_min(minute: int, scale: float) -> float:
    """Requests per minute over the day: a night trough and an afternoon peak."""
    hour = minute / 60
    return scale * (40 + 140 * math.exp(-(((hour - 15) / 4) ** 2)))


def traffic(seed: int, scale: float) -> list[tuple[int, int, str, Conversation | None]]:
    """Arrivals of new work: (time ms, seq, kind, conversation)."""
    rng = random.Random(seed)
    out: list[tuple[int, int, str, Conversation | None]] = []
    seq = 0
    for minute in range(24 * 60):
        n = _poisson(rng, rate_per_min(minute, scale))
        for _ in range(n):
            t = minute * 60_000 + rng.randrange(60_000)
            r = rng.random()
            if r < 0.12:  # an agent session starts (turns arrive later, counted in its own events)
                system = rng.choices(list(SYSTEM_PROMPTS), weights=[5, 3, 1])[0]
                conv = Conversation(system, f"sess-{seq}", rng.randint(2, 12), seq)
                out.append((t, seq, "turn", conv))
            elif r < 0.55:
                system = rng.choices(list(SYSTEM_PROMPTS), weights=[2, 5, 1])[0]
                out.append((t, seq, "oneshot", Conversation(system, None, 1, seq)))
            else:
                out.append(
                    (t, seq, "short", Conversation("", f"chat-{seq}" if rng.random() < 0.5 else None, 1, seq))
                )
            seq += 1
    return out


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth for small lambda, normal approximation above.
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def simulate(cache: CacheConfig, seed: int, scale: float) -> Tally:
    clock = Clock()
    router, admission = build(cache, clock)
    rng = random.Random(seed + 1)
    provider_cache = ProviderCache()
    tally = Tally()
    events = traffic(seed, scale)
    heapq.heapify(events)
    seq = len(events)
    system_texts = {name: text_of(name, tokens) for name, tokens in SYSTEM_PROMPTS.items()}
    while events:
        t, _, kind, conv = heapq.heappop(events)
        assert conv is not None
        clock.ms = t
        # Build the request: system prompt + the conversation so far + a new user message.
        if kind == "short":
            conv.messages = [("user", rng.randint(20, 400))]
        else:
            conv.messages.append(("user", rng.randint(30, 600) if kind == "turn" else rng.randint(200, 1500)))
        messages = []
        prefixes: list[tuple[str, int]] = []
        running = 0
        if conv.system:
            messages.append(Message(role="system", content=system_texts[conv.system]))
            running += SYSTEM_PROMPTS[conv.system]
            prefixes.append((f"sys:{conv.system}", running))
        for i, (role, tokens) in enumerate(conv.messages):
            tag = f"{conv.uid}:{i}"
            messages.append(Message(role=role, content=text_of(tag, tokens)))  # type: ignore[arg-type]
            running += tokens
            prefixes.append((f"{conv.system}/{tag}", running))
        out_tokens = rng.randint(50, 900)
        request = InferenceRequest(model=MODEL, messages=messages, max_tokens=1024, session_id=conv.session)
        tally.requests += 1
        # The gateway: plan, per-endpoint admission in order, remember on success.
        plan = router.plan(MODEL, request)
        estimate = running + 1024
        chosen = None
        for cand in plan.candidates:
            if admission.admit_endpoint(cand.limits, estimate, clock.ms) == 0:
                chosen = cand
                break
        if chosen is None:
            tally.rejected += 1
            continue
        router.remember(plan, chosen)
        eid = chosen.target.endpoint.id
        admission.reconcile_endpoint(chosen.limits, estimate, running + out_tokens, clock.ms)
        read, written = provider_cache.serve(eid, prefixes, clock.ms)
        fresh = running - read - written
        tally.prompt_tokens += running
        tally.cached_tokens += read
        tally.written_tokens += written
        tally.hits += read > 0
        tally.per_endpoint[eid] = tally.per_endpoint.get(eid, 0) + 1
        tally.spend += (
            fresh * PRICING.input
            + read * PRICING.cache_read
            + written * PRICING.cache_write
            + out_tokens * PRICING.output
        ) / 1_000_000
        if kind == "turn":
            conv.messages.append(("assistant", out_tokens))
            conv.turns_left -= 1
            if conv.turns_left > 0:
                seq += 1
                heapq.heappush(events, (t + rng.randint(20_000, 180_000), seq, "turn", conv))
    tally.per_endpoint = dict(sorted(tally.per_endpoint.items()))
    tally.router = router.stats()
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--scale", type=float, default=0.6, help="multiply the traffic rate (1.0 saturates the pool at peak)"
    )
    args = parser.parse_args()
    configs = [
        ("affinity off (least_used)", CacheConfig(enable_session_affinity=False)),
        ("affinity on, default thresholds", CacheConfig()),
        (
            "affinity on, low 0.005/high 0.05",
            CacheConfig(low_value_threshold=0.005, high_value_threshold=0.05),
        ),
    ]
    rows = [(name, simulate(cfg, args.seed, args.scale)) for name, cfg in configs]
    print(
        f"pool: {ENDPOINTS} endpoints x {RPM_PER_ENDPOINT} rpm / {TPM_PER_ENDPOINT} tpm, "
        f"{MODEL} at ${PRICING.input}/{PRICING.cache_read}/{PRICING.cache_write}/{PRICING.output} per M "
        f"(input/cache read/cache write/output), cache TTL {TTL_MS // 60_000} min, seed {args.seed}"
    )
    header = f"{'':<34}{'requests':>9}{'429s':>7}{'req hit %':>10}{'tok hit %':>10}{'written M':>10}{'spend $':>10}  per endpoint"
    print(header)
    print("-" * len(header))
    for name, t in rows:
        served = t.requests - t.rejected
        print(
            f"{name:<34}{t.requests:>9}{t.rejected:>7}{100 * t.hits / max(served, 1):>10.1f}"
            f"{100 * t.cached_tokens / max(t.prompt_tokens, 1):>10.1f}{t.written_tokens / 1e6:>10.1f}"
            f"{t.spend:>10.2f}  {list(t.per_endpoint.values())}"
        )
    off = rows[0][1]
    print()
    for name, t in rows[1:]:
        print(
            f"{name}: spend ${t.spend:.2f} vs ${off.spend:.2f} off ({100 * (1 - t.spend / off.spend):.1f}% less)"
        )
        print(f"  router stats: {t.router}")


if __name__ == "__main__":
    main()
