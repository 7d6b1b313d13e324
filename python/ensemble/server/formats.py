"""Provider-format routes (see docs/formats.md): Anthropic `/v1/messages` (+ `count_tokens`) and Gemini
`:generateContent` / `:streamGenerateContent`. Same pipeline as every inference route (see
server/inference.py); only parsing and rendering differ."""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson

from ensemble.api import anthropic, gemini
from ensemble.api.common import decode_object, estimate_tokens
from ensemble.errors import EnsembleError, InvalidRequest, NotFound
from ensemble.server.http import Request
from ensemble.server.inference import (
    answer_headers,
    apply_session_header,
    records_refusals,
    run_generate,
    run_stream,
)
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.storage.keys import KeyRecord
from ensemble.types import InferenceResponse, StreamDelta


class AnthropicEvents:
    content_type = "text/event-stream; charset=utf-8"
    passthrough: str | None = "anthropic"

    def __init__(self, request_id: str, model: str) -> None:
        self._events = anthropic.MessageEvents(request_id, model)

    def start(self) -> bytes:
        return self._events.start()

    def render(self, delta: StreamDelta) -> bytes | None:
        return self._events.render(delta)

    def finish(self, response: InferenceResponse) -> bytes:
        return self._events.finish(response)

    def error(self, error: EnsembleError, request_id: str) -> bytes:
        return anthropic.sse_error(error)


@records_refusals
async def messages(rt: Runtime, req: Request) -> None:
    key = req.client
    request = anthropic.parse_request(await req.body(rt.config.server.max_request_bytes))
    apply_session_header(request, req)
    beta = req.header("anthropic-beta")
    if beta:  # beta features the client opted into go on to Claude (other adapters ignore the key)
        request.provider_config = {**(request.provider_config or {}), "anthropic_beta": beta}
    if request.stream:
        await run_stream(rt, req, key, request, AnthropicEvents(req.request_id, request.model))
        return
    ctx, response = await run_generate(rt, req, key, request)
    req.send(
        200,
        anthropic.render_response(response),
        headers=answer_headers(ctx, response),
    )


async def count_tokens(rt: Runtime, req: Request) -> None:
    key = req.client
    request = anthropic.parse_request(await req.body(rt.config.server.max_request_bytes), count_only=True)
    _known(rt, key, request.model)
    req.send(200, orjson.dumps({"input_tokens": estimate_tokens(request)}))


def _known(rt: Runtime, key: KeyRecord, model: str) -> None:
    rt.auth.authorize_model(key, model)
    if rt.gateway is not None and not rt.gateway.router.knows(model):
        raise NotFound(f"model {model!r} is not served by this gateway", code="model_not_found")


@records_refusals
async def generate_content(rt: Runtime, req: Request) -> None:
    key = req.client
    body = await req.body(rt.config.server.max_request_bytes)
    request = gemini.parse_request(body, req.params["model"], stream=False)
    apply_session_header(request, req)
    ctx, response = await run_generate(rt, req, key, request)
    req.send(200, gemini.render_response(response), headers=answer_headers(ctx, response))


@records_refusals
async def stream_generate_content(rt: Runtime, req: Request) -> None:
    key = req.client
    body = await req.body(rt.config.server.max_request_bytes)
    request = gemini.parse_request(body, req.params["model"], stream=True)
    apply_session_header(request, req)
    sse = (parse_qs(req.scope.query_string or "").get("alt") or [""])[0] == "sse"
    await run_stream(rt, req, key, request, gemini.ChunkStream(req.request_id, request.model, sse))


async def gemini_count_tokens(rt: Runtime, req: Request) -> None:
    """`{contents, …}` or `{generateContentRequest: {…}}` (as google-genai sends) → `{totalTokens}`."""
    key = req.client
    body = await req.body(rt.config.server.max_request_bytes)
    data = decode_object(body)
    wrapped = data.get("generateContentRequest")
    if wrapped is not None:
        if not isinstance(wrapped, dict):
            raise InvalidRequest("generateContentRequest: expected an object", param="generateContentRequest")
        body = orjson.dumps(wrapped)
    request = gemini.parse_request(body, req.params["model"], stream=False)
    _known(rt, key, request.model)
    req.send(200, orjson.dumps({"totalTokens": estimate_tokens(request)}))


ROUTES = [
    Route("POST", "/v1/messages", messages, family="anthropic"),
    Route("POST", "/v1/messages/count_tokens", count_tokens, family="anthropic"),
    # Google serves the same methods under v1beta and v1; recent google-genai SDKs default to v1.
    *(
        Route("POST", f"/{version}/models/{{model}}:{verb}", handler, family="gemini")
        for version in ("v1beta", "v1")
        for verb, handler in (
            ("generateContent", generate_content),
            ("streamGenerateContent", stream_generate_content),
            ("countTokens", gemini_count_tokens),
        )
    ),
]
