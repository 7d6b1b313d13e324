"""A day of mixed traffic over provider capacity pools, routed by the real Router and Admission code
on a fake clock (no sockets), with cache affinity on and off. Deterministic (seeded).

Run: python benches/routing/simulate_day.py [--seed N] [--scale F] [--scenarios] [--sweep]
  (default: the default scenario, ~40 s; --scenarios adds the extended ones, ~3 min; --sweep the
  threshold grid the shipped defaults were chosen from, ~10 min)

The provider side is simulated: each endpoint (a separate account, so a separate prompt cache)
caches the prompt prefixes it has seen, the way its provider does:
* Anthropic: the client marks the system prompt and the end of the conversation with
  `cache_control` (as agent SDKs do); prefixes from 1024 tokens are cached for 5 minutes
  (refreshed on every hit); a hit reads the longest cached prefix at 10% of the input price and
  the rest of the prompt is written at 125%.
* OpenAI: automatic, from 1024 tokens, hits counted in 128-token steps, read at 50%, writing free;
  kept about 10 minutes after the last use.
* Gemini: implicit caching from 1024 tokens at the configured cache-read price (2.5 Flash: 25%),
  writing free, kept 60 minutes.
The gateway side is the product code: `Router.plan` (affinity, strategy, cool-downs),
`Admission.admit_endpoint` (per-endpoint RPM/TPM on the native counters) in plan order as the
gateway's failover loop does, `Router.decision_for`, `Router.remember`, and reconcile.

Traffic (requests per minute follow a day curve peaking mid-afternoon):
* agent sessions: multi-turn conversations with `X-Session-ID` on one of the long system prompts,
  20-180 s between turns;
* one-shot calls without a session that share those system prompts (RAG answers, classifiers),
  their own part 200-1500 tokens (up to 20,000 in the busy scenario: retrieved documents, so the
  shared prefix is anything from most of the prompt to a small part of it);
* short chats (< 1024 tokens: never cacheable), with and without a session.

Scenarios (`--scenarios`): the default one (a Claude Sonnet pool); the same traffic on gpt-4o-mini
and on Gemini 2.5 Flash pools; cheap and dear models side by side (Haiku and Opus on one Anthropic
pool, gpt-4o-mini and gpt-4o on one OpenAI pool); sessions that grow long (20-60 turns with tool
output); and a busy pool where stickiness must yield to capacity: its peak is above what the
pool can take, and its one-shots carry documents, so many hits are worth little.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ensemble.config.schema import CacheConfig, EndpointConfig, ModelConfig, Pricing, ProviderConfig
from ensemble.providers import registry
from ensemble.providers.base import Provider
from ensemble.providers.mock import MockProvider
from ensemble.ratelimit import Admission
from ensemble.router import Router
from ensemble.types import InferenceRequest, Message

MIN_CACHEABLE = 1024
CHARS = 4  # characters per token, as the gateway estimates
MAX_TOKENS = 1024


@dataclass(frozen=True)
class CacheRules:
    """How one provider's prompt cache behaves (the simulated provider side)."""

    ttl_ms: int
    step: int = 1  # hits are counted in steps of this many tokens from MIN_CACHEABLE (OpenAI: 128)
    write_premium: bool = False  # cache writes billed at `cache_write` (Anthropic)


RULES = {
    "anthropic": CacheRules(ttl_ms=5 * 60_000, write_premium=True),
    "openai": CacheRules(ttl_ms=10 * 60_000, step=128),
    "gemini": CacheRules(ttl_ms=60 * 60_000),
}

PRICES = {  # the shipped config/providers/*.yaml prices, USD per 1M tokens
    "claude-sonnet-4-5": Pricing(input=3.00, output=15.00, cache_read=0.30, cache_write=3.75),
    "claude-haiku-4-5": Pricing(input=1.00, output=5.00, cache_read=0.10, cache_write=1.25),
    "claude-opus-4-1": Pricing(input=15.00, output=75.00, cache_read=1.50, cache_write=18.75),
    "gpt-4o-mini": Pricing(input=0.15, output=0.60, cache_read=0.075),
    "gpt-4o": Pricing(input=2.50, output=10.00, cache_read=1.25),
    "gemini-2.5-flash": Pricing(input=0.30, output=2.50, cache_read=0.075),
}


