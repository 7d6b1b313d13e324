"""The OpenAI Responses routes: `POST /v1/responses` (JSON and SSE), `GET` / `DELETE
/v1/responses/{response_id}`. Same pipeline as chat completions (server/inference.py); only parsing,
rendering and the stored conversation behind `previous_response_id` are this module's.

A stored response is the ordinary stored answer of its request (the `responses` table, per key)
plus its `conversation`: the canonical input it was answered from and the parameters the response
object echoes. `previous_response_id` continues from there: its input, its answer, then the new input.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import msgspec
import orjson

from ensemble.api import responses, responses_events, responses_render
from ensemble.errors import InvalidRequest, NotFound, Overloaded
from ensemble.server.http import Request
from ensemble.server.inference import proxied_headers, run_generate, run_stream
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage.keys import KeyRecord
from ensemble.types import (
    ContentBlock,
    InferenceResponse,
    Message,
    TextBlock,
    TextContent,
    ThinkingBlock,
    ThinkingContent,
    ToolCall,
    ToolCallBlock,
)

log = logging.getLogger("ensemble.responses")


class Conversation(msgspec.Struct):
    """What is kept beside a stored answer (the `conversation` column)."""

    messages: list[Message]  # the whole input it was answered from, instructions excluded
    echo: dict[str, Any]
    previous_response_id: str | None = None
    include_encrypted: bool = False


_conversation = msgspec.json.Decoder(Conversation)
_answer = msgspec.json.Decoder(InferenceResponse)


class StoredResponse(msgspec.Struct):
    answer: InferenceResponse
    conversation: Conversation
    created_at: int
    request_id: str
    created_iso: str  # as stored (it names the S3 objects' day)


def answer_message(r: InferenceResponse) -> Message:
    """The answer as the assistant turn of the next request's input."""
    blocks: list[ContentBlock] = []
    calls: list[ToolCall] = []
    for b in r.blocks:
        if isinstance(b, TextBlock):
            blocks.append(TextContent(text=b.text))
        elif isinstance(b, ThinkingBlock):
            blocks.append(
                ThinkingContent(
                    thinking=b.thinking, signature=b.signature, origin=b.origin, item_id=b.item_id
                )
            )
        elif isinstance(b, ToolCallBlock):
            calls.append(
                ToolCall(
                    id=b.tool_call.id, name=b.tool_call.name, arguments=b.tool_call.raw_arguments or "{}"
                )
            )
    return Message(role="assistant", content=blocks, tool_calls=calls or None)


