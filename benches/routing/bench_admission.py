"""Cost of admission + routing per request, in-process (no sockets), on the product code.

Run: python benches/routing/bench_admission.py   (a few seconds; prints a table)

One "request" = what the gateway does before and after the upstream call: per-key admission
(`Admission.admit_key`), `Router.plan` (prompt fingerprint, affinity lookup, utilisation of each
endpoint, ordering), per-endpoint admission (`admit_endpoint`), `Router.remember`, and the two
reconciles at the end. The request has a 2,000-character system prompt and three messages (the
"cacheable" row: 32,000 characters, so every affinity hit is worth sticking to and the holders are
ordered); the pool has three endpoints with RPM/TPM limits. The budget rows add (or time alone) the
spend-budget admission: `Gateway._reserve_budget` (worst-case cost at the model's dearest rates,
reserved on the key's and its customer's budget) and the settle with the real cost at the end. The share at 5k req/s is the fraction of one core
those microseconds take at that rate; the profile share is their fraction of the CPU a whole JSON
request costs one worker (PIPELINE_CPU_US, measured by `make bench`: the JSON row's CPU µs/request
at concurrency 64 on one worker, docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ensemble._native import build_profile
from ensemble.budget.cost import worst_case_micro
from ensemble.budget.ledger import Budgets
from ensemble.config.schema import CacheConfig, EndpointConfig, ModelConfig, Pricing, ProviderConfig
from ensemble.gateway import CallContext, Gateway
from ensemble.providers.mock import MockProvider
from ensemble.ratelimit import Admission
from ensemble.router import Router
from ensemble.storage.keys import KeyRecord
from ensemble.types import InferenceRequest, Message

N = 50_000
RATE = 5_000  # requests per second
PIPELINE_CPU_US = (
    172.0  # CPU µs per JSON request through the whole gateway (make bench, 1 worker, docs/performance.md)
)


def build(strategy: str, affinity: bool) -> tuple[Router, Admission]:
    cfg = ProviderConfig(
        name="anthropic",
        type="anthropic",
        strategy=strategy,  # type: ignore[arg-type]
        endpoints=[
            EndpointConfig(id=f"ep-{i}", api_key="sk-bench", rpm_limit=10_000_000, tpm_limit=10**12)
            for i in range(3)
        ],
        models=[ModelConfig(name="m", pricing=Pricing(input=3.0, output=15.0, cache_read=0.3))],
    )
    admission = Admission(window_s=60, default_rpm=0, default_tpm=0)
    router = Router(
        [MockProvider(cfg)], CacheConfig(enable_session_affinity=affinity), admission, admission.clock
    )
    return router, admission


def requests(n_distinct: int, system_repeats: int = 70) -> list[InferenceRequest]:
    system = "You are a helpful assistant. " * system_repeats  # 70: ~2,000 characters
    return [
        InferenceRequest(
            model="m",
            messages=[
                Message(role="system", content=system),
                Message(role="user", content=f"first question number {i}"),
                Message(role="assistant", content="an answer of moderate length " * 4),
                Message(role="user", content="and a follow-up question"),
            ],
            max_tokens=256,
            session_id=f"sess-{i}",
        )
        for i in range(n_distinct)
    ]


def budget_gateway(router: Router, admission: Admission) -> Gateway:
    """The gateway's budget stage alone: a key and its customer, both with (ample) budgets."""
    gw = Gateway.__new__(Gateway)  # _reserve_budget reads only these (and its per-model rates)
    gw.router = router
    gw.admission = admission
    gw._budget_rates = {}
    gw.budgets = Budgets()
    gw.budgets.configure("key", "k1", 10**15, "month", spent=0)
    gw.budgets.configure("customer", "c1", 10**15, "month", spent=0)
    return gw


def complete(coro: object) -> None:
    """Run a coroutine that never suspends (the budget path with its slice in hand) to its end."""
    try:
        coro.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return
    raise AssertionError("the budget admission suspended")


def run(
    strategy: str,
    affinity: bool,
    full: bool,
    system_repeats: int = 70,
    budgets: bool = False,
    only: bool = False,
) -> float:
    router, admission = build(strategy, affinity)
    gw = budget_gateway(router, admission)
    key = KeyRecord(
        key_id="k1",
        prefix="ens_abcd",
        name="bench",
        customer_id="c1",
        status="active",
        rate_limit_rpm=10_000_000,
        rate_limit_tpm=10**12,
        allowed_models=(),
        created_at="",
    )
    reqs = requests(1000, system_repeats)
    clock = admission.clock
    ctx = CallContext("req_bench", key)
    if only:  # the budget stage alone
        start = time.process_time()
        for i in range(N):
            req = reqs[i % 1000]
            complete(gw._reserve_budget(ctx, "m", lambda rates, req=req: worst_case_micro(req, rates)))
            gw._settle_budget(ctx, 4000)
        return (time.process_time() - start) / N * 1e6
    start = time.process_time()  # CPU time: less sensitive to other processes on a shared machine
    for i in range(N):
        req = reqs[i % 1000]
        if full:
            res = admission.admit_key(key, 700)
        plan = router.plan("m", req)
        if budgets:
            complete(gw._reserve_budget(ctx, "m", lambda rates, req=req: worst_case_micro(req, rates)))
        for cand in plan.candidates:
            if admission.admit_endpoint(cand.limits, 700, clock()) == 0:
                break
        if full:
            router.remember(plan, cand, "req_bench")
            admission.reconcile_endpoint(cand.limits, 700, 650, clock())
            admission.reconcile(res, 650)
        if budgets:
            gw._settle_budget(ctx, 4000)
    return (time.process_time() - start) / N * 1e6


def main() -> None:
    print(f"native build: {build_profile}; {N} requests per row")
    rows: list[tuple[str, Callable[[], float]]] = [
        ("full path, session_affinity", lambda: run("session_affinity", True, True)),
        ("full path, session_affinity, cacheable", lambda: run("session_affinity", True, True, 1100)),
        ("full path, least_used", lambda: run("least_used", False, True)),
        ("full path, round_robin", lambda: run("round_robin", False, True)),
        ("full path + budgets (key and customer)", lambda: run("session_affinity", True, True, budgets=True)),
        ("budget admission + settle only", lambda: run("session_affinity", True, True, only=True)),
        ("plan + endpoint admit only, session_affinity", lambda: run("session_affinity", True, False)),
    ]
    print(f"{'':<46}{'us/request':>11}{'core share at 5k req/s':>25}{'profile share':>15}")
    for name, fn in rows:
        fn()  # warm up
        us = min(fn() for _ in range(3))
        print(f"{name:<46}{us:>11.2f}{100 * us * RATE / 1e6:>24.1f}%{100 * us / PIPELINE_CPU_US:>14.1f}%")
    print(f"profile share: of the {PIPELINE_CPU_US:.0f} CPU µs a JSON request costs the gateway (make bench)")


if __name__ == "__main__":
    main()
