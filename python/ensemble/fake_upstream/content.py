"""Deterministic answers shared by every provider format.

Rules (documented contract for tests):

* Prompt tokens ``P`` = ceil(characters of all message/system text / 4), at least 1.
  Tool definitions are not counted. Text in tool results and tool-call arguments is.
* A text answer is ``"Hello from fake-<provider>. You said: <first 8 words of the last user text>"``
  padded with fixed filler words (some multi-byte: ``café``, ``日本語``, ``🙂``) and split into
  ``chunks`` pieces (default 20). Completion tokens ``N`` = number of pieces.
  ``max_tokens`` < pieces → the first ``max_tokens`` pieces, finish = length.
* A tool call is made when tools are offered, tool choice is not "none", and the last message is a
  user turn that is not a tool result; it calls the forced tool or the first tool with arguments
  built from the schema's required properties (string "test", number/integer 1, boolean true,
  array [], object {}, enum → first value). Streamed argument JSON is split into
  ``max(2, chunks // 4)`` fragments (capped at its length); ``N`` = number of fragments.
  If ``max_tokens`` is below that, the answer is truncated text instead (finish = length).
  The endpoint's ``tool_call`` config ``{"name", "arguments"}`` scripts the call instead.
* Structured output requested (OpenAI ``response_format``, Anthropic ``output_config.format``,
  Gemini ``responseMimeType: application/json`` with ``responseJsonSchema``/``responseSchema``):
  the text is the JSON of an instance built from the schema like tool arguments, in ``chunks``
  pieces (``{}`` for a bare JSON object).
* Reasoning tokens ``R`` = config ``reasoning_tokens``, or, when thinking was requested and that is
  0, the number of thinking pieces.
* Cache: ``C`` = config ``cached_tokens``, ``W`` = config ``cache_creation_tokens``.
  Per format: OpenAI prompt_tokens = P + C (cached_tokens = C), completion_tokens = N + R;
  Anthropic input_tokens = P, cache_read = C, cache_creation = W, output_tokens = N + R;
  Gemini promptTokenCount = P + C, cachedContentTokenCount = C, candidatesTokenCount = N,
  thoughtsTokenCount = R.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

FILLER = (
    "lorem",
    "ipsum",
    "café",
    "dolor",
    "sit",
    "日本語",
    "amet",
    "naïve",
    "consectetur",
    "🙂",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "über",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
)
USER_WORDS = 8

_PROC = os.urandom(3).hex()
_counter = 0


def new_id(prefix: str, width: int = 24) -> str:
    """A unique-per-process id such as ``chatcmpl-<hex>``."""
    global _counter
    _counter += 1
    return f"{prefix}{_PROC}{_counter:0{width - len(_PROC)}x}"


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else [] (request fields are untrusted)."""
    return value if isinstance(value, list) else []


