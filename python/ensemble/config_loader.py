"""Load the main YAML file and its provider files, expand ${VAR}, validate, and report every problem.

Problems are collected, never raised one at a time: an operator fixing a config wants the whole list,
each as `file: key.path: what is wrong`.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import yaml

from ensemble import catalogue
from ensemble.catalogue import Catalogue
from ensemble.config.durations import Duration, parse_duration
from ensemble.config.http_version import HttpVersion, parse_http_version
from ensemble.config.schema import Config, EndpointConfig, ProviderConfig, StreamTimeouts
from ensemble.errors import ConfigError
from ensemble.providers import registry

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Struct fields the loader fills in; a file cannot set them.
_INTERNAL = frozenset({"source", "options"})

# Environment variables that override config keys (see docs/cli.md).
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "REDIS_ADDRESS": ("redis", "address"),
    "REDIS_PASSWORD": ("redis", "password"),
    "REDIS_NAMESPACE": ("redis", "namespace"),
    "AWS_REGION": ("persistence", "s3", "region"),
    "AWS_ENDPOINT_URL": ("persistence", "s3", "endpoint_url"),
}


def expand_env(value: Any, env: Mapping[str, str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; an unset VAR without default becomes ""."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        return _ENV_REF.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    return value


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is Duration:
        return parse_duration(obj)
    if typ is HttpVersion:
        return parse_http_version(obj)
    raise NotImplementedError(f"unsupported type {typ!r}")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


class _Collector:
    """Walks raw YAML data against the schema types, recording a problem per bad key."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[str] = []

    def add(self, path: str, problem: str) -> None:
        self.problems.append(f"{self.file}: {path or '(top level)'}: {problem}")

    def check(self, value: Any, typ: Any, path: str) -> None:
        origin = typing.get_origin(typ)
        if origin in (typing.Union, types.UnionType):
            members = typing.get_args(typ)
            if value is None and type(None) in members:
                return
            structs = [m for m in members if isinstance(m, type) and issubclass(m, msgspec.Struct)]
            if len(structs) == 1 and isinstance(value, dict):
                self.check(value, structs[0], path)
                return
            self._leaf(value, typ, path)
            return
        if isinstance(typ, type) and issubclass(typ, msgspec.Struct):
            self._struct(value, typ, path)
        elif origin is list:
            if not isinstance(value, list):
                self.add(path, f"expected a list, got {_describe(value)}")
                return
            (item,) = typing.get_args(typ)
            for i, v in enumerate(value):
                self.check(v, item, f"{path}[{i}]")
        elif origin is dict:
            if not isinstance(value, dict):
                self.add(path, f"expected a mapping, got {_describe(value)}")
                return
            _, item = typing.get_args(typ)
            for k, v in value.items():
                self.check(v, item, f"{path}.{k}" if path else str(k))
        else:
            self._leaf(value, typ, path)

    def _struct(self, value: Any, typ: type[msgspec.Struct], path: str) -> None:
        if not isinstance(value, dict):
            self.add(path, f"expected a mapping, got {_describe(value)}")
            return
        fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
        for key, v in value.items():
            sub = f"{path}.{key}" if path else str(key)
            field = fields.get(key)
            if field is None or key in _INTERNAL:
                known = ", ".join(k for k in fields if k not in _INTERNAL)
                self.add(sub, f"unknown key (expected one of: {known})")
                continue
            self.check(v, field.type, sub)
        for name, field in fields.items():
            if field.required and name not in value:
                self.add(f"{path}.{name}" if path else name, "missing required key")

    def _leaf(self, value: Any, typ: Any, path: str) -> None:
        if typing.get_origin(typ) is typing.Literal and value not in typing.get_args(typ):
            allowed = ", ".join(str(a) if a != "" else '"" (the default)' for a in typing.get_args(typ))
            self.add(path, f"must be one of: {allowed} (got {value!r})")
            return
        try:
            msgspec.convert(value, typ, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as e:
            msg = str(e)
            # msgspec appends "- at `$...`" for nested paths; the path is already ours.
            msg = re.sub(r"\s*- at `\$[^`]*`$", "", msg)
            if isinstance(value, str | int | float | bool) and repr(value) not in msg:
                msg = f"{msg} (got {value!r})"
            self.add(path, msg[0].lower() + msg[1:] if msg else "invalid value")


def _read_yaml(path: Path, problems: list[str]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{path}: file not found")
        return None
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot read: {e}")
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        problems.append(f"{path}: {where}invalid YAML: {problem}")
        return None


def _set_path(data: dict[str, Any], keys: tuple[str, ...], value: str) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Load and validate; raise ConfigError listing every problem found."""
    env = os.environ if env is None else env
    main = Path(path)
    problems: list[str] = []
    raw = _read_yaml(main, problems)
    if raw is None and not problems:
        raw = {}
    if problems:
        raise ConfigError(problems)
    if not isinstance(raw, dict):
        raise ConfigError([f"{main}: (top level): expected a mapping, got {_describe(raw)}"])
    raw = expand_env(raw, env)
    for var, keys in ENV_OVERRIDES.items():
        if env.get(var):
            _set_path(raw, keys, env[var])

    collector = _Collector(str(main))
    inline = raw.pop("providers", None)
    collector.check(raw, Config, "")
    provider_sources: list[tuple[str, str, Any]] = []  # (file, path prefix, raw provider)
    if inline is not None:
        if not isinstance(inline, list):
            collector.add("providers", f"expected a list, got {_describe(inline)}")
        else:
            provider_sources += [(str(main), f"providers[{i}]", p) for i, p in enumerate(inline)]
    provider_dir = main.parent / "providers"
    if provider_dir.is_dir():
        for provider_file in sorted(provider_dir.glob("*.y*ml")):
            data = _read_yaml(provider_file, collector.problems)
            if data is not None:
                provider_sources.append((str(provider_file), "", expand_env(data, env)))

    providers: list[ProviderConfig] = []
    raw_models: list[tuple[ProviderConfig, Any]] = []
    files: dict[str, str] = {}
    for file, prefix, data in provider_sources:
        pc = _Collector(file)
        options = _type_options(data, prefix, pc)
        pc.check(data, ProviderConfig, prefix)
        collector.problems += pc.problems
        if not pc.problems:
            provider = msgspec.convert(data, ProviderConfig, strict=False, dec_hook=_dec_hook)
            provider.options = options
            providers.append(provider)
            raw_models.append((provider, data.get("models")))
            files.setdefault(provider.name, file)
    if collector.problems:
        raise ConfigError(collector.problems)

    config = msgspec.convert(raw, Config, strict=False, dec_hook=_dec_hook)
    config.providers = providers
    config.source = str(main)
    known = catalogue.shipped().extended(config.catalogue)
    for provider, models in raw_models:
        fill_from_catalogue(provider, models, known)
    by_environment(config, env.get("ENSEMBLE_ENVIRONMENT") or "development")
    _check_semantics(config, str(main), files, collector)
    if collector.problems:
        raise ConfigError(collector.problems)
    return config


def fill_from_catalogue(provider: ProviderConfig, raw: Any, known: Catalogue) -> None:
    """Model fields a provider file leaves out (context_window, max_output_tokens, pricing,
    capabilities) come from the model catalogue when it knows the model (docs/catalogue.md)."""
    given = raw if isinstance(raw, list) else []
    for i, model in enumerate(provider.models):
        keys = given[i] if i < len(given) and isinstance(given[i], dict) else {}
        info = known.lookup(model.upstream_id) or known.lookup(model.name)
        if info is None:
            continue
        if "context_window" not in keys and info.context_window:
            model.context_window = info.context_window
        if "max_output_tokens" not in keys and info.max_output_tokens:
            model.max_output_tokens = info.max_output_tokens
        if "pricing" not in keys and info.pricing is not None:
            model.pricing = info.pricing
        if "capabilities" not in keys and info.capabilities:
            model.capabilities = list(info.capabilities)  # type: ignore[arg-type]


def by_environment(config: Config, environment: str) -> None:
    """Defaults that depend on ENSEMBLE_ENVIRONMENT, for the keys a config leaves empty (a value in
    the file, from ${ENSEMBLE_HOST} or `--host` wins). Development listens on loopback only, since a
    gateway started to try it out hands out a working client key unasked, and logs readable text;
    staging and production listen on every interface (containers, load balancers) and log JSON."""
    development = environment == "development"
    if not config.server.host:
        config.server.host = "127.0.0.1" if development else "0.0.0.0"
    if not config.logging.format:
        config.logging.format = "text" if development else "json"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _type_options(data: Any, prefix: str, c: _Collector) -> Any:
    """Check the provider's `type` against the registered types, and take the type's own options
    (the block named after the type, e.g. `mock:`) out of the raw provider, validated against the
    Struct that type registers. Returns the options (the type's defaults when the block is absent)."""
    if not isinstance(data, dict):
        return None
    kinds = registry.kinds()
    ptype = data.get("type")
    kind = kinds.get(ptype) if isinstance(ptype, str) else None
    if isinstance(ptype, str) and kind is None:
        c.add(_join(prefix, "type"), registry.unknown_type(ptype))
    options: Any = None
    failed = False
    for key in [k for k in data if isinstance(k, str) and k in kinds and kinds[k].options is not None]:
        raw = data.pop(key)
        if key != ptype:
            c.add(_join(prefix, key), f"only providers of type {key!r} take {key} options")
            continue
        struct = kinds[key].options
        assert struct is not None
        before = len(c.problems)
        c.check({} if raw is None else raw, struct, _join(prefix, key))
        failed = len(c.problems) > before
        if not failed:
            options = msgspec.convert(raw or {}, struct, strict=False, dec_hook=_dec_hook)
    if options is None and not failed and kind is not None and kind.options is not None:
        options = kind.options()
    return options


_THRESHOLD_CHANGE = (
    "affinity thresholds are the share of a request's input cost that the prompt cache saves "
    "(0..1, the same for cheap and dear models), no longer US dollars per request; the shipped "
    "config/ensemble.yaml has the defaults, docs/routing.md how to choose others"
)


def _check_semantics(config: Config, main: str, files: dict[str, str], c: _Collector) -> None:
    """Rules that span keys or need more than a type: ranges, uniqueness, URLs."""

    def bad(file: str, path: str, problem: str) -> None:
        c.problems.append(f"{file}: {path}: {problem}")

    s = config.server
    if not 1 <= s.port <= 65535:
        bad(main, "server.port", f"must be between 1 and 65535 (got {s.port})")
    if s.workers < 1:
        bad(main, "server.workers", f"must be at least 1 (got {s.workers})")
    if s.max_request_bytes < 1:
        bad(main, "server.max_request_bytes", "must be positive")
    cache = config.cache
    for key in ("high_value_threshold", "low_value_threshold", "stickiness_factor"):
        v = getattr(cache, key)
        if v > 1.0 and key != "stickiness_factor":
            # A share cannot exceed 1: this is a threshold written in the dollars of old releases.
            bad(main, f"cache.{key}", f"{v} is above 1: {_THRESHOLD_CHANGE}")
        elif not 0.0 <= v <= 1.0:
            bad(main, f"cache.{key}", f"must be between 0 and 1 (got {v})")
    if cache.low_value_threshold > cache.high_value_threshold:
        bad(main, "cache.low_value_threshold", "must not exceed cache.high_value_threshold")
    if cache.max_cache_entries < 1:
        bad(main, "cache.max_cache_entries", "must be positive")
    rl = config.rate_limit
    if rl.window_size <= 0:
        bad(main, "rate_limit.window_size", "must be positive")
    for key in ("default_rpm", "default_tpm"):
        if getattr(rl, key) < 0:
            bad(main, f"rate_limit.{key}", "must not be negative (0 means unlimited)")
    config.streaming_timeouts.setdefault("default", StreamTimeouts())

    names: dict[str, str] = {}
    endpoint_ids: dict[str, str] = {}
    for p in config.providers:
        file = files.get(p.name, main)
        if p.name in names:
            bad(file, "name", f"provider name {p.name!r} is also used in {names[p.name]}")
        names[p.name] = file
        if not p.models:
            bad(file, "models", "a provider must list at least one model")
        if p.cooldown_after_failures < 0:
            bad(file, "cooldown_after_failures", "must not be negative (0 means never)")
        seen_models: set[str] = set()
        for i, m in enumerate(p.models):
            if m.name in seen_models:
                bad(file, f"models[{i}].name", f"model {m.name!r} is listed twice")
            seen_models.add(m.name)
            for key in ("input", "output", "cache_read", "cache_write"):
                if getattr(m.pricing, key) < 0:
                    bad(file, f"models[{i}].pricing.{key}", "must not be negative")
            if m.api == "responses" and p.type != "openai":
                bad(
                    file,
                    f"models[{i}].api",
                    f"'responses' is for providers of type 'openai' (this is {p.type!r})",
                )
        kind = registry.kind(p.type)
        for i, m in enumerate(p.models):
            if m.kind == "embedding" and not kind.embeds:
                bad(file, f"models[{i}].kind", f"provider type {p.type!r} has no embeddings API")
        if not p.base_url:
            p.base_url = kind.default_base_url
        if not kind.local:
            if p.base_url:
                _check_url(p.base_url, file, "base_url", bad)
            else:
                bad(
                    file,
                    "base_url",
                    f"required for type {p.type!r}: the API's root URL without /v1 (e.g. https://api.mistral.ai)",
                )
        for path, problem in kind.check(p):
            bad(file, path, problem)
        if not p.endpoints:
            if kind.local:
                p.endpoints = [EndpointConfig(id=f"{p.name}-local")]
            else:
                bad(file, "endpoints", "a provider needs at least one endpoint")
        for i, e in enumerate(p.endpoints):
            if e.id in endpoint_ids:
                bad(file, f"endpoints[{i}].id", f"endpoint id {e.id!r} is also used in {endpoint_ids[e.id]}")
            endpoint_ids[e.id] = file
            if e.base_url and not kind.local:
                _check_url(e.base_url, file, f"endpoints[{i}].base_url", bad)
            for key in ("rpm_limit", "tpm_limit"):
                if getattr(e, key) < 0:
                    bad(file, f"endpoints[{i}].{key}", "must not be negative (0 means unlimited)")
            if e.weight < 1:
                bad(file, f"endpoints[{i}].weight", f"must be at least 1 (got {e.weight})")


def _check_url(url: str, file: str, path: str, bad: Any) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        bad(file, path, f"must be an http:// or https:// URL (got {url!r})")
