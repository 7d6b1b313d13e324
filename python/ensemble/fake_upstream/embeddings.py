"""Embeddings wire formats: OpenAI ``POST /v1/embeddings`` and Gemini ``:embedContent`` /
``:batchEmbedContents``.

Vectors are deterministic: each input seeds a generator (its text, or its token ids), the model's
native width of Gaussian components is drawn and scaled to unit length, then, as both APIs shorten
vectors, the first ``dimensions`` / ``outputDimensionality`` components are kept and scaled to unit
length again. Components are float32 values, so an OpenAI ``base64`` answer (little-endian
float32) decodes to exactly the numbers of the ``float`` one. Tokens: ``ceil(chars / 4)`` per text
(at least 1), the id count per token array; OpenAI reports them in ``usage``, Gemini reports none.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from collections.abc import Callable
from typing import Any

import orjson

from .content import count_tokens
from .wire import JSON_CT, Ctx, Reply, json_reply

OPENAI_WIDTHS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
GEMINI_WIDTHS = {"gemini-embedding-001": 3072, "text-embedding-004": 768, "embedding-001": 768}
DEFAULT_WIDTH = 1536
# Models that always answer at their full width (OpenAI refuses `dimensions` for them).
FIXED_WIDTH = frozenset({"text-embedding-ada-002"})


def vector(seed: str, width: int, dimensions: int | None = None) -> list[float]:
    """The fake's embedding of `seed` (text, or token ids joined by spaces): float32 components."""
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    full = [rng.gauss(0.0, 1.0) for _ in range(width)]
    kept = full[: dimensions or width]
    norm = math.sqrt(sum(c * c for c in kept)) or 1.0
    packed = struct.pack(f"<{len(kept)}f", *(c / norm for c in kept))
    return list(struct.unpack(f"<{len(kept)}f", packed))


def to_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def _is_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _openai_inputs(value: Any) -> list[str]:
    """Seeds of each input (token arrays as their ids), as the API accepts input."""
    if isinstance(value, str):
        value = [value]
    if _is_ids(value):
        return [" ".join(map(str, value))]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) and v for v in value):
            return list(value)
        if all(_is_ids(v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise BadRequest(
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        "input",
    )


def openai_reply(ctx: Ctx, error: Callable[..., dict[str, Any]]) -> Reply:
    """`error(status, message, param)` renders an OpenAI error body."""
    try:
        req = orjson.loads(ctx.body)
    except orjson.JSONDecodeError:
        return json_reply(400, error(400, "We could not parse the JSON body of your request.", None))
    if not isinstance(req, dict) or not isinstance(req.get("model"), str) or not req["model"]:
        return json_reply(400, error(400, "you must provide a model parameter", "model"))
    model: str = req["model"]
    dims = req.get("dimensions")
    encoding = req.get("encoding_format", "float")
    try:
        if "input" not in req:
            raise BadRequest("Missing required parameter: 'input'.", "input")
        seeds = _openai_inputs(req["input"])
        if encoding not in ("float", "base64"):
            raise BadRequest(f"Invalid value for 'encoding_format': {encoding!r}.", "encoding_format")
        if dims is not None:
            if model in FIXED_WIDTH:
                raise BadRequest("This model does not support specifying dimensions.", "dimensions")
            if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
                raise BadRequest(f"Invalid value for 'dimensions': {dims!r}.", "dimensions")
            if dims > OPENAI_WIDTHS.get(model, DEFAULT_WIDTH):
                raise BadRequest(
                    f"Invalid value for 'dimensions': {model} supports at most "
                    f"{OPENAI_WIDTHS.get(model, DEFAULT_WIDTH)}.",
                    "dimensions",
                )
    except BadRequest as exc:
        return json_reply(400, error(400, exc.message, exc.param))
    width = OPENAI_WIDTHS.get(model, DEFAULT_WIDTH)
    data = []
    for i, seed in enumerate(seeds):
        values = vector(seed, width, dims)
        data.append(
            {
                "object": "embedding",
                "index": i,
                "embedding": to_base64(values) if encoding == "base64" else values,
            }
        )
    tokens = sum(_tokens(req["input"], seed) for seed in seeds)
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Reply(200, orjson.dumps(body), [JSON_CT], tokens=tokens, cacheable=True)


def _tokens(raw_input: Any, seed: str) -> int:
    pre_tokenised = isinstance(raw_input, list) and raw_input and not isinstance(raw_input[0], str)
    return len(seed.split(" ")) if pre_tokenised else count_tokens(len(seed))


# -- Gemini ------------------------------------------------------------------------------------


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _gemini_text(one: Any, where: str) -> str:
    content = one.get("content") if isinstance(one, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise BadRequest(f"* {where}content.parts: contents must not be empty")
    texts = [p.get("text") if isinstance(p, dict) else None for p in parts]
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest(f"* {where}content.parts: only text parts are supported")
    return "\n".join(str(t) for t in texts)


def _gemini_values(one: dict[str, Any], model: str, where: str) -> list[float]:
    text = _gemini_text(one, where)
    dims = _get(one, "outputDimensionality", "output_dimensionality")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise BadRequest(f"* {where}output_dimensionality: must be a positive integer")
    width = GEMINI_WIDTHS.get(model, 768)
    if dims is not None and dims > width:
        raise BadRequest(f"* {where}output_dimensionality: {model} supports at most {width}")
    return vector(text, width, dims)


def gemini_reply(ctx: Ctx, error: Callable[..., Reply]) -> Reply:
    """`error(status, message)` renders a Gemini error reply."""
    model = ctx.arg.removeprefix("models/")
    try:
        req = orjson.loads(ctx.body)
    except orjson.JSONDecodeError:
        return error(400, "Invalid JSON payload received.")
    if not isinstance(req, dict):
        return error(400, "Invalid JSON payload received.")
    try:
        if ctx.action == "embed":
            body: dict[str, Any] = {"embedding": {"values": _gemini_values(req, model, "")}}
            return Reply(200, orjson.dumps(body), [JSON_CT], tokens=1, cacheable=True)
        requests = req.get("requests")
        if not isinstance(requests, list) or not requests:
            raise BadRequest("* requests: must not be empty")
        embeddings = []
        for i, one in enumerate(requests):
            if not isinstance(one, dict):
                raise BadRequest(f"* requests[{i}]: expected an object")
            named = one.get("model")
            if not isinstance(named, str) or named.removeprefix("models/") != model:
                raise BadRequest(
                    f"* BatchEmbedContentsRequest.requests[{i}].model: model name in the request must match the "
                    f"model of the batch (models/{model}); got {named!r}"
                )
            embeddings.append({"values": _gemini_values(one, model, f"requests[{i}].")})
    except BadRequest as exc:
        return error(400, exc.message)
    return Reply(
        200, orjson.dumps({"embeddings": embeddings}), [JSON_CT], tokens=len(embeddings), cacheable=True
    )
