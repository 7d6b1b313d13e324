"""Stored Responses across two instances sharing a real redis-server and moto's S3 server (HTTP):
a response made on A is retrieved and continued (`previous_response_id`) on B, and a DELETE on
either removes every copy: both S3 objects, and A's own SQLite row (B's tombstone in Redis).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from support.cluster import Cluster
from support.ensemble import Ensemble
from support.waiting import wait_until

pytestmark = pytest.mark.integration

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def sdk(node: Ensemble, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        Path(tmp_path_factory.mktemp("responses-pair")), "responses-scaleout", ("a", "b"), s3=True
    ) as p:
        yield p


def _s3_keys_of(pair: Cluster, request_id: str) -> list[str]:
    return [k for k in pair.s3.keys("responses/") if k.endswith(f"/{request_id}.json")]


def _retrieved(client: openai.OpenAI, resp_id: str) -> Any:
    try:
        return client.responses.retrieve(resp_id)
    except openai.NotFoundError:
        return None


def test_made_on_a_retrieved_and_continued_on_b_deleted_everywhere(pair: Cluster) -> None:
    a, b = pair.nodes
    key = a.key  # A's key: B knows it through Redis
    on_a, on_b = sdk(a, key), sdk(b, key)
    first = on_a.responses.create(
        model="mock-1", input=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER]
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    request_id = "req_" + first.id.removeprefix("resp_")
    # B never saw the request: it finds the answer and its conversation in S3 once uploaded.
    got = wait_until(lambda: _retrieved(on_b, first.id), timeout=10, what="B to retrieve A's response")
    assert got.output[0].type == "function_call" and got.output[0].call_id == call.call_id
    keys = _s3_keys_of(pair, request_id)
    assert len(keys) == 2 and any("/conversations/" in k for k in keys)

    # B continues A's conversation: the tool result answers A's call, so the mock replies in text.
    second = on_b.responses.create(
        model="mock-1",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.previous_response_id == first.id and second.output_text.startswith("This is a mock answer")
    # And A continues B's in turn (B's answer reached A through S3 the same way).
    third = wait_until(
        lambda: _continued(on_a, second.id), timeout=10, what="A to continue from B's response"
    )
    assert third.previous_response_id == second.id

    # Another key gets the 404 of a response that never existed, on either instance.
    other = b.cli("keys", "create", "--name", "someone-else").stdout.strip()
    b.wait_for_key(other)
    a.wait_for_key(other)
    for node in (a, b):
        with pytest.raises(openai.NotFoundError):
            sdk(node, other).responses.retrieve(first.id)

    # DELETE on B: A's own SQLite copy is hidden at once (the tombstone), the S3 objects are gone.
    on_b.responses.delete(first.id)
    for client in (on_a, on_b):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError) as e:
            client.responses.create(model="mock-1", previous_response_id=first.id, input="again")
        assert e.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert _s3_keys_of(pair, request_id) == []
    with a.client(key) as http:  # nor as the stored answer of its request, on the instance that made it
        assert http.get(f"/api/v1/retrieve/{request_id}").status_code == 404
    with pytest.raises(openai.NotFoundError):
        on_a.responses.delete(first.id)
    # The others stay.
    assert on_a.responses.retrieve(second.id).output_text == second.output_text


def _continued(client: openai.OpenAI, previous: str) -> Any:
    try:
        return client.responses.create(model="mock-1", previous_response_id=previous, input="and then?")
    except openai.NotFoundError:
        return None
