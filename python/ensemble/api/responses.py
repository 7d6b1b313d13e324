"""OpenAI Responses as an ingress format: `POST /v1/responses` bodies become InferenceRequests.

Input items map to canonical messages (docs/responses.md): `message` items to messages (developer
→ system), `function_call` items to tool calls on the assistant turn they follow, `function_call_output`
to tool messages, `reasoning` items to thinking blocks whose `encrypted_content` is the signature.
What the canonical request has no field for and an OpenAI-type provider could use rides in
`provider_config`, as for chat completions. Rendering is in responses_render.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ensemble.api.common import convert, decode_object, optional
from ensemble.api.openai import _media_from_url
from ensemble.errors import InvalidRequest
from ensemble.providers.openai_parts import HOSTED_TOOLS_KEY
from ensemble.types import (
    ContentBlock,
    DocumentContent,
    ImageContent,
    InferenceRequest,
    Message,
    ResponseFormat,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolChoiceNamed,
    ToolDefinition,
)

# Tools OpenAI runs itself. They pass through to OpenAI-type providers called through their own
# Responses API (`api: responses`); any other route refuses them with a 400 naming the tool.
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "web_search_2025_08_26",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "computer_use",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
    }
)

HOSTED_KEY = HOSTED_TOOLS_KEY  # provider_config key of hosted tool definitions

# Prefix of an `encrypted_content` that another provider type made (the bare value is OpenAI's own).
ORIGIN_MARK = "ensemble:"

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}

# Parameters the canonical request and the gateway handle; accepted and echoed, not forwarded.
_ECHOED = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "temperature",
    "top_p",
    "reasoning",
    "text",
    "include",
    "prompt_cache_key",
    "metadata",
    "store",
    "stream",
    "previous_response_id",
    "stream_options",
    "truncation",
    "service_tier",
    "safety_identifier",
    "prompt_cache_retention",
    "top_logprobs",
    "max_tool_calls",
    "client_metadata",  # Codex's telemetry for OpenAI: nothing another provider could use
}

# Accepted only with these values: anything else needs state or features the gateway does not have.
_REFUSED = {"background": (None, False), "conversation": (None,), "prompt": (None,)}


@dataclass
class ResponsesCall:
    """A parsed Responses request: the canonical request plus what the answer echoes back."""

    request: InferenceRequest
    store: bool
    previous_response_id: str | None
    include_encrypted: bool
    echo: dict[str, Any] = field(default_factory=dict)
    # The messages of this request's own input (instructions excluded), kept for previous_response_id.
    input_messages: list[Message] = field(default_factory=list)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected a string", param="input")
    return value


def _part(part: Any, where: str) -> ContentBlock:
    if not isinstance(part, dict):
        raise InvalidRequest(f"{where}: expected a content part object", param="input")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text"):
        return TextContent(text=_text(part.get("text"), f"{where}.text"))
    if kind == "refusal":
        return TextContent(text=_text(part.get("refusal"), f"{where}.refusal"))
    if kind == "input_image":
        url = part.get("image_url")
        if url is None:
            raise InvalidRequest(
                f"{where}.image_url: required (uploaded file_id images are not supported)", param="input"
            )
        return ImageContent(source=_media_from_url(_text(url, f"{where}.image_url")))
    if kind == "input_file":
        data = part.get("file_data") or part.get("file_url")
        if data is None:
            raise InvalidRequest(
                f"{where}.file_data: required (uploaded file_id files are not supported)", param="input"
            )
        return DocumentContent(source=_media_from_url(_text(data, f"{where}.file_data")))
    raise InvalidRequest(f"{where}.type: unsupported content part type {kind!r}", param="input")


def _content(raw: Any, where: str) -> str | list[ContentBlock]:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        return [_part(p, f"{where}[{j}]") for j, p in enumerate(raw)]
    raise InvalidRequest(f"{where}: expected a string or a list of content parts", param="input")


def _open_assistant(messages: list[Message]) -> Message:
    """The assistant turn the next output item belongs to (a new one after any other message)."""
    if messages and messages[-1].role == "assistant":
        return messages[-1]
    turn = Message(role="assistant", content=[])
    messages.append(turn)
    return turn


def _blocks(m: Message) -> list[ContentBlock]:
    if isinstance(m.content, str):
        m.content = [TextContent(text=m.content)] if m.content else []
    return m.content


def decode_encrypted(value: str) -> tuple[str, str]:
    """(origin provider type, signature) of an `encrypted_content` this gateway handed out."""
    if value.startswith(ORIGIN_MARK):
        origin, _, signature = value[len(ORIGIN_MARK) :].partition(":")
        return origin, signature
    return "openai", value


def encode_encrypted(origin: str | None, signature: str) -> str:
    return signature if origin in (None, "openai") else f"{ORIGIN_MARK}{origin}:{signature}"


def _item(raw: Any, i: int, messages: list[Message]) -> None:
    where = f"input[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected an input item object", param="input")
    kind = raw.get("type", "message")
    if kind == "message":
        role = _ROLES.get(raw.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise InvalidRequest(
                f"{where}.role: must be one of user, assistant, system, developer", param="input"
            )
        content = _content(raw.get("content"), f"{where}.content")
        if (
            role == "assistant"
            and messages
            and messages[-1].role == "assistant"
            and not messages[-1].tool_calls
        ):
            turn = messages[-1]  # text after this turn's reasoning
            parts = [TextContent(text=content)] if isinstance(content, str) else content
            _blocks(turn).extend(parts)
            return
        messages.append(Message(role=role, content=content))  # type: ignore[arg-type]
    elif kind == "function_call":
        turn = _open_assistant(messages)
        call = ToolCall(
            id=convert(raw.get("call_id"), str, f"{where}.call_id"),
            name=convert(raw.get("name"), str, f"{where}.name"),
            arguments=convert(raw.get("arguments") or "{}", str, f"{where}.arguments"),
        )
        turn.tool_calls = [*(turn.tool_calls or ()), call]
    elif kind == "function_call_output":
        output = raw.get("output")
        messages.append(
            Message(
                role="tool",
                tool_call_id=convert(raw.get("call_id"), str, f"{where}.call_id"),
                content=_content(output, f"{where}.output"),
            )
        )
    elif kind == "reasoning":
        summary = raw.get("summary") or []
        if not isinstance(summary, list):
            raise InvalidRequest(f"{where}.summary: expected a list", param="input")
        text = "\n\n".join(
            _text(s.get("text") if isinstance(s, dict) else s, f"{where}.summary") for s in summary
        )
        encrypted = raw.get("encrypted_content")
        origin, signature = (None, None)
        if encrypted is not None:
            origin, signature = decode_encrypted(_text(encrypted, f"{where}.encrypted_content"))
        item_id = raw.get("id")
        turn = _open_assistant(messages)
        if turn.tool_calls:  # reasoning starts the next turn
            turn = Message(role="assistant", content=[])
            messages.append(turn)
        _blocks(turn).append(
            ThinkingContent(
                thinking=text,
                signature=signature or None,
                origin=origin,
                item_id=item_id if isinstance(item_id, str) else None,
            )
        )
    elif kind == "item_reference":
        raise InvalidRequest(
            f"{where}.type: item_reference is not supported; send the item itself or use previous_response_id",
            param="input",
        )
    else:
        raise InvalidRequest(f"{where}.type: unsupported input item type {kind!r}", param="input")


def parse_input(value: Any) -> list[Message]:
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if not isinstance(value, list):
        raise InvalidRequest("input: expected a string or a list of input items", param="input")
    messages: list[Message] = []
    for i, raw in enumerate(value):
        _item(raw, i, messages)
    return messages


def _tool(raw: Any, i: int, hosted: list[dict[str, Any]]) -> list[ToolDefinition]:
    where = f"tools[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected a tool object", param="tools")
    kind = raw.get("type")
    if kind == "function":
        return [
            ToolDefinition(
                name=convert(raw.get("name"), str, f"{where}.name"),
                description=optional(raw.get("description"), str, f"{where}.description") or "",
                parameters=optional(raw.get("parameters"), dict[str, Any], f"{where}.parameters")
                or {"type": "object", "properties": {}},
                strict=optional(raw.get("strict"), bool, f"{where}.strict"),
            )
        ]
    if kind == "namespace":
        # A group of function tools (Codex sends its MCP tools so): the functions keep their names.
        nested = raw.get("tools")
        if not isinstance(nested, list):
            raise InvalidRequest(f"{where}.tools: expected a list of tools", param="tools")
        out: list[ToolDefinition] = []
        for t in nested:
            out += _tool(t, i, hosted)
        return out
    if kind in HOSTED_TOOLS:
        hosted.append(raw)
        return []
    raise InvalidRequest(
        f"{where}.type: tool type {kind!r} is not supported (function, namespace and OpenAI's hosted tools are)",
        param="tools",
    )


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return ToolChoiceNamed(name=convert(choice.get("name"), str, "tool_choice.name"))
    raise InvalidRequest(
        "tool_choice: must be auto, none, required or {type: function, name}", param="tool_choice"
    )


def _format(text: Any) -> ResponseFormat | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise InvalidRequest("text: expected an object", param="text")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise InvalidRequest("text.format.type: must be text, json_object or json_schema", param="text")
    if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), dict):
        raise InvalidRequest("text.format.schema: required for json_schema, an object", param="text")
    return ResponseFormat(
        type=fmt["type"],
        name=optional(fmt.get("name"), str, "text.format.name"),
        schema=fmt.get("schema"),
        description=optional(fmt.get("description"), str, "text.format.description"),
        strict=optional(fmt.get("strict"), bool, "text.format.strict"),
    )


def parse_request(body: bytes) -> ResponsesCall:
    data = decode_object(body)
    if "model" not in data:
        raise InvalidRequest("model: required field is missing", param="model")
    model = convert(data["model"], str, "model")
    for name, allowed in _REFUSED.items():
        if data.get(name) not in allowed:
            raise InvalidRequest(f"{name}: not supported by this gateway", param=name)
    if "input" not in data and data.get("previous_response_id") is None:
        raise InvalidRequest("input: required field is missing", param="input")
    input_messages = parse_input(data.get("input", []))
    messages = list(input_messages)
    instructions = optional(data.get("instructions"), str, "instructions")
    if instructions:
        messages.insert(0, Message(role="system", content=instructions))
    hosted: list[dict[str, Any]] = []
    tools: list[ToolDefinition] | None = None
    if data.get("tools") is not None:
        if not isinstance(data["tools"], list):
            raise InvalidRequest("tools: expected a list", param="tools")
        tools = [d for i, t in enumerate(data["tools"]) for d in _tool(t, i, hosted)] or None
    extras: dict[str, Any] = {k: v for k, v in data.items() if k not in _ECHOED and k not in _REFUSED}
    if hosted:
        extras[HOSTED_KEY] = hosted
    parallel = optional(data.get("parallel_tool_calls"), bool, "parallel_tool_calls")
    if parallel is not None and tools:
        extras["parallel_tool_calls"] = parallel
    reasoning = data.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise InvalidRequest("reasoning: expected an object", param="reasoning")
        effort = optional(reasoning.get("effort"), str, "reasoning.effort")
        if effort:
            extras["reasoning_effort"] = effort
    text = data.get("text")
    if isinstance(text, dict) and text.get("verbosity") is not None:
        extras["verbosity"] = convert(text["verbosity"], str, "text.verbosity")
    include = optional(data.get("include"), list[str], "include") or []
    metadata = optional(data.get("metadata"), dict[str, str], "metadata")
    request = InferenceRequest(
        model=model,
        messages=messages,
        max_tokens=optional(data.get("max_output_tokens"), int, "max_output_tokens"),
        temperature=optional(data.get("temperature"), float, "temperature"),
        top_p=optional(data.get("top_p"), float, "top_p"),
        tools=tools,
        tool_choice=_tool_choice(data.get("tool_choice")),
        stream=convert(data.get("stream", False) or False, bool, "stream"),
        session_id=optional(data.get("prompt_cache_key"), str, "prompt_cache_key"),
        provider_config=extras or None,
        response_format=_format(text),
    )
    store = optional(data.get("store"), bool, "store")
    store = True if store is None else store
    echo = {
        "instructions": instructions,
        "max_output_tokens": request.max_tokens,
        "metadata": metadata or {},
        "parallel_tool_calls": True if parallel is None else parallel,
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
            "summary": reasoning.get("summary") if isinstance(reasoning, dict) else None,
        },
        "store": store,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": {"format": _format_echo(text)},
        "tool_choice": data.get("tool_choice") or "auto",
        "tools": data.get("tools") or [],
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": data.get("truncation") or "disabled",
        "user": data.get("user"),
        "prompt_cache_key": request.session_id,
        "service_tier": data.get("service_tier") or "default",
    }
    return ResponsesCall(
        request=request,
        store=store,
        previous_response_id=optional(data.get("previous_response_id"), str, "previous_response_id"),
        include_encrypted="reasoning.encrypted_content" in include,
        echo=echo,
        input_messages=input_messages,
    )


def _format_echo(text: Any) -> dict[str, Any]:
    fmt = text.get("format") if isinstance(text, dict) else None
    return fmt if isinstance(fmt, dict) else {"type": "text"}
