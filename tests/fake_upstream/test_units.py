"""Unit checks of framing and deterministic content (no server)."""

from __future__ import annotations

import re

import pytest

from ensemble.fake_upstream.content import Conversation, ToolSpec, make_plan, text_pieces, tool_arguments
from ensemble.fake_upstream.wire import Framer, compile_template, fill_template, split_bytes


def parse_sse(data: bytes) -> list[list[bytes]]:
    """A reference SSE parser (WHATWG): lines end in CRLF, LF or CR; a blank line ends an event."""
    events: list[list[bytes]] = []
    current: list[bytes] = []
    for line in re.split(rb"\r\n|\r|\n", data)[:-1]:
        if line == b"":
            if current:
                events.append(current)
            current = []
        elif not line.startswith(b":"):
            current.append(line)
    return events


@pytest.mark.parametrize("framing", ["lf", "crlf", "cr", "mixed"])
@pytest.mark.parametrize("comments", [False, True])
def test_framer_round_trips(framing: str, comments: bool) -> None:
    events = [(b"event: e%d" % i, b'data: {"i": %d}' % i) for i in range(30)]
    framer = Framer(framing, comments)
    data = b"".join(framer.frame(ev) for ev in events)
    assert parse_sse(data) == [list(ev) for ev in events]
    if framing == "mixed":
        assert b"\n" in data.replace(b"\r\n", b"") and b"\r" in data.replace(b"\r\n", b"") and b"\r\n" in data


def test_split_bytes_and_templates() -> None:
    data = "data: café 🙂\r\n\r\n".encode()
    assert b"".join(split_bytes(data, 3)) == data and {len(p) for p in split_bytes(data, 3)} <= {1, 2, 3}
    t = compile_template(b'{"id":"@@fake-id@@","created":"@@fake-ts@@","x":"@@fake-id@@"}')
    assert fill_template(t, b"abc", b"123") == b'{"id":"abc","created":123,"x":"abc"}'


def test_content_rules() -> None:
    pieces = text_pieces("openai", "one two three", 20)
    assert len(pieces) == 20 and "".join(pieces).startswith("Hello from fake-openai. You said: one two three")
    long = text_pieces("x", " ".join(str(i) for i in range(100)), 3)
    assert len(long) == 3
    schema = {
        "type": "object",
        "required": ["s", "n", "i", "b", "a", "o", "e", "u"],
        "properties": {
            "s": {"type": "string"},
            "n": {"type": "number"},
            "i": {"type": "integer"},
            "b": {"type": "boolean"},
            "a": {"type": "array"},
            "o": {"type": "object"},
            "e": {"enum": ["x", "y"]},
            "u": {"type": ["null", "integer"]},
        },
    }
    assert tool_arguments(schema) == {
        "s": "test",
        "n": 1,
        "i": 1,
        "b": True,
        "a": [],
        "o": {},
        "e": "x",
        "u": 1,
    }
    conv = Conversation(prompt_chars=9, last_user_text="hi", tools=[ToolSpec("t", schema)])
    plan = make_plan("openai", conv, 20, 0, 0, 0, lambda o: __import__("json").dumps(o))
    assert plan.tool is not None and plan.finish == "tool" and plan.prompt_tokens == 3
    assert "".join(plan.tool.fragments) == plan.tool.arguments and len(plan.tool.fragments) == 5
    conv.last_is_tool_result = True
    assert make_plan("openai", conv, 20, 0, 0, 0, str).tool is None
