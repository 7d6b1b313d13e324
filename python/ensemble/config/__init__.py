"""Configuration: the schema (msgspec structs) and its value types. Reading and checking a config file
is `ensemble.config_loader` (above the provider registry, whose types it checks)."""

from ensemble.config.durations import Duration, format_duration, parse_duration
from ensemble.config.schema import Config, EndpointConfig, ModelConfig, ProviderConfig

__all__ = [
    "Config",
    "Duration",
    "EndpointConfig",
    "ModelConfig",
    "ProviderConfig",
    "format_duration",
    "parse_duration",
]
