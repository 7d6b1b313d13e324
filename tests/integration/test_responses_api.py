"""`POST /v1/responses` with the official `openai` SDK, against every upstream type of the fake.

`gpt-4o` is an OpenAI-type provider on chat completions, `gpt-5` the same type on its Responses
API (`api: responses`), `claude-sonnet-4-6` Anthropic, `gemini-2.5-flash` Gemini, `grok-3-mini`
xAI, `or-gpt` OpenRouter and `mock-1` the local mock provider. Every event the
gateway streams is parsed with the SDK's own `ResponseStreamEvent` type, so a field the SDK
would reject fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from support.ensemble import Ensemble
from support.fake import FakeUpstream

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-test-upstream-key-000000"
PRICING = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
# model → (provider name, provider type, fake endpoint, the fake's name in its answers, model extras)
MODELS: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "gpt-4o": ("openai", "openai", "ep-openai", "openai", {}),
    "gpt-5": ("openai-responses", "openai", "ep-openai-resp", "openai", {"api": "responses"}),
    "claude-sonnet-4-6": ("anthropic", "anthropic", "ep-anthropic", "anthropic", {}),
    "gemini-2.5-flash": ("gemini", "gemini", "ep-gemini", "gemini", {}),
    # xAI and OpenRouter speak OpenAI's chat completions (the fake's OpenAI side answers for them).
    "grok-3-mini": ("xai", "xai", "ep-xai", "openai", {}),
    "or-gpt": ("openrouter", "openrouter", "ep-openrouter", "openai", {"upstream": "openai/gpt-4o"}),
}
MOCK = {"name": "mock", "type": "mock", "models": [{"name": "mock-1", "pricing": PRICING}]}
ALL = list(MODELS)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def _provider(fake: FakeUpstream, model: str) -> dict[str, Any]:
    name, kind, endpoint, _, extra = MODELS[model]
    return {
        "name": name,
        "type": kind,
        "base_url": fake.endpoint_url(endpoint),
        "endpoints": [{"id": f"{name}-primary", "api_key": UPSTREAM_KEY}],
        "models": [{"name": model, "max_output_tokens": 8192, "pricing": PRICING, **extra}],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Ensemble]:
    ens = Ensemble(
        Path(tmp_path_factory.mktemp("responses")), providers=[*(_provider(fake, m) for m in MODELS), MOCK]
    )
    yield ens
    ens.stop()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()
    for _, _, endpoint, _, _ in MODELS.values():
        fake.configure(endpoint, chunks=8, require_api_key=UPSTREAM_KEY)


@pytest.fixture(scope="module")
def sdk(server: Ensemble) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=server.key, max_retries=0)
    yield c
    c.close()


def upstream_bodies(fake: FakeUpstream, model: str) -> list[dict[str, Any]]:
    return [r["body"] for r in fake.requests(MODELS[model][2]) if isinstance(r["body"], dict)]


def collect(events: Any) -> tuple[list[Any], Response]:
    """Every event re-validated with the SDK's union type; the final response object."""
    seen = []
    for event in events:
        seen.append(EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True)))
    assert [e.sequence_number for e in seen] == list(range(len(seen)))
    assert seen[0].type == "response.created" and seen[1].type == "response.in_progress"
    assert seen[-1].type in ("response.completed", "response.incomplete")
    return seen, seen[-1].response


@pytest.mark.parametrize("model", ALL)
def test_create_text(sdk: openai.OpenAI, model: str) -> None:
    r = sdk.responses.create(model=model, input="Hello responses", instructions="Answer briefly")
    fake_name = MODELS[model][3]
    assert r.status == "completed" and r.object == "response" and r.id.startswith("resp_")
    assert r.output_text.startswith(f"Hello from fake-{fake_name}. You said: Hello responses")
    assert r.instructions == "Answer briefly" and r.model == model
    assert r.usage is not None and r.usage.output_tokens == 8 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    expected = (r.usage.input_tokens * PRICING["input"] + r.usage.output_tokens * PRICING["output"]) / 1e6
    assert r.usage.model_extra is not None and r.usage.model_extra["cost"] == pytest.approx(expected)


