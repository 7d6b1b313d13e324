"""The configuration's shape (see docs/configuration.md) as msgspec structs; unknown keys are errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ensemble.config.durations import Duration
from ensemble.config.http_version import HttpVersion


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Strict):
    # "": by ENSEMBLE_ENVIRONMENT when the config is loaded (see `by_environment` in config_loader.py).
    host: str = ""
    port: int = 5180
    workers: int = 1
    max_request_bytes: int = 10 * 1024 * 1024
    read_timeout: Duration = Duration(35 * 60)
    idle_timeout: Duration = Duration(120)
    coalescence_window: Duration = Duration(0)
    # Streams are decoded by the native scanner and same-format streams forward the provider's
    # bytes unchanged (docs/performance.md); false: the Python decoders decode every stream and
    # every stream is rendered from its deltas (to compare, or to rule the native path out).
    native_streams: bool = True
    drain_timeout: Duration = Duration(30)
    on_client_disconnect: Literal["complete", "cancel"] = "complete"
    busy_poll: Duration = Duration(0.001)


class DatabaseConfig(_Strict):
    path: str = "./data/ensemble.db"


class RedisConfig(_Strict):
    address: str = ""
    username: str = ""
    password: str = ""
    database: int = 0
    pool_size: int = 20
    namespace: str = ""


class S3Config(_Strict):
    bucket: str = ""
    prefix: str = "responses/"
    region: str = ""
    endpoint_url: str = ""


class PersistenceConfig(_Strict):
    s3: S3Config = msgspec.field(default_factory=S3Config)


class RateLimitConfig(_Strict):
    window_size: Duration = Duration(60)
    sync_interval: Duration = Duration(1)
    default_rpm: int = 0
    default_tpm: int = 0


class CacheConfig(_Strict):
    enable_session_affinity: bool = True
    max_cache_entries: int = 100_000
    high_value_threshold: float = 0.25
    low_value_threshold: float = 0.05
    stickiness_factor: float = 0.8
    # By provider type (or provider name); a type not listed keeps its own default (its module's
    # registration: anthropic 5m, openai 24h, gemini 60m, xai 10m, others 5m).
    ttls: dict[str, Duration] = msgspec.field(default_factory=dict)


class StreamTimeouts(_Strict):
    stall_timeout: Duration = Duration(60)
    overall_timeout: Duration = Duration(600)


def _default_stream_timeouts() -> dict[str, StreamTimeouts]:
    return {
        "default": StreamTimeouts(),
        "o3*": StreamTimeouts(stall_timeout=Duration(1200), overall_timeout=Duration(1800)),
    }


class ProviderTimeouts(_Strict):
    connect: Duration = Duration(5)
    default: Duration = Duration(60)
    # HTTP/2 connections per provider host at most (each carries many streams); HTTP/1.1 opens
    # one connection per concurrent request regardless.
    max_connections_per_host: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100


class ConditionalRule(_Strict):
    if_parameter: str
    drop_parameters: list[str]


class ParameterValidationConfig(_Strict):
    enable: bool = True
    model_drop_rules: dict[str, list[str]] = msgspec.field(
        default_factory=lambda: {"o1*": ["temperature", "top_p"]}
    )
    conditional_rules: dict[str, list[ConditionalRule]] = msgspec.field(
        default_factory=lambda: {
            "claude*opus*": [ConditionalRule(if_parameter="temperature", drop_parameters=["top_p"])]
        }
    )


class BatchConfig(_Strict):
    rate_limit_fallback: bool = True
    collection_window: Duration = Duration(30)
    max_batch_size: int = 100


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text", ""] = ""  # "": by ENSEMBLE_ENVIRONMENT, like server.host
    request_log: bool = True
    # Records waiting for the batched SQLite writer; when full the oldest is dropped (and counted).
    request_log_buffer: Annotated[int, msgspec.Meta(ge=16, le=16_777_216)] = 65_536


class TelemetryConfig(_Strict):
    prometheus: bool = True
    otlp_endpoint: str = ""


class Pricing(_Strict):
    """USD per one million tokens."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0


class ThinkingRules(_Strict):
    """What a family refuses while thinking/reasoning is on (see docs/catalogue.md)."""

    temperature: float | None = None  # the only temperature accepted (Claude: 1); others are dropped
    top_p_min: float | None = None  # a lower top_p is dropped (Claude: 0.95)
    unsupported: list[str] = msgspec.field(default_factory=list)  # dropped (Claude: top_k)
    refused: list[str] = msgspec.field(default_factory=list)  # 400 naming it (forced_tool_choice)


