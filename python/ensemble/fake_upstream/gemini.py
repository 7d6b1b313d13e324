"""Gemini ``generateContent`` wire format: ``POST /v1beta/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` (SSE, CRLF framing) and without ``alt=sse`` (a streamed JSON
array), ``:countTokens``, ``GET /v1beta/models``."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import orjson

from . import embeddings, prompt_cache
from .behavior import EndpointState
from .content import Conversation, Plan, ToolSpec, as_list, make_plan
from .wire import ID_MARK, JSON_CT, Ctx, Event, Headers, HeaderView, Reply, StreamReply, json_reply

MODELS = ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash")

_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}


def error_body(status: int, message: str | None = None, retry_after: float | None = None) -> dict[str, Any]:
    name, default = _STATUS.get(
        status, ("UNAVAILABLE" if status >= 500 else "INVALID_ARGUMENT", f"Error {status}.")
    )
    err: dict[str, Any] = {"code": status, "message": message or default, "status": name}
    if retry_after is not None:
        err["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}
        ]
    return {"error": err}


class BadRequest(Exception):
    pass


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _parts_text(parts: Any) -> str:
    out: list[str] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            out.append(part["text"])
        for key in ("functionCall", "function_call", "functionResponse", "function_response"):
            if isinstance(part.get(key), dict):
                out.append(orjson.dumps(part[key]).decode())
    return "".join(out)


def parse_conversation(req: dict[str, Any]) -> Conversation:
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    conv = Conversation()
    system = _get(req, "systemInstruction", "system_instruction")
    chars = len(_parts_text(system.get("parts"))) if isinstance(system, dict) else 0
    if chars:
        conv.segments.append(("system", _parts_text(system.get("parts")), False))
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise BadRequest(f"* GenerateContentRequest.contents[{i}]: must be an object")
        parts = content.get("parts")
        text = _parts_text(parts)
        chars += len(text)
        conv.segments.append((str(content.get("role", "user")), text, False))
        if content.get("role", "user") == "user":
            own = "".join(
                p["text"]
                for p in (parts if isinstance(parts, list) else ())
                if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
            if own:
                conv.last_user_text = own
    last = contents[-1]
    conv.prompt_chars = chars
    conv.last_is_user = last.get("role", "user") == "user"
    last_parts = last.get("parts")
    conv.last_is_tool_result = isinstance(last_parts, list) and any(
        isinstance(p, dict) and ("functionResponse" in p or "function_response" in p) for p in last_parts
    )
    for tool in as_list(req.get("tools")):
        decls = (
            _get(tool, "functionDeclarations", "function_declarations") if isinstance(tool, dict) else None
        )
        for decl in as_list(decls):
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):
                schema = decl.get("parameters") or _get(
                    decl, "parametersJsonSchema", "parameters_json_schema"
                )
                conv.tools.append(ToolSpec(decl["name"], schema if isinstance(schema, dict) else None))
    tool_config = _get(req, "toolConfig", "tool_config")
    fcc = (
        _get(tool_config, "functionCallingConfig", "function_calling_config")
        if isinstance(tool_config, dict)
        else None
    )
    if isinstance(fcc, dict):
        mode = str(fcc.get("mode", "AUTO")).upper()
        if mode == "NONE":
            conv.tool_mode = "none"
        elif mode in ("ANY", "VALIDATED"):
            conv.tool_mode = "required"
            allowed = _get(fcc, "allowedFunctionNames", "allowed_function_names")
            if isinstance(allowed, list) and allowed and isinstance(allowed[0], str):
                conv.forced_tool = allowed[0]
    gen = _get(req, "generationConfig", "generation_config")
    if isinstance(gen, dict):
        max_tokens = _get(gen, "maxOutputTokens", "max_output_tokens")
        if max_tokens is not None:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise BadRequest("* GenerationConfig.max_output_tokens: must be a positive integer")
            conv.max_tokens = max_tokens
        thinking = _get(gen, "thinkingConfig", "thinking_config")
        if isinstance(thinking, dict):
            conv.thinking = _get(thinking, "includeThoughts", "include_thoughts") is True
    gen_config = _get(req, "generationConfig", "generation_config")
    if (
        isinstance(gen_config, dict)
        and _get(gen_config, "responseMimeType", "response_mime_type") == "application/json"
    ):
        schema = _get(gen_config, "responseJsonSchema", "response_json_schema") or _get(
            gen_config, "responseSchema", "response_schema"
        )
        conv.response_schema = schema if isinstance(schema, dict) else {"type": "object"}
    return conv


def usage_json(plan: Plan, candidates: int | None = None) -> dict[str, Any]:
    prompt = plan.prompt_tokens + plan.cached_tokens
    cand = plan.output_tokens if candidates is None else candidates
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": cand,
        "totalTokenCount": prompt + cand + plan.reasoning_tokens,
        "cachedContentTokenCount": plan.cached_tokens,
        "thoughtsTokenCount": plan.reasoning_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }


def _answer_parts(plan: Plan) -> list[dict[str, Any]]:
    if plan.tool is not None:
        return [{"functionCall": {"name": plan.tool.name, "args": plan.tool.args}}]
    return [{"text": plan.text}]


def response_json(model: str, plan: Plan, response_id: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if plan.thinking_pieces:
        parts.append({"text": plan.thinking, "thought": True})
    parts += _answer_parts(plan)
    return {
        "candidates": [
            {"content": {"parts": parts, "role": "model"}, "finishReason": _FINISH[plan.finish], "index": 0}
        ],
        "usageMetadata": usage_json(plan),
        "modelVersion": model,
        "responseId": response_id,
    }


def stream_chunks(model: str, plan: Plan, response_id: str) -> list[dict[str, Any]]:
    """Each chunk carries cumulative usage; the last one carries finishReason and the final usage."""
    pieces: list[dict[str, Any]] = [{"text": p, "thought": True} for p in plan.thinking_pieces]
    if plan.tool is not None:
        pieces += _answer_parts(plan)
    else:
        pieces += [{"text": p} for p in plan.text_pieces] or [{"text": ""}]
    chunks: list[dict[str, Any]] = []
    visible = 0
    for i, part in enumerate(pieces):
        last = i == len(pieces) - 1
        if not part.get("thought"):
            visible += 1
        candidate: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = _FINISH[plan.finish]
        usage = (
            usage_json(plan)
            if last
            else {
                "promptTokenCount": plan.prompt_tokens + plan.cached_tokens,
                "candidatesTokenCount": visible,
                "totalTokenCount": plan.prompt_tokens + plan.cached_tokens + visible,
            }
        )
        chunks.append(
            {
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": response_id,
            }
        )
    return chunks


class GeminiProvider:
    name = "gemini"
    default_framing = "crlf"

    def api_key(self, headers: HeaderView, query: str) -> str | None:
        key = headers.get("x-goog-api-key")
        if isinstance(key, str):
            return key
        values = parse_qs(query).get("key")
        return values[0] if values else None

    def error(self, status: int, message: str | None = None, retry_after: float | None = None) -> Reply:
        return json_reply(status, error_body(status, message, retry_after))

    def precheck(self, ctx: Ctx) -> Reply | None:
        want = ctx.config.require_api_key
        if want is not None and self.api_key(ctx.headers, ctx.query) != want:
            return self.error(401, "API key not valid. Please pass a valid API key.")
        return None

    def ratelimit_headers(self, ep: EndpointState, now: float, status: int) -> Headers:
        return []

    def handle(self, ctx: Ctx) -> Reply | StreamReply:
        action = ctx.action
        if action == "models":
            return json_reply(
                200,
                {
                    "models": [
                        {
                            "name": f"models/{m}",
                            "displayName": m,
                            "inputTokenLimit": 1048576,
                            "outputTokenLimit": 65536,
                            "supportedGenerationMethods": ["generateContent", "countTokens"],
                        }
                        for m in MODELS
                    ]
                },
            )
        if action in ("embed", "batch_embed"):
            return embeddings.gemini_reply(ctx, self.error)
        if action not in ("generate", "stream", "count_tokens"):
            return self.error(404, f"Method not found: {ctx.method} {ctx.extra.get('path', '')}")
        try:
            req = orjson.loads(ctx.body)
        except orjson.JSONDecodeError:
            return self.error(400, "Invalid JSON payload received.")
        if not isinstance(req, dict):
            return self.error(400, "Invalid JSON payload received.")
        if action == "count_tokens" and isinstance(req.get("generateContentRequest"), dict):
            req = req["generateContentRequest"]
        try:
            conv = parse_conversation(req)
        except BadRequest as exc:
            return self.error(400, str(exc))
        cfg = ctx.config
        plan = make_plan(
            "gemini",
            conv,
            cfg.chunks,
            cfg.cached_tokens,
            0,
            cfg.reasoning_tokens,
            lambda o: orjson.dumps(o).decode(),
            tool_call=cfg.tool_call,
        )
        if action == "count_tokens":
            return json_reply(200, {"totalTokens": plan.prompt_tokens}, cacheable=True)
        prompt_cache.apply(plan, conv, ctx.endpoint, "gemini", time.monotonic())
        model = ctx.arg.removeprefix("models/")
        tokens = plan.prompt_tokens + plan.output_tokens
        if action == "generate":
            body = orjson.dumps(response_json(model, plan, ID_MARK))
            return Reply(200, body, [JSON_CT], tokens=tokens, id_prefix="", cacheable=True)
        chunks = stream_chunks(model, plan, ID_MARK)
        if "alt=sse" in ctx.query:
            events: list[Event] = [(b"data: " + orjson.dumps(c),) for c in chunks]
            return StreamReply(
                [("content-type", "text/event-stream")],
                events,
                _ERROR_EVENT,
                tokens=tokens,
                id_prefix="",
                cacheable=True,
            )
        raw: list[Event] = [((b"[" if i == 0 else b",\r\n") + orjson.dumps(c),) for i, c in enumerate(chunks)]
        return StreamReply(
            [("content-type", "application/json; charset=UTF-8")],
            raw,
            (b",\r\n" + orjson.dumps(error_body(500)),),
            sse=False,
            tokens=tokens,
            trailer=b"]",
            id_prefix="",
            cacheable=True,
        )


_ERROR_EVENT: Event = (b"data: " + orjson.dumps(error_body(500)),)


PROVIDER = GeminiProvider()