@pytest.mark.parametrize("model", ALL)
def test_stream_matches_json(sdk: openai.OpenAI, model: str) -> None:
    events, final = collect(sdk.responses.create(model=model, input="Hello stream", stream=True))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 8
    text = "".join(e.delta for e in deltas)
    assert final.output_text == text
    item_id = final.output[0].id
    assert {e.item_id for e in deltas} == {item_id}
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [a.item.id for a in added] == [item_id] and added[0].output_index == 0
    assert final.usage is not None and final.usage.output_tokens == 8
    stored = sdk.responses.retrieve(final.id)
    assert stored.output_text == text and stored.output[0].id == item_id


@pytest.mark.parametrize("model", ALL)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_round_trip(sdk: openai.OpenAI, fake: FakeUpstream, model: str, stream: bool) -> None:
    first_input: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        events, first = collect(
            sdk.responses.create(model=model, input=first_input, tools=[WEATHER], stream=True)
        )
        arg_deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        assert arg_deltas == '{"city":"test"}'
    else:
        first = sdk.responses.create(model=model, input=first_input, tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].arguments == '{"city":"test"}'
    # The client runs the tool and sends the whole conversation back (store-less, as Codex does).
    second = sdk.responses.create(
        model=model,
        input=[
            *first_input,
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
        ],
        tools=[WEATHER],
    )
    assert second.output_text.startswith(f"Hello from fake-{MODELS[model][3]}")
    last = str(upstream_bodies(fake, model)[-1])
    assert "sunny, 21 C" in last
    assert calls[0].call_id in last or model.startswith("gemini")  # Gemini pairs results by name


