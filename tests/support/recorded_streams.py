"""Recorded provider streams, byte for byte as the providers frame them: text, tool calls, thinking,
usage reported in different places, mid-stream errors, comments and CRLF framing.

Each is (provider type, its events): the provider type is also the ingress format whose clients can
take the stream unchanged, and each event is one write of the provider (its terminator included).
Tests replay them through the fake upstream (the `stream_body` behaviour) or into the decoders.
Every id is fixed (Gemini calls carry one) so two runs of the same recording store the same answer.
"""

from __future__ import annotations

from typing import Any

import orjson


def _sse(*events: dict[str, Any] | str, crlf: bool = False, named: bool = False) -> list[str]:
    eol = "\r\n" if crlf else "\n"
    out = []
    for e in events:
        if isinstance(e, str):
            out.append((e if e.startswith(":") else f"data: {e}") + eol + eol)  # a comment, or [DONE]
            continue
        data = orjson.dumps(e).decode()
        out.append((f"event: {e['type']}{eol}data: {data}{eol}" if named else f"data: {data}{eol}") + eol)
    return out


# --- OpenAI chat.completion.chunk ----------------------------------------------------------

_HEAD = {"id": "chatcmpl-rec1", "object": "chat.completion.chunk", "created": 1764633600, "model": "gpt-4o"}


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {**_HEAD, "system_fingerprint": "fp_rec", "choices": [choice], **extra}


def _usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }


_WORDS = ["Hello", "!", ' A "quoted"', " line\nbreak", " café ☕", " emoji 😀", " back\\slash", " end."]

OPENAI_TEXT = _sse(
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    *(_chunk({"content": w}) for w in _WORDS),
    _chunk({}, "stop"),
    {**_HEAD, "choices": [], "usage": _usage(12, 8, cached=4)},
    "[DONE]",
)

# Usage on the finishing chunk itself (some compatible APIs), and comments between events.
OPENAI_USAGE_IN_LAST = _sse(
    _chunk({"role": "assistant", "content": ""}),
    ": keep-alive",
    *(_chunk({"content": w}) for w in _WORDS[:4]),
    ": keep-alive",
    _chunk({}, "length", usage=_usage(7, 4)),
    "[DONE]",
    crlf=True,
)

OPENAI_TOOLS = _sse(
    _chunk({"role": "assistant", "content": None}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_rec_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    *(
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]})
        for frag in ['{"ci', 'ty": "Par', 'is", "unit"', ': "°C"}']
    ),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_rec_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        }
    ),
    *(
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": frag}}]})
        for frag in ['{"tz"', ': "CET"}']
    ),
    _chunk({}, "tool_calls"),
    {**_HEAD, "choices": [], "usage": _usage(40, 22)},
    "[DONE]",
)

OPENAI_REASONING = _sse(
    _chunk({"role": "assistant", "content": ""}),
    *(_chunk({"reasoning_content": r}) for r in ["Let me", " think", " about it."]),
    *(_chunk({"content": w}) for w in _WORDS[:5]),
    _chunk({}, "stop"),
    {**_HEAD, "choices": [], "usage": _usage(9, 30, reasoning=18)},
    "[DONE]",
)

OPENAI_ERROR = _sse(
    _chunk({"role": "assistant", "content": ""}),
    *(_chunk({"content": w}) for w in _WORDS[:3]),
    {"error": {"message": "The server had an error while processing your request.", "type": "server_error"}},
)

# --- Anthropic Messages ------------------------------------------------------------------------


def _start(input_tokens: int, cache_read: int = 0) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_rec1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": cache_read,
                "output_tokens": 1,
            },
        },
    }


def _delta(index: int, kind: str, field: str, value: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}}


