"""Embeddings without a server: request parsing (field-named 400s), vector packing, and the OpenAI
and Gemini adapters' request bodies and answer parsing."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from typing import Any

import orjson
import pytest

from ensemble import vectors
from ensemble.api import embeddings
from ensemble.errors import InvalidRequest, ProviderError
from ensemble.providers import embedding_wire
from ensemble.providers.openai import upstream_cost
from ensemble.providers.openai_compatible import embeddings_path
from ensemble.types import EmbeddingRequest


def openai_body(**fields: Any) -> bytes:
    return orjson.dumps({"model": "m", **fields})


@pytest.mark.parametrize(
    ("given", "inputs"),
    [
        ("one", ["one"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1], [2, 3]], [[1], [2, 3]]),
        (list(range(3000)), [list(range(3000))]),  # one long pre-tokenised input, not 3000 inputs
    ],
)
def test_openai_input_forms(given: Any, inputs: Any) -> None:
    request, b64 = embeddings.parse_openai(openai_body(input=given, encoding_format="base64", dimensions=8))
    assert request.inputs == inputs and request.dimensions == 8 and b64


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": 42}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input"),
        ({"input": ["a", 1]}, "input"),
        ({"input": [[1], []]}, "input"),
        ({"input": [-1]}, "input"),
        ({"input": [True]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({}, "input"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": "8"}, "dimensions"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "x", "user": 7}, "user"),
        ({"input": "x", "extra": 1}, "extra"),
        ({"input": "x", "model": ""}, "model"),
    ],
)
def test_openai_bad_fields_are_named(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        embeddings.parse_openai(openai_body(**fields))
    assert e.value.param == param and e.value.message.startswith(param)


def test_gemini_batch_takes_one_set_of_options() -> None:
    one = {
        "model": "models/g",
        "content": {"parts": [{"text": "a"}, {"text": "b"}]},
        "taskType": "CLUSTERING",
    }
    request = embeddings.parse_gemini_batch(orjson.dumps({"requests": [one, {**one, "model": "g"}]}), "g")
    assert request.inputs == ["a\nb", "a\nb"] and request.task_type == "CLUSTERING"
    with pytest.raises(InvalidRequest, match=r"requests\[1\]: every request"):
        embeddings.parse_gemini_batch(
            orjson.dumps({"requests": [one, {**one, "outputDimensionality": 8}]}), "g"
        )
    single = embeddings.parse_gemini_single(
        orjson.dumps(
            {"content": {"parts": [{"text": "x"}]}, "embedContentConfig": {"outputDimensionality": 4}}
        ),
        "g",
    )
    assert single.dimensions == 4
    with pytest.raises(InvalidRequest, match=r"content.parts\[0\]: only text"):
        embeddings.parse_gemini_single(orjson.dumps({"content": {"parts": [{"inlineData": {}}]}}), "g")


def test_vectors_round_trip_as_little_endian_float32() -> None:
    packed = vectors.pack([0.5, -1.25, 3.0])
    assert packed == struct.pack("<3f", 0.5, -1.25, 3.0)
    assert vectors.unpack(packed) == [0.5, -1.25, 3.0]
    assert vectors.from_base64(vectors.to_base64(packed)) == packed
    with pytest.raises(ValueError):
        vectors.from_base64(base64.b64encode(b"12345").decode())


def test_openai_answer_in_either_encoding() -> None:
    request = EmbeddingRequest(model="m", inputs=["a", "b"])
    body = orjson.dumps(
        {
            "data": [
                {"index": 1, "embedding": [1.0, 2.0]},
                {"index": 0, "embedding": base64.b64encode(struct.pack("<2f", 3.0, 4.0)).decode()},
            ],
            "usage": {"prompt_tokens": 7, "total_tokens": 7, "cost": 0.5},
        }
    )
    result = embedding_wire.openai_parse(body, request, upstream_cost)  # OpenRouter's reading
    assert [vectors.unpack(v) for v in result.vectors] == [[3.0, 4.0], [1.0, 2.0]]
    assert result.usage.input_tokens == 7 and result.cost == Decimal("0.5")
    short = orjson.dumps({"data": [{"index": 0, "embedding": [1.0]}]})
    with pytest.raises(ProviderError, match="1 embeddings for 2 inputs"):
        embedding_wire.openai_parse(short, request, lambda usage: None)


def test_gemini_usage_is_estimated_when_not_reported() -> None:
    request = EmbeddingRequest(model="g", inputs=["12345", "1"])
    body = orjson.dumps({"embeddings": [{"values": [0.0]}, {"values": [1.0]}]})
    assert embedding_wire.gemini_parse(body, request).usage.input_tokens == 2 + 1
    reported = orjson.dumps(
        {"embeddings": [{"values": [0.0]}, {"values": [1.0]}], "usageMetadata": {"promptTokenCount": 9}}
    )
    assert embedding_wire.gemini_parse(reported, request).usage.input_tokens == 9
    with pytest.raises(InvalidRequest) as e:
        embedding_wire.gemini_body(EmbeddingRequest(model="g", inputs=[[1, 2]]), "g")
    assert e.value.param == "input"


def test_openai_compatible_embeddings_sit_beside_chat() -> None:
    assert embeddings_path("/v1/chat/completions") == "/v1/embeddings"
    assert embeddings_path("/chat/completions") == "/embeddings"
    assert embeddings_path("/api/v3/chat/completions") == "/api/v3/embeddings"
    assert embeddings_path("/generate") == "/v1/embeddings"
