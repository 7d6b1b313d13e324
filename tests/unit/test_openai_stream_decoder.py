"""The OpenAI stream decoder's typed fast path must agree with the generic path on every chunk shape."""

from __future__ import annotations

import orjson
import pytest

from ensemble.errors import ProviderError
from ensemble.providers.openai import OpenAIDecoder

CHUNKS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "model": "m"},
    {"choices": [{"index": 0, "delta": {"content": "Hello"}, "logprobs": None, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]},
    {"choices": [{"index": 0, "delta": {"reasoning": "more"}}]},
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ]
                },
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "1}"}}]}}]},
    {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "model": "gpt-x"},
    {"choices": [{"index": 0, "delta": None, "finish_reason": "length"}]},
    {
        "choices": [],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 2},
            "cost": 0.00012,
        },
    },
    # odd shapes the typed path refuses: the generic path must take them unchanged
    {"choices": [{"index": 0, "delta": {"content": ["not", "a", "string"]}}]},
    {"choices": [{"index": "0", "delta": {"content": "index as text"}}]},
    {"choices": None, "usage": None},
]


@pytest.mark.parametrize("report_cost", [False, True])
def test_typed_and_generic_paths_decode_alike(report_cost: bool) -> None:
    typed, generic = OpenAIDecoder(report_cost), OpenAIDecoder(report_cost)
    for chunk in CHUNKS:
        data = orjson.dumps(chunk).decode()
        assert typed.decode("", data) == generic._generic(orjson.loads(data)), data


def test_an_error_chunk_raises_a_retryable_provider_error() -> None:
    data = orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}}).decode()
    with pytest.raises(ProviderError) as e:
        OpenAIDecoder().decode("", data)
    assert e.value.retryable and "overloaded" in e.value.message


def test_malformed_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        OpenAIDecoder().decode("", '{"choices": [')
