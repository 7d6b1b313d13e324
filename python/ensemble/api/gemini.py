"""Gemini as an ingress format: `POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent` (`?alt=sse` for SSE; without it a streamed JSON array, as Google serves).

Requests become InferenceRequests: `systemInstruction` → system message, `model` turns → assistant,
`functionCall` parts → tool_calls, a part's `thoughtSignature` → a signature-only thinking block
before it (so it goes back on that part), `functionResponse` parts → tool messages (matched to the call by
id, or else by name to the latest call of that function), `inlineData`/`fileData` → image, audio or
document blocks by MIME type. Gemini-only settings (`thinkingConfig`, `topK`, `safetySettings`, …)
ride in `provider_config` under their Gemini names. Both camelCase and snake_case field names are
accepted, as Google's own API does.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from ensemble import error_types
from ensemble.api.common import convert, decode_object, note_omitted, optional
from ensemble.errors import EnsembleError, InvalidRequest
from ensemble.providers.gemini import GENERATION_KEYS, new_call_id
from ensemble.structured_output import from_gemini, lower_types
from ensemble.types import (
    AudioContent,
    ContentBlock,
    DocumentContent,
    FinishReason,
    ImageContent,
    InferenceRequest,
    InferenceResponse,
    MediaSource,
    Message,
    StreamDelta,
    TextBlock,
    TextContent,
    TextDelta,
    ThinkingBlock,
    ThinkingContent,
    ThinkingDelta,
    ToolCall,
    ToolCallArgs,
    ToolCallBlock,
    ToolCallStart,
    ToolChoiceNamed,
    ToolDefinition,
)

FINISH_OUT: dict[FinishReason, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_use": "STOP",
    "content_filter": "SAFETY",
    "error": "OTHER",
}

_TOP_LEVEL_EXTRAS = ("safetySettings", "cachedContent", "labels")


@functools.cache
def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _get(obj: dict[str, Any], camel: str) -> Any:
    value = obj.get(camel)
    return obj.get(_snake(camel)) if value is None else value


def _media(mime: str, source: MediaSource) -> ContentBlock:
    if mime.startswith("image/"):
        return ImageContent(source=source)
    if mime.startswith("audio/"):
        return AudioContent(source=source)
    return DocumentContent(source=source)


class _Calls:
    """Ids for function calls, so function responses find their call (Gemini may send no ids)."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[str]] = {}

    def new(self, name: str, given: Any) -> str:
        call_id = given if isinstance(given, str) and given else new_call_id()
        self.by_name.setdefault(name, []).append(call_id)
        return call_id

    def answer(self, name: str, given: Any) -> str:
        if isinstance(given, str) and given:
            return given
        pending = self.by_name.get(name)
        return pending.pop(0) if pending else new_call_id()


