"""Gemini API wire format (`type: gemini`): `models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, key in `x-goog-api-key`.

Canonical → Gemini: system messages become `systemInstruction`; assistant turns are role `model`
with `functionCall` parts; tool messages become `functionResponse` parts (named after the call they
answer, which Gemini needs and the canonical tool message only references by id). Media go as
`inlineData` (base64) or `fileData` (URL, media_type required). Of `provider_config` only Gemini's
own keys are taken (`PASSTHROUGH`, `generationConfig` fields merged), plus Anthropic-style
`thinking` mapped to `thinkingConfig`; other formats' extras are ignored.

Gemini → canonical usage: `promptTokenCount` already includes cached tokens; output is
candidates + thoughts (thoughts are billed as output).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from ensemble.error_types import from_provider
from ensemble.errors import InvalidRequest, ProviderError
from ensemble.providers import embedding_wire
from ensemble.providers.anthropic import refuse_anthropic_tools
from ensemble.providers.base import (
    RUN_TEXT,
    RUN_USAGE,
    StreamDecoder,
    Target,
    WireFormat,
    reasoning_budget,
    retry_after_seconds,
    retryable_status,
)
from ensemble.providers.registry import ProviderKind, register
from ensemble.providers.system_turns import leading_count, reminder
from ensemble.providers.upstream_errors import error_object, upstream_error
from ensemble.reasoning import handed_back
from ensemble.structured_output import to_gemini
from ensemble.types import (
    AudioContent,
    ContentBlock,
    DocumentContent,
    EmbeddingRequest,
    EmbeddingResult,
    EventBlock,
    Finish,
    FinishReason,
    ImageContent,
    InferenceRequest,
    Message,
    ProviderResult,
    RedactedThinkingContent,
    ServerToolContent,
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

FINISH_REASONS: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
}

PASSTHROUGH = frozenset({"safetySettings", "cachedContent", "labels", "toolConfig"})
GENERATION_KEYS = frozenset(
    {
        "thinkingConfig",
        "topK",
        "candidateCount",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "presencePenalty",
        "frequencyPenalty",
        "seed",
        "responseModalities",
        "mediaResolution",
    }
)


def new_call_id() -> str:
    """Gemini function calls carry no id (older models) — the canonical shape and other formats need one."""
    return "call_" + uuid.uuid4().hex[:24]


def _media(block: ImageContent | DocumentContent | AudioContent, i: int) -> dict[str, Any]:
    src = block.source
    if src.type == "url":
        if not src.media_type:
            raise InvalidRequest(
                f"messages[{i}]: Gemini models need a media_type for media given by URL", param="messages"
            )
        return {"fileData": {"mimeType": src.media_type, "fileUri": src.url or ""}}
    if not src.media_type:
        raise InvalidRequest(
            f"messages[{i}]: Gemini models need a media_type for base64 media", param="messages"
        )
    return {"inlineData": {"mimeType": src.media_type, "data": src.data or ""}}


def _part(block: ContentBlock, i: int) -> dict[str, Any] | None:
    if isinstance(block, TextContent):
        return {"text": block.text}
    if isinstance(block, ImageContent | DocumentContent | AudioContent):
        return _media(block, i)
    if isinstance(block, ThinkingContent):
        # Thoughts are not sent back to Gemini; their signature goes on the function call (above).
        return None
    if isinstance(block, RedactedThinkingContent | ServerToolContent):
        return None  # another provider's encrypted reasoning means nothing to Gemini
    raise InvalidRequest(f"messages[{i}]: unsupported content block", param="messages")


def _parts(m: Message, i: int) -> tuple[list[dict[str, Any]], str | None]:
    """A message's content as parts, and the thought signature left after the last one. A thinking
    block's signature goes on the part that follows it, where Gemini sent it (canonical answers keep
    a part's signature on a thinking block right before it)."""
    if isinstance(m.content, str):
        return ([{"text": m.content}] if m.content else []), None
    parts: list[dict[str, Any]] = []
    signature: str | None = None
    for b in m.content:
        if isinstance(b, ThinkingContent):
            if b.signature and handed_back(b, "gemini"):  # another provider's signature means nothing here
                signature = b.signature
            continue
        part = _part(b, i)
        if part is None:
            continue
        if signature and m.role == "assistant":
            part["thoughtSignature"] = signature
            signature = None
        parts.append(part)
    return parts, signature if m.role == "assistant" else None


