"""Anthropic Messages API wire format (`type: anthropic`): `POST /v1/messages`, JSON and SSE.

Canonical → Anthropic: system messages become the `system` parameter; assistant tool calls become
`tool_use` blocks and tool messages `tool_result` blocks (consecutive ones grouped into one user turn,
as the API requires); echoed thinking / redacted thinking blocks are sent back verbatim. Of
`provider_config` only the keys this API understands are taken (see `PASSTHROUGH`).

Anthropic → canonical usage: `input_tokens` excludes the cache, so the canonical whole prompt is
input + cache_read + cache_creation; `output_tokens` already includes thinking.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from ensemble import catalogue
from ensemble.assembly import parse_arguments
from ensemble.error_types import from_provider
from ensemble.errors import InvalidRequest, ProviderError
from ensemble.providers.base import (
    MIN_THINKING_BUDGET,
    RUN_ARGS,
    RUN_TEXT,
    RUN_THINKING,
    StreamDecoder,
    Target,
    WireFormat,
    reasoning_budget,
)
from ensemble.providers.registry import ProviderKind, register
from ensemble.providers.system_turns import as_reminder, leading_count, reminder
from ensemble.providers.upstream_errors import error_object, upstream_error
from ensemble.reasoning import handed_back
from ensemble.structured_output import to_anthropic
from ensemble.types import (
    AudioContent,
    ContentBlock,
    DocumentContent,
    EventBlock,
    Finish,
    FinishReason,
    ImageContent,
    InferenceRequest,
    Message,
    ProviderResult,
    RedactedThinkingBlock,
    RedactedThinkingContent,
    RedactedThinkingDelta,
    ServerToolBlock,
    ServerToolContent,
    ServerToolDelta,
    StreamDelta,
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
    ToolChoiceNamed,
    Usage,
    UsageDelta,
)

API_VERSION = "2023-06-01"
# provider_config key carrying Anthropic-defined tools (web search, code execution, bash, …) from an
# Anthropic-format request; only Claude can run them (other adapters refuse them: server_tools).
SERVER_TOOLS = "anthropic_tools"
DEFAULT_MAX_TOKENS = 4096  # the API requires max_tokens; used when the client sent none

# provider_config keys forwarded to the Messages API; anything else (another format's extras) is ignored.
PASSTHROUGH = frozenset(
    {
        "thinking",
        "metadata",
        "top_k",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "cache_control",
        "output_config",
        "inference_geo",
        "speed",
        "diagnostics",
        "user_profile_id",
        "workspace_id",
    }
)

STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_use",
    "refusal": "content_filter",
}


def _source(src: Any, kind: str, i: int) -> dict[str, Any]:
    if src.type == "url":
        return {"type": "url", "url": src.url or ""}
    if not src.media_type:
        raise InvalidRequest(
            f"messages[{i}]: a base64 {kind} needs a media_type for Anthropic models", param="messages"
        )
    return {"type": "base64", "media_type": src.media_type, "data": src.data or ""}


def _cached(out: dict[str, Any], cache_control: dict[str, Any] | None) -> dict[str, Any]:
    if cache_control is not None:
        out["cache_control"] = cache_control
    return out


def content_to_wire(block: ContentBlock, i: int) -> dict[str, Any]:
    if isinstance(block, TextContent):
        return _cached({"type": "text", "text": block.text}, block.cache_control)
    if isinstance(block, ImageContent):
        return _cached({"type": "image", "source": _source(block.source, "image", i)}, block.cache_control)
    if isinstance(block, DocumentContent):
        return _cached(
            {"type": "document", "source": _source(block.source, "document", i)}, block.cache_control
        )
    if isinstance(block, ThinkingContent):
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature or ""}
    if isinstance(block, RedactedThinkingContent):
        return {"type": "redacted_thinking", "data": block.data}
    if isinstance(block, ServerToolContent):
        return dict(block.block)
    if isinstance(block, AudioContent):
        raise InvalidRequest(
            f"messages[{i}]: Anthropic models do not accept audio content blocks", param="messages"
        )
    raise InvalidRequest(f"messages[{i}]: unsupported content block", param="messages")


def _tool_result(m: Message, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
    if m.is_error:
        out["is_error"] = True
    if isinstance(m.content, str):
        out["content"] = m.content
    else:
        out["content"] = [content_to_wire(b, i) for b in m.content]
    return out


# Claude models from before Opus 4.8 refuse `role: "system"` turns inside `messages` ("not supported
# on this model"); later Claude families take them. Other models behind an Anthropic-type API
# (compatible servers) are not assumed to.
_NO_MID_SYSTEM = re.compile(
    r"claude-(instant|[123]\b|[123]-|(sonnet|haiku)-4|opus-4($|-[0-7]($|-|@)|-\d{8}|@))", re.IGNORECASE
)


def accepts_mid_conversation_system(upstream_id: str) -> bool:
    """Whether this model takes a mid-conversation system turn in place (docs/formats.md)."""
    return "claude" in upstream_id.lower() and _NO_MID_SYSTEM.search(upstream_id) is None


def refuse_anthropic_tools(request: InferenceRequest, model: str) -> None:
    """Anthropic-defined tools (web search, code execution, bash…) from an Anthropic-format request
    reach only Claude; another provider cannot run them, and dropping them would answer a different
    question, so the request is refused naming the tool."""
    tools = (request.provider_config or {}).get(SERVER_TOOLS)
    if isinstance(tools, list) and tools:
        first = tools[0]
        raise InvalidRequest(
            f"tools: {first.get('name')!r} ({first.get('type')}) is an Anthropic-defined tool that only "
            f"Claude models run; {model} cannot",
            param="tools",
        )


def _place_system_turns(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claude takes a system turn only right after a user turn and before an assistant turn (or at
    the end), never two in a row: consecutive ones are merged, a misplaced one joins the user turn
    next to it as a `<system-reminder>`."""
    out: list[dict[str, Any]] = []
    for j, turn in enumerate(turns):
        if turn["role"] == "system":
            after = out[-1]["role"] if out else None
            before = turns[j + 1]["role"] if j + 1 < len(turns) else None
            if after != "user" or before not in (None, "assistant", "system"):
                text = "\n".join(b.get("text", "") for b in turn["content"])
                block = _cached(
                    {"type": "text", "text": reminder(text)}, turn["content"][-1].get("cache_control")
                )
                turn = {"role": "user", "content": [block]}
        if out and out[-1]["role"] == turn["role"]:
            out[-1]["content"].extend(turn["content"])
        else:
            out.append(turn)
    return out


