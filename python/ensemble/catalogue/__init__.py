"""The model catalogue (docs/catalogue.md): what each known model is and which parameters it takes.

The shipped data (`models.yaml` beside this module) lists model families, each with parameter rules
matched by globs on the provider's model id, and known models with their context window, max output,
default prices and capabilities. A config's `catalogue:` block extends or overrides it.

    from ensemble import catalogue
    info = catalogue.lookup("claude-sonnet-4-5-20250929")   # ModelInfo | None
    info.max_output_tokens, info.context_window, info.pricing, info.rules

`lookup` answers from the catalogue the running gateway installed (`install`), the shipped one
before that. Names are matched exactly, then without a vendor prefix (`openai/gpt-5` on OpenRouter),
then as a dated snapshot of a known name (`gpt-4o-2024-08-06`, `claude-3-7-sonnet-latest`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import msgspec
import yaml

from ensemble.catalogue.rules import ParameterRules
from ensemble.config.schema import CatalogueConfig, CatalogueModel, ModelFamily, Pricing
from ensemble.types import InferenceRequest

__all__ = ["Catalogue", "ModelInfo", "ParameterRules", "install", "lookup", "shipped"]

# What may follow a known name in a snapshot id of the same model: a date, -latest, a Vertex
# "@version". Anything else (o3-pro, gpt-4o-audio) is another model with other prices.
_SNAPSHOT = re.compile(r"-\d{4}-?\d{2}-?\d{2}|-latest|@[\w.-]+")
DATA_FILE = Path(__file__).with_name("models.yaml")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the catalogue knows about one model id. Zero / None: not known."""

    id: str  # the catalogue's name for it (the id without vendor prefix or date suffix)
    display_name: str
    created: str | None
    context_window: int
    max_output_tokens: int
    pricing: Pricing | None
    capabilities: tuple[str, ...]
    families: tuple[str, ...]
    token_limit_field: str
    structured_output: str  # native | instruction (see ModelFamily)
    rules: ParameterRules


class Catalogue:
    def __init__(self, families: dict[str, ModelFamily], models: dict[str, CatalogueModel]) -> None:
        self.families = families
        self.models = models
        self._by_length = sorted(models, key=len, reverse=True)
        self._cache: dict[str, ModelInfo | None] = {}

    def extended(self, overrides: CatalogueConfig) -> Catalogue:
        """This catalogue with a config's `catalogue:` block applied: a family of a known name is
        replaced, a model of a known name takes the fields the override sets."""
        if not overrides.families and not overrides.models:
            return self
        families = {**self.families, **overrides.families}
        models = dict(self.models)
        for name, override in overrides.models.items():
            base = models.get(name)
            if base is None:
                models[name] = override
                continue
            changes = {
                f: getattr(override, f)
                for f in override.__struct_fields__
                if getattr(override, f) is not None
            }
            models[name] = msgspec.structs.replace(base, **changes)
        return Catalogue(families, models)

    def lookup(self, model: str) -> ModelInfo | None:
        """What is known about `model` (a provider's model id or a client's model name); None when
        neither a model entry nor a family matches it."""
        try:
            return self._cache[model]
        except KeyError:
            pass
        info = self._resolve(model)
        if len(self._cache) > 10_000:  # ids come from config and clients; bound it anyway
            self._cache.clear()
        self._cache[model] = info
        return info

    def fit(self, request: InferenceRequest, model: str, request_id: str = "") -> InferenceRequest:
        """`request` as `model` (a provider's model id) accepts it, by its families' rules: the same
        object when nothing changes. Raises InvalidRequest for a parameter the family refuses."""
        info = self.lookup(model)
        return request if info is None else info.rules.fit(request, model, request_id)

    def rewrites(self, request: InferenceRequest, model: str) -> bool:
        """Whether `fit` would change or refuse `request` for `model`: when False, the client's
        own body may be forwarded unchanged (same format in and out)."""
        info = self.lookup(model)
        return info is not None and bool(info.rules.changes(request))

    def _known_name(self, model: str) -> str | None:
        for candidate in (model, model.rpartition("/")[2]):
            if candidate in self.models:
                return candidate
            for name in self._by_length:
                if candidate.startswith(name) and _SNAPSHOT.fullmatch(candidate[len(name) :]):
                    return name
        return None

    def _resolve(self, model: str) -> ModelInfo | None:
        bare = model.rpartition("/")[2]
        name = self._known_name(model)
        families = [
            (fname, f)
            for fname, f in self.families.items()
            if any(fnmatch.fnmatchcase(bare, g) for g in f.match)
            and not any(fnmatch.fnmatchcase(bare, g) for g in f.exclude)
        ]
        if name is None and not families:
            return None
        entry = self.models.get(name) if name else None
        entry = entry or CatalogueModel()
        return ModelInfo(
            id=name or bare,
            display_name=entry.display_name or name or bare,
            created=entry.created,
            context_window=entry.context_window or 0,
            max_output_tokens=entry.max_output_tokens or 0,
            pricing=entry.pricing,
            capabilities=tuple(entry.capabilities or ()),
            families=tuple(fname for fname, _ in families),
            token_limit_field=next((f.token_limit_field for _, f in families if f.token_limit_field), ""),
            structured_output="instruction"
            if any(f.structured_output == "instruction" for _, f in families)
            else "native",
            rules=ParameterRules.combine([f for _, f in families]),
        )


@cache
def shipped() -> Catalogue:
    """The catalogue as shipped in the package."""
    data = yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))
    parsed = msgspec.convert(data, CatalogueConfig, strict=False)
    return Catalogue(parsed.families, parsed.models)


_active: Catalogue | None = None


def install(overrides: CatalogueConfig) -> Catalogue:
    """Make the shipped catalogue with a config's overrides the one `lookup` answers from."""
    global _active
    _active = shipped().extended(overrides)
    return _active


def active() -> Catalogue:
    return _active or shipped()


def lookup(model: str) -> ModelInfo | None:
    """What the active catalogue knows about `model` (see the module docstring)."""
    return active().lookup(model)
