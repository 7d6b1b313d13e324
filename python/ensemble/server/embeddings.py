"""Embeddings routes (see docs/formats.md): OpenAI `POST /v1/embeddings` and Gemini
`:embedContent` / `:batchEmbedContents`. The dispatcher authenticated the caller (`req.client`);
the call goes through the gateway like a chat answer (admission, routing, failover, pricing,
request log), only parsing and rendering are the embeddings' own."""

from __future__ import annotations

from collections.abc import Callable

from ensemble.api import embeddings
from ensemble.server.http import Headers, Request
from ensemble.server.inference import proxied_headers, run_call
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime
from ensemble.types import EmbeddingRequest, EmbeddingResponse


async def _embed(
    rt: Runtime, req: Request, request: EmbeddingRequest, render: Callable[[EmbeddingResponse], bytes]
) -> None:
    gateway = rt.gateway
    assert gateway is not None
    ctx, response = await run_call(
        rt, req, req.client, request.model, lambda ctx: gateway.embed(request, ctx)
    )
    headers: Headers = proxied_headers(ctx, response.performance.overhead_ms)
    headers.append(("x-ensemble-cost-usd", response.cost))
    req.send(200, render(response), headers=headers)


async def openai_embeddings(rt: Runtime, req: Request) -> None:
    request, base64 = embeddings.parse_openai(await req.body(rt.config.server.max_request_bytes))
    await _embed(rt, req, request, lambda r: embeddings.render_openai(r, base64))


async def embed_content(rt: Runtime, req: Request) -> None:
    body = await req.body(rt.config.server.max_request_bytes)
    request = embeddings.parse_gemini_single(body, req.params["model"])
    await _embed(rt, req, request, embeddings.render_gemini_single)


async def batch_embed_contents(rt: Runtime, req: Request) -> None:
    body = await req.body(rt.config.server.max_request_bytes)
    request = embeddings.parse_gemini_batch(body, req.params["model"])
    await _embed(rt, req, request, embeddings.render_gemini_batch)


ROUTES = [
    Route("POST", "/v1/embeddings", openai_embeddings, family="openai"),
    # Google serves the same methods under v1beta and v1, like :generateContent (server/formats.py).
    *(
        Route("POST", f"/{version}/models/{{model}}:{verb}", handler, family="gemini")
        for version in ("v1beta", "v1")
        for verb, handler in (("embedContent", embed_content), ("batchEmbedContents", batch_embed_contents))
    ),
]