def _epoch(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


async def load(rt: Runtime, key: KeyRecord, resp_id: str, param: str | None = None) -> StoredResponse:
    """The stored response `resp_id` of this key, or a 404 (the same for another key's: no leak).
    This instance's SQLite first, then S3 (another instance's answer, with persistence.s3); a
    DELETE on any instance leaves a tombstone in Redis that hides every remaining copy."""
    assert rt.db is not None and rt.request_log is not None
    await rt.request_log.flush()  # this worker's unwritten answers become visible
    ids = responses_render.request_ids(resp_id)
    marks = ",".join("?" * len(ids))
    async with rt.db.execute(
        f"SELECT body, conversation, created_at, request_id FROM responses WHERE request_id IN ({marks}) "
        "AND key_id = ? AND body IS NOT NULL AND conversation IS NOT NULL",
        (*ids, key.key_id),
    ) as cur:
        row = await cur.fetchone()
    if row is not None:
        if await rt.scaleout.response_deleted(key.key_id, str(row[3])):
            await _forget_locally(rt, key, (str(row[3]),))
        else:
            return _stored(bytes(row[0]), bytes(row[1]), str(row[2]), str(row[3]))
    for request_id in ids:
        try:
            shared = await rt.scaleout.fetch_conversation(request_id, key.key_id)
        except Exception as e:  # botocore/network errors stop here: the caller gets a clean 503
            log.warning("S3 lookup of %s failed: %s", request_id[:100], type(e).__name__)
            raise Overloaded("stored responses are unavailable right now; retry shortly") from None
        if shared is not None:
            found, conversation = shared
            return _stored(found.body, conversation, found.created_at, request_id)
    raise NotFound(f"Response with id {resp_id!r} not found.", code="response_not_found", param=param)


def _stored(body: bytes, conversation: bytes, created_at: str, request_id: str) -> StoredResponse:
    return StoredResponse(
        answer=_answer.decode(body),
        conversation=_conversation.decode(conversation),
        created_at=_epoch(created_at),
        request_id=request_id,
        created_iso=created_at,
    )


async def _forget_locally(rt: Runtime, key: KeyRecord, ids: tuple[str, ...]) -> None:
    assert rt.db is not None
    marks = ",".join("?" * len(ids))
    await rt.db.execute(
        f"UPDATE responses SET body = NULL, conversation = NULL WHERE request_id IN ({marks}) AND key_id = ?",
        (*ids, key.key_id),
    )


def _check_hosted_tools(rt: Runtime, model: str, config: dict[str, Any] | None) -> None:
    """Hosted tools run only where OpenAI runs them: every provider of the model must be an
    OpenAI-type one called through its Responses API (docs/responses.md)."""
    hosted = (config or {}).get(responses.HOSTED_KEY)
    if not hosted or rt.gateway is None:
        return
    providers = rt.gateway.router.models().get(model)
    if not providers:
        return  # unknown model: the gateway answers 404
    if all(p.type == "openai" and p.models[model].api == "responses" for p in providers):
        return
    name = hosted[0].get("type")
    raise InvalidRequest(
        f"tools: hosted tool {name!r} runs only on OpenAI models served through the Responses API "
        f"(api: responses); {model!r} is not, so send function tools instead",
        param="tools",
        code="unsupported_tool",
    )


async def create(rt: Runtime, req: Request) -> None:
    key = req.client
    call = responses.parse_request(await req.body(rt.config.server.max_request_bytes))
    request = call.request
    own_input = call.input_messages
    if call.previous_response_id is not None:
        previous = await load(rt, key, call.previous_response_id, param="previous_response_id")
        history = [*previous.conversation.messages, answer_message(previous.answer)]
        own_input = history + own_input
        # This request's instructions (the earlier ones are not carried over, as in OpenAI's API).
        instructions = request.messages[:1] if call.echo["instructions"] else []
        request.messages = instructions + own_input
    if not request.messages:
        raise InvalidRequest("input: must hold at least one item", param="input")
    if request.session_id is None:
        request.session_id = req.header("x-session-id")
    _check_hosted_tools(rt, request.model, request.provider_config)
    conversation = None
    if call.store:
        conversation = msgspec.json.encode(
            Conversation(own_input, call.echo, call.previous_response_id, call.include_encrypted)
        )
    if request.stream:
        writer = responses_events.EventWriter(
            req.request_id, request.model, call.echo, call.previous_response_id, call.include_encrypted
        )
        await run_stream(rt, req, key, request, writer, store=call.store, conversation=conversation)
        return
    ctx, response = await run_generate(rt, req, key, request, store=call.store, conversation=conversation)
    body = responses_render.render_json(
        response, call.echo, call.previous_response_id, call.include_encrypted
    )
    headers = proxied_headers(ctx, response.performance.overhead_ms)
    headers.append(("x-ensemble-cost-usd", response.cost))
    req.send(200, body, headers=headers)


async def retrieve(rt: Runtime, req: Request) -> None:
    key = req.client
    stored = await load(rt, key, req.params["response_id"])
    conv = stored.conversation
    body = responses_render.render_json(
        stored.answer, conv.echo, conv.previous_response_id, conv.include_encrypted, stored.created_at
    )
    req.send(200, body)


async def delete(rt: Runtime, req: Request) -> None:
    key = req.client
    resp_id = req.params["response_id"]
    stored = await load(rt, key, resp_id)  # 404 unless this key's
    await _forget_locally(rt, key, responses_render.request_ids(resp_id))
    try:  # the S3 copies and the tombstone the other instances read
        await rt.scaleout.delete_response(key.key_id, stored.request_id, stored.created_iso)
    except Exception as e:  # Redis/S3 unreachable: the client retries the DELETE
        log.warning(
            "deleting stored response %s everywhere failed: %s", stored.request_id[:100], type(e).__name__
        )
        raise Overloaded("the response could not be deleted everywhere right now; retry shortly") from None
    req.send(200, orjson.dumps({"id": resp_id, "object": "response", "deleted": True}))


ROUTES = [
    Route("POST", "/v1/responses", create, family="openai"),
    Route("GET", "/v1/responses/{response_id}", retrieve, family="openai"),
    Route("DELETE", "/v1/responses/{response_id}", delete, family="openai"),
]
