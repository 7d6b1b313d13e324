"""The embeddings calls of the APIs that have one, as their wire formats use them.

OpenAI (and every API speaking its format: OpenRouter, vLLM, Ollama, Mistral, …): `POST
/v1/embeddings` `{model, input, dimensions, encoding_format, user}` → `{data: [{index, embedding}],
usage: {prompt_tokens}}`. Where the API is known to encode base64 the vectors are asked for that way
(4 bytes a dimension instead of ~20 characters of JSON); the answer is read in either encoding.

Gemini: `POST /v1beta/models/{m}:batchEmbedContents` `{requests: [{model, content: {parts: [{text}]},
taskType, title, outputDimensionality}]}` → `{embeddings: [{values}]}`, one call for any number of
texts (what google-genai does too). Gemini tokenises itself, so token-id arrays cannot go there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from ensemble import vectors
from ensemble.errors import InvalidRequest, ProviderError
from ensemble.types import EmbeddingRequest, EmbeddingResult, Usage


def estimated_tokens(request: EmbeddingRequest) -> int:
    """Tokens of the inputs, 4 characters a token (token arrays: their length); at least 1 each."""
    if request.tokenised():
        return sum(max(1, len(ids)) for ids in request.inputs)
    return sum(max(1, -(-len(text) // 4)) for text in request.inputs)


def _checked(result_vectors: list[bytes], request: EmbeddingRequest) -> list[bytes]:
    if len(result_vectors) != len(request.inputs):
        raise ProviderError(
            f"the provider returned {len(result_vectors)} embeddings for {len(request.inputs)} inputs",
            code="bad_upstream_response",
        )
    return result_vectors


# -- OpenAI --------------------------------------------------------------------------------------


def openai_body(request: EmbeddingRequest, model_id: str, base64: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model_id,
        "input": request.inputs,
        "encoding_format": "base64" if base64 else "float",
    }
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user is not None:
        body["user"] = request.user
    return orjson.dumps(body)


def openai_parse(
    body: bytes, request: EmbeddingRequest, cost: Callable[[Mapping[str, Any]], Decimal | None]
) -> EmbeddingResult:
    """`cost` reads the provider's own charge from the usage object (None: priced from the config)."""
    data = orjson.loads(body)
    items = sorted(data["data"], key=lambda item: item.get("index", 0))
    out = []
    for item in items:
        embedding = item["embedding"]
        out.append(vectors.from_base64(embedding) if isinstance(embedding, str) else vectors.pack(embedding))
    usage = data.get("usage") or {}
    tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or estimated_tokens(request))
    return EmbeddingResult(
        vectors=_checked(out, request),
        usage=Usage(input_tokens=tokens),
        upstream_model=data.get("model"),
        cost=cost(usage),
    )


# -- Gemini --------------------------------------------------------------------------------------


def gemini_body(request: EmbeddingRequest, model_id: str) -> bytes:
    if request.tokenised():
        raise InvalidRequest(
            f"input: {request.model!r} is a Gemini model, which takes text only, not token-id arrays",
            param="input",
        )
    name = f"models/{model_id}"
    requests = []
    for text in request.inputs:
        one: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if request.task_type is not None:
            one["taskType"] = request.task_type
        if request.title is not None:
            one["title"] = request.title
        if request.dimensions is not None:
            one["outputDimensionality"] = request.dimensions
        requests.append(one)
    return orjson.dumps({"requests": requests})


def gemini_parse(body: bytes, request: EmbeddingRequest) -> EmbeddingResult:
    data = orjson.loads(body)
    out = [vectors.pack(item["values"]) for item in data["embeddings"]]
    usage = data.get("usageMetadata") or {}
    tokens = int(usage.get("promptTokenCount") or 0) or estimated_tokens(request)
    return EmbeddingResult(vectors=_checked(out, request), usage=Usage(input_tokens=tokens))
