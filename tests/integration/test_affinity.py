"""Cache affinity under the shipped config (see docs/routing.md), end to end: a real `ensemble serve`
with no `cache:` settings of its own, in front of three virtual endpoints per provider on the fake
upstream, each simulating its provider's prompt cache (Anthropic at `cache_control` breakpoints,
OpenAI automatically), driven by the official SDKs as a user would.

Sessions whose prompt is cacheable stay on one endpoint, so the providers report cache hits there
(seen in `/admin/status` and `/metrics`); short prompts spread over the pool by utilisation; a
session that has to move is logged with its request id, where it went and why."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.ensemble import MOCK_PROVIDER, Ensemble
from support.fake import FakeUpstream

pytestmark = pytest.mark.integration

ADMIN = "admin-secret-for-affinity"
UPSTREAM_KEY = "sk-test-upstream-key-000000"
TURNS = 8
SESSIONS = 3
# The shipped prices (config/providers/*.yaml).
SONNET = {"input": 3.00, "output": 15.00, "cache_read": 0.30, "cache_write": 3.75}
MINI = {"input": 0.15, "output": 0.60, "cache_read": 0.075}
POOLS = {"claude": ["claude-1", "claude-2", "claude-3"], "gpt": ["gpt-1", "gpt-2", "gpt-3"]}
CHAT = ["chat-1", "chat-2", "chat-3"]


def pool(
    name: str, kind: str, endpoints: list[str], model: str, pricing: dict[str, float], fake: FakeUpstream
) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "base_url": "http://unused.invalid",
        "strategy": "session_affinity",
        "endpoints": [
            {"id": e, "api_key": UPSTREAM_KEY, "base_url": fake.endpoint_url(e)} for e in endpoints
        ],
        "models": [{"name": model, "max_output_tokens": 4096, "pricing": pricing}],
    }


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ensemble]:
    for endpoint in [*POOLS["claude"], *POOLS["gpt"], *CHAT]:
        fake.configure(endpoint, prompt_cache=True)
    server = Ensemble(
        Path(tmp_path_factory.mktemp("affinity")),
        providers=[
            MOCK_PROVIDER,
            pool("claude-pool", "anthropic", POOLS["claude"], "claude-sonnet-4-5", SONNET, fake),
            pool("gpt-pool", "openai", POOLS["gpt"], "gpt-4o-mini", MINI, fake),
            pool("chat-pool", "openai", CHAT, "chat-mini", MINI, fake),
        ],
        env={"ENSEMBLE_ADMIN_KEY": ADMIN},
    )
    yield server
    server.stop()


def system_prompt(tag: str, tokens: int) -> str:
    text = f"[{tag}] You are a careful assistant for the {tag} team; follow the house style. "
    return (text * (tokens * 4 // len(text) + 1))[: tokens * 4]


class Turn:
    def __init__(self, endpoint: str, reason: str, request_id: str, prompt: int, cached: int) -> None:
        self.endpoint, self.reason, self.request_id = endpoint, reason, request_id
        self.prompt, self.cached = prompt, cached


def claude_turn(
    client: anthropic.Anthropic, session: str, system: str, messages: list[dict[str, Any]]
) -> Turn:
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        # The system prompt is marked for Anthropic's prompt cache, as agent SDKs do.
        system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        messages=messages,  # type: ignore[arg-type]
        extra_headers={"x-session-id": session},
    )
    msg = raw.parse()
    u = msg.usage
    messages.append({"role": "assistant", "content": msg.content[0].text})  # type: ignore[union-attr]
    prompt = u.input_tokens + (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
    h = raw.headers
    return Turn(
        h["x-ensemble-endpoint"],
        h["x-ensemble-route-reason"],
        h["x-request-id"],
        prompt,
        u.cache_read_input_tokens or 0,
    )


def gpt_turn(
    client: openai.OpenAI, session: str, messages: list[dict[str, Any]], model: str = "gpt-4o-mini"
) -> Turn:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        max_tokens=64,
        messages=messages,
        extra_headers={"x-session-id": session},  # type: ignore[arg-type]
    )
    completion = raw.parse()
    messages.append({"role": "assistant", "content": completion.choices[0].message.content})
    u = completion.usage
    assert u is not None and u.prompt_tokens_details is not None
    cached = u.prompt_tokens_details.cached_tokens or 0
    h = raw.headers
    return Turn(
        h["x-ensemble-endpoint"], h["x-ensemble-route-reason"], h["x-request-id"], u.prompt_tokens, cached
    )


def admin(gateway: Ensemble, path: str) -> httpx.Response:
    r = httpx.get(f"{gateway.url}{path}", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r


def run_sessions(gateway: Ensemble, family: str) -> dict[str, list[Turn]]:
    """SESSIONS sessions of TURNS turns each, interleaved turn by turn, as concurrent users would;
    the order changes every turn, so balancing alone (least used) would move each session."""
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    gpt = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0)
    # Claude: a 6,000-token system prompt; gpt-4o-mini: 2,000 tokens.
    tokens = 6_000 if family == "claude" else 2_000
    systems = {f"{family}-s{i}": system_prompt(f"{family}-s{i}", tokens) for i in range(SESSIONS)}
    conversations: dict[str, list[dict[str, Any]]] = {
        s: ([] if family == "claude" else [{"role": "system", "content": text}])
        for s, text in systems.items()
    }
    turns: dict[str, list[Turn]] = defaultdict(list)
    try:
        names = list(conversations)
        for n in range(TURNS):
            for session in names[n % SESSIONS :] + names[: n % SESSIONS]:
                messages = conversations[session]
                messages.append({"role": "user", "content": f"Question {n} of {session}: what next?"})
                if family == "claude":
                    turns[session].append(claude_turn(claude, session, systems[session], messages))
                else:
                    turns[session].append(gpt_turn(gpt, session, messages))
    finally:
        claude.close()
        gpt.close()
    return turns


@pytest.mark.parametrize("family", ["claude", "gpt"])
def test_cacheable_sessions_stick_and_the_providers_report_cache_hits(gateway: Ensemble, family: str) -> None:
    turns = run_sessions(gateway, family)
    homes = {}
    for session, ts in turns.items():
        served = [t.endpoint for t in ts]
        assert len(set(served)) == 1, f"{session} moved: {served}"
        assert ts[0].reason == "least_used"  # nothing known about it yet
        assert all(t.reason.startswith("affinity") for t in ts[1:]), [t.reason for t in ts]
        homes[session] = served[0]
    # An idle pool: the first turns spread, one session per endpoint.
    assert sorted(homes.values()) == POOLS[family]
    # What the providers said, per endpoint, as the operator sees it: every turn after the first
    # read the system prompt (and for OpenAI the conversation so far) from the cache.
    expected = {e: [0, 0, 0] for e in POOLS[family]}
    for ts in turns.values():
        for t in ts:
            row = expected[t.endpoint]
            row[0] += 1
            row[1] += t.prompt
            row[2] += t.cached
            if t is not ts[0]:
                assert t.cached >= (6_000 if family == "claude" else 2_000) * 0.9, vars(t)
    status = admin(gateway, "/admin/status").json()
    provider = "claude-pool" if family == "claude" else "gpt-pool"
    seen = {e["id"]: e["prompt_cache"] for e in status["providers"][provider]["endpoints"]}
    for endpoint, (requests, prompt, cached) in expected.items():
        view = seen[endpoint]
        assert (view["requests"], view["prompt_tokens"], view["cached_tokens"]) == (requests, prompt, cached)
        assert view["hit_rate"] == round(cached / prompt, 4)
        assert view["hit_rate"] > 0.75, view
    metrics = scrape(gateway)
    for endpoint, (_, prompt, cached) in expected.items():
        labels = frozenset({("provider", provider), ("endpoint", endpoint)})
        assert metrics[("ensemble_endpoint_prompt_tokens_total", labels)] == prompt
        assert metrics[("ensemble_endpoint_cached_prompt_tokens_total", labels)] == cached
    # Endpoint labels only ever name configured endpoints.
    configured = {*POOLS["claude"], *POOLS["gpt"], *CHAT, "mock-local"}
    assert {dict(ls)["endpoint"] for (n, ls) in metrics if n.startswith("ensemble_endpoint_")} <= configured


def scrape(gateway: Ensemble) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = admin(gateway, "/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_short_prompts_spread_by_utilisation(gateway: Ensemble) -> None:
    gpt = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0)
    served: Counter[str] = Counter()
    reasons = set()
    try:
        messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
        for i in range(9):
            # One session, but its prompt stays far below the 1024 tokens any provider caches.
            messages.append({"role": "user", "content": f"short question {i}"})
            t = gpt_turn(gpt, "chatty-session", messages, model="chat-mini")
            served[t.endpoint] += 1
            reasons.add(t.reason)
    finally:
        gpt.close()
    assert reasons == {"least_used"}
    assert served == dict.fromkeys(CHAT, 3)


def test_a_session_that_must_move_goes_where_its_prompt_is_and_is_logged(
    gateway: Ensemble, fake: FakeUpstream
) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    system = system_prompt("mover", 6_000)
    messages: list[dict[str, Any]] = []
    try:
        served = []
        for n in range(3):
            messages.append({"role": "user", "content": f"step {n}"})
            served.append(claude_turn(client, "mover", system, messages))
        home = served[0].endpoint
        assert {t.endpoint for t in served} == {home}
        # The home answers 429 (cooling down for 30 s): the gateway fails over, and the session
        # continues where it landed, which now holds the whole conversation.
        fake.enqueue(home, {"status": 429, "retry_after": 30})
        messages.append({"role": "user", "content": "step 3"})
        moved = claude_turn(client, "mover", system, messages)
        assert moved.endpoint != home and moved.reason == "failover"
        for n in (4, 5):
            messages.append({"role": "user", "content": f"step {n}"})
            after = claude_turn(client, "mover", system, messages)
            assert after.endpoint == moved.endpoint and after.reason.startswith("affinity")
            assert after.cached > 0  # the provider had it: the move wrote it there once
    finally:
        client.close()
    line = wait_for_log(gateway, f"affinity move {moved.request_id}: ")
    assert f"{home} -> {moved.endpoint} because its upstream call failed" in line["msg"], line
    assert (line["logger"], line["level"]) == ("ensemble.router", "info")


def wait_for_log(gateway: Ensemble, needle: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for raw in gateway.process.output().splitlines():
            if needle in raw and raw.startswith("{"):
                entry: dict[str, Any] = orjson.loads(raw)
                return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {needle!r}:\n{gateway.process.output()[-3000:]}")
        time.sleep(0.05)
