"""The Responses ingress and upstream mode without a server: items ⇄ canonical messages, the
reasoning origin mark, the refusals, and the event writer checked with the SDK's event types."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from ensemble.api import responses, responses_events, responses_render
from ensemble.errors import InvalidRequest
from ensemble.providers.openai_responses import input_items, request_body
from ensemble.types import (
    Finish,
    InferenceRequest,
    InferenceResponse,
    Message,
    Performance,
    TextBlock,
    TextContent,
    TextDelta,
    ThinkingBlock,
    ThinkingContent,
    ThinkingDelta,
    ToolCallArgs,
    ToolCallBlock,
    ToolCallOut,
    ToolCallStart,
    UsageOut,
)

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def parse(**body: Any) -> responses.ResponsesCall:
    return responses.parse_request(orjson.dumps({"model": "m", **body}))


def test_items_become_one_assistant_turn_per_answer() -> None:
    call = parse(
        instructions="be brief",
        input=[
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "think"}],
                "encrypted_content": "opaque",
            },
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
        ],
    )
    roles = [m.role for m in call.request.messages]
    assert roles == ["system", "system", "user", "assistant", "tool"]
    turn = call.request.messages[3]
    assert isinstance(turn.content, list) and turn.tool_calls is not None
    thought, text = turn.content
    assert isinstance(thought, ThinkingContent) and thought.origin == "openai" and thought.item_id == "rs_1"
    assert thought.signature == "opaque" and thought.thinking == "think"
    assert isinstance(text, TextContent) and text.text == "calling"
    assert turn.tool_calls[0].id == "c1" and call.request.messages[4].tool_call_id == "c1"
    assert call.input_messages == call.request.messages[1:]  # instructions are not kept for later turns


def test_encrypted_content_carries_its_origin() -> None:
    mine = responses.encode_encrypted("anthropic", "sig")
    assert mine == "ensemble:anthropic:sig" and responses.decode_encrypted(mine) == ("anthropic", "sig")
    assert responses.encode_encrypted("openai", "gAAA") == "gAAA"
    assert responses.decode_encrypted("gAAA") == ("openai", "gAAA")


def test_only_openai_reasoning_goes_back_to_the_responses_upstream() -> None:
    turn = Message(
        role="assistant",
        content=[
            ThinkingContent(thinking="a", signature="enc", origin="openai", item_id="rs_1"),
            ThinkingContent(thinking="b", signature="claude-sig", origin="anthropic"),
            TextContent(text="answer"),
        ],
    )
    items = input_items([Message(role="user", content="q"), turn])
    assert [i["type"] for i in items] == ["message", "reasoning", "message"]
    assert items[1] == {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "a"}],
        "encrypted_content": "enc",
    }


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": 42}, "input", "input"),
        ({}, "input", "required"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input", "item_reference"),
        ({"input": "x", "tools": [{"type": "custom", "name": "p"}]}, "tools", "custom"),
        ({"input": "x", "background": True}, "background", "background"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text", "schema"),
        ({"input": "x", "max_output_tokens": "many"}, "max_output_tokens", "max_output_tokens"),
    ],
)
def test_client_mistakes_name_the_field(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse(**body)
    assert e.value.param == param and words in e.value.message


def test_hosted_tools_ride_apart_and_namespaces_flatten() -> None:
    fn = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}
    call = parse(
        input="x", tools=[{"type": "web_search"}, {"type": "namespace", "name": "ns", "tools": [fn]}]
    )
    assert [t.name for t in call.request.tools or ()] == ["f"]
    assert (call.request.provider_config or {})[responses.HOSTED_KEY] == [{"type": "web_search"}]


def test_mapped_parameters() -> None:
    call = parse(
        input="x",
        prompt_cache_key="s1",
        reasoning={"effort": "high"},
        max_output_tokens=50,
        text={"format": {"type": "json_object"}},
        store=False,
        include=["reasoning.encrypted_content"],
    )
    r = call.request
    assert r.session_id == "s1" and r.max_tokens == 50 and r.response_format is not None
    assert r.response_format.type == "json_object" and (r.provider_config or {})["reasoning_effort"] == "high"
    assert call.store is False and call.include_encrypted


def _answer(blocks: list[Any], finish: Any = "stop") -> InferenceResponse:
    return InferenceResponse(
        id="req_0001",
        model="m",
        provider="p",
        endpoint_id="e",
        blocks=blocks,
        content="",
        finish_reason=finish,
        input_tokens=10,
        output_tokens=5,
        cached_prompt_tokens=2,
        cache_creation_tokens=0,
        reasoning_tokens=1,
        cost="0.001",
        cost_micro_dollars=1000,
        usage=UsageOut(10, 5, 2, 0, 1),
        processing_time_ms=1.0,
        performance=Performance(1.0, 1.0, 0.0),
    )


def test_event_writer_speaks_the_sdk_event_stream() -> None:
    writer = responses_events.EventWriter(
        "req_0001", "m", parse(input="x").echo, None, include_encrypted=True
    )
    deltas = [
        ThinkingDelta(index=0, thinking="hmm"),
        ThinkingDelta(index=0, signature="sig"),
        TextDelta(index=1, text="Hel"),
        TextDelta(index=1, text="lo"),
        ToolCallStart(index=2, id="call_1", name="f"),
        ToolCallArgs(index=2, fragment='{"a":'),
        ToolCallArgs(index=2, fragment="1}"),
        Finish(reason="tool_use"),
    ]
    raw = writer.start() + b"".join(filter(None, (writer.render(d) for d in deltas)))
    call = ToolCallOut(id="call_1", name="f", arguments={"a": 1}, raw_arguments='{"a":1}')
    blocks = [
        ThinkingBlock(thinking="hmm", signature="sig", origin="anthropic"),
        TextBlock("Hello"),
        ToolCallBlock(call),
    ]
    raw += writer.finish(_answer(blocks, "tool_use"))
    events = [EVENTS.validate_json(frame.split(b"data: ", 1)[1]) for frame in raw.split(b"\n\n") if frame]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    done = [e.item.id for e in events if e.type == "response.output_item.done"]
    final = events[-1].response
    assert added == done == [item.id for item in final.output]
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].encrypted_content == "ensemble:anthropic:sig"
    assert final.output_text == "Hello" and final.output[2].arguments == '{"a":1}'
    assert final.usage.input_tokens_details.cached_tokens == 2


def test_length_is_incomplete_and_text_only_streams_reuse_their_items() -> None:
    writer = responses_events.EventWriter(
        "req_0001", "m", parse(input="x").echo, None, include_encrypted=False
    )
    raw = writer.start() + (writer.render(TextDelta(index=0, text="cut")) or b"")
    raw += writer.finish(_answer([TextBlock("cut")], "length"))
    last = EVENTS.validate_json(raw.split(b"\n\n")[-2].split(b"data: ", 1)[1])
    assert (
        last.type == "response.incomplete" and last.response.incomplete_details.reason == "max_output_tokens"
    )
    whole = responses_render.render(_answer([TextBlock("cut")], "length"), parse(input="x").echo, None, False)
    assert last.response.output[0].model_dump(exclude_none=True) == whole["output"][0]


@pytest.mark.parametrize("finish", ["stop", "length"])
def test_text_only_final_event_is_the_json_answer(finish: Any) -> None:
    """The templated final event of a text-only stream holds exactly render()'s object."""
    echo = parse(input="x", metadata={"a": "b"}, instructions="be brief").echo
    writer = responses_events.EventWriter("req_0001", "m", echo, None, include_encrypted=False)
    raw = writer.start() + b"".join(writer.render(TextDelta(index=0, text=t)) or b"" for t in ("He", "llo"))
    answer = _answer([TextBlock("Hello")], finish)
    raw += writer.finish(answer)
    final = orjson.loads(raw.split(b"\n\n")[-2].split(b"data: ", 1)[1])["response"]
    whole = responses_render.render(answer, echo, None, False, created_at=final["created_at"])
    assert final == whole


