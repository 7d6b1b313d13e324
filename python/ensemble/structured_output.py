"""Structured output (docs/formats.md#structured-output) between each API's own words and the
canonical `ResponseFormat`: read from OpenAI `response_format` (and Responses `text.format`),
Anthropic `output_config.format` (and the beta `output_format`), Gemini `responseMimeType` +
`responseJsonSchema`/`responseSchema`; written as each provider's own mechanism, never dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from ensemble.errors import InvalidRequest
from ensemble.types import ResponseFormat

# Anthropic has no "any JSON object" switch: for json_object the model is told so in the system prompt.
JSON_OBJECT_INSTRUCTION = "Respond with a single JSON object and nothing else (no prose, no code fences)."


def _schema(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: expected a JSON Schema object", param=where.split(".")[0])
    return value


def from_openai(value: Any, where: str = "response_format") -> ResponseFormat | None:
    """Chat Completions `response_format`, or Responses `text.format` (flat: name/schema beside type)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: expected an object", param=where.split(".")[0])
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    if kind != "json_schema":
        raise InvalidRequest(
            f"{where}.type: must be text, json_object or json_schema", param=where.split(".")[0]
        )
    spec = value.get("json_schema", value)  # Responses' text.format is flat
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{where}.json_schema: expected an object", param=where.split(".")[0])
    strict = spec.get("strict")
    return ResponseFormat(
        type="json_schema",
        name=spec.get("name") if isinstance(spec.get("name"), str) else None,
        schema=_schema(spec.get("schema", {"type": "object"}), f"{where}.json_schema.schema"),
        description=spec.get("description") if isinstance(spec.get("description"), str) else None,
        strict=strict if isinstance(strict, bool) else None,
    )


def from_anthropic(value: Any, where: str) -> ResponseFormat | None:
    """`output_config.format` / `output_format`: `{type: "json_schema", schema}`."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        raise InvalidRequest(f"{where}.type: must be json_schema", param=where.split(".")[0])
    return ResponseFormat(type="json_schema", schema=_schema(value.get("schema"), f"{where}.schema"))


def from_gemini(gen: dict[str, Any]) -> ResponseFormat | None:
    """generationConfig `responseMimeType` with `responseJsonSchema` (JSON Schema) or
    `responseSchema` (OpenAPI subset: type names in upper case)."""
    mime = gen.get("responseMimeType") or gen.get("response_mime_type")
    schema = gen.get("responseJsonSchema") or gen.get("response_json_schema")
    openapi = gen.get("responseSchema") or gen.get("response_schema")
    if mime != "application/json":
        if schema is not None or openapi is not None:
            raise InvalidRequest(
                "generationConfig.responseMimeType: must be application/json with a response schema",
                param="generationConfig",
            )
        return None
    if schema is None and openapi is not None:
        schema = lower_types(openapi)
    if schema is None:
        return ResponseFormat(type="json_object")
    return ResponseFormat(type="json_schema", schema=_schema(schema, "generationConfig.responseJsonSchema"))


def lower_types(schema: Any) -> Any:
    """An OpenAPI-subset schema (Gemini `responseSchema`, `parameters`: `"type": "STRING"`) as JSON Schema."""
    if isinstance(schema, dict):
        out = {k: lower_types(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = out["type"].lower()
        return out
    if isinstance(schema, list):
        return [lower_types(v) for v in schema]
    return schema


def to_openai(rf: ResponseFormat) -> dict[str, Any]:
    if rf.type != "json_schema":
        return {"type": rf.type}
    spec: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {"type": "object"}}
    if rf.description:
        spec["description"] = rf.description
    if rf.strict is not None:
        spec["strict"] = rf.strict
    return {"type": "json_schema", "json_schema": spec}


def to_anthropic(rf: ResponseFormat, body: dict[str, Any], native: bool = True) -> None:
    """JSON schema → `output_config.format` (`native`: the model has structured outputs), else an
    instruction carrying the schema; any JSON object → an instruction. Instructions go in `system`."""
    if rf.type == "json_schema" and native:
        config = dict(body.get("output_config") or {})
        config["format"] = {"type": "json_schema", "schema": rf.schema or {"type": "object"}}
        body["output_config"] = config
        return
    if rf.type == "text":
        return
    text = JSON_OBJECT_INSTRUCTION
    if rf.type == "json_schema":
        schema = orjson.dumps(rf.schema or {"type": "object"}).decode()
        text = f"{JSON_OBJECT_INSTRUCTION} It must match this JSON Schema: {schema}"
    system = body.get("system")
    if isinstance(system, list):
        body["system"] = [*system, {"type": "text", "text": text}]
    else:
        body["system"] = f"{system}\n\n{text}" if system else text


def to_gemini(rf: ResponseFormat, gen: dict[str, Any]) -> None:
    if rf.type == "text":
        return
    gen["responseMimeType"] = "application/json"
    gen.pop("responseSchema", None)
    if rf.type == "json_schema":
        gen["responseJsonSchema"] = rf.schema or {"type": "object"}
