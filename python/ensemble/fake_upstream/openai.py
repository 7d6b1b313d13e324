"""OpenAI Chat Completions wire format: ``POST /v1/chat/completions`` (JSON + SSE), ``GET /v1/models``."""

from __future__ import annotations

import time
from typing import Any

import orjson

from . import embeddings, openai_responses, prompt_cache
from .behavior import EndpointState
from .content import Conversation, Plan, ToolSpec, as_list, make_plan, new_id
from .wire import (
    ID_MARK,
    JSON_CT,
    SSE_CT,
    TS_MARK,
    Ctx,
    Event,
    Headers,
    HeaderView,
    Reply,
    StreamReply,
    bearer_token,
    error_reply,
    json_reply,
    sse,
)

MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3", "o3-mini", "o4-mini", "gpt-5")

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", None, "Not found."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


def error_body(status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
    typ, code, default = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}.")
    )
    return {"error": {"message": message or default, "type": typ, "param": param, "code": code}}


def _fmt_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60.0)
    return f"{int(minutes)}m{secs:.0f}s" if minutes else f"{secs:.3g}s"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def parse_conversation(req: dict[str, Any]) -> Conversation:
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    conv = Conversation()
    chars = 0
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest(f"Invalid value for 'messages[{i}]'.", f"messages[{i}]")
        text = _text_of(msg.get("content"))
        for call in as_list(msg.get("tool_calls")):
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                text += str(call["function"].get("arguments", ""))
        chars += len(text)
        conv.segments.append((msg["role"], text, False))
        if msg["role"] == "user":
            conv.last_user_text = text
    last = messages[-1]["role"]
    conv.prompt_chars = chars
    conv.last_is_user = last == "user"
    conv.last_is_tool_result = last in ("tool", "function")
    for tool in as_list(req.get("tools")):
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            fn = tool["function"]
            if isinstance(fn.get("name"), str):
                params = fn.get("parameters")
                conv.tools.append(ToolSpec(fn["name"], params if isinstance(params, dict) else None))
    choice = req.get("tool_choice")
    if choice in ("none", "auto", "required"):
        conv.tool_mode = choice
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        conv.tool_mode = "required"
        name = choice["function"].get("name")
        conv.forced_tool = name if isinstance(name, str) else None
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("Invalid 'max_tokens': must be a positive integer.", "max_tokens")
        conv.max_tokens = max_tokens
    fmt = req.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        conv.response_schema = schema if isinstance(schema, dict) else {"type": "object"}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        conv.response_schema = {"type": "object"}
    return conv


def usage_json(plan: Plan) -> dict[str, Any]:
    prompt = plan.prompt_tokens + plan.cached_tokens
    completion = plan.output_tokens + plan.reasoning_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


