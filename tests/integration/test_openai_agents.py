"""`openai-agents` through Ensemble with its default model class (the Responses API).

An agent with one function tool runs to its final answer on a Claude, a Gemini and an OpenAI
(Responses upstream) model of the fake upstream: the SDK sends `POST /v1/responses`, gets a
`function_call`, runs the tool, and sends its output back (`function_call_output`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agents
import httpx
import pytest
from openai import AsyncOpenAI

from support.ensemble import Ensemble
from support.fake import FakeUpstream

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-test-upstream-key-000000"
MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "claude-sonnet-4-6": ("anthropic", "agents-anthropic", {}),
    "gemini-2.5-flash": ("gemini", "agents-gemini", {}),
    "gpt-5": ("openai", "agents-openai", {"api": "responses"}),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Ensemble]:
    providers = [
        {
            "name": kind,
            "type": kind,
            "base_url": fake.endpoint_url(endpoint),
            "endpoints": [{"id": endpoint, "api_key": UPSTREAM_KEY}],
            "models": [{"name": model, "max_output_tokens": 8192, **extra}],
        }
        for model, (kind, endpoint, extra) in MODELS.items()
    ]
    ens = Ensemble(Path(tmp_path_factory.mktemp("agents")), providers=providers)
    yield ens
    ens.stop()


@agents.function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _agent(model: str) -> agents.Agent:
    return agents.Agent(
        name="weather", instructions="Answer with the weather.", tools=[get_weather], model=model
    )


async def _run(server: Ensemble, model: str, stream: bool, paths: list[str]) -> str:
    async def seen(request: httpx.Request) -> None:
        paths.append(request.url.path)

    http = httpx.AsyncClient(event_hooks={"request": [seen]})
    client = AsyncOpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0, http_client=http)
    # The provider's defaults: its model class is the Responses one.
    run_config = agents.RunConfig(
        model_provider=agents.OpenAIProvider(openai_client=client), tracing_disabled=True
    )
    try:
        if stream:
            result = agents.Runner.run_streamed(_agent(model), "Weather in Paris?", run_config=run_config)
            async for _ in result.stream_events():
                pass
            return str(result.final_output)
        done = await agents.Runner.run(_agent(model), "Weather in Paris?", run_config=run_config)
        return str(done.final_output)
    finally:
        await client.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", list(MODELS))
def test_agent_runs_a_tool_to_its_answer(
    server: Ensemble, fake: FakeUpstream, model: str, stream: bool
) -> None:
    kind, endpoint, _ = MODELS[model]
    fake.reset()
    fake.configure(endpoint, chunks=6, require_api_key=UPSTREAM_KEY)
    paths: list[str] = []
    answer = asyncio.run(_run(server, model, stream, paths))
    assert paths == ["/v1/responses", "/v1/responses"]
    assert answer.startswith(f"Hello from fake-{kind}")
    bodies = [r for r in fake.requests(endpoint) if isinstance(r["body"], dict)]
    assert len(bodies) == 2  # the tool call, then the answer to its output
    assert "sunny in test" in str(bodies[-1]["body"])