def _content(raw: Any, i: int, calls: _Calls) -> list[Message]:
    where = f"contents[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected an object", param="contents")
    role = raw.get("role") or "user"
    if role == "function":  # older Gemini clients send function responses in a "function" turn
        role = "user"
    if role not in ("user", "model"):
        raise InvalidRequest(f"{where}.role: must be user or model", param="contents")
    parts = raw.get("parts")
    if not isinstance(parts, list):
        raise InvalidRequest(f"{where}.parts: expected a list of parts", param="contents")
    blocks: list[ContentBlock] = []
    tool_calls: list[ToolCall] = []
    tool_messages: list[Message] = []
    for j, p in enumerate(parts):
        at = f"{where}.parts[{j}]"
        if not isinstance(p, dict):
            raise InvalidRequest(f"{at}: expected an object", param="contents")
        inline = _get(p, "inlineData")
        file = _get(p, "fileData")
        call = _get(p, "functionCall")
        response = _get(p, "functionResponse")
        if p.get("thought") is True:
            continue  # the model's own thoughts are not sent back to it
        signature = _get(p, "thoughtSignature")
        if isinstance(p.get("text"), str):
            if isinstance(signature, str) and signature:  # Gemini 3 signs text parts too
                blocks.append(ThinkingContent(thinking="", signature=signature))
            if p["text"]:
                blocks.append(TextContent(text=p["text"]))
        elif isinstance(inline, dict):
            mime = convert(_get(inline, "mimeType"), str, f"{at}.inlineData.mimeType")
            data = convert(inline.get("data"), str, f"{at}.inlineData.data")
            blocks.append(_media(mime, MediaSource(type="base64", media_type=mime, data=data)))
        elif isinstance(file, dict):
            mime = convert(
                _get(file, "mimeType") or "application/octet-stream", str, f"{at}.fileData.mimeType"
            )
            uri = convert(_get(file, "fileUri"), str, f"{at}.fileData.fileUri")
            blocks.append(_media(mime, MediaSource(type="url", media_type=mime, url=uri)))
        elif isinstance(call, dict):
            if role != "model":
                raise InvalidRequest(f"{at}.functionCall: belongs to model turns", param="contents")
            name = convert(call.get("name"), str, f"{at}.functionCall.name")
            args = convert(call.get("args") or {}, dict[str, Any], f"{at}.functionCall.args")
            if isinstance(signature, str) and signature:  # kept for the next call to a Gemini model
                blocks.append(ThinkingContent(thinking="", signature=signature))
            tool_calls.append(ToolCall(id=calls.new(name, call.get("id")), name=name, arguments=args))
        elif isinstance(response, dict):
            name = convert(response.get("name"), str, f"{at}.functionResponse.name")
            result = response.get("response")
            tool_messages.append(
                Message(
                    role="tool",
                    content=orjson.dumps(result if result is not None else {}).decode(),
                    tool_call_id=calls.answer(name, response.get("id")),
                    name=name,
                )
            )
        else:
            raise InvalidRequest(
                f"{at}: unsupported part (expected text, inlineData, fileData, functionCall or functionResponse)",
                param="contents",
            )
    out = tool_messages
    if blocks or tool_calls or not out:
        out.append(
            Message(
                role="assistant" if role == "model" else "user",
                content=blocks,
                tool_calls=tool_calls or None,
            )
        )
    return out


def _tools(raw: Any) -> list[ToolDefinition] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequest("tools: expected a list", param="tools")
    out: list[ToolDefinition] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"tools[{i}]: expected an object", param="tools")
        decls = _get(tool, "functionDeclarations")
        if decls is None:
            other = next(iter(tool), "?")
            raise InvalidRequest(
                f"tools[{i}].{other}: only functionDeclarations tools are supported through Ensemble",
                param="tools",
            )
        if not isinstance(decls, list):
            raise InvalidRequest(f"tools[{i}].functionDeclarations: expected a list", param="tools")
        for j, d in enumerate(decls):
            at = f"tools[{i}].functionDeclarations[{j}]"
            if not isinstance(d, dict):
                raise InvalidRequest(f"{at}: expected an object", param="tools")
            schema = _get(d, "parametersJsonSchema")
            if schema is None:
                schema = lower_types(d.get("parameters") or {"type": "object", "properties": {}})
            out.append(
                ToolDefinition(
                    name=convert(d.get("name"), str, f"{at}.name"),
                    description=convert(d.get("description") or "", str, f"{at}.description"),
                    parameters=convert(schema, dict[str, Any], f"{at}.parameters"),
                )
            )
    return out