class OpenAIProvider:
    name = "openai"
    default_framing = "lf"

    def api_key(self, headers: HeaderView, query: str) -> str | None:
        return bearer_token(headers)

    def error(self, status: int, message: str | None = None, retry_after: float | None = None) -> Reply:
        return error_reply(status, error_body(status, message), retry_after)

    def precheck(self, ctx: Ctx) -> Reply | None:
        want = ctx.config.require_api_key
        if want is not None:
            got = self.api_key(ctx.headers, ctx.query)
            if got != want:
                return self.error(
                    401, "Incorrect API key provided." if got else "You didn't provide an API key."
                )
        return None

    def ratelimit_headers(self, ep: EndpointState, now: float, status: int) -> Headers:
        lreq, rreq, ltok, rtok, reset = ep.ratelimit(now)
        if status == 429:
            rreq = 0
        resets = _fmt_duration(reset)
        return [
            ("x-request-id", new_id("req_")),
            ("x-ratelimit-limit-requests", str(lreq)),
            ("x-ratelimit-remaining-requests", str(rreq)),
            ("x-ratelimit-reset-requests", resets),
            ("x-ratelimit-limit-tokens", str(ltok)),
            ("x-ratelimit-remaining-tokens", str(rtok)),
            ("x-ratelimit-reset-tokens", resets),
        ]

    def handle(self, ctx: Ctx) -> Reply | StreamReply:
        if ctx.action == "models":
            return json_reply(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake-openai"}
                        for m in MODELS
                    ],
                },
            )
        if ctx.action == "embeddings":
            return embeddings.openai_reply(ctx, error_body)
        if ctx.action not in ("chat", "responses"):
            return self.error(404, f"Invalid URL ({ctx.method} {ctx.extra.get('path', '')})")
        try:
            req = orjson.loads(ctx.body)
        except orjson.JSONDecodeError:
            return self.error(400, "We could not parse the JSON body of your request.")
        if not isinstance(req, dict):
            return self.error(400, "We could not parse the JSON body of your request.")
        model = req.get("model")
        if not isinstance(model, str) or not model:
            return json_reply(400, error_body(400, "you must provide a model parameter", "model"))
        if ctx.action == "responses":
            return self._responses(ctx, req, model)
        try:
            conv = parse_conversation(req)
        except BadRequest as exc:
            return json_reply(400, error_body(400, exc.message, exc.param))
        plan = self._plan(ctx, conv)
        tokens = plan.prompt_tokens + plan.output_tokens
        if req.get("stream") is True:
            opts = req.get("stream_options")
            include_usage = ctx.config.stream_usage_always or (
                isinstance(opts, dict) and opts.get("include_usage") is True
            )
            return StreamReply(
                [SSE_CT],
                self._events(model, plan, include_usage),
                _ERROR_EVENT,
                tokens=tokens,
                id_prefix="chatcmpl-",
                cacheable=plan.tool is None,
            )
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if plan.tool else plan.text,
            "refusal": None,
            "annotations": [],
        }
        if plan.tool:
            message["tool_calls"] = [
                {
                    "id": new_id("call_"),
                    "type": "function",
                    "function": {"name": plan.tool.name, "arguments": plan.tool.arguments},
                }
            ]
        body = {
            "id": ID_MARK,
            "object": "chat.completion",
            "created": TS_MARK,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH[plan.finish]}
            ],
            "usage": usage_json(plan),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        return Reply(
            200, orjson.dumps(body), [JSON_CT], tokens=tokens, id_prefix="chatcmpl-", cacheable=not plan.tool
        )

    @staticmethod
    def _plan(ctx: Ctx, conv: Any) -> Plan:
        """The scripted answer for a conversation (Chat Completions and Responses alike)."""
        cfg = ctx.config
        plan = make_plan(
            "openai",
            conv,
            cfg.chunks,
            cfg.cached_tokens,
            0,
            cfg.reasoning_tokens,
            lambda o: orjson.dumps(o).decode(),
            tool_call=cfg.tool_call,
        )
        prompt_cache.apply(plan, conv, ctx.endpoint, "openai", time.monotonic())
        return plan

    def _responses(self, ctx: Ctx, req: dict[str, Any], model: str) -> Reply | StreamReply:
        try:
            conv = openai_responses.parse_conversation(req)
        except openai_responses.BadRequest as exc:
            return json_reply(400, error_body(400, exc.message, exc.param))
        plan = self._plan(ctx, conv)
        if req.get("stream") is True:
            return openai_responses.stream(req, model, plan)
        return openai_responses.reply(req, model, plan)

    def _events(self, model: str, plan: Plan, include_usage: bool) -> list[Event]:
        cid = ID_MARK  # one id and timestamp per stream, filled in at send time
        created: Any = TS_MARK
        extra: dict[str, Any] = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> Event:
            return sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                    **extra,
                }
            )

        events: list[Event] = []
        if plan.tool:
            events.append(
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": new_id("call_"),
                                "type": "function",
                                "function": {"name": plan.tool.name, "arguments": ""},
                            }
                        ],
                        "refusal": None,
                    }
                )
            )
            events += [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]})
                for frag in plan.tool.fragments
            ]
        else:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            events += [chunk({"content": piece}) for piece in plan.text_pieces]
        events.append(chunk({}, _FINISH[plan.finish]))
        if include_usage:
            events.append(
                sse(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "service_tier": "default",
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": usage_json(plan),
                    }
                )
            )
        events.append((b"data: [DONE]",))
        return events


_ERROR_EVENT: Event = sse(error_body(500))

PROVIDER = OpenAIProvider()