def _block(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def _message_delta(reason: str, output_tokens: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }


_PING = {"type": "ping"}
_MESSAGE_STOP = {"type": "message_stop"}

ANTHROPIC_TEXT = _sse(
    _start(25, cache_read=10),
    _block(0, {"type": "text", "text": ""}),
    _PING,
    *(_delta(0, "text_delta", "text", w) for w in _WORDS),
    _stop(0),
    _message_delta("end_turn", 8),
    _MESSAGE_STOP,
    named=True,
)

ANTHROPIC_THINKING_TOOLS = _sse(
    _start(120),
    _block(0, {"type": "thinking", "thinking": "", "signature": ""}),
    *(_delta(0, "thinking_delta", "thinking", t) for t in ["The user", " wants", " weather."]),
    _delta(0, "signature_delta", "signature", "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"),
    _stop(0),
    _block(1, {"type": "text", "text": ""}),
    *(_delta(1, "text_delta", "text", w) for w in ["Checking", " now."]),
    _stop(1),
    _block(2, {"type": "tool_use", "id": "toolu_rec_1", "name": "get_weather", "input": {}}),
    _delta(2, "input_json_delta", "partial_json", ""),
    *(_delta(2, "input_json_delta", "partial_json", p) for p in ['{"city"', ': "Par', 'is"}']),
    _stop(2),
    _block(3, {"type": "tool_use", "id": "toolu_rec_2", "name": "get_time", "input": {}}),
    _stop(3),  # no fragments: the arguments are the start event's input
    _message_delta("tool_use", 64),
    _MESSAGE_STOP,
    named=True,
)

ANTHROPIC_ERROR = _sse(
    _start(25),
    _block(0, {"type": "text", "text": ""}),
    *(_delta(0, "text_delta", "text", w) for w in _WORDS[:3]),
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    named=True,
)

# --- Gemini GenerateContentResponse (alt=sse, CRLF as Google frames it) --------------------------


def _gemini(
    parts: list[dict[str, Any]] | None, usage: dict[str, Any] | None = None, finish: str | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts or [], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    chunk: dict[str, Any] = {"candidates": [candidate]}
    if usage:
        chunk["usageMetadata"] = usage
    chunk["modelVersion"] = "gemini-2.5-flash"
    chunk["responseId"] = "resp_rec1"
    return chunk


def _gusage(prompt: int, out: int, thoughts: int = 0) -> dict[str, Any]:
    usage = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": out,
        "totalTokenCount": prompt + out + thoughts,
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


GEMINI_TEXT = _sse(
    *(_gemini([{"text": w}], _gusage(6, i + 1)) for i, w in enumerate(_WORDS)),
    _gemini([{"text": ""}], _gusage(6, 8), finish="STOP"),
    crlf=True,
)

GEMINI_USAGE_AT_END = _sse(
    *(_gemini([{"text": w}]) for w in _WORDS[:5]),
    _gemini([], _gusage(6, 5), finish="MAX_TOKENS"),
    crlf=True,
)

GEMINI_THOUGHTS_TOOL = _sse(
    _gemini([{"text": "Considering", "thought": True}], _gusage(30, 0, 5)),
    _gemini([{"text": " the city.", "thought": True}], _gusage(30, 0, 9)),
    _gemini([{"text": "Let me look."}], _gusage(30, 3, 9)),
    _gemini([{"text": " One moment."}], _gusage(30, 6, 9)),
    _gemini(
        [
            {
                "functionCall": {"id": "call_rec_g", "name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": "CiQB0e2Kb7",
            }
        ],
        _gusage(30, 12, 9),
        finish="STOP",
    ),
    crlf=True,
)

GEMINI_ERROR = _sse(
    *(_gemini([{"text": w}], _gusage(6, i + 1)) for i, w in enumerate(_WORDS[:3])),
    {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
    crlf=True,
)

RECORDINGS: dict[str, tuple[str, list[str]]] = {
    "openai_text": ("openai", OPENAI_TEXT),
    "openai_usage_in_last": ("openai", OPENAI_USAGE_IN_LAST),
    "openai_tools": ("openai", OPENAI_TOOLS),
    "openai_reasoning": ("openai", OPENAI_REASONING),
    "openai_error": ("openai", OPENAI_ERROR),
    "anthropic_text": ("anthropic", ANTHROPIC_TEXT),
    "anthropic_thinking_tools": ("anthropic", ANTHROPIC_THINKING_TOOLS),
    "anthropic_error": ("anthropic", ANTHROPIC_ERROR),
    "gemini_text": ("gemini", GEMINI_TEXT),
    "gemini_usage_at_end": ("gemini", GEMINI_USAGE_AT_END),
    "gemini_thoughts_tool": ("gemini", GEMINI_THOUGHTS_TOOL),
    "gemini_error": ("gemini", GEMINI_ERROR),
}


def body(name: str) -> bytes:
    """A recording's whole stream, as the provider sent it."""
    return "".join(RECORDINGS[name][1]).encode()