class ModelFamily(_Strict):
    """A family of models sharing parameter rules, matched by globs on the provider's model id."""

    match: list[str] = msgspec.field(default_factory=list)
    exclude: list[str] = msgspec.field(default_factory=list)
    unsupported: list[str] = msgspec.field(default_factory=list)  # dropped (logged)
    refused: list[str] = msgspec.field(default_factory=list)  # 400 naming the parameter
    exclusive: list[list[str]] = msgspec.field(default_factory=list)  # keep the first present, drop the rest
    thinking: ThinkingRules | None = None
    token_limit_field: str = ""  # the wire field max_tokens goes in, where the family needs one
    # How a JSON schema for the answer reaches these models: the API's own structured-output
    # field, or (models older than the field) an instruction with the schema in the system prompt.
    structured_output: Literal["native", "instruction"] = "native"


class CatalogueModel(_Strict):
    """Known facts about one model; unset fields fall back to the shipped catalogue's."""

    display_name: str | None = None
    created: str | None = None  # release date, YYYY-MM-DD
    context_window: int | None = None
    max_output_tokens: int | None = None
    pricing: Pricing | None = None
    capabilities: list[Literal["streaming", "tools", "thinking", "vision"]] | None = None


class CatalogueConfig(_Strict):
    """Extends or overrides the shipped model catalogue (python/ensemble/catalogue/models.yaml): a
    family with a shipped name replaces it; a model with a shipped name overrides the fields given."""

    families: dict[str, ModelFamily] = msgspec.field(default_factory=dict)
    models: dict[str, CatalogueModel] = msgspec.field(default_factory=dict)


class ModelConfig(_Strict):
    name: str
    upstream: str = ""
    # What the model does: `chat` answers messages (every chat route), `embedding` turns text into
    # vectors (POST /v1/embeddings, Gemini :embedContent); each is refused on the other's routes.
    kind: Literal["chat", "embedding"] = "chat"
    context_window: int = 0
    max_output_tokens: int = 0
    pricing: Pricing = msgspec.field(default_factory=Pricing)
    capabilities: list[Literal["streaming", "tools", "thinking", "vision"]] = msgspec.field(
        default_factory=lambda: ["streaming", "tools"]
    )
    # Which upstream API an OpenAI-type provider calls for this model: chat completions, or the
    # Responses API (models OpenAI serves only there; reasoning items round-trip). docs/responses.md
    api: Literal["chat", "responses"] = "chat"

    @property
    def upstream_id(self) -> str:
        return self.upstream or self.name


class EndpointConfig(_Strict):
    id: str
    api_key: str = ""
    base_url: str = ""
    rpm_limit: int = 0
    tpm_limit: int = 0
    weight: int = 1


class ProviderConfig(_Strict):
    name: str
    type: str  # a registered provider type (ensemble.providers.registry); the loader checks it
    base_url: str = ""
    priority: int = 1
    strategy: Literal["session_affinity", "round_robin", "least_used"] = "session_affinity"
    # Consecutive 5xx / connect errors / timeouts after which an endpoint is skipped for a while
    # (2 s, doubling per further failure, at most 30 s); 0 = never (a 429/529 always is honoured).
    cooldown_after_failures: int = 3
    # HTTP version to the provider: auto (HTTP/2 over TLS when offered, else 1.1) | "1.1" | "2".
    http: HttpVersion = HttpVersion("auto")
    endpoints: list[EndpointConfig] = msgspec.field(default_factory=list)
    models: list[ModelConfig] = msgspec.field(default_factory=list)
    # The type's own options, from the provider file's block named after the type (`mock:`,
    # `openai_compatible:`), as the Struct the type registers; filled by the loader, not a YAML key.
    options: Any = None


class Config(_Strict):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    persistence: PersistenceConfig = msgspec.field(default_factory=PersistenceConfig)
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    streaming_timeouts: dict[str, StreamTimeouts] = msgspec.field(default_factory=_default_stream_timeouts)
    provider_timeouts: ProviderTimeouts = msgspec.field(default_factory=ProviderTimeouts)
    parameter_validation: ParameterValidationConfig = msgspec.field(default_factory=ParameterValidationConfig)
    catalogue: CatalogueConfig = msgspec.field(default_factory=CatalogueConfig)
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    providers: list[ProviderConfig] = msgspec.field(default_factory=list)
    # Where this config came from; filled by the loader, not by the file.
    source: str = ""
