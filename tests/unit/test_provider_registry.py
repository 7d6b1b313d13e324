"""The provider registry: what each type tells the gateway, and that a new provider is one module."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ensemble.providers
from ensemble.config.schema import EndpointConfig, ModelConfig, ProviderConfig
from ensemble.config_loader import load_config
from ensemble.errors import ConfigError
from ensemble.providers import build_provider, registry
from ensemble.providers.base import HttpProvider

PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "plugins" / "acme_chat.py"


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Types registered by a test do not outlive it."""
    monkeypatch.setattr(registry, "_kinds", dict(registry.kinds()))
    monkeypatch.setattr(registry, "_failed", {})
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_every_shipped_type_says_what_the_gateway_needs() -> None:
    kinds = registry.kinds()
    assert set(kinds) == {"anthropic", "gemini", "mock", "openai", "openai_compatible", "openrouter", "xai"}
    for k in kinds.values():
        assert (k.wire is None) != (k.build is None), k.type  # HTTP providers give a wire format
        assert k.local or k.type == "openai_compatible" or k.default_base_url.startswith("https://")
    assert {t: k.cache_ttl for t, k in kinds.items() if t != "mock" and t != "openai_compatible"} == {
        "anthropic": 300.0,
        "openai": 86400.0,
        "gemini": 3600.0,
        "xai": 600.0,
        "openrouter": 300.0,
    }


def test_dialects_differ_only_in_what_each_api_needs() -> None:
    def wire(t: str, **options: object) -> HttpProvider:
        config = ProviderConfig(
            name=t,
            type=t,
            base_url="http://x",
            endpoints=[EndpointConfig(id="e")],
            models=[ModelConfig(name="m")],
            options=registry.kind(t).options(**options) if options else None,  # type: ignore[misc]
        )
        provider = build_provider(config, None)  # type: ignore[arg-type]
        assert isinstance(provider, HttpProvider)
        return provider

    fields = {
        t: (w.max_tokens_field, "top_k" in w.skip, w.report_cost, w.extra_headers)
        for t in ("openai", "xai", "openrouter", "openai_compatible")
        for w in [wire(t).wire]  # type: ignore[attr-defined]
    }
    assert fields == {
        "openai": ("max_completion_tokens", True, False, {}),
        "xai": ("max_tokens", True, False, {}),
        "openrouter": ("max_tokens", False, True, {"X-Title": "Ensemble"}),
        "openai_compatible": ("max_tokens", True, False, {}),
    }
    keyless = wire("openai_compatible", requires_api_key=False)
    assert keyless.endpoints[0].has_credential  # a local server without a key is usable
    assert not wire("openai_compatible").endpoints[0].has_credential


def test_registering_a_type_twice_is_refused(clean_registry: None) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.ProviderKind(type="openai", wire=registry.kind("openai").wire))


def test_a_module_dropped_into_the_package_is_a_provider_type(
    clean_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing else changes: the package is scanned for modules, the module registers its type,
    config validation and build_provider take it from there."""
    shutil.copy(PLUGIN, tmp_path / "acme_chat.py")
    monkeypatch.setattr(ensemble.providers, "__path__", [*ensemble.providers.__path__, str(tmp_path)])
    (tmp_path / "cfg" / "providers").mkdir(parents=True)
    (tmp_path / "cfg" / "ensemble.yaml").write_text("{}\n")
    (tmp_path / "cfg" / "providers" / "acme.yaml").write_text(
        "name: acme\ntype: acme\nendpoints: [{id: acme-1, api_key: k}]\nmodels: [{name: a}]\n"
    )
    with pytest.raises(ConfigError, match="unknown provider type 'acme'"):
        load_config(tmp_path / "cfg" / "ensemble.yaml", env={})
    registry.discover()
    assert "acme" in registry.supported_types()
    config = load_config(tmp_path / "cfg" / "ensemble.yaml", env={})
    (acme,) = config.providers
    assert acme.base_url == "https://api.acme.example"  # the module's default
    provider = build_provider(acme, None)  # type: ignore[arg-type]
    assert isinstance(provider, HttpProvider)
    framing = provider.wire.framing()
    assert framing.feed(b'{"a": 1}\n{"b"') == [("", '{"a": 1}', "", None)]
    assert framing.feed(b": 2}\n") == [("", '{"b": 2}', "", None)]


def test_a_plugin_that_fails_to_load_is_named_with_unknown_types(
    clean_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "broken_vendor-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-vendor\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ensemble.providers]\nbroken = broken_vendor\n")
    (tmp_path / "broken_vendor.py").write_text("raise RuntimeError('no vendor SDK here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.discover()  # logs the failure, keeps every other type
    assert "openai" in registry.supported_types()
    problem = registry.unknown_type("broken")
    assert "failed to load: broken (RuntimeError: no vendor SDK here)" in problem