def messages_to_wire(
    messages: list[Message], *, mid_system: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages) in the Messages API shape, same-role turns merged. The system
    prompt goes to `system`; later system messages stay in place when `mid_system` (the model
    takes them), else they become `<system-reminder>` text in the user turn (system_turns)."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    lead = leading_count(messages)

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    blocks: list[dict[str, Any]]
    for i, m in enumerate(messages):
        if m.role == "system":
            if isinstance(m.content, str):
                blocks = [{"type": "text", "text": m.content}] if m.content else []
            else:  # blocks keep their cache_control breakpoints
                blocks = [content_to_wire(b, i) for b in m.content if isinstance(b, TextContent)]
            if i < lead:
                system += blocks
            elif blocks and mid_system:
                append("system", blocks)
            elif blocks:
                append("user", [content_to_wire(as_reminder(m), i)])
            continue
        if m.role == "tool":
            append("user", [_tool_result(m, i)])
            continue
        if isinstance(m.content, str):
            blocks = [{"type": "text", "text": m.content}] if m.content else []
        else:
            blocks = [
                content_to_wire(b, i)
                for b in m.content
                if not isinstance(b, ThinkingContent) or handed_back(b, "anthropic")
            ]
        if m.role == "assistant":
            for c in m.tool_calls or ():
                args = c.arguments if isinstance(c.arguments, dict) else parse_arguments(c.arguments)
                blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": args})
            if not blocks:
                continue  # an empty assistant turn is refused by the API and carries nothing
        append(m.role, blocks)
    return system, _place_system_turns(out) if mid_system else out