@dataclass(frozen=True)
class Pool:
    provider: str  # anthropic | openai | gemini: its cache rules and the gateway's TTL
    models: tuple[str, ...]
    endpoints: int = 6
    rpm: int = 60
    tpm: int = 800_000


@dataclass(frozen=True)
class Workload:
    sessions: float = 0.12  # share of arrivals that start an agent session
    oneshots: float = 0.43  # ... that are one-shot calls sharing a system prompt; the rest short chats
    systems: tuple[tuple[str, int, int, int], ...] = (  # name, tokens, weight in sessions, in one-shots
        ("coding", 6_000, 5, 2),
        ("support", 3_000, 3, 5),
        ("analyst", 12_000, 1, 1),
    )
    turns: tuple[int, int] = (2, 12)
    gap_ms: tuple[int, int] = (20_000, 180_000)
    turn_tokens: tuple[int, int] = (30, 600)  # the user (or tool) message of each turn
    oneshot_tokens: tuple[int, int] = (200, 1500)
    answer_tokens: tuple[int, int] = (50, 900)
    model_weights: tuple[int, ...] = ()  # per model of the pools, in order (empty: equal)


@dataclass(frozen=True)
class Scenario:
    name: str
    pools: tuple[Pool, ...]
    work: Workload = Workload()
    scale: float = 0.6
    hours: int = 24


SONNET = Pool("anthropic", ("claude-sonnet-4-5",))
DEFAULT = Scenario("default: Claude Sonnet pool", (SONNET,))
SCENARIOS = [
    DEFAULT,
    Scenario("OpenAI automatic caching: gpt-4o-mini", (Pool("openai", ("gpt-4o-mini",)),)),
    Scenario(
        "OpenAI, 2k-token system prompts: gpt-4o-mini",
        (Pool("openai", ("gpt-4o-mini",), endpoints=3),),
        Workload(systems=(("helper", 2_000, 1, 1),)),
        scale=0.3,
    ),
    Scenario("Gemini implicit caching: 2.5 Flash", (Pool("gemini", ("gemini-2.5-flash",)),)),
    Scenario(
        "mixed models, cheap and dear",
        (
            Pool("anthropic", ("claude-haiku-4-5", "claude-opus-4-1"), endpoints=4),
            Pool("openai", ("gpt-4o-mini", "gpt-4o"), endpoints=4),
        ),
        Workload(model_weights=(3, 1, 3, 1)),
        scale=0.8,
    ),
    Scenario(
        "growing sessions: 20-60 turns with tool output",
        (SONNET,),
        Workload(
            sessions=0.3, oneshots=0.3, turns=(20, 60), gap_ms=(5_000, 60_000), turn_tokens=(100, 3_000)
        ),
        scale=0.15,
    ),
    Scenario(
        "busy pool: peak above capacity, RAG documents",
        (SONNET,),
        Workload(oneshot_tokens=(200, 20_000)),
        scale=1.3,
    ),
]


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


@dataclass
class Conversation:
    model: str
    system: str
    session: str | None
    turns_left: int
    uid: int
    # The conversation so far, built once per message: (role, tokens), the message, and the
    # provider-side prefix id and cumulative tokens after it.
    messages: list[tuple[str, int]] = field(default_factory=list)
    built: list[Message] = field(default_factory=list)
    prefixes: list[tuple[str, int]] = field(default_factory=list)


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
    by_model: dict[str, Tally] = field(default_factory=dict)

    def add(self, prompt: int, read: int, written: int, spend: float) -> None:
        self.requests += 1
        self.prompt_tokens += prompt
        self.cached_tokens += read
        self.written_tokens += written
        self.hits += read > 0
        self.spend += spend


