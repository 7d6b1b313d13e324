"""`server.coalescence_window`: small deltas arriving within the window become one frame; the text is
unchanged and nothing is held longer than the window."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.ensemble import Ensemble
from support.fake import FakeUpstream

from .conftest import HELLO, make_server, solo_providers, sse_events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Ensemble, Ensemble]]:
    providers = solo_providers(fake, ["co"])
    fake.configure("solo-co", chunk_gap_ms=10, chunks=40)
    batched = make_server(Path(tmp_path_factory.mktemp("co1")), providers, coalescence_window="100ms")
    plain = make_server(Path(tmp_path_factory.mktemp("co0")), providers)
    yield batched, plain
    batched.stop()
    plain.stop()


def blocks(server: Ensemble, path: str = "/api/v1/stream") -> tuple[list[str], str]:
    with server.client() as c:
        r = c.post(path, json={"model": "s-co", "messages": HELLO})
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[-1][0] == "done"
    return [str(e[1]["text"]) for e in events if e[0] == "block"], str(events[-1][1]["content"])


def test_window_batches_tokens_without_changing_the_text(servers: tuple[Ensemble, Ensemble]) -> None:
    batched, plain = servers
    few, content = blocks(batched)
    many, content0 = blocks(plain)
    assert content == content0 == "".join(few) == "".join(many)
    assert len(many) >= 30  # no window: one block per upstream token
    # ~400 ms of tokens in 100 ms windows: a handful of frames, never one per token.
    assert 2 <= len(few) <= 10, few


def test_window_holds_a_token_no_longer_than_the_window(
    servers: tuple[Ensemble, Ensemble], fake: FakeUpstream
) -> None:
    batched, _ = servers
    fake.configure("solo-co", chunk_gap_ms=300, chunks=4)
    try:
        arrivals = []
        with (
            batched.client() as c,
            c.stream("POST", "/api/v1/stream", json={"model": "s-co", "messages": HELLO}) as r,
        ):
            t0 = time.monotonic()
            for line in r.iter_lines():
                if line.startswith("event: block"):
                    arrivals.append(time.monotonic() - t0)
        # tokens 300 ms apart each arrive in their own frame, ≤ 100 ms after the upstream sent them
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert len(arrivals) >= 3 and all(0.15 < g < 0.45 for g in gaps), arrivals
    finally:
        fake.configure("solo-co", chunk_gap_ms=10, chunks=40)


def test_openai_route_is_coalesced_too(servers: tuple[Ensemble, Ensemble]) -> None:
    batched, _ = servers
    with httpx.Client(base_url=batched.url, headers={"authorization": f"Bearer {batched.key}"}) as c:
        r = c.post("/v1/chat/completions", json={"model": "s-co", "messages": HELLO, "stream": True})
    chunks = [f for f in r.text.split("\n\n") if f.startswith("data: {")]
    assert 2 <= len(chunks) <= 14
