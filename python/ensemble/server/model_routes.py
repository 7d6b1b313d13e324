"""The provider-format model routes, each answered in its caller's shape (docs/formats.md):
`GET /v1/models[/{model_id}]` (Anthropic's shape for Anthropic SDKs, Gemini's for Gemini SDKs that
use `/v1/`, OpenAI's otherwise: the route is `shared`, the dispatcher names the family) and
`GET /v1beta/models[/{model}]` (Gemini's)."""

from __future__ import annotations

from urllib.parse import parse_qs

from ensemble.api import model_listing
from ensemble.api.model_listing import ModelInfo
from ensemble.errors import InvalidRequest, NotFound
from ensemble.server.http import Request
from ensemble.server.routes import Route
from ensemble.server.runtime import Runtime


def served_models(rt: Runtime) -> list[ModelInfo]:
    assert rt.gateway is not None
    out = []
    for name, providers in rt.gateway.router.models().items():
        out.append(model_listing.model_info(name, providers[0].models[name], providers[0].name))
    return out


def _find(rt: Runtime, model_id: str) -> ModelInfo:
    model_id = model_id.removeprefix("models/")
    for m in served_models(rt):
        if m.id == model_id:
            return m
    raise NotFound(f"model {model_id!r} is not served by this gateway", code="model_not_found")


def _query(req: Request) -> dict[str, str]:
    """The query's parameters, first value of each."""
    return {k: v[0] for k, v in parse_qs(req.scope.query_string or "").items()}


def _int_param(query: dict[str, str], name: str, default: int, maximum: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: expected an integer, got {raw[:50]!r}", param=name) from None
    if not 1 <= value <= maximum:
        raise InvalidRequest(f"{name}: must be between 1 and {maximum} (got {value})", param=name)
    return value


async def list_models(rt: Runtime, req: Request) -> None:
    models = served_models(rt)
    query = _query(req)
    if req.family == "anthropic":
        body = model_listing.anthropic_page(
            models,
            limit=_int_param(query, "limit", 20, 1000),
            after_id=query.get("after_id"),
            before_id=query.get("before_id"),
        )
    elif req.family == "gemini":
        size = _int_param(query, "pageSize", 50, 1000)
        token = query.get("pageToken") or "0"
        if not token.isdigit():
            raise InvalidRequest("pageToken: not a page token this gateway handed out", param="pageToken")
        body = model_listing.gemini_page(models, page_size=size, offset=int(token))
    else:
        body = model_listing.openai_list(models)
    req.send(200, body)


async def get_model(rt: Runtime, req: Request) -> None:
    model = _find(rt, req.params["model"])
    if req.family == "anthropic":
        req.send(200, model_listing.anthropic_model(model))
    elif req.family == "gemini":
        req.send(200, model_listing.gemini_model(model))
    else:
        req.send(200, model_listing.openai_model(model))


ROUTES = [
    Route("GET", "/v1/models", list_models, family="openai", shared=True),
    Route("GET", "/v1/models/{model}", get_model, family="openai", shared=True),
    Route("GET", "/v1beta/models", list_models, family="gemini"),
    Route("GET", "/v1beta/models/{model}", get_model, family="gemini"),
]
