"""Anthropic Messages wire format: ``POST /v1/messages`` (JSON + SSE), ``count_tokens``, Message
Batches, ``GET /v1/models`` (when an ``anthropic-version`` header is sent)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from . import prompt_cache
from .behavior import Batch, EndpointState
from .content import Conversation, Plan, ToolSpec, as_list, make_plan, new_id
from .wire import (
    ID_MARK,
    JSON_CT,
    SSE_CT,
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

MODELS = ("claude-opus-4-7", "claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6")

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    typ, default = _ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}.")
    )
    return {
        "type": "error",
        "error": {"type": typ, "message": message or default},
        "request_id": new_id("req_"),
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


_last_reset: tuple[int, str] = (0, "")


def _reset_iso(ts: int) -> str:
    """RFC 3339 time of the window reset; constant within a window, so format it once."""
    global _last_reset
    if _last_reset[0] != ts:
        _last_reset = (ts, _iso(ts))
    return _last_reset[1]


class BadRequest(Exception):
    pass


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                out.append(block["text"])
            elif isinstance(block.get("thinking"), str):
                out.append(block["thinking"])
            elif block.get("type") == "tool_use":
                out.append(orjson.dumps(block.get("input", {})).decode())
            elif block.get("type") == "tool_result":
                out.append(_text_of(block.get("content")))
    return "".join(out)


def _marked(block: Any) -> bool:
    """A content block carrying a prompt-cache breakpoint."""
    return isinstance(block, dict) and isinstance(block.get("cache_control"), dict)


def parse_conversation(req: dict[str, Any], need_max_tokens: bool = True) -> Conversation:
    if not isinstance(req.get("model"), str) or not req["model"]:
        raise BadRequest("model: Field required")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "messages: Field required" if messages is None else "messages: at least one message is required"
        )
    max_tokens = req.get("max_tokens")
    if need_max_tokens:
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("max_tokens: Input should be a valid integer greater than or equal to 1")
    conv = Conversation(max_tokens=max_tokens if need_max_tokens else None)
    system = req.get("system")
    chars = len(_text_of(system))
    for block in system if isinstance(system, list) else [system]:
        conv.segments.append(
            ("system", _text_of([block] if isinstance(block, dict) else block), _marked(block))
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant", "system"):
            raise BadRequest(f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'")
        if msg["role"] == "system":  # a mid-conversation system turn, with the API's placement rules
            after = messages[i - 1].get("role") if i > 0 and isinstance(messages[i - 1], dict) else None
            nxt = messages[i + 1] if i + 1 < len(messages) else None
            if after != "user" or (isinstance(nxt, dict) and nxt.get("role") != "assistant"):
                raise BadRequest(
                    f"messages.{i}: a system message must follow a user turn and be last or followed "
                    "by an assistant turn"
                )
        content = msg.get("content")
        text = _text_of(content)
        chars += len(text)
        marked = isinstance(content, list) and any(_marked(b) for b in content)
        conv.segments.append((msg["role"], text, marked))
        if msg["role"] == "user":
            own = (
                content
                if isinstance(content, str)
                else "".join(
                    b["text"]
                    for b in (content if isinstance(content, list) else ())
                    if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
                )
            )
            if own:
                conv.last_user_text = own
    turns = [m for m in messages if m.get("role") != "system"]
    last = turns[-1] if turns else messages[-1]
    conv.prompt_chars = chars
    conv.last_is_user = last["role"] == "user"
    conv.last_is_tool_result = isinstance(last.get("content"), list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"]
    )
    for tool in as_list(req.get("tools")):
        if (
            isinstance(tool, dict)
            and isinstance(tool.get("name"), str)
            and tool.get("type", "custom") == "custom"
        ):
            schema = tool.get("input_schema")
            conv.tools.append(ToolSpec(tool["name"], schema if isinstance(schema, dict) else None))
    choice = req.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "none":
            conv.tool_mode = "none"
        elif kind == "any":
            conv.tool_mode = "required"
        elif kind == "tool" and isinstance(choice.get("name"), str):
            conv.tool_mode = "required"
            conv.forced_tool = choice["name"]
    thinking = req.get("thinking")
    conv.thinking = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    config = req.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else req.get("output_format")
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        conv.response_schema = fmt["schema"]
    return conv


def usage_json(plan: Plan) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        "cache_creation_input_tokens": plan.cache_creation_tokens,
        "cache_read_input_tokens": plan.cached_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": plan.cache_creation_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": plan.output_tokens + plan.reasoning_tokens,
        "service_tier": "standard",
    }


def _redacted(plan: Plan) -> str:
    return "EmwKAhgBEgy" + plan.signature[:40]


def content_blocks(plan: Plan, redacted: bool, tool_id: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if plan.thinking_pieces:
        blocks.append({"type": "thinking", "thinking": plan.thinking, "signature": plan.signature})
        if redacted:
            blocks.append({"type": "redacted_thinking", "data": _redacted(plan)})
    if plan.tool is not None:
        blocks.append({"type": "tool_use", "id": tool_id, "name": plan.tool.name, "input": plan.tool.args})
    else:
        blocks.append({"type": "text", "text": plan.text})
    return blocks


def message_json(model: str, plan: Plan, redacted: bool, msg_id: str) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(plan, redacted, new_id("toolu_")),
        "stop_reason": _STOP[plan.finish],
        "stop_sequence": None,
        "usage": usage_json(plan),
    }


def stream_events(model: str, plan: Plan, redacted: bool) -> list[Event]:
    usage = usage_json(plan)
    start_usage = {**usage, "output_tokens": 1}
    ev: list[Event] = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": ID_MARK,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
            "message_start",
        )
    ]
    index = 0

    def start(block: dict[str, Any]) -> None:
        ev.append(
            sse(
                {"type": "content_block_start", "index": index, "content_block": block}, "content_block_start"
            )
        )
        if index == 0:
            ev.append(sse({"type": "ping"}, "ping"))

    def delta(d: dict[str, Any]) -> None:
        ev.append(sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta"))

    def stop() -> None:
        nonlocal index
        ev.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1

    if plan.thinking_pieces:
        start({"type": "thinking", "thinking": "", "signature": ""})
        for piece in plan.thinking_pieces:
            delta({"type": "thinking_delta", "thinking": piece})
        delta({"type": "signature_delta", "signature": plan.signature})
        stop()
        if redacted:
            start({"type": "redacted_thinking", "data": _redacted(plan)})
            stop()
    if plan.tool is not None:
        start({"type": "tool_use", "id": new_id("toolu_"), "name": plan.tool.name, "input": {}})
        for frag in plan.tool.fragments:
            delta({"type": "input_json_delta", "partial_json": frag})
    else:
        start({"type": "text", "text": ""})
        for piece in plan.text_pieces:
            delta({"type": "text_delta", "text": piece})
    stop()
    final_usage = {
        k: usage[k]
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    }
    ev.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _STOP[plan.finish], "stop_sequence": None},
                "usage": final_usage,
            },
            "message_delta",
        )
    )
    ev.append(sse({"type": "message_stop"}, "message_stop"))
    return ev


_ERROR_EVENT: Event = sse(
    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error"
)


class AnthropicProvider:
    name = "anthropic"
    default_framing = "lf"

    def api_key(self, headers: HeaderView, query: str) -> str | None:
        key = headers.get("x-api-key")
        if isinstance(key, str):
            return key
        return bearer_token(headers)

    def error(self, status: int, message: str | None = None, retry_after: float | None = None) -> Reply:
        return error_reply(status, error_body(status, message), retry_after)

    def precheck(self, ctx: Ctx) -> Reply | None:
        want = ctx.config.require_api_key
        if want is not None and self.api_key(ctx.headers, ctx.query) != want:
            return self.error(401)
        if "anthropic-version" not in ctx.headers:
            return self.error(400, "anthropic-version: header is required")
        return None

    def ratelimit_headers(self, ep: EndpointState, now: float, status: int) -> Headers:
        lreq, rreq, ltok, rtok, reset = ep.ratelimit(now)
        if status == 429:
            rreq = 0
        at = _reset_iso(round(now + reset))
        return [
            ("request-id", new_id("req_")),
            ("anthropic-ratelimit-requests-limit", str(lreq)),
            ("anthropic-ratelimit-requests-remaining", str(rreq)),
            ("anthropic-ratelimit-requests-reset", at),
            ("anthropic-ratelimit-tokens-limit", str(ltok)),
            ("anthropic-ratelimit-tokens-remaining", str(rtok)),
            ("anthropic-ratelimit-tokens-reset", at),
            ("anthropic-ratelimit-input-tokens-limit", str(ltok)),
            ("anthropic-ratelimit-input-tokens-remaining", str(rtok)),
            ("anthropic-ratelimit-input-tokens-reset", at),
        ]

    def _load(self, ctx: Ctx) -> dict[str, Any]:
        try:
            req = orjson.loads(ctx.body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest("There was an issue with your request body: invalid JSON") from exc
        if not isinstance(req, dict):
            raise BadRequest("Request body must be a JSON object")
        return req

    def _plan(self, ctx: Ctx, conv: Conversation) -> Plan:
        cfg = ctx.config
        return make_plan(
            "anthropic",
            conv,
            cfg.chunks,
            cfg.cached_tokens,
            cfg.cache_creation_tokens,
            cfg.reasoning_tokens,
            lambda o: orjson.dumps(o).decode(),
            tool_call=cfg.tool_call,
        )

    def handle(self, ctx: Ctx) -> Reply | StreamReply:
        action = ctx.action
        try:
            if action == "messages":
                return self._messages(ctx)
            if action == "count_tokens":
                conv = parse_conversation(self._load(ctx), need_max_tokens=False)
                plan = self._plan(ctx, conv)
                return json_reply(200, {"input_tokens": plan.prompt_tokens}, cacheable=True)
            if action.startswith("batch_"):
                return self._batches(ctx)
            if action == "models":
                data = [
                    {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                    for m in MODELS
                ]
                return json_reply(
                    200, {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
                )
        except BadRequest as exc:
            return self.error(400, str(exc))
        return self.error(404, f"Not found: {ctx.method} {ctx.extra.get('path', '')}")

    def _messages(self, ctx: Ctx) -> Reply | StreamReply:
        req = self._load(ctx)
        conv = parse_conversation(req)
        plan = self._plan(ctx, conv)
        prompt_cache.apply(plan, conv, ctx.endpoint, "anthropic", time.monotonic())
        model: str = req["model"]
        tokens = plan.prompt_tokens + plan.output_tokens
        redacted = ctx.config.redacted_thinking
        if req.get("stream") is True:
            return StreamReply(
                [SSE_CT],
                stream_events(model, plan, redacted),
                _ERROR_EVENT,
                tokens=tokens,
                id_prefix="msg_",
                cacheable=plan.tool is None,
            )
        body = message_json(model, plan, redacted, ID_MARK)
        return Reply(
            200, orjson.dumps(body), [JSON_CT], tokens=tokens, id_prefix="msg_", cacheable=plan.tool is None
        )

    # ---- Message Batches ------------------------------------------------------------------------

    def _batch_json(self, ctx: Ctx, batch: Batch, now: float) -> dict[str, Any]:
        ended = now >= batch.ends_at
        canceled = batch.cancel_initiated_at is not None
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if not ended:
            counts["processing"] = len(batch.results)
        else:
            for _, result in batch.results:
                counts["canceled" if canceled else result["type"]] += 1
        status = "ended" if ended else ("canceling" if canceled else "in_progress")
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": _iso(batch.ends_at) if ended else None,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + 86400),
            "archived_at": None,
            "cancel_initiated_at": _iso(batch.cancel_initiated_at)
            if batch.cancel_initiated_at is not None
            else None,
            "results_url": f"{ctx.base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def _batches(self, ctx: Ctx) -> Reply:
        now = time.time()
        batches = ctx.endpoint.batches
        action = ctx.action
        if action == "batch_create":
            return self._batch_create(ctx, now)
        if action == "batch_list":
            data = [self._batch_json(ctx, b, now) for b in reversed(batches.values())]
            return json_reply(
                200,
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                },
            )
        batch = batches.get(ctx.arg)
        if batch is None:
            return self.error(404, f"No message batch found with id {ctx.arg!r}")
        if action == "batch_get":
            return json_reply(200, self._batch_json(ctx, batch, now))
        if action == "batch_cancel":
            if now < batch.ends_at and batch.cancel_initiated_at is None:
                out = self._batch_json(ctx, batch, now)
                batch.cancel_initiated_at = now
                batch.ends_at = now  # the cancel answer says "canceling"; later reads see "ended"
                out["processing_status"] = "canceling"
                out["cancel_initiated_at"] = _iso(now)
                return json_reply(200, out)
            return json_reply(200, self._batch_json(ctx, batch, now))
        if action == "batch_results":
            if now < batch.ends_at:
                return self.error(400, f"Message batch {batch.id} is still processing")
            lines = []
            for custom_id, result in batch.results:
                res = {"type": "canceled"} if batch.cancel_initiated_at is not None else result
                lines.append(orjson.dumps({"custom_id": custom_id, "result": res}))
            return Reply(200, b"\n".join(lines) + b"\n", [("content-type", "application/binary")])
        if action == "batch_delete":
            if now < batch.ends_at:
                return self.error(400, "Message batch must be ended before it can be deleted")
            del batches[batch.id]
            return json_reply(200, {"id": batch.id, "type": "message_batch_deleted"})
        return self.error(404)

    def _batch_create(self, ctx: Ctx, now: float) -> Reply:
        req = self._load(ctx)
        items = req.get("requests")
        if not isinstance(items, list) or not items:
            raise BadRequest("requests: at least one request is required")
        results: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
                raise BadRequest(f"requests.{i}.custom_id: Field required")
            custom_id: str = item["custom_id"]
            if custom_id in seen:
                raise BadRequest(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
            params = item.get("params")
            if not isinstance(params, dict):
                raise BadRequest(f"requests.{i}.params: Field required")
            try:
                plan = self._plan(ctx, parse_conversation(params))
            except BadRequest as exc:
                results.append((custom_id, {"type": "errored", "error": error_body(400, str(exc))}))
                continue
            message = message_json(params["model"], plan, ctx.config.redacted_thinking, new_id("msg_"))
            results.append((custom_id, {"type": "succeeded", "message": message}))
        batch = Batch(new_id("msgbatch_"), now, now + ctx.config.batch_delay_ms / 1000, results)
        ctx.endpoint.batches[batch.id] = batch
        return json_reply(200, self._batch_json(ctx, batch, now))


PROVIDER = AnthropicProvider()
