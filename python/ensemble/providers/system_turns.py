"""Mid-conversation system messages: a system message after the conversation started (Anthropic's
`role: "system"` turns inside `messages`, which Claude Code sends; an OpenAI client's later
`system`/`developer` message).

System messages before the first user or assistant turn are the system prompt; each adapter puts
them where its API wants (Anthropic `system`, Gemini `systemInstruction`). A later one stays where it
is for APIs that take it there (OpenAI; Claude models that accept mid-conversation system turns);
for the others it becomes a `<system-reminder>` text in the user turn at that point, the way Claude
Code itself hands such instructions to models without the feature (docs/formats.md).
"""

from __future__ import annotations

from ensemble.types import Message, TextContent


def leading_count(messages: list[Message]) -> int:
    """How many messages at the start are system messages (the system prompt)."""
    n = 0
    while n < len(messages) and messages[n].role == "system":
        n += 1
    return n


def reminder(text: str) -> str:
    return f"<system-reminder>\n{text}\n</system-reminder>"


def as_reminder(message: Message) -> TextContent:
    """A mid-conversation system message as user-turn text (its cache breakpoint, if any, kept)."""
    cache = None
    if not isinstance(message.content, str):
        cache = next((b.cache_control for b in reversed(message.content) if isinstance(b, TextContent)), None)
    return TextContent(text=reminder(message.text()), cache_control=cache)