def _tool_choice(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return None
    fcc = _get(raw, "functionCallingConfig")
    if not isinstance(fcc, dict):
        return None
    mode = str(fcc.get("mode") or "AUTO").upper()
    allowed = _get(fcc, "allowedFunctionNames")
    if mode in ("ANY", "VALIDATED"):
        if isinstance(allowed, list) and len(allowed) == 1 and isinstance(allowed[0], str):
            return ToolChoiceNamed(name=allowed[0])
        return "required"
    if mode == "NONE":
        return "none"
    if mode in ("AUTO", "MODE_UNSPECIFIED"):
        return "auto"
    raise InvalidRequest(
        "toolConfig.functionCallingConfig.mode: must be AUTO, ANY, NONE or VALIDATED", param="toolConfig"
    )


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


# Read into the canonical response_format instead of riding along in provider_config.
_STRUCTURED = frozenset({"responseMimeType", "responseSchema", "responseJsonSchema"})


def parse_request(body: bytes, model: str, *, stream: bool) -> InferenceRequest:
    data = decode_object(body)
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("contents: required, and must be a non-empty list", param="contents")
    messages: list[Message] = []
    system = _get(data, "systemInstruction")
    if system is not None:
        parts = system.get("parts") if isinstance(system, dict) else None
        if not isinstance(parts, list):
            raise InvalidRequest(
                "systemInstruction.parts: expected a list of parts", param="systemInstruction"
            )
        text = "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
        if text:
            messages.append(Message(role="system", content=text))
    calls = _Calls()
    for i, c in enumerate(contents):
        messages += _content(c, i, calls)
    gen = _get(data, "generationConfig") or {}
    if not isinstance(gen, dict):
        raise InvalidRequest("generationConfig: expected an object", param="generationConfig")
    count = _get(gen, "candidateCount")
    if count not in (None, 1):
        raise InvalidRequest("generationConfig.candidateCount: only 1 is supported", param="generationConfig")
    extras: dict[str, Any] = {}
    for key in _TOP_LEVEL_EXTRAS:
        value = _get(data, key)
        if value is not None:
            extras[key] = value
    for key in GENERATION_KEYS - _STRUCTURED:
        value = _get(gen, key)
        if value is not None and key != "candidateCount":
            extras[key] = value
    if isinstance(extras.get("thinkingConfig"), dict):
        # google-genai writes this object's own keys in snake_case (thinking_budget); the API
        # takes both, adapters read one spelling.
        extras["thinkingConfig"] = {_camel(k): v for k, v in extras["thinkingConfig"].items()}
    stop = _get(gen, "stopSequences")
    return InferenceRequest(
        model=model,
        messages=messages,
        max_tokens=optional(_get(gen, "maxOutputTokens"), int, "generationConfig.maxOutputTokens"),
        temperature=optional(gen.get("temperature"), float, "generationConfig.temperature"),
        top_p=optional(_get(gen, "topP"), float, "generationConfig.topP"),
        stop_sequences=optional(stop, list[str], "generationConfig.stopSequences"),
        tools=_tools(data.get("tools")),
        tool_choice=_tool_choice(_get(data, "toolConfig")),
        stream=stream,
        provider_config=extras or None,
        response_format=from_gemini(gen),
    )


def _usage(r: InferenceResponse) -> dict[str, Any]:
    out: dict[str, Any] = {
        "promptTokenCount": r.input_tokens,
        "candidatesTokenCount": max(r.output_tokens - r.reasoning_tokens, 0),
        "totalTokenCount": r.input_tokens + r.output_tokens,
    }
    if r.cached_prompt_tokens:
        out["cachedContentTokenCount"] = r.cached_prompt_tokens
    if r.reasoning_tokens:
        out["thoughtsTokenCount"] = r.reasoning_tokens
    return out


def _call_part(call_id: str, name: str, args: Any) -> dict[str, Any]:
    return {"functionCall": {"id": call_id, "name": name, "args": args}}


def grounding(blocks: list[Any]) -> dict[str, Any] | None:
    """A text block's web sources (Claude's web search citations) as Gemini's `groundingMetadata`:
    one `groundingChunks[].web` per source, a `groundingSupports` entry over the cited text."""
    chunks: list[dict[str, Any]] = []
    supports: list[dict[str, Any]] = []
    position = 0
    for b in blocks:
        if not isinstance(b, TextBlock):
            continue
        cited = [c for c in b.citations or () if isinstance(c.get("url"), str)]
        if cited:
            first = len(chunks)
            chunks += [{"web": {"uri": c["url"], "title": c.get("title") or ""}} for c in cited]
            segment = {"startIndex": position, "endIndex": position + len(b.text.encode()), "text": b.text}
            supports.append({"segment": segment, "groundingChunkIndices": list(range(first, len(chunks)))})
        position += len(b.text.encode())  # Gemini's segment indices count bytes
    return {"groundingChunks": chunks, "groundingSupports": supports} if chunks else None


def render_response(r: InferenceResponse) -> bytes:
    note_omitted(r.blocks, "Gemini", r.id)
    parts: list[dict[str, Any]] = []
    signature = None  # a thinking signature moves to the part after the thoughts, as Gemini sends it
    for b in r.blocks:
        part: dict[str, Any] | None = None
        if isinstance(b, ThinkingBlock):
            if b.thinking:
                parts.append({"text": b.thinking, "thought": True})
            signature = b.signature or signature
            continue
        if isinstance(b, TextBlock):
            part = {"text": b.text}
        elif isinstance(b, ToolCallBlock):
            part = _call_part(b.tool_call.id, b.tool_call.name, b.tool_call.arguments)
        if part is not None:
            if signature:
                part["thoughtSignature"] = signature
                signature = None
            parts.append(part)
    if signature:
        parts.append({"text": "", "thoughtSignature": signature})
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": FINISH_OUT[r.finish_reason],
                "index": 0,
                **({"groundingMetadata": g} if (g := grounding(r.blocks)) else {}),
            }
        ],
        "usageMetadata": _usage(r),
        "modelVersion": r.model,
        "responseId": r.id,
    }
    return orjson.dumps(body)