def count_tokens(chars: int) -> int:
    return max(1, -(-chars // 4))


@dataclass(slots=True)
class ToolSpec:
    name: str
    schema: dict[str, Any] | None


@dataclass(slots=True)
class Conversation:
    """What the deterministic answer depends on, extracted from any wire format."""

    prompt_chars: int = 0
    last_user_text: str = ""
    last_is_tool_result: bool = False
    last_is_user: bool = True
    tools: list[ToolSpec] = field(default_factory=list)
    tool_mode: str = "auto"  # auto | none | required
    forced_tool: str | None = None
    max_tokens: int | None = None
    thinking: bool = False
    # Structured output asked for (JSON schema; {"type": "object"} for any JSON object): the
    # answer is then JSON built from it, as a model bound to the schema would give.
    response_schema: dict[str, Any] | None = None
    # (role, text, ends at a cache breakpoint) per system block / message, in prompt order: what a
    # provider's prompt cache sees (prompt_cache.py).
    segments: list[tuple[str, str, bool]] = field(default_factory=list)


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text
    args: dict[str, Any]
    fragments: list[str]


@dataclass(slots=True)
class Plan:
    text_pieces: list[str]
    tool: ToolCall | None
    thinking_pieces: list[str]
    finish: str  # stop | length | tool
    prompt_tokens: int
    output_tokens: int  # N: visible pieces
    reasoning_tokens: int  # R
    cached_tokens: int
    cache_creation_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.text_pieces)

    @property
    def thinking(self) -> str:
        return "".join(self.thinking_pieces)

    @property
    def signature(self) -> str:
        digest = hashlib.sha256(("fake-signature:" + self.thinking).encode()).digest()
        return base64.b64encode(digest * 2).decode()


def split_even(items: list[str], n: int, sep: str) -> list[str]:
    """Join ``items`` into ``n`` consecutive groups (n <= len(items)), keeping separators."""
    n = max(1, min(n, len(items)))
    base, extra = divmod(len(items), n)
    out: list[str] = []
    start = 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        piece = sep.join(items[start:end])
        out.append(piece if i == 0 else sep + piece)
        start = end
    return out


def text_pieces(provider: str, user_text: str, chunks: int) -> list[str]:
    said = " ".join(user_text.split()[:USER_WORDS]) or "(nothing)"
    words = f"Hello from fake-{provider}. You said: {said}".split(" ")
    i = 0
    while len(words) < chunks:
        words.append(FILLER[i % len(FILLER)])
        i += 1
    return split_even(words, chunks, " ")


def thinking_pieces(user_text: str) -> list[str]:
    said = " ".join(user_text.split()[:USER_WORDS]) or "(nothing)"
    words = f"Let me think about this. The user said: {said}. I will answer politely.".split(" ")
    return split_even(words, 5, " ")


def _value_for(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "test"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "string")
    typ = typ.lower() if isinstance(typ, str) else ("object" if "properties" in schema else "string")
    if typ in ("number", "integer"):
        return 1
    if typ == "boolean":
        return True
    if typ == "array":
        return []
    if typ == "object":
        return {}
    if typ == "null":
        return None
    return "test"


def tool_arguments(schema: dict[str, Any] | None) -> dict[str, Any]:
    if not schema:
        return {}
    props = schema.get("properties")
    required = schema.get("required")
    if not isinstance(props, dict) or not isinstance(required, list):
        return {}
    return {name: _value_for(props.get(name)) for name in required if isinstance(name, str)}


def split_chars(text: str, n: int) -> list[str]:
    n = max(1, min(n, len(text)))
    base, extra = divmod(len(text), n)
    out: list[str] = []
    start = 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def choose_tool(conv: Conversation, preferred: str | None = None) -> ToolSpec | None:
    if not conv.tools or conv.tool_mode == "none" or not conv.last_is_user or conv.last_is_tool_result:
        return None
    for name in (conv.forced_tool, preferred):
        for tool in conv.tools if name is not None else ():
            if tool.name == name:
                return tool
    return conv.tools[0]


def make_plan(
    provider: str,
    conv: Conversation,
    chunks: int,
    cached: int,
    creation: int,
    reasoning: int,
    dumps: Any,
    tool_call: dict[str, Any] | None = None,
) -> Plan:
    """Build the answer. ``dumps`` renders tool arguments the way the format writes JSON.
    ``tool_call`` ({"name", "arguments"}, the endpoint's ``tool_call`` config) scripts the call:
    that tool when it is offered, with those arguments."""
    max_tokens = conv.max_tokens
    thinking = thinking_pieces(conv.last_user_text) if conv.thinking else []
    r = reasoning or len(thinking)
    prompt = count_tokens(conv.prompt_chars)
    scripted = tool_call.get("name") if tool_call else None
    tool = choose_tool(conv, scripted)
    if tool is not None:
        if tool_call is not None and tool.name == scripted:
            args = dict(tool_call.get("arguments") or {})
        else:
            args = tool_arguments(tool.schema)
        arguments: str = dumps(args)
        fragments = split_chars(arguments, max(2, chunks // 4))
        if max_tokens is None or max_tokens >= len(fragments):
            call = ToolCall(tool.name, arguments, args, fragments)
            return Plan([], call, thinking, "tool", prompt, len(fragments), r, cached, creation)
    pieces = text_pieces(provider, conv.last_user_text, chunks)
    if conv.response_schema is not None:
        pieces = split_chars(dumps(tool_arguments(conv.response_schema)), chunks)
    finish = "stop"
    if max_tokens is not None and max_tokens < len(pieces):
        pieces = pieces[: max(max_tokens, 0)]
        finish = "length"
    return Plan(pieces, None, thinking, finish, prompt, len(pieces), r, cached, creation)
