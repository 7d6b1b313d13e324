"""OpenAI Responses wire format: ``POST /v1/responses`` (JSON + the full SSE event stream).

The answer follows the shared rules of content.py. Reasoning is on when the request has
``reasoning.effort`` (other than ``none``/``minimal``): a ``reasoning`` item comes first, with a
summary when ``reasoning.summary`` is set and ``encrypted_content`` when ``include`` asks for
``reasoning.encrypted_content``. Like OpenAI, the fake checks every ``encrypted_content`` sent
back in ``input``: one it did not make is a 400, so a gateway that hands another provider's
signature to it is caught.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from .content import Conversation, Plan, ToolSpec, as_list, new_id
from .wire import ID_MARK, JSON_CT, SSE_CT, TS_MARK, Event, Reply, StreamReply, sse

_MARK = b"fake-openai-reasoning:"


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def encrypted(thinking: str) -> str:
    digest = hashlib.sha256(thinking.encode()).hexdigest()[:16]
    return base64.b64encode(_MARK + digest.encode()).decode()


def _verify(value: Any, where: str) -> None:
    try:
        ok = isinstance(value, str) and base64.b64decode(value, validate=True).startswith(_MARK)
    except ValueError:
        ok = False
    if not ok:
        raise BadRequest(f"The encrypted content for {where} could not be verified.", "input")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        p.get("text", "") for p in as_list(content) if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def parse_conversation(req: dict[str, Any]) -> Conversation:
    conv = Conversation()
    items = req.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("Invalid 'input': expected a string or a non-empty array of items.", "input")
    chars = len(req["instructions"]) if isinstance(req.get("instructions"), str) else 0
    last = ""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"Invalid value for 'input[{i}]'.", f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            text = _text(item.get("content"))
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"Invalid value for 'input[{i}].role'.", f"input[{i}].role")
            conv.segments.append((str(role), text, False))
            if role == "user":
                conv.last_user_text = text
            last = "user" if role == "user" else "assistant"
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
                raise BadRequest(f"Missing required parameter: 'input[{i}].call_id'.", f"input[{i}]")
            text = str(item.get("arguments", ""))
            last = "assistant"
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise BadRequest(f"Missing required parameter: 'input[{i}].call_id'.", f"input[{i}]")
            text = _text(item.get("output"))
            last = "tool"
        elif kind == "reasoning":
            if item.get("encrypted_content") is not None:
                _verify(item["encrypted_content"], f"input[{i}] ({item.get('id')})")
            text = ""
            last = "assistant"
        else:
            raise BadRequest(
                f"Invalid value: '{kind}'. Supported values are: 'message', ...", f"input[{i}].type"
            )
        chars += len(text)
    conv.prompt_chars = chars
    conv.last_is_user = last == "user"
    conv.last_is_tool_result = last == "tool"
    for tool in as_list(req.get("tools")):
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str):
            params = tool.get("parameters")
            conv.tools.append(ToolSpec(tool["name"], params if isinstance(params, dict) else None))
    choice = req.get("tool_choice")
    if choice in ("none", "auto", "required"):
        conv.tool_mode = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        conv.tool_mode = "required"
        conv.forced_tool = choice.get("name") if isinstance(choice.get("name"), str) else None
    max_tokens = req.get("max_output_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 16:
            raise BadRequest(
                "Invalid 'max_output_tokens': integer below minimum value 16.", "max_output_tokens"
            )
        conv.max_tokens = max_tokens
    reasoning = req.get("reasoning")
    conv.thinking = isinstance(reasoning, dict) and reasoning.get("effort") not in (None, "none", "minimal")
    return conv


def usage_json(plan: Plan) -> dict[str, Any]:
    prompt = plan.prompt_tokens + plan.cached_tokens
    output = plan.output_tokens + plan.reasoning_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": prompt + output,
    }


class _Items:
    """The output items of one answer, with the ids the stream and the final object share."""

    def __init__(self, req: dict[str, Any], plan: Plan) -> None:
        self.plan = plan
        reasoning = req.get("reasoning") if isinstance(req.get("reasoning"), dict) else {}
        self.summary = bool(reasoning.get("summary")) if isinstance(reasoning, dict) else False
        self.encrypted = "reasoning.encrypted_content" in as_list(req.get("include"))
        self.rs_id = new_id("rs_")
        self.msg_id = new_id("msg_")
        self.fc_id = new_id("fc_")
        self.call_id = new_id("call_")

    def reasoning(self, done: bool = True) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.rs_id, "type": "reasoning", "summary": []}
        if done and self.summary:
            item["summary"] = [{"type": "summary_text", "text": self.plan.thinking}]
        if self.encrypted:
            item["encrypted_content"] = encrypted(self.plan.thinking)
        return item

    def message(self, done: bool = True) -> dict[str, Any]:
        content = [{"type": "output_text", "text": self.plan.text, "annotations": [], "logprobs": []}]
        return {
            "id": self.msg_id,
            "type": "message",
            "role": "assistant",
            "status": "completed" if done else "in_progress",
            "content": content if done else [],
        }

    def call(self, done: bool = True) -> dict[str, Any]:
        tool = self.plan.tool
        assert tool is not None
        return {
            "id": self.fc_id,
            "type": "function_call",
            "call_id": self.call_id,
            "name": tool.name,
            "arguments": tool.arguments if done else "",
            "status": "completed" if done else "in_progress",
        }

    def all(self) -> list[dict[str, Any]]:
        out = [self.reasoning()] if self.plan.thinking_pieces else []
        return [*out, self.call() if self.plan.tool else self.message()]


def response_json(
    req: dict[str, Any], model: str, items: _Items | None, status: str, usage: dict[str, Any] | None
) -> dict[str, Any]:
    plan = items.plan if items is not None else None
    incomplete = plan is not None and plan.finish == "length" and status != "in_progress"
    return {
        "id": ID_MARK,
        "object": "response",
        "created_at": TS_MARK,
        "status": "incomplete" if incomplete else status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "model": model,
        "output": items.all() if items is not None and status != "in_progress" else [],
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": req.get("store", True),
        "temperature": req.get("temperature", 1.0),
        "text": req.get("text") or {"format": {"type": "text"}},
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools") or [],
        "top_p": req.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def reply(req: dict[str, Any], model: str, plan: Plan) -> Reply:
    body = response_json(req, model, _Items(req, plan), "completed", usage_json(plan))
    tokens = plan.prompt_tokens + plan.output_tokens
    return Reply(
        200, orjson.dumps(body), [JSON_CT], tokens=tokens, id_prefix="resp_", cacheable=not plan.tool
    )


def stream(req: dict[str, Any], model: str, plan: Plan) -> StreamReply:
    items = _Items(req, plan)
    events: list[Event] = []

    def ev(kind: str, **payload: Any) -> None:
        events.append(sse({"type": kind, "sequence_number": len(events), **payload}, kind))

    ev("response.created", response=response_json(req, model, items, "in_progress", None))
    ev("response.in_progress", response=response_json(req, model, items, "in_progress", None))
    index = 0
    if plan.thinking_pieces:
        rs = items.rs_id
        ev("response.output_item.added", output_index=index, item=items.reasoning(done=False))
        if items.summary:
            part = {"type": "summary_text", "text": ""}
            ev(
                "response.reasoning_summary_part.added",
                item_id=rs,
                output_index=index,
                summary_index=0,
                part=part,
            )
            for piece in plan.thinking_pieces:
                ev(
                    "response.reasoning_summary_text.delta",
                    item_id=rs,
                    output_index=index,
                    summary_index=0,
                    delta=piece,
                )
            text = plan.thinking
            ev(
                "response.reasoning_summary_text.done",
                item_id=rs,
                output_index=index,
                summary_index=0,
                text=text,
            )
            part = {"type": "summary_text", "text": text}
            ev(
                "response.reasoning_summary_part.done",
                item_id=rs,
                output_index=index,
                summary_index=0,
                part=part,
            )
        ev("response.output_item.done", output_index=index, item=items.reasoning())
        index += 1
    if plan.tool:
        fc = items.fc_id
        ev("response.output_item.added", output_index=index, item=items.call(done=False))
        for frag in plan.tool.fragments:
            ev("response.function_call_arguments.delta", item_id=fc, output_index=index, delta=frag)
        ev(
            "response.function_call_arguments.done",
            item_id=fc,
            output_index=index,
            name=plan.tool.name,
            arguments=plan.tool.arguments,
        )
        ev("response.output_item.done", output_index=index, item=items.call())
    else:
        msg = items.msg_id
        ev("response.output_item.added", output_index=index, item=items.message(done=False))
        empty: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        ev("response.content_part.added", item_id=msg, output_index=index, content_index=0, part=empty)
        for piece in plan.text_pieces:
            ev(
                "response.output_text.delta",
                item_id=msg,
                output_index=index,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        ev(
            "response.output_text.done",
            item_id=msg,
            output_index=index,
            content_index=0,
            text=plan.text,
            logprobs=[],
        )
        full: dict[str, Any] = {"type": "output_text", "text": plan.text, "annotations": [], "logprobs": []}
        ev("response.content_part.done", item_id=msg, output_index=index, content_index=0, part=full)
        ev("response.output_item.done", output_index=index, item=items.message())
    final = response_json(req, model, items, "completed", usage_json(plan))
    ev("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
    tokens = plan.prompt_tokens + plan.output_tokens
    # A mid-stream failure as the API sends one: an `error` event, then the terminal
    # `response.failed` (two frames in one Event: the empty line ends the first).
    message = "The server had an error processing your request."
    failure = {"code": "server_error", "message": message}
    error = (
        *sse({"type": "error", "sequence_number": len(events), **failure, "param": None}, "error"),
        b"",
        *sse(
            {
                "type": "response.failed",
                "sequence_number": len(events) + 1,
                "response": {**response_json(req, model, None, "failed", None), "error": failure},
            },
            "response.failed",
        ),
    )
    return StreamReply([SSE_CT], events, error, tokens=tokens, id_prefix="resp_", cacheable=plan.tool is None)