class ChunkStream:
    """Renders deltas as GenerateContentResponse chunks: SSE (`alt=sse`) or a streamed JSON array.
    Function calls are whole in Gemini, so a call's argument fragments are held until it is complete."""

    def __init__(self, request_id: str, model: str, sse: bool) -> None:
        self._id = request_id
        self._model = model
        self._sse = sse
        self.content_type = "text/event-stream; charset=utf-8" if sse else "application/json; charset=utf-8"
        # Providers are always asked for SSE: only an `alt=sse` client can take their bytes unchanged.
        self.passthrough = "gemini" if sse else None
        self._first = True
        self._call: tuple[str, str, list[str]] | None = None  # id, name, fragments
        self._call_index = -1
        self._signature = ""  # a thinking signature waiting for the next answer part

    def _frame(self, parts: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        chunk: dict[str, Any] = {
            "candidates": [candidate],
            "modelVersion": self._model,
            "responseId": self._id,
        }
        if extra:
            candidate.update(extra.get("candidate") or {})
            if "usageMetadata" in extra:
                chunk["usageMetadata"] = extra["usageMetadata"]
        body = orjson.dumps(chunk)
        if self._sse:
            return b"data: " + body + b"\r\n\r\n"
        sep = b"[" if self._first else b",\r\n"
        self._first = False
        return sep + body

    def _flush_call(self) -> list[dict[str, Any]]:
        if self._call is None:
            return []
        call_id, name, fragments = self._call
        self._call = None
        raw = "".join(fragments)
        try:
            args = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            args = {}
        return [self._signed(_call_part(call_id, name, args if isinstance(args, dict) else {}))]

    def _signed(self, part: dict[str, Any]) -> dict[str, Any]:
        if self._signature:
            part["thoughtSignature"] = self._signature
            self._signature = ""
        return part

    def start(self) -> bytes:
        return b""

    def render(self, delta: StreamDelta) -> bytes | None:
        if isinstance(delta, ToolCallArgs):
            if self._call is not None and delta.index == self._call_index:
                self._call[2].append(delta.fragment)
            return None
        parts = []
        if isinstance(delta, ToolCallStart | TextDelta | ThinkingDelta):
            parts = self._flush_call()
        if isinstance(delta, ToolCallStart):
            self._call = (delta.id, delta.name, [])
            self._call_index = delta.index
        elif isinstance(delta, TextDelta) and delta.text:
            parts.append(self._signed({"text": delta.text}))
        elif isinstance(delta, ThinkingDelta):
            self._signature += delta.signature
            if delta.thinking:
                parts.append({"text": delta.thinking, "thought": True})
        return self._frame(parts) if parts else None

    def finish(self, response: InferenceResponse) -> bytes:
        note_omitted(response.blocks, "Gemini", response.id)
        parts = self._flush_call() or [self._signed({"text": ""})]
        candidate: dict[str, Any] = {"finishReason": FINISH_OUT[response.finish_reason]}
        sources = grounding(response.blocks)
        if sources:
            candidate["groundingMetadata"] = sources
        out = self._frame(
            parts,
            {
                "candidate": candidate,
                "usageMetadata": _usage(response),
            },
        )
        return out if self._sse else out + b"]"

    def error(self, error: EnsembleError, request_id: str) -> bytes:
        body = error_payload(error, *error_types.render_as("gemini", error))
        if self._sse:
            return b"data: " + body + b"\r\n\r\n"
        return (b"[" if self._first else b",\r\n") + body + b"]"


def error_payload(error: EnsembleError, name: str, code: int) -> bytes:
    """Google's error shape: `name` and `code` are what error_types gives this error for Gemini clients."""
    return orjson.dumps({"error": {"code": code, "message": error.message, "status": name}})