class ProviderCache:
    """What each endpoint's provider-side prompt cache holds: prefix id -> expiry."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, int]] = {}

    def serve(
        self, endpoint: str, rules: CacheRules, prefixes: list[tuple[str, int]], now: int
    ) -> tuple[int, int]:
        """`prefixes`: (id, cumulative tokens) of the request, shortest first. Returns
        (cached tokens read, tokens written at the cache-write price)."""
        cache = self.entries.setdefault(endpoint, {})
        read = 0
        for pid, tokens in prefixes:
            if tokens >= MIN_CACHEABLE and cache.get(pid, 0) > now:
                read = tokens
        if read and rules.step > 1:
            read = MIN_CACHEABLE + (read - MIN_CACHEABLE) // rules.step * rules.step
        total = prefixes[-1][1]
        for pid, tokens in prefixes:
            if tokens >= MIN_CACHEABLE:
                cache[pid] = now + rules.ttl_ms  # written or refreshed
        written = total - read if rules.write_premium and total >= MIN_CACHEABLE else 0
        return read, written


def build(scenario: Scenario, cache: CacheConfig, clock: Clock) -> tuple[Router, Admission]:
    affinity = cache.enable_session_affinity
    providers: list[Provider] = []
    for n, pool in enumerate(scenario.pools):
        provider = MockProvider(
            ProviderConfig(
                name=f"{pool.provider}-{n}",
                type=pool.provider,
                strategy="session_affinity" if affinity else "least_used",
                endpoints=[
                    EndpointConfig(
                        id=f"{pool.provider}{n}-{i}", api_key="sk-sim", rpm_limit=pool.rpm, tpm_limit=pool.tpm
                    )
                    for i in range(pool.endpoints)
                ],
                models=[ModelConfig(name=m, max_output_tokens=8192, pricing=PRICES[m]) for m in pool.models],
            )
        )
        # Answering locally, but remembered for as long as the real provider type would be.
        provider.cache_ttl = registry.kind(pool.provider).cache_ttl
        providers.append(provider)
    admission = Admission(window_s=60, default_rpm=0, default_tpm=0, clock=clock)
    return Router(providers, cache, admission, clock), admission


def rate_per_min(minute: int, scale: float) -> float:
    """Requests per minute over the day: a night trough and an afternoon peak."""
    hour = minute / 60
    return scale * (40 + 140 * math.exp(-(((hour - 15) / 4) ** 2)))


def traffic(scenario: Scenario, seed: int, scale: float) -> list[tuple[int, int, str, Conversation]]:
    """Arrivals of new work: (time ms, seq, kind, conversation)."""
    rng = random.Random(seed)
    work = scenario.work
    models = [m for pool in scenario.pools for m in pool.models]
    weights = list(work.model_weights) or [1] * len(models)
    names = [s[0] for s in work.systems]
    out: list[tuple[int, int, str, Conversation]] = []
    seq = 0
    for minute in range(scenario.hours * 60):
        for _ in range(_poisson(rng, rate_per_min(minute, scale))):
            t = minute * 60_000 + rng.randrange(60_000)
            model = rng.choices(models, weights)[0] if len(models) > 1 else models[0]
            r = rng.random()
            if r < work.sessions:  # an agent session starts (later turns are scheduled as it goes)
                system = rng.choices(names, weights=[s[2] for s in work.systems])[0]
                conv = Conversation(model, system, f"sess-{seq}", rng.randint(*work.turns), seq)
                out.append((t, seq, "turn", conv))
            elif r < work.sessions + work.oneshots:
                system = rng.choices(names, weights=[s[3] for s in work.systems])[0]
                out.append((t, seq, "oneshot", Conversation(model, system, None, 1, seq)))
            else:
                session = f"chat-{seq}" if rng.random() < 0.5 else None
                out.append((t, seq, "short", Conversation(model, "", session, 1, seq)))
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


def extend(conv: Conversation, model: str) -> None:
    """Build the messages of `conv` not built yet (the texts depend only on their position)."""
    running = conv.prefixes[-1][1] if conv.prefixes else 0
    for i in range(len(conv.built) - bool(conv.system), len(conv.messages)):
        role, tokens = conv.messages[i]
        tag = f"{conv.uid}:{i}"
        conv.built.append(Message(role=role, content=text_of(tag, tokens)))  # type: ignore[arg-type]
        running += tokens
        conv.prefixes.append((f"{model}|{conv.system}/{tag}", running))


def simulate(scenario: Scenario, cache: CacheConfig, seed: int, scale: float | None = None) -> Tally:
    clock = Clock()
    router, admission = build(scenario, cache, clock)
    rules = {m: RULES[pool.provider] for pool in scenario.pools for m in pool.models}
    rng = random.Random(seed + 1)
    work = scenario.work
    provider_cache = ProviderCache()
    tally = Tally()
    events = traffic(scenario, seed, scenario.scale if scale is None else scale)
    heapq.heapify(events)
    seq = len(events)
    system_tokens = {name: tokens for name, tokens, _, _ in work.systems}
    system_messages = {
        name: Message(role="system", content=text_of(name, n)) for name, n in system_tokens.items()
    }
    while events:
        t, _, kind, conv = heapq.heappop(events)
        clock.ms = t
        model = conv.model
        # Build the request: system prompt + the conversation so far + a new user message.
        if not conv.built and conv.system:
            conv.built.append(system_messages[conv.system])
            conv.prefixes.append((f"{model}|sys:{conv.system}", system_tokens[conv.system]))
        if kind == "short":
            conv.messages.append(("user", rng.randint(20, 400)))
        else:
            span = work.turn_tokens if kind == "turn" else work.oneshot_tokens
            conv.messages.append(("user", rng.randint(*span)))
        extend(conv, model)
        messages = conv.built
        prefixes = conv.prefixes
        running = prefixes[-1][1]
        out_tokens = rng.randint(*work.answer_tokens)
        request = InferenceRequest(
            model=model, messages=messages, max_tokens=MAX_TOKENS, session_id=conv.session
        )
        # The gateway: plan, per-endpoint admission in order, remember on success.
        plan = router.plan(model, request)
        estimate = running + MAX_TOKENS
        chosen = None
        for cand in plan.candidates:
            if admission.admit_endpoint(cand.limits, estimate, clock.ms) == 0:
                chosen = cand
                router.decision_for(plan, cand)
                break
        per_model = tally.by_model.setdefault(model, Tally())
        if chosen is None:
            tally.requests += 1
            tally.rejected += 1
            per_model.requests += 1
            per_model.rejected += 1
            continue
        router.remember(plan, chosen, f"req_{t}")
        eid = chosen.target.endpoint.id
        admission.reconcile_endpoint(chosen.limits, estimate, running + out_tokens, clock.ms)
        rule = rules[model]
        read, written = provider_cache.serve(eid, rule, prefixes, clock.ms)
        price = PRICES[model]
        fresh = running - read - written
        spend = (
            fresh * price.input
            + read * price.cache_read
            + written * price.cache_write
            + out_tokens * price.output
        ) / 1_000_000
        tally.add(running, read, written, spend)
        per_model.add(running, read, written, spend)
        tally.per_endpoint[eid] = tally.per_endpoint.get(eid, 0) + 1
        if kind == "turn":
            conv.messages.append(("assistant", out_tokens))
            extend(conv, model)
            conv.turns_left -= 1
            if conv.turns_left > 0:
                seq += 1
                heapq.heappush(events, (t + rng.randint(*work.gap_ms), seq, "turn", conv))
    tally.per_endpoint = dict(sorted(tally.per_endpoint.items()))
    tally.router = router.stats()
    return tally


# -- reporting ------------------------------------------------------------------------------------


def shipped() -> CacheConfig:
    return CacheConfig()


def off() -> CacheConfig:
    return CacheConfig(enable_session_affinity=False)


def label(cfg: CacheConfig) -> str:
    if not cfg.enable_session_affinity:
        return "affinity off (least_used)"
    name = f"low {cfg.low_value_threshold:g} / high {cfg.high_value_threshold:g}"
    if cfg.stickiness_factor != CacheConfig().stickiness_factor:
        name += f" / stick {cfg.stickiness_factor:g}"
    return ("shipped defaults: " if _same(cfg, shipped()) else "") + name


def _same(a: CacheConfig, b: CacheConfig) -> bool:
    return (a.low_value_threshold, a.high_value_threshold, a.stickiness_factor) == (
        b.low_value_threshold,
        b.high_value_threshold,
        b.stickiness_factor,
    )


def row(name: str, t: Tally, base: Tally | None) -> str:
    served = t.requests - t.rejected
    change = f"{100 * (t.spend / base.spend - 1):+.1f}%" if base is not None and base.spend else ""
    moved = t.router.get("moved", 0) if t.router else 0
    return (
        f"{name:<44}{t.requests:>9}{t.rejected:>7}{100 * t.hits / max(served, 1):>10.1f}"
        f"{100 * t.cached_tokens / max(t.prompt_tokens, 1):>10.1f}{t.written_tokens / 1e6:>10.1f}"
        f"{t.spend:>10.2f}{change:>9}"
        f"{moved:>7}"
    )


HEADER = (
    f"{'':<44}{'requests':>9}{'429s':>7}{'req hit %':>10}{'tok hit %':>10}{'written M':>10}"
    f"{'spend $':>10}{'vs off':>9}{'moves':>7}"
)


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def describe(scenario: Scenario, seed: int, scale: float) -> str:
    pools = "; ".join(
        f"{p.endpoints} {p.provider} endpoints x {p.rpm} rpm / {p.tpm} tpm serving {', '.join(p.models)}"
        for p in scenario.pools
    )
    return f"{pools}; traffic scale {scale:g}, {scenario.hours} h, seed {seed}"


def default_table(seed: int, scale: float) -> None:
    configs = [
        off(),
        shipped(),
        CacheConfig(low_value_threshold=0.0, high_value_threshold=0.0),  # always stick while admitted
        CacheConfig(low_value_threshold=0.1, high_value_threshold=0.95),
    ]
    print(f"{DEFAULT.name}: {describe(DEFAULT, seed, scale)}")
    print(HEADER)
    print("-" * len(HEADER))
    base = None
    for cfg in configs:
        t = simulate(DEFAULT, cfg, seed, scale)
        base = base or t
        print(row(label(cfg), t, None if t is base else base))
        if _same(cfg, shipped()) and cfg.enable_session_affinity:
            print(f"    router stats: {t.router}")


def scenarios_table(seed: int) -> None:
    print(HEADER)
    print("-" * len(HEADER))
    for scenario in SCENARIOS:
        print(f"{scenario.name} ({describe(scenario, seed, scenario.scale)})")
        base = simulate(scenario, off(), seed)
        mine = simulate(scenario, shipped(), seed)
        print(row("  affinity off", base, None))
        print(row("  shipped defaults", mine, base))
        if len(mine.by_model) > 1:
            for model in sorted(mine.by_model):
                print(row(f"    {model}", mine.by_model[model], base.by_model[model]))


SWEEP = [(0.0, 0.0), (0.02, 0.1), (0.05, 0.25), (0.05, 0.5), (0.1, 0.5), (0.2, 0.8), (0.3, 0.9), (0.5, 0.95)]


def _saving(job: tuple[int, float, float, int]) -> tuple[float, int]:
    index, low, high, seed = job
    scenario = SCENARIOS[index]
    cfg = off() if low < 0 else CacheConfig(low_value_threshold=low, high_value_threshold=high)
    t = simulate(scenario, cfg, seed)
    return t.spend, t.rejected


def sweep(seed: int) -> None:
    """Spend against affinity off over a grid of thresholds, on the scenarios that decide them
    (two processes: the runs are independent)."""
    picked = [0, 2, 4, 6]  # default, OpenAI 2k prompts, mixed models, busy pool
    grid = [(-1.0, -1.0), *SWEEP]
    jobs = [(i, low, high, seed) for low, high in grid for i in picked]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(_saving, jobs), strict=True))
    print(f"{'low / high':<14}" + "".join(f"{SCENARIOS[i].name[:26]:>30}" for i in picked) + f"{'worst':>9}")
    for low, high in SWEEP:
        cells, worst = [], 100.0
        for i in picked:
            base_spend, base_429 = results[(i, -1.0, -1.0, seed)]
            spend, rejected = results[(i, low, high, seed)]
            change = 100 * (spend / base_spend - 1)
            worst = max(worst if worst != 100.0 else -100.0, change)
            cells.append(f"{change:+.1f}% spend, {rejected - base_429:+d} 429s")
        name = f"{low:g} / {high:g}" + (" *" if (low, high) == _thresholds(shipped()) else "")
        print(f"{name:<14}" + "".join(f"{c:>30}" for c in cells) + f"{worst:>+8.1f}%")
    print("(* the shipped defaults; spend change and extra 429s against affinity off, worst = least saving)")


def _thresholds(cfg: CacheConfig) -> tuple[float, float]:
    return cfg.low_value_threshold, cfg.high_value_threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--scale", type=float, default=DEFAULT.scale, help="multiply the default scenario's traffic rate"
    )
    parser.add_argument("--scenarios", action="store_true", help="also run the extended scenarios")
    parser.add_argument("--sweep", action="store_true", help="spend over a grid of thresholds")
    args = parser.parse_args()
    today = datetime.now(UTC).date().isoformat()
    d = shipped()
    print(
        f"{today}, commit {commit()}; shipped defaults: low_value_threshold {d.low_value_threshold:g}, "
        f"high_value_threshold {d.high_value_threshold:g}, stickiness_factor {d.stickiness_factor:g}"
    )
    if args.sweep:
        sweep(args.seed)
        return
    default_table(args.seed, args.scale)
    if args.scenarios:
        print()
        scenarios_table(args.seed)


if __name__ == "__main__":
    main()