def request_to_wire(request: InferenceRequest, target: Target, *, stream: bool) -> dict[str, Any]:
    model = target.model
    if request.temperature is not None and request.temperature > 1.0:
        raise InvalidRequest(
            f"temperature: must be between 0 and 1 for Anthropic models (got {request.temperature})",
            param="temperature",
        )
    system, messages = messages_to_wire(
        request.messages, mid_system=accepts_mid_conversation_system(model.upstream_id)
    )
    if not messages:
        raise InvalidRequest("messages: at least one user or assistant message is required", param="messages")
    max_tokens = request.max_tokens or min(model.max_output_tokens or DEFAULT_MAX_TOKENS, DEFAULT_MAX_TOKENS)
    body: dict[str, Any] = {"model": model.upstream_id, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop_sequences:
        body["stop_sequences"] = request.stop_sequences
    if request.tools:
        tools = []
        for t in request.tools:
            tool: dict[str, Any] = {"name": t.name, "input_schema": t.parameters}
            if t.description:
                tool["description"] = t.description
            tools.append(_cached(tool, t.cache_control))
        body["tools"] = tools
    choice = request.tool_choice
    extras = request.provider_config or {}
    server_tools = extras.get(SERVER_TOOLS)
    if isinstance(server_tools, list) and server_tools:  # Anthropic-defined tools, verbatim
        body["tools"] = [*body.get("tools", ()), *server_tools]
    if body.get("tools"):
        tool_choice: dict[str, Any] = {"type": "auto"}
        if isinstance(choice, ToolChoiceNamed):
            tool_choice = {"type": "tool", "name": choice.name}
        elif choice is not None:
            tool_choice = {"type": {"auto": "auto", "none": "none", "required": "any"}[choice]}
        # OpenAI's parallel_tool_calls=false is Anthropic's disable_parallel_tool_use.
        if extras.get("parallel_tool_calls") is False and tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = True
        if choice is not None or len(tool_choice) > 1:
            body["tool_choice"] = tool_choice
    for key, value in extras.items():
        if key in PASSTHROUGH:
            body[key] = value
    _from_gemini(extras, body)
    if request.response_format is not None:
        info = catalogue.lookup(model.upstream_id)
        to_anthropic(request.response_format, body, info is None or info.structured_output == "native")
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise InvalidRequest("top_k: must be a non-negative integer", param="top_k")
    thinking = body.get("thinking")
    if thinking is not None and not isinstance(thinking, dict):
        raise InvalidRequest("thinking: expected an object", param="thinking")
    if stream:
        body["stream"] = True
    return body


def _from_gemini(extras: dict[str, Any], body: dict[str, Any]) -> None:
    """Other formats' reasoning settings (Gemini `thinkingConfig`, OpenAI `reasoning_effort`) and
    Gemini's `topK` in Anthropic's terms, unless given natively."""
    config = extras.get("thinkingConfig")
    if "thinking" not in body and isinstance(config, dict):
        budget = config.get("thinkingBudget")
        if budget == 0:
            pass  # thinking explicitly off: Anthropic's default
        elif config.get("includeThoughts") or (isinstance(budget, int) and budget > 0):
            wanted = budget if isinstance(budget, int) and budget > 0 else MIN_THINKING_BUDGET
            # budget_tokens must stay below max_tokens; -1 (Gemini's "dynamic") takes the minimum.
            budget_tokens = max(MIN_THINKING_BUDGET, min(wanted, body["max_tokens"] - 1))
            body["thinking"] = {"type": "enabled", "budget_tokens": budget_tokens}
    effort = extras.get("reasoning_effort")
    if "thinking" not in body and isinstance(effort, str):
        budget = reasoning_budget(effort, body["max_tokens"])
        if budget:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    top_k = extras.get("topK")
    if "top_k" not in body and top_k is not None:
        # Gemini's topK is a number (google-genai sends 5.0); Anthropic's top_k an integer.
        body["top_k"] = int(top_k) if isinstance(top_k, float) and top_k.is_integer() else top_k


def usage_from_wire(u: Mapping[str, Any]) -> Usage:
    plain = int(u.get("input_tokens") or 0)
    read = int(u.get("cache_read_input_tokens") or 0)
    written = int(u.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=plain + read + written,
        output_tokens=int(u.get("output_tokens") or 0),
        cached_tokens=read,
        cache_creation_tokens=written,
    )


def is_server_tool_block(kind: Any) -> bool:
    """Blocks of tools Anthropic runs itself: `server_tool_use`, `mcp_tool_use`, and their results
    (`web_search_tool_result`, `code_execution_tool_result`, `mcp_tool_result`, …)."""
    return isinstance(kind, str) and (
        kind in ("server_tool_use", "mcp_tool_use", "container_upload") or kind.endswith("_tool_result")
    )


def block_from_wire(block: Mapping[str, Any]) -> EventBlock | None:
    kind = block.get("type")
    if is_server_tool_block(kind):
        return ServerToolBlock(block=dict(block))
    if kind == "text":
        citations = block.get("citations")
        return TextBlock(text=block.get("text") or "", citations=list(citations) if citations else None)
    if kind == "thinking":
        return ThinkingBlock(thinking=block.get("thinking") or "", signature=block.get("signature") or None)
    if kind == "redacted_thinking":
        return RedactedThinkingBlock(data=block.get("data") or "")
    if kind == "tool_use":
        args = block.get("input") or {}
        raw = orjson.dumps(args).decode()
        return ToolCallBlock(
            tool_call=ToolCallOut(
                id=block.get("id") or "",
                name=block.get("name") or "",
                arguments=args if isinstance(args, dict) else {},
                raw_arguments=raw,
            )
        )
    return None  # future block types have no canonical shape yet


class AnthropicDecoder(StreamDecoder):
    """message_start / content_block_* / message_delta events → deltas. Anthropic's block index is the
    canonical index. Usage: message_start carries the prompt side, message_delta the running output."""

    def __init__(self) -> None:
        self._usage: dict[str, Any] = {}
        self._tool_args: dict[int, list[str]] = {}
        self._tool_input: dict[int, Any] = {}
        self._server_tools: dict[int, dict[str, Any]] = {}  # server_tool_use blocks, input streaming
        self._model: str | None = None

    def _usage_delta(self, u: Mapping[str, Any]) -> UsageDelta:
        for k, v in u.items():
            if v is not None:
                self._usage[k] = v
        usage = usage_from_wire(self._usage)
        return UsageDelta(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            cache_creation_tokens=usage.cache_creation_tokens,
            reasoning_tokens=0,
        )

    def native_run(self, kind: int, key: int, text: str) -> StreamDelta | None:
        # Anthropic's block index is the canonical one; the first argument fragment of a tool block
        # came through `decode` (the scanner leaves it there), so content_block_stop sees it.
        if kind == RUN_TEXT:
            return TextDelta(index=key, text=text)
        if kind == RUN_THINKING:
            return ThinkingDelta(index=key, thinking=text)
        if kind == RUN_ARGS:
            if key in self._server_tools:  # a server tool's input is handed on whole at its stop
                self._tool_args.setdefault(key, []).append(text)
                return None
            return ToolCallArgs(index=key, fragment=text)
        raise ValueError(f"no scanner run {kind} in Anthropic streams")

    def decode(self, event: str, data: str) -> list[StreamDelta]:
        if not data:
            return []
        payload = orjson.loads(data)
        kind = payload.get("type") or event
        if kind == "content_block_delta":
            index = int(payload["index"])
            d = payload.get("delta") or {}
            dt = d.get("type")
            if dt == "text_delta":
                return [TextDelta(index=index, text=d.get("text") or "")]
            if dt == "citations_delta" and isinstance(d.get("citation"), dict):
                return [TextDelta(index=index, text="", citation=d["citation"])]
            if dt == "input_json_delta":
                fragment = d.get("partial_json") or ""
                if not fragment:
                    return []
                if index in self._server_tools:  # handed on whole at content_block_stop
                    self._tool_args.setdefault(index, []).append(fragment)
                    return []
                self._tool_args.setdefault(index, []).append(fragment)
                return [ToolCallArgs(index=index, fragment=fragment)]
            if dt == "thinking_delta":
                return [ThinkingDelta(index=index, thinking=d.get("thinking") or "")]
            if dt == "signature_delta":
                return [ThinkingDelta(index=index, signature=d.get("signature") or "")]
            return []
        if kind == "content_block_start":
            index = int(payload["index"])
            block = payload.get("content_block") or {}
            bt = block.get("type")
            if bt == "text":
                text = block.get("text") or ""
                return [TextDelta(index=index, text=text)]
            if bt == "thinking":
                return [
                    ThinkingDelta(
                        index=index,
                        thinking=block.get("thinking") or "",
                        signature=block.get("signature") or "",
                    )
                ]
            if bt == "redacted_thinking":
                return [RedactedThinkingDelta(index=index, data=block.get("data") or "")]
            if is_server_tool_block(bt):
                if "input" in block:  # a server tool's call: its input streams like a tool call's
                    self._server_tools[index] = dict(block)
                    return []
                return [ServerToolDelta(index=index, block=dict(block))]
            if bt == "tool_use":
                # The start event carries `input: {}`; a tool with no parameters sends no fragments,
                # so the arguments are filled in at content_block_stop when none arrived.
                self._tool_input[index] = block.get("input")
                return [
                    ToolCallStart(
                        index=index, id=block.get("id") or "", name=block.get("name") or "", structured=True
                    )
                ]
            return []
        if kind == "content_block_stop":
            index = int(payload.get("index", -1))
            server = self._server_tools.pop(index, None)
            if server is not None:
                raw = "".join(self._tool_args.pop(index, ()))
                if raw.strip():
                    server["input"] = parse_arguments(raw)
                return [ServerToolDelta(index=index, block=server)]
            if index in self._tool_input and not self._tool_args.get(index):
                initial = self._tool_input.pop(index)
                return [ToolCallArgs(index=index, fragment=orjson.dumps(initial or {}).decode())]
            return []
        if kind == "message_start":
            message = payload.get("message") or {}
            self._model = message.get("model")
            return [self._usage_delta(message.get("usage") or {})]
        if kind == "message_delta":
            out: list[StreamDelta] = [self._usage_delta(payload.get("usage") or {})]
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                out.append(Finish(reason=STOP_REASONS.get(reason, "stop"), model=self._model))
            return out
        if kind == "error":
            err = payload.get("error") or {}
            etype = err.get("type") or "api_error"
            raise ProviderError(
                f"provider stream error: {err.get('message') or etype}",
                code=str(etype),
                retryable=etype in ("overloaded_error", "api_error", "rate_limit_error"),
                kind=from_provider("anthropic", str(etype), None),
            )
        return []  # ping, message_stop


class AnthropicWire(WireFormat):
    stream_scanner = "anthropic"

    def build(
        self, request: InferenceRequest, target: Target, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        body = request_to_wire(request, target, stream=stream)
        headers = {
            "x-api-key": target.endpoint.api_key,
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        beta = (request.provider_config or {}).get("anthropic_beta")
        if isinstance(beta, str | list) and beta:
            headers["anthropic-beta"] = beta if isinstance(beta, str) else ",".join(map(str, beta))
        return f"{target.endpoint.base_url}/v1/messages", headers, orjson.dumps(body)

    def parse(self, body: bytes) -> ProviderResult:
        data = orjson.loads(body)
        blocks = [b for b in (block_from_wire(x) for x in data.get("content") or ()) if b is not None]
        return ProviderResult(
            blocks=blocks,
            usage=usage_from_wire(data.get("usage") or {}),
            finish_reason=STOP_REASONS.get(data.get("stop_reason") or "end_turn", "stop"),
            upstream_model=data.get("model"),
        )

    def decoder(self) -> StreamDecoder:
        return AnthropicDecoder()

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        # 529 overloaded_error is Anthropic's "try elsewhere"; retryable_status covers it (>= 500).
        err = error_object(body)
        if not isinstance(err, dict):
            return upstream_error(status, headers, body, dialect="anthropic")
        etype = err.get("type")
        return upstream_error(
            status,
            headers,
            body,
            message=err.get("message"),
            code=etype,
            dialect="anthropic",
            error_type=etype,
        )


KIND = register(
    ProviderKind(
        type="anthropic",
        wire=lambda _config: AnthropicWire(),
        default_base_url="https://api.anthropic.com",
        cache_ttl=300.0,  # prompt caching's default 5-minute lifetime, refreshed on each hit
    )
)