@pytest.mark.parametrize("finish", ["stop", "length"])
@pytest.mark.parametrize("texts", [["Hello"], ["Hel", 'lo "quoted" \u00e9'], []])
def test_render_json_is_render(finish: Any, texts: list[str]) -> None:
    echo = parse(input="x", metadata={"k": "v"}, temperature=0.5).echo
    answer = _answer([TextBlock(t) for t in texts], finish)
    expected = responses_render.render(answer, echo, "resp_prev", False, created_at=123)
    assert orjson.loads(responses_render.render_json(answer, echo, "resp_prev", False, 123)) == expected
    tools = _answer(
        [TextBlock("a"), ToolCallBlock(ToolCallOut(id="c", name="f", arguments={}, raw_arguments="{}"))],
        finish,
    )
    got = orjson.loads(responses_render.render_json(tools, echo, None, False, 123))
    assert got == responses_render.render(tools, echo, None, False, created_at=123)


def test_a_chat_response_format_becomes_text_format_upstream() -> None:
    schema = {"type": "object", "properties": {}}
    request = InferenceRequest(
        model="m",
        messages=[Message(role="user", content="q")],
        provider_config={
            "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
        },
    )
    body = request_body(request, "gpt-5", False, frozenset())
    assert body["text"]["format"] == {"type": "json_schema", "name": "t", "schema": schema}
    assert "response_format" not in body and body["store"] is False