def test_mock_provider_json_stream_and_tool_round_trip(sdk: openai.OpenAI) -> None:
    """The mock answers locally (no upstream): the same items, events and usage as a real provider."""
    r = sdk.responses.create(model="mock-1", input="Hello mock")
    assert r.status == "completed" and r.output_text.endswith("You said: Hello mock")
    assert r.usage is not None and r.usage.output_tokens == len(r.output_text.split(" "))
    events, final = collect(sdk.responses.create(model="mock-1", input="Hello mock", stream=True))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(e.delta for e in deltas) == final.output_text == r.output_text
    assert sdk.responses.retrieve(final.id).output_text == final.output_text
    first_input: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    events, first = collect(
        sdk.responses.create(model="mock-1", input=first_input, tools=[WEATHER], stream=True)
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert call.name == "get_weather" and call.arguments == args == '{"city":"test"}'
    assert first.status == "completed"
    second = sdk.responses.create(
        model="mock-1",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
        tools=[WEATHER],
    )
    # The last turn is the tool's result, so the mock answers in text instead of calling again.
    assert second.output_text.startswith("This is a mock answer") and second.previous_response_id == first.id


@pytest.mark.parametrize("model", ALL)
def test_previous_response_id_retrieve_delete(sdk: openai.OpenAI, fake: FakeUpstream, model: str) -> None:
    first = sdk.responses.create(
        model=model, input=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER]
    )
    call = next(item for item in first.output if item.type == "function_call")
    second = sdk.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
        tools=[WEATHER],
        metadata={"turn": "2"},
    )
    assert second.previous_response_id == first.id and second.metadata == {"turn": "2"}
    upstream = str(upstream_bodies(fake, model)[-1])
    assert "Weather in Paris?" in upstream and "rain" in upstream  # the conversation was rebuilt
    third = sdk.responses.create(model=model, previous_response_id=second.id, input="And tomorrow?")
    assert "Weather in Paris?" in str(upstream_bodies(fake, model)[-1])
    got = sdk.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text and got.metadata == {"turn": "2"}
    sdk.responses.delete(third.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(third.id)
    with pytest.raises(openai.NotFoundError) as e:
        sdk.responses.create(model=model, previous_response_id=third.id, input="again")
    assert e.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_store_false_is_not_retrievable(sdk: openai.OpenAI) -> None:
    r = sdk.responses.create(model="gpt-4o", input="forget me", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(r.id)


def test_other_keys_responses_are_not_found(server: Ensemble, sdk: openai.OpenAI) -> None:
    r = sdk.responses.create(model="gpt-4o", input="mine")
    other = openai.OpenAI(base_url=server.url + "/v1", api_key=server.create_key("other"), max_retries=0)
    server.wait_for_key(other.api_key)
    with pytest.raises(openai.NotFoundError) as e:
        other.responses.retrieve(r.id)
    assert e.value.body["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="gpt-4o", previous_response_id=r.id, input="yours?")
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(r.id)
    assert sdk.responses.retrieve(r.id).output_text == r.output_text
    other.close()


def test_errors_in_openai_shape(server: Ensemble, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        sdk.responses.create(model="no-such-model", input="x")
    assert nf.value.body["type"] == "not_found_error"  # type: ignore[index]
    with server.client() as http:
        bad = http.post("/v1/responses", json={"model": "gpt-4o", "input": 42})
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["param"] == "input" and "input" in err["message"] and err["type"] == "invalid_request_error"
    wrong = openai.OpenAI(
        base_url=server.url + "/v1", api_key="ens_wrong_key_00000000000000000000000", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong.responses.create(model="gpt-4o", input="x")
    assert auth.value.body["type"] == "authentication_error"  # type: ignore[index]
    wrong.close()


def test_hosted_tools_pass_through_to_responses_upstream_only(sdk: openai.OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.create(model="claude-sonnet-4-6", input="news?", tools=[{"type": "web_search"}])
    assert "web_search" in str(e.value) and e.value.body["param"] == "tools"  # type: ignore[index]
    sdk.responses.create(model="gpt-5", input="news?", tools=[{"type": "web_search"}, WEATHER])
    sent = upstream_bodies(fake, "gpt-5")[-1]
    assert {"type": "web_search"} in sent["tools"] and sent["store"] is False


def test_namespace_tools_are_flattened(sdk: openai.OpenAI, fake: FakeUpstream) -> None:
    ns = {"type": "namespace", "name": "mcp_weather", "description": "weather tools", "tools": [WEATHER]}
    r = sdk.responses.create(model="claude-sonnet-4-6", input="Weather?", tools=[ns])  # type: ignore[list-item]
    assert r.output[0].type == "function_call" and r.output[0].name == "get_weather"
    assert upstream_bodies(fake, "claude-sonnet-4-6")[-1]["tools"][0]["name"] == "get_weather"


def test_parameters_reach_the_upstream(sdk: openai.OpenAI, fake: FakeUpstream) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    sdk.responses.create(
        model="gpt-4o",
        input="json please",
        max_output_tokens=100,
        temperature=0.5,
        prompt_cache_key="session-7",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
    )
    chat = upstream_bodies(fake, "gpt-4o")[-1]
    assert chat["max_completion_tokens"] == 100 and chat["temperature"] == 0.5
    sdk.responses.create(
        model="gpt-5",
        input="json please",
        prompt_cache_key="session-7",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
    )
    native = upstream_bodies(fake, "gpt-5")[-1]
    assert native["prompt_cache_key"] == "session-7" and native["text"]["format"]["schema"] == schema


def test_max_output_tokens_is_incomplete(sdk: openai.OpenAI) -> None:
    for model in ("gpt-4o", "gpt-5"):
        r = sdk.responses.create(model=model, input="long answer", max_output_tokens=16)
        assert r.status == "completed"  # 16 ≥ the fake's 8 pieces
    events, final = collect(
        sdk.responses.create(model="claude-sonnet-4-6", input="long answer", max_output_tokens=3, stream=True)
    )
    assert events[-1].type == "response.incomplete" and final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"


def test_reasoning_round_trips_to_its_own_provider_only(sdk: openai.OpenAI, fake: FakeUpstream) -> None:
    turn = [{"role": "user", "content": "Think first"}]
    include: Any = ["reasoning.encrypted_content"]
    first = sdk.responses.create(
        model="gpt-5", input=turn, reasoning={"effort": "high", "summary": "auto"}, include=include
    )
    reasoning = next(item for item in first.output if item.type == "reasoning")
    assert reasoning.encrypted_content and reasoning.summary and reasoning.id.startswith("rs_")
    echoed = [*turn, reasoning.model_dump(exclude_none=True), {"role": "user", "content": "again"}]
    # Back to OpenAI: the fake verifies the encrypted content (a foreign one would be a 400 there).
    sdk.responses.create(model="gpt-5", input=echoed, reasoning={"effort": "high"}, include=include)
    sent = upstream_bodies(fake, "gpt-5")[-1]["input"]
    assert any(
        i.get("type") == "reasoning" and i["encrypted_content"] == reasoning.encrypted_content for i in sent
    )
    # To Claude: OpenAI's reasoning means nothing there and is dropped.
    sdk.responses.create(model="claude-sonnet-4-6", input=echoed)
    assert "thinking" not in str(upstream_bodies(fake, "claude-sonnet-4-6")[-1]["messages"])
    # Claude's signed thinking, echoed to gpt-5, is dropped too (the fake would refuse it).
    claude = sdk.responses.create(
        model="claude-sonnet-4-6",
        input=turn,
        reasoning={"effort": "high"},
        include=include,
        max_output_tokens=4096,
    )
    thought = next(item for item in claude.output if item.type == "reasoning")
    assert thought.encrypted_content and thought.encrypted_content.startswith("ensemble:anthropic:")
    back = [*turn, thought.model_dump(exclude_none=True), {"role": "user", "content": "again"}]
    sdk.responses.create(model="gpt-5", input=back)
    assert not any(i.get("type") == "reasoning" for i in upstream_bodies(fake, "gpt-5")[-1]["input"])
    sdk.responses.create(
        model="claude-sonnet-4-6", input=back, reasoning={"effort": "high"}, max_output_tokens=4096
    )
    blocks = upstream_bodies(fake, "claude-sonnet-4-6")[-1]["messages"][1]["content"]
    assert (
        blocks[0]["type"] == "thinking"
        and blocks[0]["signature"] == thought.encrypted_content.split(":", 2)[2]
    )


def test_reasoning_summary_streams(sdk: openai.OpenAI) -> None:
    events, final = collect(
        sdk.responses.create(
            model="gpt-5",
            input="Think first",
            reasoning={"effort": "high", "summary": "auto"},
            include=["reasoning.encrypted_content"],
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert (
        "response.reasoning_summary_text.delta" in kinds and "response.reasoning_summary_part.done" in kinds
    )
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].encrypted_content
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert final.output[0].summary[0].text == summary


# After some text: the Responses upstream opens with four events of its own before the first delta.
@pytest.mark.parametrize(("model", "after"), [("claude-sonnet-4-6", 4), ("gpt-5", 8)])
def test_mid_stream_failure_is_error_then_response_failed(
    sdk: openai.OpenAI, fake: FakeUpstream, model: str, after: int
) -> None:
    """As the API reports it: an `error` event (the SDK's flat ResponseErrorEvent, which its
    iterator yields rather than raises), then the terminal `response.failed` with the text so far."""
    fake.enqueue(MODELS[model][2], {"error_event_after_chunks": after})
    events = [
        EVENTS.validate_python(e.model_dump(mode="json", exclude_unset=True))
        for e in sdk.responses.create(model=model, input="hi", stream=True)
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    error, failed = events[-2:]
    assert error.type == "error" and error.code == "server_error" and error.message
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error is not None and failed.response.error.code == "server_error"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and failed.response.output_text == deltas


# Talks to the fake directly, with the test's own client bodies (a forged reasoning item among them).
@pytest.mark.nonconforming_upstream
def test_fake_upstream_speaks_responses(fake: FakeUpstream) -> None:
    """The fake's own Responses stream, parsed by the SDK: what the upstream mode is tested against."""
    c = openai.OpenAI(
        base_url=fake.endpoint_url("ep-openai-resp") + "/v1", api_key=UPSTREAM_KEY, max_retries=0
    )
    _, final = collect(
        c.responses.create(model="gpt-5", input="hi", tools=[WEATHER], stream=True)  # type: ignore[list-item]
    )
    assert final.output[0].type == "function_call"
    whole = c.responses.create(model="gpt-5", input="hi", reasoning={"effort": "low", "summary": "auto"})
    assert Response.model_validate(whole.model_dump()).output_text.startswith("Hello from fake-openai")
    with pytest.raises(openai.BadRequestError):
        c.responses.create(
            model="gpt-5",
            input=[{"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "forged"}],  # type: ignore[list-item]
        )
    c.close()
    assert httpx.get(fake.url + "/_fake/health").status_code == 200
