"""Mid-conversation system messages in each adapter's wire format (docs/formats.md): in place for
Claude models that take them (placed as Anthropic requires), `<system-reminder>` user text for the
others; the system prompt before the first turn is the provider's system parameter."""

from __future__ import annotations

import pytest

from ensemble.providers import anthropic, gemini
from ensemble.types import Message, TextContent

REMINDER = "<system-reminder>\nbe brief\n</system-reminder>"


def _late(role_before: str, after: str | None) -> list[Message]:
    messages = [Message(role="system", content="You help."), Message(role="user", content="q1")]
    if role_before == "assistant":
        messages.append(Message(role="assistant", content="a1"))
    messages.append(
        Message(role="system", content=[TextContent(text="be brief", cache_control={"type": "ephemeral"})])
    )
    if after is not None:
        messages.append(Message(role=after, content="next"))  # type: ignore[arg-type]
    return messages


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-8", True),
        ("claude-opus-4-8-20260528", True),
        ("claude-opus-5", True),
        ("claude-sonnet-5", True),
        ("claude-opus-4-1", False),
        ("claude-opus-4-20250514", False),
        ("claude-sonnet-4-5", False),
        ("claude-haiku-4-5", False),
        ("claude-3-7-sonnet-latest", False),
        ("llama-3-70b", False),  # a compatible server behind an Anthropic-type provider
    ],
)
def test_which_models_take_system_turns(model: str, expected: bool) -> None:
    assert anthropic.accepts_mid_conversation_system(model) is expected


def test_claude_keeps_a_well_placed_system_turn() -> None:
    system, turns = anthropic.messages_to_wire(_late("user", None), mid_system=True)
    assert system == [{"type": "text", "text": "You help."}]
    assert turns == [
        {"role": "user", "content": [{"type": "text", "text": "q1"}]},
        {
            "role": "system",
            "content": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        },
    ]
    _, turns = anthropic.messages_to_wire(_late("user", "assistant"), mid_system=True)
    assert [t["role"] for t in turns] == ["user", "system", "assistant"]


def test_claude_folds_a_misplaced_system_turn_into_the_user_turn() -> None:
    # After an assistant turn (and before a user one) Claude refuses a system turn.
    _, turns = anthropic.messages_to_wire(_late("assistant", "user"), mid_system=True)
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    reminder = {"type": "text", "text": REMINDER, "cache_control": {"type": "ephemeral"}}
    assert turns[2]["content"] == [reminder, {"type": "text", "text": "next"}]


def test_two_system_turns_in_a_row_are_merged() -> None:
    messages = [*_late("user", None), Message(role="system", content="and polite")]
    _, turns = anthropic.messages_to_wire(messages, mid_system=True)
    assert [t["role"] for t in turns] == ["user", "system"]
    assert [b["text"] for b in turns[1]["content"]] == ["be brief", "and polite"]


def test_older_claude_and_gemini_get_a_reminder_in_place() -> None:
    _, turns = anthropic.messages_to_wire(_late("user", "assistant"))
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[0]["content"][-1]["text"] == REMINDER
    system, contents = gemini.contents_to_wire(_late("user", "assistant"))
    assert system == [{"text": "You help."}]
    assert contents[0] == {"role": "user", "parts": [{"text": "q1"}, {"text": REMINDER}]}
