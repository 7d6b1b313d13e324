"""Embeddings as ingress formats: OpenAI `POST /v1/embeddings` and Gemini `:embedContent` /
`:batchEmbedContents`, parsed into an EmbeddingRequest and rendered from an EmbeddingResponse in the
shapes the official SDKs read (`openai` CreateEmbeddingResponse, google-genai EmbedContentResponse).

OpenAI `input` is a string, a list of strings, or token ids (a list of integers, or a list of such
lists), as the SDK's type allows; token ids go only to OpenAI-type providers (others tokenise
themselves and refuse them with a 400 naming `input`). `encoding_format: base64` answers carry the
little-endian float32 bytes base64-encoded, which is what the `openai` SDK asks for by default.
"""

from __future__ import annotations

from typing import Any

import orjson

from ensemble import vectors
from ensemble.api.common import decode_object
from ensemble.errors import InvalidRequest
from ensemble.types import EmbeddingRequest, EmbeddingResponse

MAX_INPUTS = 2048  # OpenAI's limit per request; Gemini's batch limit is lower and enforced upstream

_OPENAI_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})


def _dimensions(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"{name}: must be a positive integer (got {value!r})", param=name.split(".")[0])
    return value


def _openai_inputs(value: Any) -> list[str] | list[list[int]]:
    problem = (
        "input: must be a string, a list of strings, or token ids (a list of integers or of integer lists)"
    )
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidRequest(f"{problem}; got {type(value).__name__}", param="input")
    if not value:
        raise InvalidRequest("input: must not be an empty list", param="input")
    if all(_is_token(v) for v in value):
        return [value]  # one pre-tokenised input
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(
            f"input: at most {MAX_INPUTS} inputs per request (got {len(value)})", param="input"
        )
    if all(isinstance(v, str) for v in value):
        for i, text in enumerate(value):
            if not text:
                raise InvalidRequest(f"input[{i}]: must not be an empty string", param="input")
        return value
    if all(isinstance(v, list) for v in value):
        for i, ids in enumerate(value):
            if not ids or not all(_is_token(t) for t in ids):
                raise InvalidRequest(f"input[{i}]: must be a non-empty list of token ids", param="input")
        return value
    raise InvalidRequest(problem, param="input")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_openai(body: bytes) -> tuple[EmbeddingRequest, bool]:
    """(request, base64) from an OpenAI embeddings body."""
    data = decode_object(body)
    unknown = sorted(set(data) - _OPENAI_FIELDS)
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field", param=unknown[0], code="invalid_field")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: required, a non-empty string", param="model")
    if "input" not in data:
        raise InvalidRequest("input: required field is missing", param="input")
    encoding = data.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise InvalidRequest(
            f"encoding_format: must be float or base64 (got {encoding!r})", param="encoding_format"
        )
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("user: must be a string", param="user")
    request = EmbeddingRequest(
        model=model,
        inputs=_openai_inputs(data["input"]),
        dimensions=_dimensions(data.get("dimensions"), "dimensions"),
        user=user,
    )
    return request, encoding == "base64"


def render_openai(r: EmbeddingResponse, base64: bool) -> bytes:
    encode = vectors.to_base64 if base64 else vectors.unpack
    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(r.vectors)]
    usage = {"prompt_tokens": r.input_tokens, "total_tokens": r.input_tokens, "cost": float(r.cost)}
    return orjson.dumps({"object": "list", "data": data, "model": r.model, "usage": usage})


# -- Gemini --------------------------------------------------------------------------------------


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _content_text(content: Any, where: str) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise InvalidRequest(f"{where}.parts: required, a non-empty list of text parts", param="content")
    texts = []
    for i, part in enumerate(parts):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}.parts[{i}]: only text parts can be embedded", param="content")
        texts.append(text)
    joined = "\n".join(texts)
    if not joined:
        raise InvalidRequest(f"{where}.parts: the text to embed is empty", param="content")
    return joined


def _gemini_options(one: dict[str, Any], where: str) -> tuple[int | None, str | None, str | None]:
    config = _get(one, "embedContentConfig", "embed_content_config")
    source = {**one, **config} if isinstance(config, dict) else one
    task_type = _get(source, "taskType", "task_type")
    title = source.get("title")
    for name, value in (("taskType", task_type), ("title", title)):
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{where}{name}: must be a string", param=name)
    dims = _dimensions(
        _get(source, "outputDimensionality", "output_dimensionality"), f"{where}outputDimensionality"
    )
    return dims, task_type, title


def parse_gemini_single(body: bytes, model: str) -> EmbeddingRequest:
    """`:embedContent` `{content, taskType, title, outputDimensionality}`."""
    data = decode_object(body)
    text = _content_text(data.get("content"), "content")
    dims, task_type, title = _gemini_options(data, "")
    return EmbeddingRequest(model=model, inputs=[text], dimensions=dims, task_type=task_type, title=title)


def parse_gemini_batch(body: bytes, model: str) -> EmbeddingRequest:
    """`:batchEmbedContents` `{requests: [{model, content, …}]}`: one canonical request, so every
    entry must name the route's model and ask for the same options."""
    data = decode_object(body)
    requests = data.get("requests")
    if not isinstance(requests, list) or not requests:
        raise InvalidRequest("requests: required, a non-empty list", param="requests")
    if len(requests) > MAX_INPUTS:
        raise InvalidRequest(
            f"requests: at most {MAX_INPUTS} per batch (got {len(requests)})", param="requests"
        )
    texts: list[str] = []
    options: tuple[int | None, str | None, str | None] | None = None
    for i, one in enumerate(requests):
        where = f"requests[{i}]"
        if not isinstance(one, dict):
            raise InvalidRequest(f"{where}: expected an object", param="requests")
        named = one.get("model")
        if named is not None and (not isinstance(named, str) or named.removeprefix("models/") != model):
            raise InvalidRequest(
                f"{where}.model: must be models/{model}, the model of the route (got {named!r})",
                param="requests",
            )
        texts.append(_content_text(one.get("content"), f"{where}.content"))
        these = _gemini_options(one, f"{where}.")
        if options is None:
            options = these
        elif these != options:
            raise InvalidRequest(
                f"{where}: every request of a batch must ask for the same taskType, title and "
                "outputDimensionality",
                param="requests",
            )
    assert options is not None
    dims, task_type, title = options
    return EmbeddingRequest(model=model, inputs=texts, dimensions=dims, task_type=task_type, title=title)


def _gemini_usage(r: EmbeddingResponse) -> dict[str, int]:
    return {"promptTokenCount": r.input_tokens, "totalTokenCount": r.input_tokens}


def render_gemini_single(r: EmbeddingResponse) -> bytes:
    return orjson.dumps(
        {"embedding": {"values": vectors.unpack(r.vectors[0])}, "usageMetadata": _gemini_usage(r)}
    )


def render_gemini_batch(r: EmbeddingResponse) -> bytes:
    embeddings = [{"values": vectors.unpack(v)} for v in r.vectors]
    return orjson.dumps({"embeddings": embeddings, "usageMetadata": _gemini_usage(r)})