def _tool_response(m: Message) -> dict[str, Any]:
    text = m.text()
    if m.is_error:  # Gemini's convention: an "error" key instead of "output"/"result"
        return {"error": text}
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def contents_to_wire(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool-call id → function name, for functionResponse

    def append(role: str, parts: list[dict[str, Any]]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    lead = leading_count(messages)
    for i, m in enumerate(messages):
        if m.role == "system":
            # The system prompt is systemInstruction; a later system message stays in place as a
            # <system-reminder> in the user turn (Gemini has no system turns; system_turns).
            if m.text():
                if i < lead:
                    system.append({"text": m.text()})
                else:
                    append("user", [{"text": reminder(m.text())}])
            continue
        if m.role == "tool":
            name = names.get(m.tool_call_id or "") or m.name
            if not name:
                raise InvalidRequest(
                    f"messages[{i}].tool_call_id: no earlier assistant tool call has id "
                    f"{m.tool_call_id!r}; Gemini needs the function name of every tool result",
                    param="messages",
                )
            append("user", [{"functionResponse": {"name": name, "response": _tool_response(m)}}])
            continue
        parts, signature = _parts(m, i)
        if m.role == "assistant":
            for c in m.tool_calls or ():
                names[c.id] = c.name
                args = c.arguments
                if isinstance(args, str):
                    try:
                        args = orjson.loads(args) if args.strip() else {}
                    except orjson.JSONDecodeError:
                        raise InvalidRequest(
                            f"messages[{i}].tool_calls: arguments of {c.name!r} are not valid JSON",
                            param="messages",
                        ) from None
                call_part: dict[str, Any] = {"functionCall": {"name": c.name, "args": args}}
                if signature:  # a signature after the content goes back on the first function call
                    call_part["thoughtSignature"] = signature
                    signature = None
                parts.append(call_part)
            if signature:  # Gemini 3 ends a signed answer with an empty text part carrying it
                parts.append({"text": "", "thoughtSignature": signature})
            if not parts:
                continue
            append("model", parts)
        else:
            if parts:
                append("user", parts)
    return system, contents


def _thinking_config(value: Any) -> dict[str, Any] | None:
    """Anthropic-style `thinking: {type, budget_tokens}` → Gemini `thinkingConfig`."""
    if not isinstance(value, dict):
        return None
    if value.get("type") == "disabled":
        return {"thinkingBudget": 0}
    config: dict[str, Any] = {"includeThoughts": True}
    budget = value.get("budget_tokens")
    if isinstance(budget, int) and not isinstance(budget, bool):
        config["thinkingBudget"] = budget
    return config


def request_to_wire(request: InferenceRequest, model: str = "this model") -> dict[str, Any]:
    refuse_anthropic_tools(request, model)
    system, contents = contents_to_wire(request.messages)
    if not contents:
        raise InvalidRequest("messages: at least one user or assistant message is required", param="messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    gen: dict[str, Any] = {}
    if request.max_tokens is not None:
        gen["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        gen["temperature"] = request.temperature
    if request.top_p is not None:
        gen["topP"] = request.top_p
    if request.stop_sequences:
        gen["stopSequences"] = request.stop_sequences
    if request.tools:
        decls = []
        for t in request.tools:
            decl: dict[str, Any] = {"name": t.name, "parametersJsonSchema": t.parameters}
            if t.description:
                decl["description"] = t.description
            decls.append(decl)
        body["tools"] = [{"functionDeclarations": decls}]
        choice = request.tool_choice
        if choice is not None:
            if isinstance(choice, ToolChoiceNamed):
                fcc: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [choice.name]}
            else:
                fcc = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}
            body["toolConfig"] = {"functionCallingConfig": fcc}
    extras = request.provider_config or {}
    thinking = _thinking_config(extras.get("thinking"))
    effort = extras.get("reasoning_effort")
    if thinking is None and isinstance(effort, str):
        budget = reasoning_budget(effort, request.max_tokens)
        thinking = {"thinkingBudget": 0} if effort == "none" else None
        if budget:
            thinking = {"includeThoughts": True, "thinkingBudget": budget}
    if thinking is not None:
        gen["thinkingConfig"] = thinking
    for key, value in extras.items():
        if key in PASSTHROUGH:
            body[key] = value
        elif key in GENERATION_KEYS:
            gen[key] = value
        elif key == "generationConfig" and isinstance(value, dict):
            gen.update(value)
    if request.response_format is not None:
        to_gemini(request.response_format, gen)
    if gen:
        body["generationConfig"] = gen
    return body


def usage_from_wire(u: Mapping[str, Any]) -> Usage:
    thoughts = int(u.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(u.get("promptTokenCount") or 0) + int(u.get("toolUsePromptTokenCount") or 0),
        output_tokens=int(u.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=int(u.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def _finish(reason: str | None, has_tool_call: bool) -> FinishReason:
    mapped = FINISH_REASONS.get(reason or "STOP", "stop")
    # Gemini says STOP after a function call; clients of every format expect "tool use".
    return "tool_use" if mapped == "stop" and has_tool_call else mapped


def _prompt_block(data: Mapping[str, Any]) -> None:
    feedback = data.get("promptFeedback") or {}
    if feedback.get("blockReason") and not data.get("candidates"):
        raise ProviderError(
            f"the provider blocked the prompt ({feedback['blockReason']})",
            code="prompt_blocked",
            upstream_status=400,
        )


class GeminiDecoder(StreamDecoder):
    """Each SSE event is a whole GenerateContentResponse chunk. Consecutive thought parts form one
    thinking block, consecutive text parts one text block; every functionCall is a complete tool call."""

    def __init__(self) -> None:
        self._next = 0
        self._current: tuple[str, int] | None = None  # (kind, index) of the open text/thinking block
        self._tool_call = False

    def _index(self, kind: str) -> int:
        if self._current is not None and self._current[0] == kind:
            return self._current[1]
        index = self._next
        self._next += 1
        self._current = (kind, index)
        return index

    @staticmethod
    def _usage(usage: Mapping[str, Any]) -> UsageDelta:
        u = usage_from_wire(usage)
        return UsageDelta(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cached_tokens=u.cached_tokens,
            cache_creation_tokens=0,
            reasoning_tokens=u.reasoning_tokens,
        )

    def native_run(self, kind: int, key: int, text: str) -> StreamDelta:
        # Text runs continue the open text block (the scanner tracks it as `_index` would).
        if kind == RUN_TEXT and self._current is not None and self._current[0] == "text":
            return TextDelta(index=self._current[1], text=text)
        if kind == RUN_USAGE:
            return self._usage(orjson.loads(text))
        raise ValueError(f"no open block for scanner run {kind}")

    def decode(self, event: str, data: str) -> list[StreamDelta]:
        if not data.strip():
            return []
        chunk = orjson.loads(data)
        if "error" in chunk:
            err = chunk["error"] or {}
            code = int(err.get("code") or 500)
            raise ProviderError(
                f"provider stream error: {err.get('message') or err.get('status') or 'unknown'}",
                code=str(err.get("status") or "upstream_stream_error"),
                retryable=retryable_status(code),
                kind=from_provider("gemini", err.get("status"), code),
            )
        _prompt_block(chunk)
        out: list[StreamDelta] = []
        candidates = chunk.get("candidates") or ()
        candidate = candidates[0] if candidates else {}
        for part in (candidate.get("content") or {}).get("parts") or ():
            if "functionCall" in part:
                call = part["functionCall"] or {}
                if part.get("thoughtSignature"):
                    # The signature of the model's thinking rides on its first function call; it
                    # must come back with that call next turn, so it joins the thinking block.
                    out.append(
                        ThinkingDelta(index=self._index("thinking"), signature=part["thoughtSignature"])
                    )
                index = self._next
                self._next += 1
                self._current = None
                self._tool_call = True
                out.append(
                    ToolCallStart(
                        index=index,
                        id=call.get("id") or new_call_id(),
                        name=call.get("name") or "",
                        structured=True,
                    )
                )
                out.append(ToolCallArgs(index=index, fragment=orjson.dumps(call.get("args") or {}).decode()))
            elif part.get("thought"):
                out.append(
                    ThinkingDelta(
                        index=self._index("thinking"),
                        thinking=part.get("text") or "",
                        signature=part.get("thoughtSignature") or "",
                    )
                )
            elif "text" in part:
                text = part.get("text") or ""
                if text:
                    out.append(TextDelta(index=self._index("text"), text=text))
                if part.get("thoughtSignature"):  # Gemini 3: on the last text part (see _sign)
                    out.append(
                        ThinkingDelta(index=self._index("thinking"), signature=part["thoughtSignature"])
                    )
        usage = chunk.get("usageMetadata")
        if usage:
            out.append(self._usage(usage))
        reason = candidate.get("finishReason")
        if reason:
            out.append(Finish(reason=_finish(reason, self._tool_call), model=chunk.get("modelVersion")))
        return out


def _sign(blocks: list[EventBlock], signature: str) -> None:
    """A part's thoughtSignature as the canonical answer keeps it: a signature-only thinking block
    (joining the thoughts just before, as streamed). A function call's comes right before the call;
    a text part's (Gemini 3 signs the last part of an answer) right after the text, where the
    streamed answer has it too. It goes back to Gemini on the part after it, or on a final empty
    text part, as Gemini streams it (docs/formats.md)."""
    last = blocks[-1] if blocks else None
    if isinstance(last, ThinkingBlock):
        last.signature = (last.signature or "") + signature
    else:
        blocks.append(ThinkingBlock(thinking="", signature=signature))


class GeminiWire(WireFormat):
    stream_scanner = "gemini"

    def build(
        self, request: InferenceRequest, target: Target, stream: bool
    ) -> tuple[str, dict[str, str], bytes]:
        body = request_to_wire(request, target.model.name)
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        headers = {
            "x-goog-api-key": target.endpoint.api_key,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        url = f"{target.endpoint.base_url}/v1beta/models/{target.model.upstream_id}:{verb}"
        return url, headers, orjson.dumps(body)

    def parse(self, body: bytes) -> ProviderResult:
        data = orjson.loads(body)
        _prompt_block(data)
        candidates = data.get("candidates") or ()
        candidate = candidates[0] if candidates else {}
        blocks: list[EventBlock] = []
        has_call = False
        for part in (candidate.get("content") or {}).get("parts") or ():
            last = blocks[-1] if blocks else None
            if "functionCall" in part:
                call = part["functionCall"] or {}
                args = call.get("args") or {}
                has_call = True
                if part.get("thoughtSignature"):  # see GeminiDecoder
                    _sign(blocks, part["thoughtSignature"])
                blocks.append(
                    ToolCallBlock(
                        tool_call=ToolCallOut(
                            id=call.get("id") or new_call_id(),
                            name=call.get("name") or "",
                            arguments=args if isinstance(args, dict) else {},
                            raw_arguments=orjson.dumps(args).decode(),
                        )
                    )
                )
            elif part.get("thought"):
                text = part.get("text") or ""
                sig = part.get("thoughtSignature") or ""
                if isinstance(last, ThinkingBlock):
                    last.thinking += text
                    last.signature = (last.signature or "") + sig or None
                else:
                    blocks.append(ThinkingBlock(thinking=text, signature=sig or None))
            elif "text" in part:
                if part.get("text"):
                    if isinstance(last, TextBlock):
                        last.text += part["text"]
                    else:
                        blocks.append(TextBlock(text=part["text"]))
                if part.get("thoughtSignature"):  # Gemini 3: on the last text part (see _sign)
                    _sign(blocks, part["thoughtSignature"])
        return ProviderResult(
            blocks=blocks,
            usage=usage_from_wire(data.get("usageMetadata") or {}),
            finish_reason=_finish(candidate.get("finishReason"), has_call),
            upstream_model=data.get("modelVersion"),
        )

    def decoder(self) -> StreamDecoder:
        return GeminiDecoder()

    def build_embedding(self, request: EmbeddingRequest, target: Target) -> tuple[str, dict[str, str], bytes]:
        headers = {
            "x-goog-api-key": target.endpoint.api_key,
            "content-type": "application/json",
            "accept": "application/json",
        }
        url = f"{target.endpoint.base_url}/v1beta/models/{target.model.upstream_id}:batchEmbedContents"
        return url, headers, embedding_wire.gemini_body(request, target.model.upstream_id)

    def parse_embedding(self, body: bytes, request: EmbeddingRequest) -> EmbeddingResult:
        return embedding_wire.gemini_parse(body, request)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        err = error_object(body)
        if not isinstance(err, dict):
            return upstream_error(status, headers, body, dialect="gemini")
        retry_after = retry_after_seconds(headers)
        for detail in err.get("details") or ():
            delay = detail.get("retryDelay") if isinstance(detail, dict) else None
            if isinstance(delay, str) and delay.endswith("s") and retry_after is None:
                with contextlib.suppress(ValueError):
                    retry_after = float(delay[:-1])
        return upstream_error(
            status,
            headers,
            body,
            message=err.get("message"),
            code=err.get("status"),
            retry_after_s=retry_after,
            dialect="gemini",
            error_type=err.get("status"),
        )


KIND = register(
    ProviderKind(
        type="gemini",
        wire=lambda _config: GeminiWire(),
        default_base_url="https://generativelanguage.googleapis.com",
        cache_ttl=3600.0,  # implicit and explicit context caches default to one hour
        embeds=True,
    )
)
