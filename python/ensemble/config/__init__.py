"""Configuration: schema (msgspec structs), YAML + ${ENV} loading, validation with key paths."""

from ensemble.config.durations import Duration, format_duration, parse_duration
from ensemble.config.loader import load_config
from ensemble.config.schema import Config, EndpointConfig, ModelConfig, ProviderConfig

__all__ = [
    "Config",
    "Duration",
    "EndpointConfig",
    "ModelConfig",
    "ProviderConfig",
    "format_duration",
    "load_config",
    "parse_duration",
]
